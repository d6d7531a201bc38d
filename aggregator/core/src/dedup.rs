//! `dedup`: the same `event_id` is counted once, however often it arrives (HTTP retry,
//! emitter retry, dead-letter replay).
//!
//! The rule never drops an event that was not already counted: an event is dropped only if
//! an event with the same id is already stored (or earlier in the same epoch) **and** has the
//! same content. Same id with different content is a conflict: it is dead-lettered with
//! both sides' details, never silently merged or dropped.
//!
//! Determinism for replays: the shell looks up stored ids excluding the epoch's own offset
//! range, so rebuilding an epoch after a crash makes the same decisions as the first time.

use std::collections::HashMap;

use uuid::Uuid;

use costpipe_schemas::UsageEvent;

use crate::dead_letter::DeadLetter;
use crate::epoch::{roll_up, PricedEvent, SealedEpoch};

/// The fields that make two events with one id the same event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    pub tenant_id: String,
    pub event_time: i64,
    pub model: String,
    pub tokens: [i64; 6],
}

impl Fingerprint {
    /// The fingerprint of `e`.
    pub fn of(e: &UsageEvent) -> Fingerprint {
        Fingerprint {
            tenant_id: e.tenant_id.clone(),
            event_time: e.event_time,
            model: e.model.clone(),
            tokens: [
                e.input_tokens,
                e.output_tokens,
                e.cached_input_tokens,
                e.cache_write_tokens,
                e.reasoning_tokens,
                e.cache_write_1h_tokens.unwrap_or(0),
            ],
        }
    }
}

/// What deduplication did to an epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DedupReport {
    /// Exact duplicates dropped (already counted).
    pub duplicates: u64,
    /// Same id, different content: dead-lettered.
    pub conflicts: u64,
}

/// The query the shell must answer: which of these ids are already stored, outside this
/// epoch's own offset range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLookup {
    pub partition: i32,
    pub start_offset: i64,
    pub end_offset: i64,
    pub ids: Vec<Uuid>,
    pub min_event_time: i64,
    pub max_event_time: i64,
}

/// The lookup for `epoch`, or `None` when it has no events.
pub fn lookup_for(epoch: &SealedEpoch) -> Option<StoredLookup> {
    let min = epoch.events.iter().map(|e| e.event.event_time).min()?;
    let max = epoch.events.iter().map(|e| e.event.event_time).max()?;
    Some(StoredLookup {
        partition: epoch.partition,
        start_offset: epoch.start_offset,
        end_offset: epoch.end_offset,
        ids: epoch.events.iter().map(|e| e.event.event_id).collect(),
        min_event_time: min,
        max_event_time: max,
    })
}

fn conflict(p: &PricedEvent, with: &str) -> DeadLetter {
    DeadLetter {
        partition: p.partition,
        offset: p.offset,
        key: p.key.clone(),
        payload: p.raw.clone(),
        reason_code: "duplicate_event_id_conflict",
        reason: format!(
            "event_id {} was already counted with different content ({with}); this copy is not counted",
            p.event.event_id
        ),
    }
}

/// Removes already-counted events from `epoch` and recomputes its rollups. `stored` holds
/// the fingerprints of stored events with the epoch's ids (from the shell's lookup).
pub fn dedup(
    mut epoch: SealedEpoch,
    stored: &HashMap<Uuid, Fingerprint>,
) -> (SealedEpoch, DedupReport) {
    let mut report = DedupReport::default();
    let mut seen: HashMap<Uuid, Fingerprint> = HashMap::with_capacity(epoch.events.len());
    let mut kept = Vec::with_capacity(epoch.events.len());
    for p in std::mem::take(&mut epoch.events) {
        let fp = Fingerprint::of(&p.event);
        let earlier = stored
            .get(&p.event.event_id)
            .map(|f| (f, "stored"))
            .or_else(|| {
                seen.get(&p.event.event_id)
                    .map(|f| (f, "earlier in the stream"))
            });
        match earlier {
            Some((f, _)) if *f == fp => report.duplicates += 1,
            Some((_, where_)) => {
                report.conflicts += 1;
                epoch.dead_letters.push(conflict(&p, where_));
            }
            None => {
                seen.insert(p.event.event_id, fp);
                kept.push(p);
            }
        }
    }
    if report != DedupReport::default() {
        epoch.rollups = roll_up(&kept);
    }
    epoch.events = kept;
    (epoch, report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::plan_resume;
    use crate::epoch::EpochPolicy;
    use crate::processor::{Processor, SourceRecord};
    use costpipe_pricing::Catalog;
    use costpipe_schemas::{UsageCodec, ValidationLimits};
    use std::sync::Arc;

    const NOW: i64 = 1_764_000_000_000;

    fn event(id: u128, input: i64) -> UsageEvent {
        let mut e = UsageEvent::new(Uuid::from_u128(id), NOW - 5, "acme", "openai", "gpt-4o");
        e.input_tokens = input;
        e
    }

    fn epoch_of(events: &[UsageEvent]) -> SealedEpoch {
        let mut p = Processor::new(
            "usage",
            Arc::new(Catalog::builtin()),
            ValidationLimits::default(),
            EpochPolicy {
                max_records: 1000,
                max_age_ms: 1000,
            },
        );
        p.assign(0, plan_resume(None));
        let codec = UsageCodec::current();
        for (i, e) in events.iter().enumerate() {
            let bytes = codec.encode(e).unwrap();
            p.handle_record(
                SourceRecord {
                    partition: 0,
                    offset: i as i64,
                    key: None,
                    payload: Some(&bytes),
                },
                NOW,
            );
        }
        p.seal_all().pop().unwrap()
    }

    #[test]
    fn exact_duplicates_are_dropped_and_rollups_follow() {
        let a = event(1, 1_000_000);
        let epoch = epoch_of(&[a.clone(), event(2, 1_000_000), a.clone()]);
        let stored = HashMap::from([(Uuid::from_u128(2), Fingerprint::of(&event(2, 1_000_000)))]);
        let (epoch, report) = dedup(epoch, &stored);
        assert_eq!(
            report,
            DedupReport {
                duplicates: 2,
                conflicts: 0
            }
        );
        assert_eq!(epoch.events.len(), 1);
        assert_eq!(epoch.rollups[0].1.events, 1);
        assert_eq!(epoch.rollups[0].1.cost, rust_decimal::Decimal::new(25, 1));
        assert_eq!(
            (epoch.start_offset, epoch.end_offset),
            (0, 3),
            "the range is untouched"
        );
    }

    #[test]
    fn a_conflicting_duplicate_is_dead_lettered_not_dropped() {
        let epoch = epoch_of(&[event(1, 10), event(1, 11)]);
        let raw_second = epoch.events[1].raw.clone();
        let (epoch, report) = dedup(epoch, &HashMap::new());
        assert_eq!(
            report,
            DedupReport {
                duplicates: 0,
                conflicts: 1
            }
        );
        assert_eq!(epoch.events.len(), 1);
        assert_eq!(
            epoch.dead_letters[0].reason_code,
            "duplicate_event_id_conflict"
        );
        assert_eq!(epoch.dead_letters[0].payload, raw_second, "kept whole");
    }

    #[test]
    fn distinct_events_are_untouched() {
        let epoch = epoch_of(&[event(1, 10), event(2, 10)]);
        let before = epoch.clone();
        let (after, report) = dedup(epoch, &HashMap::new());
        assert_eq!(report, DedupReport::default());
        assert_eq!(after, before);
        assert_eq!(lookup_for(&after).unwrap().ids.len(), 2);
    }
}
