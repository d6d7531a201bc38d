//! The stores the exactly-once protocol needs, as traits the core owns. The shell implements
//! them over ClickHouse and Kafka (asynchronously, with the same meaning); the deterministic
//! simulation (`tests/simulation.rs`) implements them in memory, with faults, forgetful
//! dedup-token memory and crashes.
//!
//! [`drive_step`] performs one [`WriteStep`] of an [`EpochWrite`] against synchronous stores;
//! it is the reference the shell's asynchronous driver follows step for step.

use crate::checkpoint::{EpochDone, EpochIntent, PartitionCheckpoint};
use crate::dead_letter::DeadLetter;
use crate::epoch::SealedEpoch;
use crate::epoch_writer::{EpochWrite, Progress, StepOutcome, WriteStep, CORRECTIONS_TABLE};
use crate::recent_ids::RestoredId;

/// Where positions live: claims, intents and completion markers.
pub trait PositionStore {
    type Error: std::fmt::Display;
    /// What is known about `partition`, read when it is assigned.
    fn checkpoint(&mut self, partition: i32) -> Result<PartitionCheckpoint, Self::Error>;
    /// Records that the owner of `generation` took `partition` up.
    fn claim(&mut self, partition: i32, generation: u64) -> Result<(), Self::Error>;
    /// Stores an intent.
    fn write_intent(&mut self, intent: &EpochIntent) -> Result<(), Self::Error>;
    /// Fenced and verified: unless a generation above `done.generation` has claimed the
    /// partition or the marker is already stored, stores the completion marker of an epoch
    /// with no rows.
    fn write_done(&mut self, done: &EpochDone) -> Result<Written, Self::Error>;
}

/// What a fenced, verified write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Stored now.
    Now,
    /// The epoch's marker was already stored: nothing added.
    AlreadyComplete,
    /// A higher generation has claimed the partition: nothing added.
    Fenced,
}

/// Where rows live. One insert is atomic: the rows, the rollups derived from them and the
/// epoch's completion marker appear together or not at all, and an insert whose `token` the
/// store still remembers adds nothing.
pub trait RowStore {
    type Error: std::fmt::Display;
    /// Fenced and verified, back to back with the insert: unless a generation above
    /// `generation` has claimed the partition or the epoch's marker is already stored,
    /// inserts the epoch's events under `token`.
    fn write_rows(
        &mut self,
        epoch: &SealedEpoch,
        token: &str,
        generation: u64,
    ) -> Result<Written, Self::Error>;
    /// Fenced and verified, back to back with the insert: unless a generation above
    /// `generation` has claimed the partition, the epoch's marker is stored, or corrections
    /// under `token` are stored, inserts the epoch's corrections (each: the estimate taken
    /// out, the real count put in) under `token`.
    fn write_corrections(
        &mut self,
        epoch: &SealedEpoch,
        token: &str,
        generation: u64,
    ) -> Result<Written, Self::Error>;
    /// Ids (with fingerprints and when they were stored) of `partition`'s events stored at
    /// or after `since_ms`, oldest first; then its estimates stored at or after
    /// `estimates_since_ms` (the longer estimate horizon), with their amounts; then the real
    /// counts of corrections stored since `estimates_since_ms` **by complete epochs** (marker
    /// stored), which replace their estimates.
    fn recent_ids(
        &mut self,
        partition: i32,
        since_ms: i64,
        estimates_since_ms: i64,
    ) -> Result<Vec<RestoredId>, Self::Error>;
}

/// Where dead letters go.
pub trait DeadLetterSink {
    type Error: std::fmt::Display;
    /// Delivers `letters` (at least once).
    fn send(&mut self, letters: &[DeadLetter]) -> Result<(), Self::Error>;
}

/// Performs the current step of `write` against `store` (positions, rows and dead letters)
/// and feeds its outcome back. The Kafka offset commit
/// is progress display only, so it always counts as done here.
pub fn drive_step<S>(write: &mut EpochWrite, store: &mut S, events_table: &str) -> Progress
where
    S: PositionStore + RowStore + DeadLetterSink,
{
    let Some(step) = write.poll() else {
        return Progress::Complete;
    };
    let ok = |r: Result<(), String>| match r {
        Ok(()) => StepOutcome::Ok,
        Err(_) => StepOutcome::Failed,
    };
    let written = |r: Result<Written, String>| match r {
        Ok(Written::Now | Written::AlreadyComplete) => StepOutcome::Ok,
        Ok(Written::Fenced) => StepOutcome::Fenced,
        Err(_) => StepOutcome::Failed,
    };
    let outcome = match step {
        WriteStep::DeadLetters => {
            ok(DeadLetterSink::send(store, write.dead_letters()).map_err(|e| e.to_string()))
        }
        WriteStep::Intent => ok(store
            .write_intent(&write.intent())
            .map_err(|e| e.to_string())),
        WriteStep::Corrections => written(
            store
                .write_corrections(
                    write.epoch(),
                    &write.token(CORRECTIONS_TABLE),
                    write.generation(),
                )
                .map_err(|e| e.to_string()),
        ),
        WriteStep::Rows => written(
            store
                .write_rows(
                    write.epoch(),
                    &write.token(events_table),
                    write.generation(),
                )
                .map_err(|e| e.to_string()),
        ),
        WriteStep::Done => written(store.write_done(&write.done()).map_err(|e| e.to_string())),
        WriteStep::Commit => StepOutcome::Ok,
    };
    write.handle(outcome)
}
