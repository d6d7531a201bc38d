//! Checkpoint decisions as pure functions: what to write before an epoch, and where to resume
//! a partition from the last written intent. Storage lives behind the shell's position store.

use crate::epoch::SealedEpoch;

/// Written to the position store before an epoch's rows. The latest intent of a partition
/// names the only epoch that may be partly written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochIntent {
    pub topic: String,
    pub partition: i32,
    pub start_offset: i64,
    pub end_offset: i64,
    pub events: u64,
    pub dead_letters: u64,
    pub catalog_version: String,
}

impl EpochIntent {
    /// The intent of `epoch`.
    pub fn of(epoch: &SealedEpoch) -> Self {
        EpochIntent {
            topic: epoch.topic.clone(),
            partition: epoch.partition,
            start_offset: epoch.start_offset,
            end_offset: epoch.end_offset,
            events: epoch.events.len() as u64,
            dead_letters: epoch.dead_letters.len() as u64,
            catalog_version: epoch.catalog_version.clone(),
        }
    }
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
    /// Rebuild and rewrite the epoch ending at this offset (exclusive) before going on.
    /// Rewriting is idempotent, so this is done whether or not the epoch was complete.
    pub replay_until: Option<i64>,
}

/// The plan for a partition whose latest intent covers `latest` = `(start, end)`.
pub fn plan_resume(latest: Option<(i64, i64)>) -> ResumePlan {
    match latest {
        None => ResumePlan {
            start: StartAt::Beginning,
            replay_until: None,
        },
        Some((start, end)) => ResumePlan {
            start: StartAt::Offset(start),
            replay_until: Some(end),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_partition_starts_at_the_beginning() {
        assert_eq!(
            plan_resume(None),
            ResumePlan {
                start: StartAt::Beginning,
                replay_until: None
            }
        );
    }

    #[test]
    fn known_partition_replays_its_last_epoch() {
        assert_eq!(
            plan_resume(Some((100, 250))),
            ResumePlan {
                start: StartAt::Offset(100),
                replay_until: Some(250)
            }
        );
    }
}
