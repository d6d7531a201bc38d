//! Checkpoint decisions as pure functions: what is written before an epoch's rows, and
//! where a partition resumes from what the position store holds. The store itself is the
//! shell's (ClickHouse) or the simulation's (memory); see [`crate::stores`].
//!
//! The argument, in short (the full note is in DEVELOPERS.md, "Exactly once"):
//! - An epoch's rows and its **completion marker** are one insert: the marker is derived from
//!   the inserted rows themselves (a materialized view in ClickHouse), so "rows stored" and
//!   "epoch complete" cannot disagree. Epochs with no rows write their marker directly.
//! - The **intent** of an epoch is written before its rows, so the only epoch whose rows may
//!   be missing is the latest intent without a marker. Nothing of it was stored, so it is
//!   rebuilt from Kafka, whatever the store's dedup-token memory still remembers.
//! - A complete epoch is never replayed, however long its partition stays idle.
//! - Every owner of a partition **claims** a generation higher than any before it; intents
//!   carry it, and a writer re-reads the claimed generation after its intent and before its
//!   rows. A zombie that lost the partition therefore either stops at that check, or its
//!   intent was stored before the new owner's claim, in which case the new owner sees it and
//!   rebuilds exactly that range under the same dedup token.

use crate::epoch::SealedEpoch;

/// Written to the position store before an epoch's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochIntent {
    pub topic: String,
    pub partition: i32,
    pub start_offset: i64,
    pub end_offset: i64,
    pub events: u64,
    pub dead_letters: u64,
    pub catalog_version: String,
    /// The writer's claimed generation.
    pub generation: u64,
}

impl EpochIntent {
    /// The intent of `epoch`, written by the owner of `generation`.
    pub fn of(epoch: &SealedEpoch, generation: u64) -> Self {
        EpochIntent {
            topic: epoch.topic.clone(),
            partition: epoch.partition,
            start_offset: epoch.start_offset,
            end_offset: epoch.end_offset,
            events: epoch.events.len() as u64,
            dead_letters: epoch.dead_letters.len() as u64,
            catalog_version: epoch.catalog_version.clone(),
            generation,
        }
    }
}

/// An epoch known to be completely stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochDone {
    pub partition: i32,
    pub start_offset: i64,
    pub end_offset: i64,
    pub generation: u64,
}

/// What the position store holds about one partition, read when it is assigned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionCheckpoint {
    /// The intent with the highest `(generation, end_offset)`.
    pub latest_intent: Option<EpochIntent>,
    /// Every complete epoch of the partition with an end at or beyond the latest intent's
    /// start (the latest ones when there is no intent), as `(start, end)`: enough to tell
    /// whether that intent is complete, or where to resume without one.
    pub done: Vec<(i64, i64)>,
    /// The highest generation ever claimed or written with, 0 if none.
    pub generation: u64,
}

/// Where a partition's consumption starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// Nothing was ever written for the partition: its earliest retained record.
    Beginning,
    /// This offset.
    Offset(i64),
}

/// How to take up a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumePlan {
    /// Seek here.
    pub start: StartAt,
    /// Rebuild exactly the epoch ending at this offset (exclusive), under its original dedup
    /// token, before going on. Set only for an intent without a completion marker.
    pub replay_until: Option<i64>,
}

/// The plan for a partition with checkpoint `cp`.
pub fn plan_resume(cp: &PartitionCheckpoint) -> ResumePlan {
    let Some(intent) = &cp.latest_intent else {
        // Intents expire (a TTL keeps the position table small); markers do not. Without an
        // intent, resume after the last complete epoch, if any.
        let start = cp
            .done
            .iter()
            .map(|&(_, end)| end)
            .max()
            .map_or(StartAt::Beginning, StartAt::Offset);
        return ResumePlan {
            start,
            replay_until: None,
        };
    };
    let complete = cp
        .done
        .iter()
        .any(|&(start, end)| start == intent.start_offset && end == intent.end_offset);
    if complete {
        ResumePlan {
            start: StartAt::Offset(intent.end_offset),
            replay_until: None,
        }
    } else {
        ResumePlan {
            start: StartAt::Offset(intent.start_offset),
            replay_until: Some(intent.end_offset),
        }
    }
}

/// The generation a new owner of a partition claims.
pub fn next_generation(cp: &PartitionCheckpoint) -> u64 {
    cp.generation.saturating_add(1)
}

/// Whether a writer of `mine` may still write, given the highest claimed generation.
pub fn may_write(mine: u64, claimed: u64) -> bool {
    claimed <= mine
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(start: i64, end: i64, generation: u64) -> EpochIntent {
        EpochIntent {
            topic: "usage".into(),
            partition: 0,
            start_offset: start,
            end_offset: end,
            events: 1,
            dead_letters: 0,
            catalog_version: "v".into(),
            generation,
        }
    }

    #[test]
    fn fresh_partition_starts_at_the_beginning() {
        assert_eq!(
            plan_resume(&PartitionCheckpoint::default()),
            ResumePlan {
                start: StartAt::Beginning,
                replay_until: None
            }
        );
    }

    #[test]
    fn a_complete_epoch_is_never_replayed() {
        let cp = PartitionCheckpoint {
            latest_intent: Some(intent(100, 250, 3)),
            done: vec![(100, 250)],
            generation: 3,
        };
        assert_eq!(
            plan_resume(&cp),
            ResumePlan {
                start: StartAt::Offset(250),
                replay_until: None
            }
        );
    }

    #[test]
    fn an_intent_without_its_marker_is_rebuilt_exactly() {
        let cp = PartitionCheckpoint {
            latest_intent: Some(intent(100, 250, 3)),
            done: vec![(0, 100)],
            generation: 4,
        };
        assert_eq!(
            plan_resume(&cp),
            ResumePlan {
                start: StartAt::Offset(100),
                replay_until: Some(250)
            }
        );
        assert_eq!(next_generation(&cp), 5);
    }

    #[test]
    fn without_an_intent_a_partition_resumes_after_its_last_marker() {
        let cp = PartitionCheckpoint {
            latest_intent: None,
            done: vec![(0, 100), (100, 180)],
            generation: 0,
        };
        assert_eq!(
            plan_resume(&cp),
            ResumePlan {
                start: StartAt::Offset(180),
                replay_until: None
            }
        );
    }

    #[test]
    fn only_the_current_generation_may_write() {
        assert!(may_write(5, 5));
        assert!(!may_write(4, 5));
    }
}
