//! The epoch sink: a task that takes sealed epochs from the run loop and walks each through
//! the core's [`EpochWrite`] steps against ClickHouse and the dead-letter topic, so that
//! writing one epoch overlaps consuming the next.
//!
//! Epochs go through one at a time, in the order they were sealed, which keeps each
//! partition's epochs in order (the protocol requires it). What waits in front of the task is
//! bounded in records (`COSTPIPE_SINK_MAX_PENDING_RECORDS`): when ClickHouse is down, steps are
//! retried with the core's backoff, the bound is reached, and the run loop stops consuming
//! instead of buffering without limit or exiting.
//!
//! A stored epoch is also tallied here for the usage metrics ([`EpochTally`]: one pass over
//! its events), so that the consuming task only applies a per-key summary.

use std::time::{Duration, Instant};

use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use costpipe_aggregator_core::metrics::EpochTally;
use costpipe_aggregator_core::stores::Written;
use costpipe_aggregator_core::{EpochWrite, Progress, SealedEpoch, StepOutcome, WriteStep};
use costpipe_kafka::dead_letters::DeadLetterProducer;
use costpipe_pricing::Catalog;

use crate::clickhouse_store::{ClickHouseStore, EVENTS_TABLE};
use crate::kafka_sinks;

/// What became of an epoch, reported back to the run loop.
#[derive(Debug)]
pub enum SinkReport {
    /// Stored (or found already stored).
    Complete {
        epoch: SealedEpoch,
        generation: u64,
        seconds: f64,
        /// What the epoch adds to the usage metrics.
        tally: Box<EpochTally>,
    },
    /// Another owner claimed the partition; nothing more is written for it by this owner.
    Fenced { partition: i32, generation: u64 },
    /// A step failed and will be retried.
    Retrying {
        partition: i32,
        step: WriteStep,
        error: String,
    },
}

/// An epoch waiting in the sink: the write, the catalog it was priced with (its rates put
/// the tally into USD), and its records' room.
type Queued = (EpochWrite, Arc<Catalog>, OwnedSemaphorePermit);

/// A sealed epoch the sink had no room for yet, with the catalog it was priced with.
pub type Held = (EpochWrite, Arc<Catalog>);

/// The run loop's end of the sink.
pub struct EpochSink {
    queue: mpsc::UnboundedSender<Queued>,
    /// One permit per record pending in the sink.
    pending: Arc<Semaphore>,
    max_pending: u32,
}

impl EpochSink {
    /// Starts the sink task; at most `max_pending_records` records wait in it (an epoch larger
    /// than that still goes, alone).
    pub fn start(
        store: ClickHouseStore,
        dead_letters: DeadLetterProducer,
        max_pending_records: usize,
    ) -> (EpochSink, mpsc::UnboundedReceiver<SinkReport>) {
        let max_pending = u32::try_from(max_pending_records.max(1)).unwrap_or(u32::MAX >> 4);
        let (queue, rx) = mpsc::unbounded_channel();
        let (reports, reports_rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, dead_letters, rx, reports));
        let pending = Arc::new(Semaphore::new(max_pending as usize));
        (
            EpochSink {
                queue,
                pending,
                max_pending,
            },
            reports_rx,
        )
    }

    /// Queues an epoch priced under `catalog`, waiting while the records pending in the sink
    /// are at the bound (backpressure).
    pub async fn send(&self, write: EpochWrite, catalog: Arc<Catalog>) -> anyhow::Result<()> {
        let records = u32::try_from(write.epoch().records())
            .unwrap_or(u32::MAX)
            .clamp(1, self.max_pending);
        let permit = self
            .pending
            .clone()
            .acquire_many_owned(records)
            .await
            .map_err(|_| anyhow::anyhow!("the epoch sink is closed"))?;
        self.queue
            .send((write, catalog, permit))
            .map_err(|_| anyhow::anyhow!("the epoch sink task stopped"))
    }

    /// Queues an epoch if its records fit now; gives it back when they do not (the caller
    /// keeps it and pauses consumption, instead of waiting: the run loop must go on serving
    /// budgets and the live view while ClickHouse is slow or down).
    pub fn try_send(
        &self,
        write: EpochWrite,
        catalog: Arc<Catalog>,
    ) -> anyhow::Result<Option<Held>> {
        let records = u32::try_from(write.epoch().records())
            .unwrap_or(u32::MAX)
            .clamp(1, self.max_pending);
        let permit = match self.pending.clone().try_acquire_many_owned(records) {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits) => return Ok(Some((write, catalog))),
            Err(TryAcquireError::Closed) => anyhow::bail!("the epoch sink is closed"),
        };
        self.queue
            .send((write, catalog, permit))
            .map_err(|_| anyhow::anyhow!("the epoch sink task stopped"))?;
        Ok(None)
    }

    /// Records that can still be queued without waiting.
    pub fn room(&self) -> usize {
        self.pending.available_permits()
    }

    /// Whether an epoch is still queued or being written (its permit is held until done).
    pub fn is_busy(&self) -> bool {
        self.pending() > 0
    }

    /// Records queued or being written.
    pub fn pending(&self) -> usize {
        (self.max_pending as usize).saturating_sub(self.room())
    }
}

async fn run(
    store: ClickHouseStore,
    dead_letters: DeadLetterProducer,
    mut queue: mpsc::UnboundedReceiver<Queued>,
    reports: mpsc::UnboundedSender<SinkReport>,
) {
    // Partitions fenced off: their queued epochs are dropped unwritten.
    let mut fenced: std::collections::BTreeMap<i32, u64> = Default::default();
    // The permit is held until the epoch is done with, then frees its records' room.
    while let Some((mut write, catalog, permit)) = queue.recv().await {
        let partition = write.epoch().partition;
        if fenced
            .get(&partition)
            .is_some_and(|g| *g >= write.generation())
        {
            continue;
        }
        let started = Instant::now();
        let mut complete = false;
        loop {
            let Some(step) = write.poll() else {
                complete = true;
                break;
            };
            let outcome = perform(&store, &dead_letters, &write, step).await;
            let outcome = match outcome {
                Ok(o) => o,
                Err(e) => {
                    let _ = reports.send(SinkReport::Retrying {
                        partition,
                        step,
                        error: format!("{e:#}"),
                    });
                    StepOutcome::Failed
                }
            };
            match write.handle(outcome) {
                Progress::Continue => {}
                Progress::RetryAfterMs(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                Progress::Complete => {
                    complete = true;
                    break;
                }
                Progress::Fenced => {
                    fenced.insert(partition, write.generation());
                    let _ = reports.send(SinkReport::Fenced {
                        partition,
                        generation: write.generation(),
                    });
                    break;
                }
            }
        }
        // The room is free before the report goes out, so that the run loop, offering its
        // held epochs on the report, finds it.
        drop(permit);
        if complete {
            let generation = write.generation();
            let seconds = started.elapsed().as_secs_f64();
            let epoch = write.into_epoch();
            let tally = Box::new(EpochTally::of(&epoch.events, &catalog));
            let _ = reports.send(SinkReport::Complete {
                epoch,
                generation,
                seconds,
                tally,
            });
        }
    }
}

async fn perform(
    store: &ClickHouseStore,
    dead_letters: &DeadLetterProducer,
    write: &EpochWrite,
    step: WriteStep,
) -> anyhow::Result<StepOutcome> {
    let written = |w: Written| match w {
        Written::Now | Written::AlreadyComplete => StepOutcome::Ok,
        Written::Fenced => StepOutcome::Fenced,
    };
    Ok(match step {
        WriteStep::DeadLetters => {
            kafka_sinks::send_dead_letters(
                dead_letters,
                &write.epoch().topic,
                write.dead_letters(),
                chrono::Utc::now().timestamp_millis(),
            )
            .await?;
            StepOutcome::Ok
        }
        WriteStep::Intent => {
            // Fates of duplicates and dead letters first (rare; at least once), so that an
            // epoch whose intent is stored has recorded them, a rebuilt one included.
            store.write_fates(write.epoch()).await?;
            store.write_intent(&write.intent()).await?;
            StepOutcome::Ok
        }
        WriteStep::Corrections => written(
            store
                .write_corrections(
                    write.epoch(),
                    &write.token(costpipe_aggregator_core::CORRECTIONS_TABLE),
                    write.generation(),
                )
                .await?,
        ),
        WriteStep::Rows => written(
            store
                .write_rows(
                    write.epoch(),
                    &write.token(EVENTS_TABLE),
                    write.generation(),
                )
                .await?,
        ),
        WriteStep::Done => written(
            store
                .write_done(&write.epoch().topic, &write.done())
                .await?,
        ),
        // Kafka's committed offsets only display progress; the run loop commits them.
        WriteStep::Commit => StepOutcome::Ok,
    })
}
