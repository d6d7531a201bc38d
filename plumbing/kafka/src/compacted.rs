//! Compacted topics read as tables: every record from the beginning up to the end offsets
//! seen at the start (the table as it is now), and then, for followers, every later record.
//! A record is `(key, value)`; a `None` value is a tombstone. Callers keep the latest value
//! per key; what the values mean is theirs.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::Error;

/// One record of a compacted topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRecord {
    pub key: Vec<u8>,
    /// `None`: a tombstone (the key is deleted).
    pub value: Option<Vec<u8>>,
}

/// What a follower reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableUpdate {
    Record(TableRecord),
    /// Every record that was on the topic when following began has been reported.
    CaughtUp,
}

fn consumer(
    brokers: &str,
    topic: &str,
    timeout: Duration,
) -> Result<(BaseConsumer, BTreeMap<i32, i64>), Error> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("costpipe-table-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            let (_, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
            ends.insert(p.id(), high);
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    Ok((consumer, ends))
}

fn record_of(msg: &rdkafka::message::BorrowedMessage<'_>) -> TableRecord {
    TableRecord {
        key: msg.key().map(<[u8]>::to_vec).unwrap_or_default(),
        value: msg.payload().map(<[u8]>::to_vec),
    }
}

/// Reads `topic` from the beginning to its current end, within `timeout`.
pub fn read_to_end(
    brokers: &str,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<TableRecord>, Error> {
    let started = Instant::now();
    let (consumer, mut remaining) = consumer(brokers, topic, timeout)?;
    remaining.retain(|_, high| *high > 0);
    let mut out = Vec::new();
    while !remaining.is_empty() {
        if started.elapsed() > timeout {
            return Err(Error::Timeout {
                what: format!("reading topic {topic} to its end"),
                after_ms: timeout.as_millis() as u64,
            });
        }
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let msg = msg?;
        if let Some(high) = remaining.get(&msg.partition()) {
            if msg.offset() < *high {
                out.push(record_of(&msg));
            }
            if msg.offset() + 1 >= *high {
                remaining.remove(&msg.partition());
            }
        }
    }
    Ok(out)
}

/// Follows `topic` on a thread: every record from the beginning, `CaughtUp` once the records
/// present at the start are all sent, then every new record, until the receiver is dropped.
/// Broker errors are logged and retried by librdkafka; the thread never ends on its own.
pub fn follow(
    brokers: &str,
    topic: &str,
    timeout: Duration,
) -> Result<Receiver<TableUpdate>, Error> {
    let (consumer, mut remaining) = consumer(brokers, topic, timeout)?;
    remaining.retain(|_, high| *high > 0);
    let (tx, rx): (Sender<TableUpdate>, Receiver<TableUpdate>) = std::sync::mpsc::channel();
    let topic = topic.to_string();
    std::thread::Builder::new()
        .name(format!("follow-{topic}"))
        .spawn(move || {
            let mut caught_up = false;
            loop {
                if !caught_up && remaining.is_empty() {
                    caught_up = true;
                    if tx.send(TableUpdate::CaughtUp).is_err() {
                        return;
                    }
                }
                match consumer.poll(Duration::from_millis(200)) {
                    Some(Ok(msg)) => {
                        if let Some(high) = remaining.get(&msg.partition()) {
                            if msg.offset() + 1 >= *high {
                                remaining.remove(&msg.partition());
                            }
                        }
                        if tx.send(TableUpdate::Record(record_of(&msg))).is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(topic = %topic, error = %e, "following a compacted topic")
                    }
                    None => {}
                }
            }
        })
        .map_err(|e| Error::Config(format!("cannot start a follower thread: {e}")))?;
    Ok(rx)
}
