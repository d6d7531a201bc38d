//! Partition epochs: the unit of checkpointing. An epoch is a contiguous offset range of one
//! partition, with everything derived from it (priced events, dead letters). Its rows are
//! written under an insert deduplication token derived from its range, so writing it twice
//! is the same as writing it once. Rollups are not built here: the store derives them from
//! the rows (materialized views), so rows and rollups can never disagree.
//!
//! An epoch may also carry **corrections**: real counts that replace an estimated event
//! counted in an earlier epoch ([`EstimateCorrection`]). They belong to the epoch of the
//! record that carries the real count and are written under a token derived from its range,
//! like its rows. A real count whose estimate is still in the same open epoch replaces the
//! estimate's row instead, so no correction is needed.

use costpipe_pricing::PricedCost;
use costpipe_schemas::UsageEvent;

use crate::dead_letter::DeadLetter;
use crate::recent_ids::Counted;

/// A usage event with its price and source position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedEvent {
    pub event: UsageEvent,
    pub priced: PricedCost,
    pub partition: i32,
    pub offset: i64,
    /// Older than its partition's watermark when it arrived (counted all the same).
    pub late: bool,
}

/// An exact copy of a counted event, dropped: kept only to record its fate (HTTP ingest's
/// `GET /v1/events/{id}` answers from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateEvent {
    pub tenant_id: String,
    pub event_id: uuid::Uuid,
    pub event_time: i64,
    pub partition: i32,
    pub offset: i64,
}

/// A real count replacing an estimate counted in an earlier epoch: what is counted becomes
/// `real`; the difference (`real` − `estimate`, per field) is what the store adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EstimateCorrection {
    /// The counted estimate, as it was stored.
    pub estimate: Box<Counted>,
    /// The real count, priced, at its own source position.
    pub real: PricedEvent,
}

/// When an open epoch is sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochPolicy {
    /// Seal once this many records (events and dead letters) are in the epoch.
    pub max_records: usize,
    /// Seal once the epoch has been open this long, in wall-clock milliseconds, when the
    /// writer downstream is idle.
    pub max_age_ms: i64,
    /// While the writer is still busy with earlier epochs, an epoch past `max_age_ms` keeps
    /// taking records until it is this old (or full). It would only wait in the writer's queue
    /// otherwise, so holding it costs no freshness, and under load it makes fewer, larger
    /// inserts: ClickHouse's cost per event falls with the insert size (BENCHMARKS.md).
    pub max_hold_ms: i64,
    /// An epoch past `max_age_ms` with fewer records than this is held too, up to
    /// `max_hold_ms`, even when the writer is idle. Every insert has a fixed cost in the store
    /// (about 75 ms of ClickHouse CPU for the events table and its views, whatever the row
    /// count: `scripts/bench-clickhouse-cost`), and each partition makes its own inserts, so at
    /// low rates small epochs would cost the store far more than their rows. 0 turns it off.
    pub min_records: usize,
}

impl EpochPolicy {
    /// Whether an epoch of `records` records, opened at `opened_at_ms`, is due at `now_ms`.
    pub fn is_due(
        &self,
        records: usize,
        opened_at_ms: i64,
        now_ms: i64,
        writer_busy: bool,
    ) -> bool {
        let age = now_ms.saturating_sub(opened_at_ms);
        let age_bound = if writer_busy || records < self.min_records {
            self.max_hold_ms.max(self.max_age_ms)
        } else {
            self.max_age_ms
        };
        records >= self.max_records || age >= age_bound
    }
}

impl Default for EpochPolicy {
    fn default() -> Self {
        EpochPolicy {
            max_records: 50_000,
            max_age_ms: 1_000,
            max_hold_ms: 5_000,
            min_records: 0,
        }
    }
}

/// An epoch still taking records.
#[derive(Debug)]
pub(crate) struct OpenEpoch {
    pub start_offset: i64,
    pub next_offset: i64,
    pub opened_at_ms: i64,
    pub events: Vec<PricedEvent>,
    pub dead_letters: Vec<DeadLetter>,
    pub duplicates: Vec<DuplicateEvent>,
    pub corrections: Vec<EstimateCorrection>,
}

impl OpenEpoch {
    /// An epoch from `start_offset`, with room for `expected_events` before its event
    /// list must grow (growing a list of a few hundred thousand events copies all of them).
    pub fn new(start_offset: i64, opened_at_ms: i64, expected_events: usize) -> Self {
        OpenEpoch {
            start_offset,
            next_offset: start_offset,
            opened_at_ms,
            events: Vec::with_capacity(expected_events),
            dead_letters: Vec::new(),
            duplicates: Vec::new(),
            corrections: Vec::new(),
        }
    }

    pub fn records(&self) -> usize {
        self.events.len() + self.dead_letters.len() + self.corrections.len()
    }

    /// A real count for an estimate counted earlier: replaces the estimate's row when it is in
    /// this epoch (found by its offset; events are in offset order), else becomes a correction.
    pub fn add_correction(&mut self, estimate: Box<Counted>, mut real: PricedEvent) {
        self.next_offset = real.offset + 1;
        if estimate.offset >= self.start_offset {
            if let Ok(i) = self
                .events
                .binary_search_by_key(&estimate.offset, |e| e.offset)
            {
                if self.events[i].event.event_id == real.event.event_id {
                    // The row keeps the estimate's position, so the list stays in offset order.
                    real.offset = estimate.offset;
                    self.events[i] = real;
                    return;
                }
            }
        }
        self.corrections.push(EstimateCorrection { estimate, real });
    }

    pub fn add_event(&mut self, priced: PricedEvent) {
        self.next_offset = priced.offset + 1;
        self.events.push(priced);
    }

    /// A record that leaves no trace (a dropped duplicate) still belongs to the range.
    pub fn add_skipped(&mut self, duplicate: DuplicateEvent) {
        self.next_offset = duplicate.offset + 1;
        self.duplicates.push(duplicate);
    }

    pub fn add_dead_letter(&mut self, dl: DeadLetter) {
        self.next_offset = dl.offset + 1;
        self.dead_letters.push(dl);
    }

    pub fn seal(
        self,
        topic: &str,
        partition: i32,
        catalog_version: &str,
        replay: bool,
    ) -> SealedEpoch {
        SealedEpoch {
            topic: topic.to_string(),
            partition,
            start_offset: self.start_offset,
            end_offset: self.next_offset,
            catalog_version: catalog_version.to_string(),
            events: self.events,
            dead_letters: self.dead_letters,
            duplicates: self.duplicates,
            corrections: self.corrections,
            replay,
        }
    }
}

/// A closed epoch, ready to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedEpoch {
    pub topic: String,
    pub partition: i32,
    /// First offset covered.
    pub start_offset: i64,
    /// One past the last offset covered.
    pub end_offset: i64,
    pub catalog_version: String,
    pub events: Vec<PricedEvent>,
    pub dead_letters: Vec<DeadLetter>,
    /// Exact copies of counted events dropped from the range.
    pub duplicates: Vec<DuplicateEvent>,
    /// Real counts replacing estimates counted in earlier epochs.
    pub corrections: Vec<EstimateCorrection>,
    /// Rebuilt from a checkpoint after a restart: its dead letters were already forwarded.
    pub replay: bool,
}

impl SealedEpoch {
    /// The insert deduplication token of this epoch's rows in `table`. Derived only from the
    /// offset range, so a replay of the same range after a crash carries the same token.
    pub fn dedup_token(&self, table: &str) -> String {
        format!(
            "{}/{}/{}-{}/{}",
            self.topic, self.partition, self.start_offset, self.end_offset, table
        )
    }

    /// Records in the epoch.
    pub fn records(&self) -> usize {
        self.events.len() + self.dead_letters.len() + self.corrections.len()
    }
}

#[cfg(test)]
mod tests {
    use super::EpochPolicy;

    const POLICY: EpochPolicy = EpochPolicy {
        max_records: 1_000,
        max_age_ms: 1_000,
        max_hold_ms: 5_000,
        min_records: 100,
    };

    #[test]
    fn an_epoch_with_enough_records_is_due_at_its_age_when_the_writer_is_idle() {
        assert!(!POLICY.is_due(100, 0, 999, false));
        assert!(POLICY.is_due(100, 0, 1_000, false));
    }

    #[test]
    fn a_small_epoch_is_held_up_to_max_hold_even_when_the_writer_is_idle() {
        assert!(!POLICY.is_due(99, 0, 1_000, false));
        assert!(!POLICY.is_due(99, 0, 4_999, false));
        assert!(POLICY.is_due(99, 0, 5_000, false));
        assert!(POLICY.is_due(0, 0, 5_000, false), "an empty epoch ends too");
    }

    #[test]
    fn a_busy_writer_holds_every_epoch_up_to_max_hold() {
        assert!(!POLICY.is_due(500, 0, 4_999, true));
        assert!(POLICY.is_due(500, 0, 5_000, true));
    }

    #[test]
    fn a_full_epoch_is_due_at_once() {
        assert!(POLICY.is_due(1_000, 0, 0, true));
        let tiny = EpochPolicy {
            max_records: 10,
            ..POLICY
        };
        assert!(
            tiny.is_due(10, 0, 0, false),
            "full below min_records still seals"
        );
    }

    #[test]
    fn min_records_zero_keeps_the_age_bound() {
        let off = EpochPolicy {
            min_records: 0,
            ..POLICY
        };
        assert!(off.is_due(1, 0, 1_000, false));
    }
}
