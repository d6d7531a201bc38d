//! `RecentIds`: the same `event_id` is counted once, however often it arrives (HTTP retry,
//! emitter retry, dead-letter replay), decided in memory on the hot path.
//!
//! Events are keyed by tenant, so every copy of an event lands on the same partition, and
//! each partition keeps the ids it counted within a horizon. The lookup is by `event_id`
//! alone, never by event time: a copy rebuilt with another `event_time` is still found
//! (hole 3 of the old per-epoch ClickHouse lookup, which searched only the epoch's time span).
//!
//! The rule never drops an event that was not already counted: a copy is dropped only if an
//! event with the same id was counted **and** has the same content. Same id with different
//! content is a conflict: it is dead-lettered, never merged or dropped.
//!
//! On assignment the shell restores a partition's ids from the events it stored (ClickHouse),
//! so the decisions of an instance that takes a partition over are the ones the previous owner
//! would have made. An epoch that is rebuilt after a crash was, by the checkpoint protocol,
//! not stored, so its ids are not in the restored set and the rebuild decides as the first
//! pass did.
//!
//! Memory is bounded: ids older than the horizon (by the time they were counted) are evicted
//! first, and at most `max_ids` are kept per partition. A copy arriving after its original was
//! evicted is counted again; the horizon is documented in DEVELOPERS.md.

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};

use uuid::Uuid;

use costpipe_schemas::UsageEvent;

/// A 64-bit digest of the fields that make two events with one id the same event. Computed
/// in-process both for new events and for rows restored from the store, so it only has to
/// be stable within one build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub u64);

/// The content fields a fingerprint covers, borrowed.
#[derive(Debug, Clone, Copy, Hash)]
pub struct FingerprintFields<'a> {
    pub tenant_id: &'a str,
    pub event_time: i64,
    pub model: &'a str,
    /// input, output, cached input, cache write, reasoning, 1-hour cache write.
    pub tokens: [i64; 6],
}

impl Fingerprint {
    /// The fingerprint of `fields`.
    pub fn of_fields(fields: FingerprintFields<'_>) -> Fingerprint {
        // SipHash with fixed keys: deterministic within a build, no per-process seed.
        let mut h = DefaultHasher::new();
        fields.hash(&mut h);
        Fingerprint(h.finish())
    }

    /// The fingerprint of `e`.
    pub fn of(e: &UsageEvent) -> Fingerprint {
        Self::of_fields(FingerprintFields {
            tenant_id: &e.tenant_id,
            event_time: e.event_time,
            model: &e.model,
            tokens: [
                e.input_tokens,
                e.output_tokens,
                e.cached_input_tokens,
                e.cache_write_tokens,
                e.reasoning_tokens,
                e.cache_write_1h_tokens.unwrap_or(0),
            ],
        })
    }
}

/// What a new copy of an id is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not counted before: count it.
    Fresh,
    /// Counted before with the same content: drop it.
    Duplicate,
    /// Counted before with other content: dead-letter it.
    Conflict,
}

/// Bounds of a partition's id memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentIdsPolicy {
    /// Ids counted longer ago than this (wall clock) are forgotten.
    pub horizon_ms: i64,
    /// At most this many ids per partition; the oldest go first.
    pub max_ids: usize,
}

impl Default for RecentIdsPolicy {
    fn default() -> Self {
        RecentIdsPolicy {
            horizon_ms: 24 * 3_600_000,
            max_ids: 5_000_000,
        }
    }
}

/// The ids one partition counted recently.
#[derive(Debug, Clone, Default)]
pub struct RecentIds {
    /// foldhash, seeded per process: ids come from outside, and SipHash was a visible share
    /// of the aggregator's CPU for a 16-byte key.
    by_id: foldhash::HashMap<Uuid, Fingerprint>,
    /// Insertion order with the time each id was counted, for eviction.
    order: VecDeque<(i64, Uuid)>,
}

impl RecentIds {
    /// An empty memory.
    pub fn new() -> Self {
        Self::default()
    }

    /// A memory holding `restored` (id, fingerprint, when counted), oldest first.
    pub fn restored(restored: impl IntoIterator<Item = (Uuid, Fingerprint, i64)>) -> Self {
        let mut ids = RecentIds::new();
        for (id, fp, at) in restored {
            if ids.by_id.insert(id, fp).is_none() {
                ids.order.push_back((at, id));
            }
        }
        ids
    }

    /// Classifies a copy of `id` with content `fp`, and remembers it when it is fresh.
    pub fn observe(&mut self, id: Uuid, fp: Fingerprint, now_ms: i64) -> Seen {
        match self.by_id.get(&id) {
            Some(known) if *known == fp => Seen::Duplicate,
            Some(_) => Seen::Conflict,
            None => {
                self.by_id.insert(id, fp);
                self.order.push_back((now_ms, id));
                Seen::Fresh
            }
        }
    }

    /// Forgets `id` (it was not counted after all). Its place in the eviction order stays
    /// and is skipped when reached.
    pub fn forget(&mut self, id: &Uuid) {
        self.by_id.remove(id);
    }

    /// Forgets ids counted before `now_ms - horizon` and beyond `max_ids`.
    pub fn evict(&mut self, policy: &RecentIdsPolicy, now_ms: i64) {
        let cutoff = now_ms.saturating_sub(policy.horizon_ms);
        while let Some(&(at, id)) = self.order.front() {
            if at >= cutoff && self.order.len() <= policy.max_ids {
                break;
            }
            self.order.pop_front();
            self.by_id.remove(&id);
        }
    }

    /// Ids held.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: u128, time: i64, input: i64) -> UsageEvent {
        let mut e = UsageEvent::new(Uuid::from_u128(id), time, "acme", "openai", "gpt-4o");
        e.input_tokens = input;
        e
    }

    #[test]
    fn same_content_is_a_duplicate_other_content_a_conflict() {
        let mut ids = RecentIds::new();
        let a = event(1, 1000, 5);
        assert_eq!(ids.observe(a.event_id, Fingerprint::of(&a), 0), Seen::Fresh);
        assert_eq!(
            ids.observe(a.event_id, Fingerprint::of(&a), 1),
            Seen::Duplicate
        );
        let b = event(1, 1000, 6);
        assert_eq!(
            ids.observe(b.event_id, Fingerprint::of(&b), 2),
            Seen::Conflict
        );
    }

    #[test]
    fn a_copy_with_another_event_time_is_found_whatever_the_gap() {
        let mut ids = RecentIds::new();
        let original = event(7, 1_000, 5);
        let rebuilt = event(7, 1_000 + 40 * 86_400_000, 5);
        ids.observe(original.event_id, Fingerprint::of(&original), 0);
        assert_eq!(
            ids.observe(rebuilt.event_id, Fingerprint::of(&rebuilt), 1),
            Seen::Conflict
        );
    }

    #[test]
    fn eviction_follows_the_horizon_and_the_cap() {
        let policy = RecentIdsPolicy {
            horizon_ms: 100,
            max_ids: 1,
        };
        let mut ids = RecentIds::new();
        for (i, at) in [(1u128, 0i64), (2, 50), (3, 120)] {
            let e = event(i, 0, 1);
            ids.observe(e.event_id, Fingerprint::of(&e), at);
        }
        ids.evict(&policy, 150);
        assert_eq!(ids.len(), 1, "id 1 is past the horizon, id 2 over the cap");
        let e3 = event(3, 0, 1);
        assert_eq!(
            ids.observe(e3.event_id, Fingerprint::of(&e3), 151),
            Seen::Duplicate
        );
    }

    #[test]
    fn restored_ids_decide_like_the_original_pass() {
        let e = event(9, 5, 5);
        let mut ids = RecentIds::restored([(e.event_id, Fingerprint::of(&e), 0)]);
        assert_eq!(
            ids.observe(e.event_id, Fingerprint::of(&e), 1),
            Seen::Duplicate
        );
    }
}
