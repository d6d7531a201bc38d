//! Kafka adapter: loads the whole compacted control topic into a [`BudgetTable`] (every
//! partition read up to the high watermark it had at start before the view reports ready),
//! then follows it. Tombstones delete a budget; FORECAST and SPIKE records are ignored;
//! undecodable or unenforceable records are logged and skipped (the budget keeps its last
//! good state). Broker trouble is retried with backoff on the follower's own thread; the
//! view's [`Freshness`] says how stale it is.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use costpipe_schemas::{BudgetControl, ControlCodec};

use crate::convert::state_of;
use crate::core::staleness::Freshness;
use crate::core::table::BudgetTable;

/// Network timeout of every metadata and watermark request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a caught-up follower re-checks that it is still at the end.
const RECHECK: Duration = Duration::from_secs(1);
/// Default longest wait the broker may hold a fetch that has no new record
/// (`fetch.wait.max.ms`), in milliseconds.
pub const DEFAULT_FETCH_WAIT_MAX_MS: u32 = 50;

/// How the follower's consumer asks the broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowOptions {
    /// librdkafka's `fetch.wait.max.ms`. Real Kafka answers a fetch as soon as a record
    /// arrives, so there this only sets how often an idle follower asks. tansu answers only
    /// at points of its polling loop, which follow this wait, so librdkafka's default of
    /// 500 ms adds ~120 ms at p50 to every control record (`gateway/BENCHMARKS.md`).
    pub fetch_wait_max_ms: u32,
}

impl Default for FollowOptions {
    fn default() -> Self {
        Self {
            fetch_wait_max_ms: DEFAULT_FETCH_WAIT_MAX_MS,
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A consumer assigned every partition of `topic` from the beginning, and the high
/// watermark of each at that moment.
fn open(
    brokers: &str,
    topic: &str,
    options: FollowOptions,
) -> anyhow::Result<(BaseConsumer, Vec<(i32, i64)>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("costpipe-gateway-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .set("socket.timeout.ms", "10000")
        .set("fetch.wait.max.ms", options.fetch_wait_max_ms.to_string())
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    anyhow::ensure!(
        !partitions.is_empty(),
        "control topic {topic} has no partitions yet"
    );
    let mut tpl = TopicPartitionList::new();
    let mut targets = Vec::with_capacity(partitions.len());
    for p in partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        let (_, high) = consumer.fetch_watermarks(topic, p, REQUEST_TIMEOUT)?;
        targets.push((p, high));
    }
    consumer.assign(&tpl)?;
    Ok((consumer, targets))
}

/// What one message does to the table.
enum Record {
    Set(Box<crate::core::state::ControlState>),
    Delete(String),
    Ignore,
}

fn record(codec: &ControlCodec, msg: &BorrowedMessage<'_>) -> Result<Record, String> {
    match msg.payload() {
        None => Ok(msg
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .map_or(Record::Ignore, |k| Record::Delete(k.to_owned()))),
        Some(bytes) => {
            let control: BudgetControl = codec.decode(bytes).map_err(|e| e.to_string())?;
            match state_of(&control).map_err(|e| e.to_string())? {
                Some(state) => Ok(Record::Set(Box::new(state))),
                None => Ok(Record::Ignore),
            }
        }
    }
}

/// The shared view a follower keeps current.
#[derive(Clone, Default)]
pub struct Follower {
    /// The budgets.
    pub table: Arc<RwLock<BudgetTable>>,
    /// When records were applied and the end last reached.
    pub freshness: Arc<Mutex<Freshness>>,
    ready: Arc<AtomicBool>,
}

impl Follower {
    /// Whether the initial load reached the high watermarks of every partition.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Waits until ready or `timeout` passes; whether it is ready.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        let start = Instant::now();
        while !self.is_ready() && start.elapsed() < timeout {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.is_ready()
    }

    fn apply(&self, r: Record) {
        let Ok(mut table) = self.table.write() else {
            return;
        };
        match r {
            Record::Set(state) => {
                table.apply(*state);
            }
            Record::Delete(id) => {
                table.remove(&id);
            }
            Record::Ignore => return,
        }
        drop(table);
        if let Ok(mut f) = self.freshness.lock() {
            f.last_record_ms = Some(now_ms());
        }
    }

    fn caught_up(&self) {
        if let Ok(mut f) = self.freshness.lock() {
            f.caught_up_ms = Some(now_ms());
        }
        self.ready.store(true, Ordering::Release);
    }

    /// Reads until every partition's position reaches its target; then follows.
    fn run(&self, brokers: &str, topic: &str, options: FollowOptions) -> anyhow::Result<()> {
        let (consumer, mut targets) = open(brokers, topic, options)?;
        let codec = ControlCodec::current();
        let mut positions: Vec<(i32, i64)> = targets.iter().map(|&(p, _)| (p, 0)).collect();
        let mut last_check = Instant::now();
        loop {
            let at_end = targets
                .iter()
                .zip(&positions)
                .all(|(&(_, high), &(_, pos))| pos >= high);
            if at_end {
                self.caught_up();
            }
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(msg)) => {
                    if let Some(slot) = positions.iter_mut().find(|(p, _)| *p == msg.partition()) {
                        slot.1 = msg.offset() + 1;
                    }
                    match record(&codec, &msg) {
                        Ok(r) => self.apply(r),
                        Err(error) => tracing::warn!(
                            partition = msg.partition(),
                            offset = msg.offset(),
                            error,
                            "skipping control record"
                        ),
                    }
                }
                Some(Err(e)) => return Err(e.into()),
                None => {
                    // Idle: once a second, learn the current ends so that "caught up"
                    // means caught up with what the broker has now.
                    if self.is_ready() && last_check.elapsed() >= RECHECK {
                        last_check = Instant::now();
                        for (p, high) in &mut targets {
                            *high = consumer.fetch_watermarks(topic, *p, REQUEST_TIMEOUT)?.1;
                        }
                    }
                }
            }
        }
    }
}

/// Starts following `topic` on a background thread; reconnects with backoff (0.1 s doubling
/// to 10 s) on any broker error, reading the topic again from the beginning (applying is
/// idempotent, so the table stays right meanwhile). With the default [`FollowOptions`].
pub fn follow(brokers: &str, topic: &str) -> anyhow::Result<Follower> {
    follow_with(brokers, topic, FollowOptions::default())
}

/// [`follow`] with the consumer's settings chosen by the caller.
pub fn follow_with(brokers: &str, topic: &str, options: FollowOptions) -> anyhow::Result<Follower> {
    let follower = Follower::default();
    let shared = follower.clone();
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    std::thread::Builder::new()
        .name("costpipe-control-follower".into())
        .spawn(move || {
            let mut backoff = Duration::from_millis(100);
            loop {
                if let Err(e) = shared.run(&brokers, &topic, options) {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        topic,
                        "control follower restarting"
                    );
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        })?;
    Ok(follower)
}

/// Every control record of `topic` up to the high watermarks it had when called, in
/// partition order; for viewers.
pub fn read_all(
    brokers: &str,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<BudgetControl>> {
    let (consumer, targets) = open(brokers, topic, FollowOptions::default())?;
    let codec = ControlCodec::current();
    let mut positions: Vec<(i32, i64)> = targets.iter().map(|&(p, _)| (p, 0)).collect();
    let mut out = Vec::new();
    let start = Instant::now();
    while !targets
        .iter()
        .zip(&positions)
        .all(|(&(_, high), &(_, pos))| pos >= high)
    {
        anyhow::ensure!(start.elapsed() < timeout, "timed out reading {topic}");
        if let Some(msg) = consumer.poll(Duration::from_millis(100)) {
            let msg = msg?;
            if let Some(slot) = positions.iter_mut().find(|(p, _)| *p == msg.partition()) {
                slot.1 = msg.offset() + 1;
            }
            if let Some(payload) = msg.payload() {
                match codec.decode(payload) {
                    Ok(c) => out.push(c),
                    Err(e) => eprintln!("skipping control record at offset {}: {e}", msg.offset()),
                }
            }
        }
    }
    Ok(out)
}
