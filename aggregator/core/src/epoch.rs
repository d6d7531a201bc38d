//! Partition epochs: the unit of checkpointing. An epoch is a contiguous offset range of one
//! partition, with everything derived from it (priced events, rollups, dead letters). It is
//! written under insert deduplication tokens derived from its range, so writing it twice is
//! the same as writing it once.

use std::collections::BTreeMap;

use costpipe_pricing::PricedCost;
use costpipe_schemas::UsageEvent;

use crate::dead_letter::DeadLetter;
use crate::rollup::{minute_of, RollupKey, RollupTotals};

/// A usage event with its price, source position and the bytes it arrived as (kept so that
/// a conflicting duplicate can be dead-lettered whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedEvent {
    pub event: UsageEvent,
    pub priced: PricedCost,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub raw: Vec<u8>,
}

/// When an open epoch is sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochPolicy {
    /// Seal once this many records (events and dead letters) are in the epoch.
    pub max_records: usize,
    /// Seal once the epoch has been open this long, in wall-clock milliseconds.
    pub max_age_ms: i64,
}

impl Default for EpochPolicy {
    fn default() -> Self {
        EpochPolicy {
            max_records: 50_000,
            max_age_ms: 1_000,
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
}

/// Sums `events` per rollup key.
pub fn roll_up(events: &[PricedEvent]) -> Vec<(RollupKey, RollupTotals)> {
    let mut rollups: BTreeMap<RollupKey, RollupTotals> = BTreeMap::new();
    for priced in events {
        let e = &priced.event;
        let key = RollupKey {
            tenant_id: e.tenant_id.clone(),
            department: e.department.clone().unwrap_or_default(),
            model: e.model.clone(),
            currency: priced.priced.currency.to_string(),
            billing_currency: priced.priced.billing_currency.to_string(),
            minute: minute_of(e.event_time),
        };
        let t = rollups.entry(key).or_default();
        t.events += 1;
        t.unpriced_events += i64::from(priced.priced.is_unpriced());
        // Tokens are validated non-negative before pricing, so these casts are lossless.
        t.input_tokens += e.input_tokens as u64;
        t.output_tokens += e.output_tokens as u64;
        t.cached_input_tokens += e.cached_input_tokens as u64;
        t.cache_write_tokens += e.cache_write_tokens as u64;
        t.reasoning_tokens += e.reasoning_tokens as u64;
        t.cache_write_1h_tokens += e.cache_write_1h_tokens.unwrap_or(0) as u64;
        t.cost += priced.priced.cost;
        t.billing_cost += priced.priced.billing_cost;
    }
    rollups.into_iter().collect()
}

impl OpenEpoch {
    pub fn new(start_offset: i64, opened_at_ms: i64) -> Self {
        OpenEpoch {
            start_offset,
            next_offset: start_offset,
            opened_at_ms,
            events: Vec::new(),
            dead_letters: Vec::new(),
        }
    }

    pub fn records(&self) -> usize {
        self.events.len() + self.dead_letters.len()
    }

    pub fn add_event(&mut self, priced: PricedEvent) {
        self.next_offset = priced.offset + 1;
        self.events.push(priced);
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
            rollups: roll_up(&self.events),
            events: self.events,
            dead_letters: self.dead_letters,
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
    pub rollups: Vec<(RollupKey, RollupTotals)>,
    pub dead_letters: Vec<DeadLetter>,
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
        self.events.len() + self.dead_letters.len()
    }
}
