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
//!
//! **Estimated copies.** An event flagged estimated (label `costpipe_usage=estimated`: the
//! gateway counted the tokens itself) is remembered with what it added ([`Counted`]), so
//! that a later copy of the same id that is *not* estimated (the provider's real count) can
//! replace it: [`Seen::Correction`] hands the estimate back and the real count becomes what
//! is counted (its fingerprint replaces the estimate's). Estimates are rare; they are kept
//! beside their id and leave with it (same horizon, same cap). After a correction the id is
//! an ordinary counted id: a second real count with the same content is a duplicate, one
//! with other content a conflict, and an estimate arriving after the real count a conflict
//! (or a duplicate if its content is the same).
//!
//! An estimate still waiting for its real count outlives the id horizon: it is kept for the
//! longer `estimate_horizon_ms` (35 days by default, beyond a billing month, since providers'
//! usage reports can come days later), at most `max_estimates` per partition. Only a real
//! count arriving after that finds nothing and is counted as a new event, beside the estimate
//! (the documented bound).

use std::collections::hash_map::Entry;
use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};

use uuid::Uuid;

use costpipe_pricing::PricedCost;
use costpipe_schemas::UsageEvent;

/// The label an emitter sets on an event whose tokens it counted itself.
pub const ESTIMATED_LABEL: &str = "costpipe_usage";
/// [`ESTIMATED_LABEL`]'s value on such an event.
pub const ESTIMATED_VALUE: &str = "estimated";

/// Whether `e` carries estimated token counts (a later real count may correct it).
pub fn is_estimated(e: &UsageEvent) -> bool {
    e.labels.get(ESTIMATED_LABEL).map(String::as_str) == Some(ESTIMATED_VALUE)
}

/// What a counted estimated copy added, so that a real count can take it back out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    pub event: UsageEvent,
    pub priced: PricedCost,
    /// Source offset of the counted copy.
    pub offset: i64,
    /// Where the windows hold it: its event time when counted live, its minute's start when
    /// the partition's windows were restored from minute rollups.
    pub window_time_ms: i64,
}

/// One id read back from the store when a partition is taken up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredId {
    pub id: Uuid,
    pub fingerprint: Fingerprint,
    /// When it was counted (stored).
    pub at_ms: i64,
    /// The counted copy's amounts when it is an estimate not yet corrected.
    pub estimate: Option<Box<Counted>>,
}

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Not counted before: count it.
    Fresh,
    /// Counted before with the same content: drop it.
    Duplicate,
    /// Counted before with other content: dead-letter it.
    Conflict,
    /// The counted copy is an estimate and this one a real count: count the real one instead
    /// (the estimate is handed back, to take its amounts out). Already remembered as counted.
    Correction(Box<Counted>),
}

/// Bounds of a partition's id memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentIdsPolicy {
    /// Ids counted longer ago than this (wall clock) are forgotten.
    pub horizon_ms: i64,
    /// At most this many ids per partition; the oldest go first.
    pub max_ids: usize,
    /// Estimates not yet corrected are kept this long (wall clock, from when they were
    /// counted), past `horizon_ms`, so that a late real count still corrects them.
    pub estimate_horizon_ms: i64,
    /// At most this many estimates per partition are kept past `horizon_ms`; the oldest go
    /// first.
    pub max_estimates: usize,
}

impl Default for RecentIdsPolicy {
    fn default() -> Self {
        RecentIdsPolicy {
            horizon_ms: 24 * 3_600_000,
            max_ids: 5_000_000,
            estimate_horizon_ms: 35 * 24 * 3_600_000,
            max_estimates: 1_000_000,
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
    /// The counted copies that are estimates, not yet corrected (few).
    estimates: foldhash::HashMap<Uuid, Box<Counted>>,
    /// Ids that left `order` past the id horizon while still estimates, oldest first: kept
    /// until the estimate horizon.
    estimate_order: VecDeque<(i64, Uuid)>,
}

impl RecentIds {
    /// An empty memory.
    pub fn new() -> Self {
        Self::default()
    }

    /// A memory holding `restored` (id, fingerprint, when counted), oldest first.
    pub fn restored(restored: impl IntoIterator<Item = (Uuid, Fingerprint, i64)>) -> Self {
        Self::restored_with_estimates(restored.into_iter().map(|(id, fingerprint, at_ms)| {
            RestoredId {
                id,
                fingerprint,
                at_ms,
                estimate: None,
            }
        }))
    }

    /// A memory holding `restored`. A later entry for the same id (a real count's
    /// correction after its estimate) replaces the earlier one's content. Entries may come
    /// in sorted runs (ids, then older estimates, then corrections); eviction needs them in
    /// the order they were counted, which a stable sort restores in about linear time.
    pub fn restored_with_estimates(restored: impl IntoIterator<Item = RestoredId>) -> Self {
        let mut ids = RecentIds::new();
        for r in restored {
            if ids.by_id.insert(r.id, r.fingerprint).is_none() {
                ids.order.push_back((r.at_ms, r.id));
            }
            match r.estimate {
                Some(e) => ids.estimates.insert(r.id, e),
                None => ids.estimates.remove(&r.id),
            };
        }
        ids.order.make_contiguous().sort_by_key(|&(at, _)| at);
        ids
    }

    /// Classifies a copy of `id` with content `fp` (`estimated`: the copy's tokens are an
    /// estimate), and remembers it when it is fresh or corrects an estimate.
    pub fn observe(&mut self, id: Uuid, fp: Fingerprint, estimated: bool, now_ms: i64) -> Seen {
        // One probe of the map per copy: a fresh id (nearly every event) is inserted where
        // the lookup left off.
        match self.by_id.entry(id) {
            Entry::Occupied(mut known) if !estimated && self.estimates.contains_key(&id) => {
                let Some(old) = self.estimates.remove(&id) else {
                    return Seen::Conflict;
                };
                known.insert(fp);
                Seen::Correction(old)
            }
            Entry::Occupied(known) if *known.get() == fp => Seen::Duplicate,
            Entry::Occupied(_) => Seen::Conflict,
            Entry::Vacant(slot) => {
                slot.insert(fp);
                self.order.push_back((now_ms, id));
                Seen::Fresh
            }
        }
    }

    /// Remembers what the fresh estimated copy `id` added, for a later real count.
    pub fn remember_estimate(&mut self, id: Uuid, counted: Counted) {
        if self.by_id.contains_key(&id) {
            self.estimates.insert(id, Box::new(counted));
        }
    }

    /// Undoes a [`Seen::Correction`] that could not be applied: `old` is counted again.
    pub fn undo_correction(&mut self, id: Uuid, old: Box<Counted>) {
        self.by_id.insert(id, Fingerprint::of(&old.event));
        self.estimates.insert(id, old);
    }

    /// Estimates held, not yet corrected.
    pub fn estimates_len(&self) -> usize {
        self.estimates.len()
    }

    /// Forgets `id` (it was not counted after all). When it is the newest id, as when the
    /// processor forgets the copy it has just observed, its place in the eviction order goes
    /// too: left there, it would evict a later copy of the same id before that copy's own
    /// horizon. An older place stays and is harmless once the id is gone.
    pub fn forget(&mut self, id: &Uuid) {
        self.by_id.remove(id);
        self.estimates.remove(id);
        if self.order.back().is_some_and(|(_, newest)| newest == id) {
            self.order.pop_back();
        }
    }

    /// Forgets ids counted before `now_ms - horizon` and beyond `max_ids`, except estimates
    /// still waiting for their real count, which go when they are older than the estimate
    /// horizon or beyond `max_estimates`.
    pub fn evict(&mut self, policy: &RecentIdsPolicy, now_ms: i64) {
        let cutoff = now_ms.saturating_sub(policy.horizon_ms);
        let estimate_cutoff = now_ms.saturating_sub(policy.estimate_horizon_ms);
        while let Some(&(at, id)) = self.order.front() {
            if at >= cutoff && self.order.len() <= policy.max_ids {
                break;
            }
            self.order.pop_front();
            if at >= estimate_cutoff && self.estimates.contains_key(&id) {
                self.estimate_order.push_back((at, id));
            } else {
                self.by_id.remove(&id);
                self.estimates.remove(&id);
            }
        }
        while let Some(&(at, id)) = self.estimate_order.front() {
            if at >= estimate_cutoff && self.estimate_order.len() <= policy.max_estimates {
                break;
            }
            self.estimate_order.pop_front();
            // Corrected meanwhile or not, the id is past the id horizon.
            self.by_id.remove(&id);
            self.estimates.remove(&id);
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
        assert_eq!(
            ids.observe(a.event_id, Fingerprint::of(&a), false, 0),
            Seen::Fresh
        );
        assert_eq!(
            ids.observe(a.event_id, Fingerprint::of(&a), false, 1),
            Seen::Duplicate
        );
        let b = event(1, 1000, 6);
        assert_eq!(
            ids.observe(b.event_id, Fingerprint::of(&b), false, 2),
            Seen::Conflict
        );
    }

    #[test]
    fn a_copy_with_another_event_time_is_found_whatever_the_gap() {
        let mut ids = RecentIds::new();
        let original = event(7, 1_000, 5);
        let rebuilt = event(7, 1_000 + 40 * 86_400_000, 5);
        ids.observe(original.event_id, Fingerprint::of(&original), false, 0);
        assert_eq!(
            ids.observe(rebuilt.event_id, Fingerprint::of(&rebuilt), false, 1),
            Seen::Conflict
        );
    }

    #[test]
    fn eviction_follows_the_horizon_and_the_cap() {
        let policy = RecentIdsPolicy {
            horizon_ms: 100,
            max_ids: 1,
            ..RecentIdsPolicy::default()
        };
        let mut ids = RecentIds::new();
        for (i, at) in [(1u128, 0i64), (2, 50), (3, 120)] {
            let e = event(i, 0, 1);
            ids.observe(e.event_id, Fingerprint::of(&e), false, at);
        }
        ids.evict(&policy, 150);
        assert_eq!(ids.len(), 1, "id 1 is past the horizon, id 2 over the cap");
        let e3 = event(3, 0, 1);
        assert_eq!(
            ids.observe(e3.event_id, Fingerprint::of(&e3), false, 151),
            Seen::Duplicate
        );
    }

    #[test]
    fn a_forgotten_copy_does_not_shorten_the_next_copys_horizon() {
        let policy = RecentIdsPolicy {
            horizon_ms: 100,
            ..RecentIdsPolicy::default()
        };
        let mut ids = RecentIds::new();
        let e = event(4, 0, 1);
        // A copy the processor could not count (its window sums overflowed) is forgotten.
        assert_eq!(
            ids.observe(e.event_id, Fingerprint::of(&e), false, 0),
            Seen::Fresh
        );
        ids.forget(&e.event_id);
        // A later copy is counted, and is remembered for its own horizon.
        assert_eq!(
            ids.observe(e.event_id, Fingerprint::of(&e), false, 50),
            Seen::Fresh
        );
        ids.evict(&policy, 120);
        assert_eq!(
            ids.observe(e.event_id, Fingerprint::of(&e), false, 121),
            Seen::Duplicate
        );
    }

    #[test]
    fn restored_ids_decide_like_the_original_pass() {
        let e = event(9, 5, 5);
        let mut ids = RecentIds::restored([(e.event_id, Fingerprint::of(&e), 0)]);
        assert_eq!(
            ids.observe(e.event_id, Fingerprint::of(&e), false, 1),
            Seen::Duplicate
        );
    }

    fn counted(e: &UsageEvent) -> Counted {
        let catalog = costpipe_pricing::Catalog::builtin();
        Counted {
            event: e.clone(),
            priced: costpipe_pricing::price_event(&catalog, e),
            offset: 0,
            window_time_ms: e.event_time,
        }
    }

    fn estimated(id: u128, input: i64) -> UsageEvent {
        let mut e = event(id, 1000, input);
        e.labels
            .insert(ESTIMATED_LABEL.to_string(), ESTIMATED_VALUE.to_string());
        e
    }

    #[test]
    fn a_real_count_corrects_an_estimate_once() {
        let mut ids = RecentIds::new();
        let est = estimated(5, 100);
        assert!(is_estimated(&est));
        let fp = Fingerprint::of(&est);
        assert_eq!(ids.observe(est.event_id, fp, true, 0), Seen::Fresh);
        ids.remember_estimate(est.event_id, counted(&est));
        assert_eq!(ids.estimates_len(), 1);
        // The estimate again: a duplicate; another estimate: a conflict.
        assert_eq!(ids.observe(est.event_id, fp, true, 1), Seen::Duplicate);
        let other_estimate = estimated(5, 101);
        assert_eq!(
            ids.observe(
                other_estimate.event_id,
                Fingerprint::of(&other_estimate),
                true,
                1
            ),
            Seen::Conflict
        );
        let real = event(5, 1000, 120);
        assert!(!is_estimated(&real));
        match ids.observe(real.event_id, Fingerprint::of(&real), false, 2) {
            Seen::Correction(old) => assert_eq!(old.event, est),
            other => panic!("expected a correction, got {other:?}"),
        }
        assert_eq!(ids.estimates_len(), 0);
        // From now on the real count is what is counted.
        assert_eq!(
            ids.observe(real.event_id, Fingerprint::of(&real), false, 3),
            Seen::Duplicate
        );
        let other_real = event(5, 1000, 121);
        assert_eq!(
            ids.observe(other_real.event_id, Fingerprint::of(&other_real), false, 3),
            Seen::Conflict
        );
        assert_eq!(ids.observe(est.event_id, fp, true, 4), Seen::Conflict);
    }

    #[test]
    fn a_real_count_first_is_never_corrected_by_an_estimate() {
        let mut ids = RecentIds::new();
        let real = event(6, 1000, 120);
        assert_eq!(
            ids.observe(real.event_id, Fingerprint::of(&real), false, 0),
            Seen::Fresh
        );
        let est = estimated(6, 100);
        assert_eq!(
            ids.observe(est.event_id, Fingerprint::of(&est), true, 1),
            Seen::Conflict
        );
    }

    /// Ids remembered 100 ms (at most 10), estimates `estimate_horizon_ms` (at most
    /// `max_estimates`).
    fn short_horizons(estimate_horizon_ms: i64, max_estimates: usize) -> RecentIdsPolicy {
        RecentIdsPolicy {
            horizon_ms: 100,
            max_ids: 10,
            estimate_horizon_ms,
            max_estimates,
        }
    }

    #[test]
    fn estimates_outlive_the_id_horizon_until_their_own() {
        let policy = short_horizons(1_000, 10);
        let mut ids = RecentIds::new();
        let plain = event(7, 1000, 1);
        ids.observe(plain.event_id, Fingerprint::of(&plain), false, 0);
        let est = estimated(8, 100);
        ids.observe(est.event_id, Fingerprint::of(&est), true, 0);
        ids.remember_estimate(est.event_id, counted(&est));
        ids.evict(&policy, 101);
        assert_eq!(
            (ids.len(), ids.estimates_len()),
            (1, 1),
            "the plain id is gone, the estimate waits for its real count"
        );
        // A day later in this policy's terms, the real count still corrects it, once.
        let real = event(8, 1000, 120);
        match ids.observe(real.event_id, Fingerprint::of(&real), false, 900) {
            Seen::Correction(old) => assert_eq!(old.event, est),
            other => panic!("expected a correction, got {other:?}"),
        }
        assert_eq!(
            ids.observe(real.event_id, Fingerprint::of(&real), false, 901),
            Seen::Duplicate
        );
        // Then the corrected id leaves at the estimate horizon like any other.
        ids.evict(&policy, 1_001);
        assert_eq!((ids.len(), ids.estimates_len()), (0, 0));
    }

    #[test]
    fn estimates_leave_at_their_horizon_and_beyond_their_cap() {
        let policy = short_horizons(1_000, 1);
        let mut ids = RecentIds::new();
        for (id, at) in [(20u128, 0i64), (21, 10)] {
            let e = estimated(id, 100);
            ids.observe(e.event_id, Fingerprint::of(&e), true, at);
            ids.remember_estimate(e.event_id, counted(&e));
        }
        ids.evict(&policy, 200);
        assert_eq!(
            (ids.len(), ids.estimates_len()),
            (1, 1),
            "the older estimate is over the cap"
        );
        let kept = estimated(21, 100);
        assert_eq!(
            ids.observe(kept.event_id, Fingerprint::of(&kept), true, 201),
            Seen::Duplicate
        );
        ids.evict(&policy, 1_011);
        assert_eq!((ids.len(), ids.estimates_len()), (0, 0));
        // Past the estimate horizon a real count is new: counted beside the estimate
        // (the documented bound).
        let real = event(21, 1000, 120);
        assert_eq!(
            ids.observe(real.event_id, Fingerprint::of(&real), false, 1_012),
            Seen::Fresh
        );
    }

    #[test]
    fn restored_estimates_older_than_the_ids_are_evicted_in_time_order() {
        let policy = short_horizons(300, 10);
        let plain = event(30, 1000, 1);
        let est = estimated(31, 100);
        // Restored at 960: the shell reads the ids of the id horizon first, then the older
        // estimates of the estimate horizon.
        let mut ids = RecentIds::restored_with_estimates([
            RestoredId {
                id: plain.event_id,
                fingerprint: Fingerprint::of(&plain),
                at_ms: 950,
                estimate: None,
            },
            RestoredId {
                id: est.event_id,
                fingerprint: Fingerprint::of(&est),
                at_ms: 700,
                estimate: Some(Box::new(counted(&est))),
            },
        ]);
        ids.evict(&policy, 960);
        assert_eq!((ids.len(), ids.estimates_len()), (2, 1));
        ids.evict(&policy, 1_001);
        assert_eq!(
            (ids.len(), ids.estimates_len()),
            (1, 0),
            "the estimate, read last, leaves at its horizon while the younger id stays"
        );
    }

    #[test]
    fn estimates_restore_with_their_corrections() {
        let est = estimated(8, 100);
        let real = event(8, 1000, 120);

        // Restored: the estimate row, then its correction: the real count is what counts.
        let restored = RecentIds::restored_with_estimates([
            RestoredId {
                id: est.event_id,
                fingerprint: Fingerprint::of(&est),
                at_ms: 0,
                estimate: Some(Box::new(counted(&est))),
            },
            RestoredId {
                id: est.event_id,
                fingerprint: Fingerprint::of(&real),
                at_ms: 5,
                estimate: None,
            },
        ]);
        assert_eq!((restored.len(), restored.estimates_len()), (1, 0));
        let mut restored = restored;
        assert_eq!(
            restored.observe(real.event_id, Fingerprint::of(&real), false, 6),
            Seen::Duplicate
        );
    }
}
