//! `Processor`: decode → validate → price → deduplicate, per partition, into epochs.
//!
//! Records of a partition that is not assigned, or that lie before the partition's next
//! expected offset (prefetched before a seek, or redelivered), are ignored: the checkpoint,
//! not the broker, decides what has been counted. Duplicate event ids are decided here, in
//! memory, from the partition's [`RecentIds`].
//!
//! A real count for an event counted as an estimate ([`Disposition::Corrected`]) replaces
//! it: the windows and calendar totals take the estimate out and put the real count in,
//! budgets get the difference, and the epoch carries the correction (or replaces the
//! estimate's row when it is still in the open epoch).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use costpipe_pricing::{price_event, Catalog};
use costpipe_schemas::{UsageCodec, ValidationLimits};

use crate::budgets::SpendFacts;
use crate::checkpoint::{ResumePlan, StartAt};
use crate::dead_letter::DeadLetter;
use crate::epoch::{DuplicateEvent, EpochPolicy, OpenEpoch, PricedEvent, SealedEpoch};
use crate::recent_ids::{is_estimated, Counted, Fingerprint, RecentIds, RecentIdsPolicy, Seen};
use crate::watermark::{Watermark, WatermarkConfig};
use crate::windows::{Amounts, LiveRow, SpendWindows, WindowKey, WindowKeyRef};

/// Time zone of calendar windows (configurable per deployment; per-tenant zones come with
/// budgets).
pub use chrono_tz::Tz;

/// One Kafka record, borrowed from the consumer.
#[derive(Debug, Clone, Copy)]
pub struct SourceRecord<'a> {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
}

/// What became of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Priced into the partition's open epoch.
    Accepted,
    /// An exact copy of an event already counted: dropped.
    Duplicate,
    /// A real count replacing the estimate counted for its id: what is counted is now this.
    Corrected,
    /// Kept as a dead letter in the partition's open epoch.
    DeadLettered(&'static str),
    /// Not for us (unassigned partition) or already counted (offset before the expected one).
    Ignored,
}

/// Counters for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessorStats {
    pub accepted: u64,
    pub unpriced: u64,
    pub ignored: u64,
    /// Exact copies of counted events, dropped (replays of a rebuilt epoch included).
    pub duplicates: u64,
    /// Real counts that replaced a counted estimate.
    pub corrected: u64,
    pub dead_letters: BTreeMap<&'static str, u64>,
}

#[derive(Debug)]
struct PartitionState {
    next_offset: Option<i64>,
    replay_until: Option<i64>,
    epoch: Option<OpenEpoch>,
    recent: RecentIds,
    watermark: Watermark,
    /// Tenants seen on the partition: their windows leave with it.
    tenants: std::collections::BTreeSet<String>,
    /// Events in the partition's last sealed epoch: the next one is sized after it.
    last_epoch_events: usize,
}

impl PartitionState {
    /// Room for the next epoch's events: the last epoch's count and an eighth more, never
    /// more than a full epoch (plus the records that arrive between two seal checks).
    fn expected_events(&self, max_records: usize) -> usize {
        let last = self.last_epoch_events;
        last.saturating_add(last / 8)
            .min(max_records.saturating_add(1024))
    }
}

/// The aggregator's sans-IO processing core.
#[derive(Debug)]
pub struct Processor {
    topic: String,
    catalog: Arc<Catalog>,
    codec: UsageCodec,
    limits: ValidationLimits,
    policy: EpochPolicy,
    recent_policy: RecentIdsPolicy,
    watermark_config: WatermarkConfig,
    zone: Tz,
    windows: SpendWindows<WindowKey>,
    partitions: BTreeMap<i32, PartitionState>,
    sealed: VecDeque<SealedEpoch>,
    stats: ProcessorStats,
    /// Budgets: every accepted event updates the ones it matches, from memory.
    budgets: crate::budgets::BudgetBook,
}

impl Processor {
    /// A processor for `topic` with no partition assigned yet.
    pub fn new(
        topic: impl Into<String>,
        catalog: Arc<Catalog>,
        limits: ValidationLimits,
        policy: EpochPolicy,
    ) -> Self {
        Processor {
            topic: topic.into(),
            catalog,
            codec: UsageCodec::current(),
            limits,
            policy,
            recent_policy: RecentIdsPolicy::default(),
            watermark_config: WatermarkConfig::default(),
            zone: Tz::UTC,
            windows: SpendWindows::new(),
            partitions: BTreeMap::new(),
            sealed: VecDeque::new(),
            stats: ProcessorStats::default(),
            budgets: crate::budgets::BudgetBook::new(),
        }
    }

    /// The budgets (definitions, spend, published levels).
    pub fn budgets(&self) -> &crate::budgets::BudgetBook {
        &self.budgets
    }

    /// The budgets, to update definitions, restore state, tick and take control records.
    pub fn budgets_mut(&mut self) -> &mut crate::budgets::BudgetBook {
        &mut self.budgets
    }

    /// The catalog in force.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Replaces the catalog for records handled from now on. Open epochs keep the prices they
    /// were built with only if sealed first; the shell seals before swapping.
    pub fn set_catalog(&mut self, catalog: Arc<Catalog>) {
        self.catalog = catalog;
    }

    /// Whether records written with schema `id` can be decoded.
    pub fn knows_schema(&self, id: u32) -> bool {
        self.codec.knows(id)
    }

    /// Learns schema `id` (Avro JSON) from an external registry.
    pub fn learn_schema(
        &mut self,
        id: u32,
        subject: &str,
        text: &str,
    ) -> Result<(), costpipe_schemas::DecodeError> {
        self.codec.learn(id, subject, 1, text)
    }

    /// Bounds the memory of counted ids (the default keeps 24 h, at most 5 M per partition).
    pub fn with_recent_ids_policy(mut self, policy: RecentIdsPolicy) -> Self {
        self.recent_policy = policy;
        self
    }

    /// Watermark settings (checked by [`WatermarkConfig::validate`] at start-up).
    pub fn with_watermarks(mut self, config: WatermarkConfig) -> Self {
        self.watermark_config = config;
        self
    }

    /// The zone of calendar days and months (UTC by default).
    pub fn with_zone(mut self, zone: Tz) -> Self {
        self.zone = zone;
        self
    }

    /// Starts taking records of `partition` according to `plan`, with the ids the partition's
    /// stored events already counted. Its windows are restored separately with
    /// [`Processor::restore_minute`] before its first record.
    pub fn assign(&mut self, partition: i32, plan: ResumePlan, recent: RecentIds) {
        self.assign_at(partition, plan, recent, 0);
    }

    /// [`Processor::assign`] at wall-clock `now_ms` (where the idle timeout starts counting).
    pub fn assign_at(&mut self, partition: i32, plan: ResumePlan, recent: RecentIds, now_ms: i64) {
        let watermark = Watermark::new(self.watermark_config, now_ms);
        let next_offset = match plan.start {
            StartAt::Beginning => None,
            StartAt::Offset(o) => Some(o),
        };
        self.partitions.insert(
            partition,
            PartitionState {
                next_offset,
                replay_until: plan.replay_until,
                epoch: None,
                recent,
                watermark,
                tenants: Default::default(),
                last_epoch_events: 0,
            },
        );
    }

    /// Stops taking records of `partition` and drops its unsealed work: whoever owns the
    /// partition next rebuilds it from the checkpoint.
    pub fn revoke(&mut self, partition: i32) {
        if let Some(state) = self.partitions.remove(&partition) {
            self.windows
                .remove_where(|k| state.tenants.contains(k.tenant()));
        }
        self.sealed.retain(|e| e.partition != partition);
    }

    /// Adds a minute rollup of `partition` read back from the store to the windows.
    #[allow(clippy::too_many_arguments)]
    pub fn restore_minute(
        &mut self,
        partition: i32,
        tenant: &str,
        department: &str,
        model: &str,
        minute_start_ms: i64,
        amounts: &Amounts,
        now_ms: i64,
    ) -> Result<(), crate::windows::WindowError> {
        let Some(state) = self.partitions.get_mut(&partition) else {
            return Ok(());
        };
        if !state.tenants.contains(tenant) {
            state.tenants.insert(tenant.to_string());
        }
        let end = now_ms;
        self.windows
            .restore_minute(
                &WindowKeyRef::new(tenant, department, model),
                minute_start_ms,
                amounts,
                self.zone,
                end,
            )
            .map(|_| ())
    }

    /// Whether this instance holds `tenant`'s windows (it was seen on an assigned partition).
    pub fn holds_tenant(&self, tenant: &str) -> bool {
        self.partitions.values().any(|p| p.tenants.contains(tenant))
    }

    /// The live view of `tenant`: every key's windows ending at its partition's watermark.
    pub fn live_view(&self, tenant: &str, now_ms: i64) -> Option<(i64, Vec<LiveRow<WindowKey>>)> {
        let state = self
            .partitions
            .values()
            .find(|p| p.tenants.contains(tenant))?;
        let watermark = state.watermark.peek(now_ms);
        let rows = self.windows.live_view(tenant, watermark).ok()?;
        Some((watermark, rows))
    }

    /// `tenant`'s spend in the calendar month containing `at_ms` (the zone's), summed over
    /// its keys, in its billing currency.
    pub fn month_spend(&self, tenant: &str, at_ms: i64) -> Option<rust_decimal::Decimal> {
        let (year, month) = crate::windows::local_month(at_ms, self.zone).ok()?;
        let mut total = Amounts::ZERO;
        for key in self.windows.keys_of_tenant(tenant) {
            total = total.checked_add(&self.windows.month(key, year, month))?;
        }
        total.cost_decimal().ok()
    }

    /// Drops window bins and keys no window covers any more, per partition watermark.
    pub fn evict_windows(&mut self, now_ms: i64) {
        let oldest = self
            .partitions
            .values()
            .map(|p| p.watermark.peek(now_ms))
            .min();
        if let Some(w) = oldest {
            self.windows.evict(w);
        }
    }

    /// Keys held in windows, and their approximate heap bytes.
    pub fn window_size(&self) -> (usize, usize) {
        (self.windows.key_count(), self.windows.heap_bytes())
    }

    /// The next offset `partition` expects (`None`: not assigned, or no record yet and the
    /// partition starts at its beginning), for the consumer-lag metric.
    pub fn next_offset(&self, partition: i32) -> Option<i64> {
        self.partitions.get(&partition).and_then(|p| p.next_offset)
    }

    /// Counted event ids remembered over every assigned partition (the state-size metric).
    pub fn recent_ids_count(&self) -> usize {
        self.partitions.values().map(|p| p.recent.len()).sum()
    }

    /// Partitions currently assigned.
    pub fn assigned(&self) -> impl Iterator<Item = i32> + '_ {
        self.partitions.keys().copied()
    }

    /// Whether `partition` is still rebuilding its last checkpointed epoch.
    pub fn is_replaying(&self, partition: i32) -> bool {
        self.partitions
            .get(&partition)
            .is_some_and(|p| p.replay_until.is_some())
    }

    /// Counters since start.
    pub fn stats(&self) -> &ProcessorStats {
        &self.stats
    }

    /// Handles one record at wall-clock time `now_ms`.
    pub fn handle_record(&mut self, rec: SourceRecord<'_>, now_ms: i64) -> Disposition {
        let expected = self.partitions.get(&rec.partition).map(|s| s.next_offset);
        match expected {
            None => {
                self.stats.ignored += 1;
                return Disposition::Ignored;
            }
            Some(Some(next)) if rec.offset < next => {
                self.stats.ignored += 1;
                return Disposition::Ignored;
            }
            Some(_) => {}
        }
        let outcome = self.decode_and_price(&rec, now_ms);
        let Some(state) = self.partitions.get_mut(&rec.partition) else {
            return Disposition::Ignored;
        };
        if state.replay_until.is_some_and(|end| rec.offset >= end) {
            Self::seal_replay(
                &self.topic,
                &self.catalog,
                rec.partition,
                state,
                &mut self.sealed,
            );
        }
        let start = state.next_offset.unwrap_or(rec.offset);
        let expected = state.expected_events(self.policy.max_records);
        let epoch = state
            .epoch
            .get_or_insert_with(|| OpenEpoch::new(start, now_ms, expected));
        let windows = &mut self.windows;
        let zone = self.zone;
        let outcome = outcome.and_then(|mut priced| {
            let fp = Fingerprint::of(&priced.event);
            let estimated = is_estimated(&priced.event);
            let seen = state
                .recent
                .observe(priced.event.event_id, fp, estimated, now_ms);
            let replaced = match seen {
                Seen::Fresh => None,
                Seen::Duplicate => {
                    return Ok(Outcome::Duplicate(DuplicateEvent {
                        tenant_id: priced.event.tenant_id.clone(),
                        event_id: priced.event.event_id,
                        event_time: priced.event.event_time,
                        partition: rec.partition,
                        offset: rec.offset,
                    }))
                }
                Seen::Conflict => return Err(conflict(&priced, &rec)),
                Seen::Correction(old) => Some(old),
            };
            let e = &priced.event;
            priced.late = state.watermark.is_late(e.event_time, now_ms);
            let watermark = state.watermark.current(now_ms);
            let added = Amounts::from_decimal(priced.priced.billing_cost, tokens_of(e), 1)
                .and_then(|amounts| {
                    let key = WindowKeyRef::new(
                        &e.tenant_id,
                        e.department.as_deref().unwrap_or(""),
                        &e.model,
                    );
                    match &replaced {
                        None => windows
                            .add(&key, e.event_time, &amounts, zone, watermark)
                            .map(|_| ()),
                        Some(old) => replace_in_windows(
                            windows,
                            old,
                            &key,
                            e.event_time,
                            &amounts,
                            zone,
                            watermark,
                        ),
                    }
                });
            if let Err(err) = added {
                // Not counted, so a later copy must not be taken for a duplicate of it.
                match replaced {
                    None => state.recent.forget(&priced.event.event_id),
                    Some(old) => state.recent.undo_correction(priced.event.event_id, old),
                }
                return Err(overflow(&priced, &rec, &err));
            }
            state.watermark.observe(e.event_time, now_ms);
            if !state.tenants.contains(&e.tenant_id) {
                state.tenants.insert(e.tenant_id.clone());
            }
            match replaced {
                Some(old) => Ok(Outcome::Corrects(priced, old)),
                None => {
                    if estimated {
                        state.recent.remember_estimate(
                            priced.event.event_id,
                            Counted {
                                event: priced.event.clone(),
                                priced: priced.priced.clone(),
                                offset: rec.offset,
                                window_time_ms: priced.event.event_time,
                            },
                        );
                    }
                    Ok(Outcome::Counted(priced))
                }
            }
        });
        let disposition = match outcome {
            Ok(Outcome::Counted(priced)) => {
                if !self.budgets.is_empty() {
                    let id = priced.event.event_id.to_string();
                    let mut facts = SpendFacts::of_event(&priced.event, &priced.priced);
                    facts.event_id = Some(&id);
                    self.budgets.handle_spend(
                        &facts,
                        &self.catalog,
                        now_ms,
                        crate::budgets::SpendMode::Live,
                    );
                }
                self.stats.accepted += 1;
                self.stats.unpriced += u64::from(priced.priced.is_unpriced());
                epoch.add_event(priced);
                Disposition::Accepted
            }
            Ok(Outcome::Corrects(priced, old)) => {
                if !self.budgets.is_empty() {
                    correct_budgets(&mut self.budgets, &self.catalog, &old, &priced, now_ms);
                }
                self.stats.corrected += 1;
                epoch.add_correction(old, priced);
                Disposition::Corrected
            }
            Ok(Outcome::Duplicate(duplicate)) => {
                self.stats.duplicates += 1;
                epoch.add_skipped(duplicate);
                Disposition::Duplicate
            }
            Err(dl) => {
                let code = dl.reason_code;
                *self.stats.dead_letters.entry(code).or_default() += 1;
                epoch.add_dead_letter(dl);
                Disposition::DeadLettered(code)
            }
        };
        state.next_offset = Some(rec.offset + 1);
        if state.replay_until == Some(rec.offset + 1) {
            Self::seal_replay(
                &self.topic,
                &self.catalog,
                rec.partition,
                state,
                &mut self.sealed,
            );
        }
        disposition
    }

    fn seal_replay(
        topic: &str,
        catalog: &Catalog,
        partition: i32,
        state: &mut PartitionState,
        sealed: &mut VecDeque<SealedEpoch>,
    ) {
        // The rebuilt epoch keeps the checkpointed range even if its last offsets are gone
        // (compaction, transaction markers), so that its dedup tokens match the first write.
        let Some(end) = state.replay_until.take() else {
            return;
        };
        if let Some(mut epoch) = state.epoch.take() {
            epoch.next_offset = end;
            sealed.push_back(epoch.seal(topic, partition, catalog.version(), true));
        }
        state.next_offset = Some(end);
    }

    fn decode_and_price(
        &self,
        rec: &SourceRecord<'_>,
        now_ms: i64,
    ) -> Result<PricedEvent, DeadLetter> {
        let dead = |code: &'static str, reason: String| DeadLetter {
            partition: rec.partition,
            offset: rec.offset,
            key: rec.key.map(<[u8]>::to_vec),
            payload: rec.payload.map(<[u8]>::to_vec).unwrap_or_default(),
            reason_code: code,
            reason,
        };
        let Some(payload) = rec.payload else {
            return Err(dead(
                "empty_payload",
                "record has no value (tombstone)".into(),
            ));
        };
        let event = self
            .codec
            .decode(payload)
            .map_err(|e| dead(e.code(), e.to_string()))?;
        self.limits
            .check(&event, now_ms)
            .map_err(|e| dead(e.code.as_str(), e.message))?;
        let priced = price_event(&self.catalog, &event);
        Ok(PricedEvent {
            event,
            priced,
            partition: rec.partition,
            offset: rec.offset,
            late: false,
        })
    }

    /// Forgets counted ids past the horizon; the shell calls it now and then.
    pub fn evict_recent_ids(&mut self, now_ms: i64) {
        for state in self.partitions.values_mut() {
            state.recent.evict(&self.recent_policy, now_ms);
        }
    }

    /// Seals every epoch that is full or old enough at `now_ms`, plus finished replays.
    /// `writer_busy` says whether earlier epochs are still being written: then an epoch is
    /// held open past its age, up to [`EpochPolicy::max_hold_ms`].
    pub fn seal_due(&mut self, now_ms: i64, writer_busy: bool) -> Vec<SealedEpoch> {
        let policy = self.policy;
        self.seal_where(|state| {
            state.replay_until.is_none()
                && state.epoch.as_ref().is_some_and(|e| {
                    policy.is_due(e.records(), e.opened_at_ms, now_ms, writer_busy)
                })
        })
    }

    /// Seals every open epoch that is not mid-replay (shutdown, catalog swap).
    pub fn seal_all(&mut self) -> Vec<SealedEpoch> {
        self.seal_where(|state| state.replay_until.is_none())
    }

    fn seal_where(&mut self, due: impl Fn(&PartitionState) -> bool) -> Vec<SealedEpoch> {
        let mut out: Vec<SealedEpoch> = self.sealed.drain(..).collect();
        for (&partition, state) in self.partitions.iter_mut() {
            if due(state) {
                if let Some(epoch) = state.epoch.take() {
                    state.last_epoch_events = epoch.events.len();
                    out.push(epoch.seal(&self.topic, partition, self.catalog.version(), false));
                }
            }
        }
        out
    }
}

/// What a counted record became.
enum Outcome {
    Counted(PricedEvent),
    /// A real count replacing the estimate counted for its id.
    Corrects(PricedEvent, Box<Counted>),
    Duplicate(DuplicateEvent),
}

/// Takes the estimate `old` out of the windows and puts the real count in; on error nothing
/// changed.
fn replace_in_windows(
    windows: &mut SpendWindows<WindowKey>,
    old: &Counted,
    key: &WindowKeyRef<'_>,
    event_time: i64,
    amounts: &Amounts,
    zone: Tz,
    watermark: i64,
) -> Result<(), crate::windows::WindowError> {
    let o = &old.event;
    let old_key = WindowKeyRef::new(
        &o.tenant_id,
        o.department.as_deref().unwrap_or(""),
        &o.model,
    );
    let old_amounts = Amounts::from_decimal(old.priced.billing_cost, tokens_of(o), 1)?;
    windows.subtract(&old_key, old.window_time_ms, &old_amounts, zone, watermark)?;
    if let Err(e) = windows.add(key, event_time, amounts, zone, watermark) {
        // Put the estimate back: it was there a moment ago, so this fits.
        let _ = windows.add(&old_key, old.window_time_ms, &old_amounts, zone, watermark);
        return Err(e);
    }
    Ok(())
}

/// Budgets get the correction's difference: one update of `real − estimate` when both fall
/// in the same scopes and period, else the real count first, then the estimate taken out
/// (so that a budget never reads less than either while the two are applied).
fn correct_budgets(
    budgets: &mut crate::budgets::BudgetBook,
    catalog: &Catalog,
    old: &Counted,
    real: &PricedEvent,
    now_ms: i64,
) {
    let id = real.event.event_id.to_string();
    let mut new_facts = SpendFacts::of_event(&real.event, &real.priced);
    new_facts.event_id = Some(&id);
    let mut old_facts = SpendFacts::of_event(&old.event, &old.priced);
    old_facts.event_id = Some(&id);
    old_facts.amount = -old.priced.billing_cost;
    let live = crate::budgets::SpendMode::Live;
    if new_facts.same_place(&old_facts) {
        if let Some(delta) = new_facts.amount.checked_sub(old.priced.billing_cost) {
            new_facts.amount = delta;
            budgets.handle_spend(&new_facts, catalog, now_ms, live);
            return;
        }
    }
    budgets.handle_spend(&new_facts, catalog, now_ms, live);
    budgets.handle_spend(&old_facts, catalog, now_ms, live);
}

fn tokens_of(e: &costpipe_schemas::UsageEvent) -> [u64; 6] {
    // Validated non-negative before pricing; `max(0)` keeps the cast total anyway.
    [
        e.input_tokens,
        e.output_tokens,
        e.cached_input_tokens,
        e.cache_write_tokens,
        e.reasoning_tokens,
        e.cache_write_1h_tokens.unwrap_or(0),
    ]
    .map(|t| t.max(0) as u64)
}

fn overflow(
    p: &PricedEvent,
    rec: &SourceRecord<'_>,
    err: &crate::windows::WindowError,
) -> DeadLetter {
    DeadLetter {
        partition: p.partition,
        offset: p.offset,
        key: rec.key.map(<[u8]>::to_vec),
        payload: rec.payload.map(<[u8]>::to_vec).unwrap_or_default(),
        reason_code: "sum_overflow",
        reason: format!(
            "event {} would overflow its running totals ({err}); it is not counted",
            p.event.event_id
        ),
    }
}

fn conflict(p: &PricedEvent, rec: &SourceRecord<'_>) -> DeadLetter {
    DeadLetter {
        partition: p.partition,
        offset: p.offset,
        key: rec.key.map(<[u8]>::to_vec),
        payload: rec.payload.map(<[u8]>::to_vec).unwrap_or_default(),
        reason_code: "duplicate_event_id_conflict",
        reason: format!(
            "event_id {} was already counted with different content; this copy is not counted",
            p.event.event_id
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{plan_resume, EpochIntent, PartitionCheckpoint};
    use costpipe_schemas::UsageEvent;
    use rust_decimal_macros::dec;
    use uuid::Uuid;

    const NOW: i64 = 1_764_000_000_000;

    fn processor() -> Processor {
        Processor::new(
            "usage",
            Arc::new(Catalog::builtin()),
            ValidationLimits::default(),
            EpochPolicy {
                max_records: 3,
                max_age_ms: 1000,
                max_hold_ms: 5000,
                min_records: 0,
            },
        )
    }

    /// The plan for a partition whose latest intent is `[start, end)`, complete or not.
    fn resume_at(start: i64, end: i64, complete: bool) -> ResumePlan {
        plan_resume(&PartitionCheckpoint {
            latest_intent: Some(EpochIntent {
                topic: "usage".into(),
                partition: 0,
                start_offset: start,
                end_offset: end,
                events: 1,
                dead_letters: 0,
                catalog_version: "v".into(),
                generation: 1,
            }),
            done: if complete { vec![(start, end)] } else { vec![] },
            generation: 1,
        })
    }

    fn event_bytes(tenant: &str, input: i64) -> Vec<u8> {
        let mut e = UsageEvent::new(Uuid::new_v4(), NOW - 1000, tenant, "openai", "gpt-4o");
        e.input_tokens = input;
        UsageCodec::usage_v1().encode(&e).unwrap()
    }

    fn rec(partition: i32, offset: i64, payload: &[u8]) -> SourceRecord<'_> {
        SourceRecord {
            partition,
            offset,
            key: None,
            payload: Some(payload),
        }
    }

    #[test]
    fn unassigned_and_already_counted_records_are_ignored() {
        let mut p = processor();
        let bytes = event_bytes("acme", 10);
        assert_eq!(
            p.handle_record(rec(0, 0, &bytes), NOW),
            Disposition::Ignored
        );
        p.assign(0, resume_at(5, 10, false), RecentIds::new());
        assert_eq!(
            p.handle_record(rec(0, 4, &bytes), NOW),
            Disposition::Ignored
        );
        assert_eq!(
            p.handle_record(rec(0, 5, &bytes), NOW),
            Disposition::Accepted
        );
        assert_eq!(p.stats().ignored, 2);
    }

    #[test]
    fn epochs_seal_by_size_and_age_with_contiguous_ranges() {
        let mut p = processor();
        p.assign(
            0,
            plan_resume(&PartitionCheckpoint::default()),
            RecentIds::new(),
        );
        for offset in 0..4 {
            let bytes = event_bytes("acme", 1_000_000);
            p.handle_record(rec(0, offset, &bytes), NOW);
        }
        let sealed = p.seal_due(NOW, false);
        assert_eq!(sealed.len(), 1);
        assert_eq!((sealed[0].start_offset, sealed[0].end_offset), (0, 4));
        assert_eq!(sealed[0].events.len(), 4);
        assert_eq!(sealed[0].events[0].priced.cost, dec!(2.5));
        p.handle_record(rec(0, 4, &event_bytes("acme", 1)), NOW);
        assert!(p.seal_due(NOW + 999, false).is_empty());
        let sealed = p.seal_due(NOW + 1000, false);
        assert_eq!((sealed[0].start_offset, sealed[0].end_offset), (4, 5));
    }

    #[test]
    fn a_busy_writer_holds_an_aged_epoch_open_until_the_hold_bound() {
        let mut p = processor();
        p.assign(
            0,
            plan_resume(&PartitionCheckpoint::default()),
            RecentIds::new(),
        );
        p.handle_record(rec(0, 0, &event_bytes("acme", 1)), NOW);
        assert!(
            p.seal_due(NOW + 1000, true).is_empty(),
            "held: the writer is busy"
        );
        p.handle_record(rec(0, 1, &event_bytes("acme", 1)), NOW + 1000);
        let sealed = p.seal_due(NOW + 1001, false);
        assert_eq!(sealed.len(), 1, "sealed as soon as the writer is idle");
        assert_eq!((sealed[0].start_offset, sealed[0].end_offset), (0, 2));

        p.handle_record(rec(0, 2, &event_bytes("acme", 1)), NOW + 2000);
        assert!(p.seal_due(NOW + 6999, true).is_empty());
        let sealed = p.seal_due(NOW + 7000, true);
        assert_eq!(sealed.len(), 1, "never held past max_hold_ms");
        assert_eq!((sealed[0].start_offset, sealed[0].end_offset), (2, 3));

        for offset in 3..6 {
            p.handle_record(rec(0, offset, &event_bytes("acme", 1)), NOW + 8000);
        }
        let sealed = p.seal_due(NOW + 8000, true);
        assert_eq!(sealed.len(), 1, "a full epoch is never held");
        assert_eq!(sealed[0].events.len(), 3);
    }

    #[test]
    fn replay_rebuilds_exactly_the_checkpointed_range() {
        let mut p = processor();
        p.assign(0, resume_at(10, 12, false), RecentIds::new());
        let bytes = event_bytes("acme", 1);
        p.handle_record(rec(0, 10, &bytes), NOW);
        assert!(p.is_replaying(0));
        assert!(
            p.seal_due(NOW + 10_000, false).is_empty(),
            "a replay is never sealed by age"
        );
        p.handle_record(rec(0, 11, &bytes), NOW);
        let sealed = p.seal_due(NOW, false);
        assert_eq!(sealed.len(), 1);
        assert!(sealed[0].replay);
        assert_eq!((sealed[0].start_offset, sealed[0].end_offset), (10, 12));
        assert_eq!(sealed[0].dedup_token("t"), "usage/0/10-12/t");
    }

    #[test]
    fn replay_with_a_gap_at_its_end_seals_on_the_next_record() {
        let mut p = processor();
        p.assign(0, resume_at(10, 13, false), RecentIds::new());
        let bytes = event_bytes("acme", 1);
        p.handle_record(rec(0, 10, &bytes), NOW);
        p.handle_record(rec(0, 14, &bytes), NOW);
        let sealed = p.seal_all();
        assert_eq!((sealed[0].start_offset, sealed[0].end_offset), (10, 13));
        assert!(sealed[0].replay);
        assert_eq!((sealed[1].start_offset, sealed[1].end_offset), (13, 15));
    }

    #[test]
    fn bad_records_become_dead_letters_with_reasons() {
        let mut p = processor();
        p.assign(
            0,
            plan_resume(&PartitionCheckpoint::default()),
            RecentIds::new(),
        );
        assert_eq!(
            p.handle_record(rec(0, 0, b"garbage"), NOW),
            Disposition::DeadLettered("bad_magic_byte")
        );
        let good = event_bytes("acme", 1);
        assert_eq!(
            p.handle_record(rec(0, 1, &good[..good.len() - 2]), NOW),
            Disposition::DeadLettered("undecodable_avro")
        );
        let negative = event_bytes("acme", -5);
        assert_eq!(
            p.handle_record(rec(0, 2, &negative), NOW),
            Disposition::DeadLettered("negative_tokens")
        );
        let tombstone = SourceRecord {
            partition: 0,
            offset: 3,
            key: Some(b"k"),
            payload: None,
        };
        assert_eq!(
            p.handle_record(tombstone, NOW),
            Disposition::DeadLettered("empty_payload")
        );
        let sealed = p.seal_all();
        assert_eq!(sealed[0].dead_letters.len(), 4);
        assert_eq!(sealed[0].dead_letters[0].payload, b"garbage");
        assert_eq!((sealed[0].start_offset, sealed[0].end_offset), (0, 4));
        assert_eq!(p.stats().dead_letters.values().sum::<u64>(), 4);
    }

    #[test]
    fn copies_of_counted_ids_are_dropped_or_dead_lettered_in_memory() {
        let mut p = processor();
        p.assign(
            0,
            plan_resume(&PartitionCheckpoint::default()),
            RecentIds::new(),
        );
        let mut e = UsageEvent::new(Uuid::from_u128(7), NOW - 1000, "acme", "openai", "gpt-4o");
        e.input_tokens = 10;
        let codec = UsageCodec::usage_v2();
        let original = codec.encode(&e).unwrap();
        e.event_time -= 86_400_000;
        let other_time = codec.encode(&e).unwrap();
        assert_eq!(
            p.handle_record(rec(0, 0, &original), NOW),
            Disposition::Accepted
        );
        assert_eq!(
            p.handle_record(rec(0, 1, &original), NOW),
            Disposition::Duplicate
        );
        assert_eq!(
            p.handle_record(rec(0, 2, &other_time), NOW),
            Disposition::DeadLettered("duplicate_event_id_conflict")
        );
        let sealed = p.seal_all();
        assert_eq!((sealed[0].start_offset, sealed[0].end_offset), (0, 3));
        assert_eq!(sealed[0].events.len(), 1);
        assert_eq!(sealed[0].dead_letters[0].payload, other_time, "kept whole");
        assert_eq!(p.stats().duplicates, 1);
    }

    #[test]
    fn a_real_count_replaces_its_estimate_in_memory_and_in_the_epochs() {
        let mut p = processor();
        p.assign(
            0,
            plan_resume(&PartitionCheckpoint::default()),
            RecentIds::new(),
        );
        let codec = UsageCodec::usage_v2();
        let mut estimate =
            UsageEvent::new(Uuid::from_u128(9), NOW - 1000, "acme", "openai", "gpt-4o");
        estimate.input_tokens = 1_000_000;
        estimate.labels.insert(
            crate::recent_ids::ESTIMATED_LABEL.into(),
            crate::recent_ids::ESTIMATED_VALUE.into(),
        );
        let mut real = estimate.clone();
        real.labels.clear();
        real.input_tokens = 400_000;
        real.output_tokens = 100_000;
        let (est_bytes, real_bytes) = (
            codec.encode(&estimate).unwrap(),
            codec.encode(&real).unwrap(),
        );
        assert_eq!(
            p.handle_record(rec(0, 0, &est_bytes), NOW),
            Disposition::Accepted
        );
        assert_eq!(p.month_spend("acme", NOW), Some(dec!(2.5)));
        let first = p.seal_all();
        assert_eq!(first[0].events.len(), 1);
        // gpt-4o: 2.50 per M input, 10.00 per M output: 0.4 × 2.5 + 0.1 × 10 = 2.
        assert_eq!(
            p.handle_record(rec(0, 1, &real_bytes), NOW),
            Disposition::Corrected
        );
        assert_eq!(p.month_spend("acme", NOW), Some(dec!(2)));
        assert_eq!(
            p.handle_record(rec(0, 2, &real_bytes), NOW),
            Disposition::Duplicate
        );
        assert_eq!(
            p.handle_record(rec(0, 3, &est_bytes), NOW),
            Disposition::DeadLettered("duplicate_event_id_conflict")
        );
        let second = p.seal_all();
        assert!(second[0].events.is_empty());
        assert_eq!(second[0].corrections.len(), 1);
        let c = &second[0].corrections[0];
        assert_eq!(c.estimate.offset, 0);
        assert_eq!(c.estimate.priced.billing_cost, dec!(2.5));
        assert_eq!((c.real.offset, c.real.priced.billing_cost), (1, dec!(2)));
        assert_eq!(p.stats().corrected, 1);
        let (_, rows) = p.live_view("acme", NOW).unwrap();
        assert_eq!(rows[0].month.events, 1, "still one call");
        assert_eq!(rows[0].month.tokens[0], 400_000);
        assert_eq!(rows[0].month.tokens[1], 100_000);

        // In its estimate's own epoch, the real count replaces the row.
        let mut p = processor();
        p.assign(
            0,
            plan_resume(&PartitionCheckpoint::default()),
            RecentIds::new(),
        );
        p.handle_record(rec(0, 0, &est_bytes), NOW);
        assert_eq!(
            p.handle_record(rec(0, 1, &real_bytes), NOW),
            Disposition::Corrected
        );
        let sealed = p.seal_all();
        assert_eq!((sealed[0].start_offset, sealed[0].end_offset), (0, 2));
        assert!(sealed[0].corrections.is_empty());
        assert_eq!(sealed[0].events.len(), 1);
        assert_eq!(sealed[0].events[0].event, real);
        assert_eq!(p.month_spend("acme", NOW), Some(dec!(2)));
    }

    #[test]
    fn revoke_drops_unsealed_work() {
        let mut p = processor();
        p.assign(
            0,
            plan_resume(&PartitionCheckpoint::default()),
            RecentIds::new(),
        );
        p.handle_record(rec(0, 0, &event_bytes("acme", 1)), NOW);
        p.revoke(0);
        assert!(p.seal_all().is_empty());
    }
}
