//! ClickHouse adapter of the exactly-once protocol: the position store (claims, intents,
//! completion markers), the row store (priced events, from which materialized views derive
//! rollups, per-partition window minutes and markers in the same insert) and the reads a
//! partition's state is restored from. Every call has a timeout; callers retry.
//!
//! Rows here mirror `schemas/clickhouse/*.sql`. The decisions are the core's
//! (`costpipe_aggregator_core::checkpoint`, `epoch_writer`); this file only moves data.

use anyhow::Context;
use chrono::{DateTime, Utc};
use clickhouse::{Client, Row};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use costpipe_aggregator_core::recent_ids::{Counted, FingerprintFields, RestoredId};
use costpipe_aggregator_core::stores::Written;
use costpipe_aggregator_core::windows::Amounts;
use costpipe_aggregator_core::{
    EpochDone, EpochIntent, Fingerprint, PartitionCheckpoint, SealedEpoch,
};
use costpipe_clickhouse::ClickHouseArgs;

use crate::events_block::events_block;

/// Scale of every `Decimal(38, 12)` money column.
pub const MONEY_SCALE: u32 = 12;
/// Events table.
pub const EVENTS_TABLE: &str = "usage_events_priced";
/// Position store table (claims and intents).
pub const POSITIONS_TABLE: &str = "ingest_positions";
/// Completion markers.
pub const DONE_TABLE: &str = "ingest_epochs_done";
/// Cost corrections (repricing runs, and real counts replacing estimates).
pub const CORRECTIONS_TABLE: &str = costpipe_aggregator_core::CORRECTIONS_TABLE;
/// `usage_cost_corrections.reason` of a real count replacing an estimate.
pub const ESTIMATE_CORRECTED: &str = "estimate_corrected";

/// One row of an estimate's correction (migration 075): the estimate out (sign -1) or the
/// real count in (sign +1).
#[derive(Row, Serialize)]
struct CorrectionRow<'a> {
    run_id: &'a str,
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: uuid::Uuid,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    event_time: DateTime<Utc>,
    tenant_id: &'a str,
    department: &'a str,
    model: &'a str,
    price_model: &'a str,
    currency: &'a str,
    billing_currency: &'a str,
    cost_delta: i128,
    billing_cost_delta: i128,
    unpriced_delta: i64,
    catalog_version: &'a str,
    reason: &'a str,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    corrected_at: DateTime<Utc>,
    price_window: &'a str,
    events_delta: i64,
    input_tokens_delta: i64,
    output_tokens_delta: i64,
    cached_input_tokens_delta: i64,
    cache_write_tokens_delta: i64,
    reasoning_tokens_delta: i64,
    cache_write_1h_tokens_delta: i64,
    cache_savings_delta: i128,
    billing_cache_savings_delta: i128,
    user_id: &'a str,
    project_id: &'a str,
    feature: &'a str,
    api_key: &'a str,
    source_topic: &'a str,
    source_partition: i32,
    source_offset: i64,
    epoch_start: i64,
    epoch_end: i64,
    generation: u64,
    sign: i8,
}

impl<'a> CorrectionRow<'a> {
    /// The row of `event` priced `priced`, times `sign` (-1: taken out, +1: put in).
    #[allow(clippy::too_many_arguments)]
    fn of(
        run_id: &'a str,
        epoch: &'a SealedEpoch,
        generation: u64,
        event: &'a costpipe_schemas::UsageEvent,
        priced: &'a costpipe_pricing::PricedCost,
        offset: i64,
        sign: i8,
        now: DateTime<Utc>,
    ) -> Self {
        let s = i64::from(sign);
        let money = |d: Decimal| money_to_ticks(d) * i128::from(sign);
        CorrectionRow {
            run_id,
            event_id: event.event_id,
            event_time: ms_to_datetime(event.event_time),
            tenant_id: &event.tenant_id,
            department: event.department.as_deref().unwrap_or(""),
            model: &event.model,
            price_model: priced.price_model.as_deref().unwrap_or(""),
            currency: &priced.currency,
            billing_currency: &priced.billing_currency,
            cost_delta: money(priced.cost),
            billing_cost_delta: money(priced.billing_cost),
            unpriced_delta: s * i64::from(priced.is_unpriced()),
            catalog_version: &epoch.catalog_version,
            reason: ESTIMATE_CORRECTED,
            corrected_at: now,
            price_window: priced.price_window.as_deref().unwrap_or(""),
            events_delta: s,
            input_tokens_delta: s * event.input_tokens,
            output_tokens_delta: s * event.output_tokens,
            cached_input_tokens_delta: s * event.cached_input_tokens,
            cache_write_tokens_delta: s * event.cache_write_tokens,
            reasoning_tokens_delta: s * event.reasoning_tokens,
            cache_write_1h_tokens_delta: s * event.cache_write_1h_tokens.unwrap_or(0),
            cache_savings_delta: money(priced.cache_savings),
            billing_cache_savings_delta: money(priced.billing_cache_savings),
            user_id: event.user_id.as_deref().unwrap_or(""),
            project_id: event.project_id.as_deref().unwrap_or(""),
            feature: event.feature.as_deref().unwrap_or(""),
            api_key: event.labels.get("api_key").map_or("", String::as_str),
            source_topic: &epoch.topic,
            source_partition: epoch.partition,
            source_offset: offset,
            epoch_start: epoch.start_offset,
            epoch_end: epoch.end_offset,
            generation,
            sign,
        }
    }
}

/// An estimated event's row, read back to restore what a real count must take out.
#[derive(Debug, Row, Deserialize)]
struct EstimateRead {
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: uuid::Uuid,
    tenant_id: String,
    department: String,
    user_id: String,
    project_id: String,
    feature: String,
    provider: String,
    model: String,
    price_model: String,
    event_time_ms: i64,
    input_tokens: u64,
    output_tokens: u64,
    cached_input_tokens: u64,
    cache_write_tokens: u64,
    reasoning_tokens: u64,
    cache_write_1h_tokens: u64,
    cost: i128,
    currency: String,
    billing_cost: i128,
    billing_currency: String,
    exchange_rate: i128,
    cache_savings: i128,
    billing_cache_savings: i128,
    unpriced: bool,
    price_window: String,
    labels: Vec<(String, String)>,
    source_offset: i64,
    ingested_ms: i64,
}

impl EstimateRead {
    fn restored(self) -> RestoredId {
        let tokens = [
            self.input_tokens,
            self.output_tokens,
            self.cached_input_tokens,
            self.cache_write_tokens,
            self.reasoning_tokens,
            self.cache_write_1h_tokens,
        ]
        .map(|t| i64::try_from(t).unwrap_or(i64::MAX));
        let mut e = costpipe_schemas::UsageEvent::new(
            self.event_id,
            self.event_time_ms,
            &self.tenant_id,
            &self.provider,
            &self.model,
        );
        let some = |s: String| (!s.is_empty()).then_some(s);
        e.department = some(self.department);
        e.user_id = some(self.user_id);
        e.project_id = some(self.project_id);
        e.feature = some(self.feature);
        [
            e.input_tokens,
            e.output_tokens,
            e.cached_input_tokens,
            e.cache_write_tokens,
            e.reasoning_tokens,
        ] = [tokens[0], tokens[1], tokens[2], tokens[3], tokens[4]];
        e.cache_write_1h_tokens = Some(tokens[5]);
        e.labels = self.labels.into_iter().collect();
        let money = |t: i128| Decimal::from_i128_with_scale(t, MONEY_SCALE);
        let arc = |s: String| -> std::sync::Arc<str> { std::sync::Arc::from(s) };
        let priced = costpipe_pricing::PricedCost {
            price_model: (!self.price_model.is_empty()).then(|| arc(self.price_model)),
            cost: money(self.cost),
            currency: arc(self.currency),
            billing_cost: money(self.billing_cost),
            billing_currency: arc(self.billing_currency),
            exchange_rate: money(self.exchange_rate),
            tier_above: None,
            price_window: (!self.price_window.is_empty()).then(|| arc(self.price_window)),
            contract: false,
            adjustment_percent: Decimal::ZERO,
            unpriced: self
                .unpriced
                .then_some(costpipe_pricing::UnpricedReason::UnknownModel),
            unit_prices: Default::default(),
            cache_savings: money(self.cache_savings),
            billing_cache_savings: money(self.billing_cache_savings),
        };
        let fingerprint = Fingerprint::of(&e);
        RestoredId {
            id: self.event_id,
            fingerprint,
            at_ms: self.ingested_ms,
            estimate: Some(Box::new(Counted {
                // Restored windows hold it at its minute's start.
                window_time_ms: e.event_time.div_euclid(60_000) * 60_000,
                event: e,
                priced,
                offset: self.source_offset,
            })),
        }
    }
}

/// The real count of a correction stored by a complete epoch.
#[derive(Debug, Row, Deserialize)]
struct CorrectedRead {
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: uuid::Uuid,
    tenant_id: String,
    event_time_ms: i64,
    model: String,
    tokens: Vec<i64>,
    corrected_ms: i64,
}

/// `usage_cost_corrections` rows of estimates corrected by complete epochs of one topic and
/// partition: a marker exists for the epoch that wrote them. Four parameters: topic,
/// partition, and the same two again, which keep the marker lookup to that partition's
/// markers (the table's key prefix) instead of the whole table.
pub const COMPLETE_ESTIMATE_CORRECTIONS: &str =
    "reason = 'estimate_corrected' AND source_topic = ? \
    AND source_partition = ? AND (source_topic, source_partition, epoch_start, epoch_end) IN \
    (SELECT topic, partition, start_offset, end_offset FROM ingest_epochs_done \
    WHERE topic = ? AND partition = ?)";
/// What became of each event id (priced rows come from a view over the events table).
pub const FATES_TABLE: &str = "usage_event_fates";
/// `usage_event_fates.fate` values written here (Enum8).
const FATE_DUPLICATE: i8 = 2;
const FATE_DEAD_LETTER: i8 = 3;

#[derive(Row, Serialize)]
struct FateRow<'a> {
    tenant_id: &'a str,
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: uuid::Uuid,
    fate: i8,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    event_time: DateTime<Utc>,
    reason_code: &'a str,
    reason: &'a str,
    source_partition: i32,
    source_offset: i64,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    recorded_at: DateTime<Utc>,
}

/// Exact `Decimal(18, 6)` wire value of a percentage (catalog percents have at most 6 places).
pub fn percent_to_ticks(d: Decimal) -> i64 {
    let mut d = d;
    d.rescale(6);
    i64::try_from(d.mantissa()).unwrap_or(i64::MAX)
}

/// Exact `Decimal(38, 12)` wire value of `d`. Costs are computed with at most 12 decimal
/// places (see `costpipe_pricing`), so rescaling never rounds.
pub fn money_to_ticks(d: Decimal) -> i128 {
    // Fast path: scaling the mantissa up is exact and avoids `rescale`'s general
    // arithmetic, which showed in the profile (13 money columns per event).
    let scale = d.scale();
    if scale <= MONEY_SCALE {
        if let Some(ticks) = d.mantissa().checked_mul(10i128.pow(MONEY_SCALE - scale)) {
            return ticks;
        }
    }
    let mut d = d;
    d.rescale(MONEY_SCALE);
    d.mantissa()
}

#[derive(Row, Serialize)]
struct PositionRow<'a> {
    topic: &'a str,
    partition: i32,
    start_offset: i64,
    end_offset: i64,
    events: u64,
    dead_letters: u64,
    catalog_version: &'a str,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    written_at: DateTime<Utc>,
    generation: u64,
    kind: &'a str,
    owner: &'a str,
}

#[derive(Row, Serialize)]
struct DoneRow<'a> {
    topic: &'a str,
    partition: i32,
    start_offset: i64,
    end_offset: i64,
    generation: u64,
    events: u64,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    written_at: DateTime<Utc>,
}

#[derive(Row, Deserialize)]
struct IntentRead {
    start_offset: i64,
    end_offset: i64,
    events: u64,
    dead_letters: u64,
    catalog_version: String,
    generation: u64,
}

#[derive(Row, Deserialize)]
struct RangeRead {
    start_offset: i64,
    end_offset: i64,
}

#[derive(Row, Deserialize)]
struct FenceRead {
    claimed: u64,
    done: u64,
    /// Correction rows stored under the epoch's corrections token (0 when not asked).
    corrections: u64,
}

#[derive(Row, Deserialize)]
struct OwnerRead {
    owner: String,
}

#[derive(Row, Deserialize)]
struct IdRead {
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: uuid::Uuid,
    tenant_id: String,
    event_time_ms: i64,
    model: String,
    input_tokens: u64,
    output_tokens: u64,
    cached_input_tokens: u64,
    cache_write_tokens: u64,
    reasoning_tokens: u64,
    cache_write_1h_tokens: u64,
    ingested_ms: i64,
}

/// One minute of a partition's totals, read back to rebuild its windows.
#[derive(Debug, Row, Deserialize)]
pub struct WindowMinute {
    pub tenant_id: String,
    pub department: String,
    pub model: String,
    pub minute_s: i64,
    pub events: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    pub cache_write_1h_tokens: u64,
    /// `Decimal(38, 12)` as its wire integer.
    pub billing_cost_ticks: i128,
}

impl WindowMinute {
    /// The minute's amounts, exactly.
    pub fn amounts(&self) -> Amounts {
        Amounts {
            cost_ticks: self.billing_cost_ticks,
            tokens: [
                self.input_tokens,
                self.output_tokens,
                self.cached_input_tokens,
                self.cache_write_tokens,
                self.reasoning_tokens,
                self.cache_write_1h_tokens,
            ],
            events: self.events,
        }
    }
}

/// Connection to costpipe's database.
#[derive(Clone)]
pub struct ClickHouseStore {
    client: Client,
    /// The same connection settings without block compression, for the events insert.
    uncompressed: Client,
    database: String,
    timeout: std::time::Duration,
}

fn ms_to_datetime(ms: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default()
}

impl ClickHouseStore {
    /// A store for the database `args` names, with their timeouts (HTTP interface).
    pub fn new(args: &ClickHouseArgs) -> anyhow::Result<Self> {
        let client = args.client()?;
        Ok(ClickHouseStore {
            uncompressed: client
                .clone()
                .with_compression(clickhouse::Compression::None),
            client,
            database: args.database.clone(),
            timeout: args.timeout(),
        })
    }

    /// The client, bound to costpipe's database (for the other ClickHouse adapters).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs a call within the configured timeout (for the other ClickHouse adapters).
    pub(crate) async fn timed_call<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = clickhouse::error::Result<T>>,
    ) -> anyhow::Result<T> {
        self.timed(what, call).await
    }

    async fn timed<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = clickhouse::error::Result<T>>,
    ) -> anyhow::Result<T> {
        costpipe_clickhouse::with_timeout(self.timeout, what, call)
            .await
            .with_context(|| what.to_string())
    }

    /// Applies every migration; each is idempotent.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        Ok(costpipe_clickhouse::migrate(&self.client, &self.database).await?)
    }

    /// What the store knows about `partition` of `topic` (see `PartitionCheckpoint`).
    pub async fn checkpoint(
        &self,
        topic: &str,
        partition: i32,
    ) -> anyhow::Result<PartitionCheckpoint> {
        let intent = self
            .timed(
                "reading the latest intent",
                self.client
                    .query(
                        "SELECT start_offset, end_offset, events, dead_letters, catalog_version, generation \
                         FROM ingest_positions WHERE topic = ? AND partition = ? AND kind = 'intent' \
                         ORDER BY generation DESC, end_offset DESC LIMIT 1",
                    )
                    .bind(topic)
                    .bind(partition)
                    .fetch_optional::<IntentRead>(),
            )
            .await?;
        let since = intent.as_ref().map_or(i64::MIN, |i| i.start_offset);
        let mut done: Vec<(i64, i64)> = self
            .timed(
                "reading completion markers",
                self.client
                    .query(
                        "SELECT start_offset, end_offset FROM ingest_epochs_done \
                         WHERE topic = ? AND partition = ? AND end_offset >= ? \
                         ORDER BY end_offset DESC LIMIT 1000",
                    )
                    .bind(topic)
                    .bind(partition)
                    .bind(since)
                    .fetch_all::<RangeRead>(),
            )
            .await?
            .into_iter()
            .map(|r| (r.start_offset, r.end_offset))
            .collect();
        done.sort_unstable();
        let generation = self.claimed(topic, partition).await?;
        Ok(PartitionCheckpoint {
            latest_intent: intent.map(|i| EpochIntent {
                topic: topic.to_string(),
                partition,
                start_offset: i.start_offset,
                end_offset: i.end_offset,
                events: i.events,
                dead_letters: i.dead_letters,
                catalog_version: i.catalog_version,
                generation: i.generation,
            }),
            done,
            generation,
        })
    }

    async fn claimed(&self, topic: &str, partition: i32) -> anyhow::Result<u64> {
        self.timed(
            "reading the claimed generation",
            self.client
                .query(
                    "SELECT greatest( \
                     toUInt64(ifNull((SELECT max(generation) FROM ingest_positions WHERE topic = ? AND partition = ?), 0)), \
                     toUInt64(ifNull((SELECT max(generation) FROM ingest_epochs_done WHERE topic = ? AND partition = ?), 0)))",
                )
                .bind(topic)
                .bind(partition)
                .bind(topic)
                .bind(partition)
                .fetch_one::<u64>(),
        )
        .await
    }

    async fn insert_position(&self, row: &PositionRow<'_>, what: &str) -> anyhow::Result<()> {
        let mut insert = self
            .client
            .insert::<PositionRow<'_>>(POSITIONS_TABLE)
            .await?;
        self.timed(what, async {
            insert.write(row).await?;
            insert.end().await
        })
        .await
    }

    /// Records that `owner` (an instance's address) took `partition` up as `generation`.
    pub async fn claim(
        &self,
        topic: &str,
        partition: i32,
        generation: u64,
        owner: &str,
    ) -> anyhow::Result<()> {
        self.insert_position(
            &PositionRow {
                topic,
                partition,
                start_offset: 0,
                end_offset: 0,
                events: 0,
                dead_letters: 0,
                catalog_version: "",
                written_at: Utc::now(),
                generation,
                kind: "claim",
                owner,
            },
            "writing a claim",
        )
        .await
    }

    /// The owner named by the latest claim of `partition`, if any.
    pub async fn owner_of(&self, topic: &str, partition: i32) -> anyhow::Result<Option<String>> {
        Ok(self
            .timed(
                "reading a partition's owner",
                self.client
                    .query(
                        "SELECT owner FROM ingest_positions WHERE topic = ? AND partition = ? \
                         AND kind = 'claim' ORDER BY generation DESC LIMIT 1",
                    )
                    .bind(topic)
                    .bind(partition)
                    .fetch_optional::<OwnerRead>(),
            )
            .await?
            .map(|r| r.owner))
    }

    /// The instance that claimed `tenant`'s partition last, found from the partition its
    /// stored events came through.
    pub async fn tenant_owner(&self, topic: &str, tenant: &str) -> anyhow::Result<Option<String>> {
        let partition = self
            .timed(
                "finding a tenant's partition",
                self.client
                    .query(
                        "SELECT source_partition FROM usage_window_minute \
                         WHERE source_topic = ? AND tenant_id = ? LIMIT 1",
                    )
                    .bind(topic)
                    .bind(tenant)
                    .fetch_optional::<i32>(),
            )
            .await?;
        match partition {
            Some(p) => self.owner_of(topic, p).await,
            None => Ok(None),
        }
    }

    /// Stores an intent.
    pub async fn write_intent(&self, intent: &EpochIntent) -> anyhow::Result<()> {
        self.insert_position(
            &PositionRow {
                topic: &intent.topic,
                partition: intent.partition,
                start_offset: intent.start_offset,
                end_offset: intent.end_offset,
                events: intent.events,
                dead_letters: intent.dead_letters,
                catalog_version: &intent.catalog_version,
                written_at: Utc::now(),
                generation: intent.generation,
                kind: "intent",
                owner: "",
            },
            "writing an epoch intent",
        )
        .await
    }

    /// The fence and the marker check that precede every row or marker write, in one
    /// request. With `corrections_token`, correction rows already stored under it also
    /// count as complete (a retried corrections step).
    async fn verify(
        &self,
        topic: &str,
        partition: i32,
        (start, end): (i64, i64),
        generation: u64,
        corrections_token: Option<&str>,
    ) -> anyhow::Result<Written> {
        // The corrections count scans that table's `run_id`s, so it is asked only by the
        // (rare) epochs that carry corrections. A scalar subquery is Nullable, hence `ifNull`.
        let corrections = if corrections_token.is_some() {
            "toUInt64(ifNull((SELECT count() FROM usage_cost_corrections WHERE run_id = ?), 0))"
        } else {
            "toUInt64(0)"
        };
        let mut query = self
            .client
            .query(&format!(
                "SELECT \
                 toUInt64(ifNull((SELECT max(generation) FROM ingest_positions WHERE topic = ? AND partition = ?), 0)) AS claimed, \
                 toUInt64(ifNull((SELECT count() FROM ingest_epochs_done WHERE topic = ? AND partition = ? \
                  AND start_offset = ? AND end_offset = ?), 0)) AS done, \
                 {corrections} AS corrections"
            ))
            .bind(topic)
            .bind(partition)
            .bind(topic)
            .bind(partition)
            .bind(start)
            .bind(end);
        if let Some(token) = corrections_token {
            query = query.bind(token);
        }
        let read = self
            .timed(
                "checking the fence and the marker",
                query.fetch_one::<FenceRead>(),
            )
            .await?;
        Ok(if read.claimed > generation {
            Written::Fenced
        } else if read.done > 0 || read.corrections > 0 {
            Written::AlreadyComplete
        } else {
            Written::Now
        })
    }

    /// [`Self::verify`] for a sealed epoch.
    async fn verify_epoch(
        &self,
        epoch: &SealedEpoch,
        generation: u64,
        corrections_token: Option<&str>,
    ) -> anyhow::Result<Written> {
        self.verify(
            &epoch.topic,
            epoch.partition,
            (epoch.start_offset, epoch.end_offset),
            generation,
            corrections_token,
        )
        .await
    }

    /// Fenced and verified: the marker of an epoch without rows.
    pub async fn write_done(&self, topic: &str, done: &EpochDone) -> anyhow::Result<Written> {
        let verdict = self
            .verify(
                topic,
                done.partition,
                (done.start_offset, done.end_offset),
                done.generation,
                None,
            )
            .await?;
        if verdict != Written::Now {
            return Ok(verdict);
        }
        let mut insert = self.client.insert::<DoneRow<'_>>(DONE_TABLE).await?;
        let row = DoneRow {
            topic,
            partition: done.partition,
            start_offset: done.start_offset,
            end_offset: done.end_offset,
            generation: done.generation,
            events: 0,
            written_at: Utc::now(),
        };
        self.timed("writing a completion marker", async {
            insert.write(&row).await?;
            insert.end().await
        })
        .await?;
        Ok(Written::Now)
    }

    /// Fenced and verified: the epoch's events in one insert under `token`; the views derive
    /// the minute rollup, the window minutes and the completion marker from it.
    pub async fn write_rows(
        &self,
        epoch: &SealedEpoch,
        token: &str,
        generation: u64,
    ) -> anyhow::Result<Written> {
        let verdict = self.verify_epoch(epoch, generation, None).await?;
        if verdict != Written::Now {
            return Ok(verdict);
        }
        let Some(block) = events_block(epoch, generation, Utc::now().timestamp_millis()) else {
            return Ok(Written::Now);
        };
        // The block goes uncompressed, as the crate's own Native insert does: on the hosts
        // this runs on, compressing costs more CPU than the bytes it saves.
        let mut insert = self
            .uncompressed
            .insert_formatted_with(format!("INSERT INTO {EVENTS_TABLE} FORMAT Native"))
            .with_setting("insert_deduplication_token", token)
            .with_setting("deduplicate_blocks_in_dependent_materialized_views", "1");
        self.timed("writing priced events", async {
            for chunk in block.chunks {
                insert.send(chunk).await?;
            }
            insert.end().await
        })
        .await?;
        Ok(Written::Now)
    }

    /// Fenced and verified: the epoch's corrections (two rows each) in one insert under
    /// `token`, unless the epoch's marker or rows under `token` are already stored.
    pub async fn write_corrections(
        &self,
        epoch: &SealedEpoch,
        token: &str,
        generation: u64,
    ) -> anyhow::Result<Written> {
        if epoch.corrections.is_empty() {
            return self.verify_epoch(epoch, generation, None).await;
        }
        let verdict = self.verify_epoch(epoch, generation, Some(token)).await?;
        if verdict != Written::Now {
            return Ok(verdict);
        }
        let now = Utc::now();
        let mut insert = self
            .client
            .insert::<CorrectionRow<'_>>(CORRECTIONS_TABLE)
            .await?
            .with_setting("insert_deduplication_token", token)
            .with_setting("deduplicate_blocks_in_dependent_materialized_views", "1");
        self.timed("writing estimate corrections", async {
            for c in &epoch.corrections {
                let old = &c.estimate;
                for row in [
                    CorrectionRow::of(
                        token,
                        epoch,
                        generation,
                        &old.event,
                        &old.priced,
                        old.offset,
                        -1,
                        now,
                    ),
                    CorrectionRow::of(
                        token,
                        epoch,
                        generation,
                        &c.real.event,
                        &c.real.priced,
                        c.real.offset,
                        1,
                        now,
                    ),
                ] {
                    insert.write(&row).await?;
                }
            }
            insert.end().await
        })
        .await?;
        Ok(Written::Now)
    }

    /// Records the fate of the epoch's dropped duplicates and of its dead letters that decode
    /// as usage events (a conflict always does), for HTTP ingest's event status. At least
    /// once: a repeated row is identical (same record, partition and offset) and the reader
    /// takes DISTINCT rows. Nothing is sent for an epoch with neither, i.e. almost always.
    pub async fn write_fates(&self, epoch: &SealedEpoch) -> anyhow::Result<()> {
        let codec = costpipe_schemas::UsageCodec::current();
        let letters: Vec<(
            costpipe_schemas::UsageEvent,
            &costpipe_aggregator_core::DeadLetter,
        )> = epoch
            .dead_letters
            .iter()
            .filter_map(|d| codec.decode(&d.payload).ok().map(|e| (e, d)))
            .collect();
        if epoch.duplicates.is_empty() && letters.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let mut insert = self.client.insert::<FateRow<'_>>(FATES_TABLE).await?;
        self.timed("writing event fates", async {
            for d in &epoch.duplicates {
                insert
                    .write(&FateRow {
                        tenant_id: &d.tenant_id,
                        event_id: d.event_id,
                        fate: FATE_DUPLICATE,
                        event_time: ms_to_datetime(d.event_time),
                        reason_code: "",
                        reason: "",
                        source_partition: d.partition,
                        source_offset: d.offset,
                        recorded_at: now,
                    })
                    .await?;
            }
            for (e, d) in &letters {
                insert
                    .write(&FateRow {
                        tenant_id: &e.tenant_id,
                        event_id: e.event_id,
                        fate: FATE_DEAD_LETTER,
                        event_time: ms_to_datetime(e.event_time),
                        reason_code: d.reason_code,
                        reason: &d.reason,
                        source_partition: d.partition,
                        source_offset: d.offset,
                        recorded_at: now,
                    })
                    .await?;
            }
            insert.end().await
        })
        .await
    }

    /// Ids of `partition`'s events stored at or after `since_ms`, oldest first; then its
    /// estimates stored at or after `estimates_since_ms` (see the core's `Store::recent_ids`).
    pub async fn recent_ids(
        &self,
        topic: &str,
        partition: i32,
        since_ms: i64,
        estimates_since_ms: i64,
    ) -> anyhow::Result<Vec<RestoredId>> {
        let rows = self
            .timed(
                "reading recent event ids",
                self.client
                    .query(
                        "SELECT event_id, tenant_id, toUnixTimestamp64Milli(event_time) AS event_time_ms, model, \
                         input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, reasoning_tokens, \
                         cache_write_1h_tokens, toUnixTimestamp64Milli(ingested_at) AS ingested_ms \
                         FROM usage_events_priced \
                         WHERE source_topic = ? AND source_partition = ? AND ingested_at >= fromUnixTimestamp64Milli(?) \
                         ORDER BY ingested_at",
                    )
                    .bind(topic)
                    .bind(partition)
                    .bind(since_ms.max(0))
                    .fetch_all::<IdRead>(),
            )
            .await?;
        // Estimates (rare) with what a real count must take out, over the longer estimate
        // horizon; after the plain ids, so that they add their amounts to the ids already
        // read. `estimated` has a min-max index (078): granules without one are skipped.
        let estimates = self
            .timed(
                "reading estimated events",
                self.client
                    .query(
                        "SELECT event_id, tenant_id, department, user_id, project_id, feature, provider, model, price_model, \
                         toUnixTimestamp64Milli(event_time) AS event_time_ms, input_tokens, output_tokens, cached_input_tokens, \
                         cache_write_tokens, reasoning_tokens, cache_write_1h_tokens, cost, currency, billing_cost, billing_currency, \
                         exchange_rate, cache_savings, billing_cache_savings, unpriced, price_window, labels, source_offset, \
                         toUnixTimestamp64Milli(ingested_at) AS ingested_ms \
                         FROM usage_events_priced \
                         WHERE source_topic = ? AND source_partition = ? AND ingested_at >= fromUnixTimestamp64Milli(?) \
                         AND estimated ORDER BY ingested_at",
                    )
                    .bind(topic)
                    .bind(partition)
                    .bind(estimates_since_ms.max(0))
                    .fetch_all::<EstimateRead>(),
            )
            .await?;
        // Then the real counts that replaced estimates, by complete epochs only: a correction
        // of the epoch being rebuilt is decided again by the rebuild.
        let corrected = self
            .timed(
                "reading corrected estimates",
                self.client
                    .query(&format!(
                        "SELECT event_id, toString(tenant_id) AS tenant_id, toUnixTimestamp64Milli(event_time) AS event_time_ms, \
                         toString(model) AS model, [input_tokens_delta, output_tokens_delta, cached_input_tokens_delta, \
                         cache_write_tokens_delta, reasoning_tokens_delta, cache_write_1h_tokens_delta] AS tokens, \
                         toUnixTimestamp64Milli(corrected_at) AS corrected_ms \
                         FROM usage_cost_corrections WHERE sign = 1 AND {COMPLETE_ESTIMATE_CORRECTIONS} \
                         AND corrected_at >= fromUnixTimestamp64Milli(?) ORDER BY corrected_at"
                    ))
                    .bind(topic)
                    .bind(partition)
                    .bind(topic)
                    .bind(partition)
                    .bind(since_ms.min(estimates_since_ms).max(0))
                    .fetch_all::<CorrectedRead>(),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let tokens = [
                    r.input_tokens,
                    r.output_tokens,
                    r.cached_input_tokens,
                    r.cache_write_tokens,
                    r.reasoning_tokens,
                    r.cache_write_1h_tokens,
                ]
                .map(|t| i64::try_from(t).unwrap_or(i64::MAX));
                let fp = Fingerprint::of_fields(FingerprintFields {
                    tenant_id: &r.tenant_id,
                    event_time: r.event_time_ms,
                    model: &r.model,
                    tokens,
                });
                RestoredId {
                    id: r.event_id,
                    fingerprint: fp,
                    at_ms: r.ingested_ms,
                    estimate: None,
                }
            })
            .chain(estimates.into_iter().map(EstimateRead::restored))
            .chain(corrected.into_iter().map(|r| {
                let mut tokens = [0i64; 6];
                for (t, v) in tokens.iter_mut().zip(r.tokens) {
                    *t = v;
                }
                RestoredId {
                    id: r.event_id,
                    fingerprint: Fingerprint::of_fields(FingerprintFields {
                        tenant_id: &r.tenant_id,
                        event_time: r.event_time_ms,
                        model: &r.model,
                        tokens,
                    }),
                    at_ms: r.corrected_ms,
                    estimate: None,
                }
            }))
            .collect())
    }

    /// `partition`'s minute totals since `since_ms` (event time), to rebuild its windows.
    pub async fn window_minutes(
        &self,
        topic: &str,
        partition: i32,
        since_ms: i64,
    ) -> anyhow::Result<Vec<WindowMinute>> {
        self.timed(
            "reading window minutes",
            self.client
                .query(
                    &format!("SELECT tenant_id, department, model, minute_s, \
                     toUInt64(greatest(sum(e), 0)) AS events, toUInt64(greatest(sum(t0), 0)) AS input_tokens, \
                     toUInt64(greatest(sum(t1), 0)) AS output_tokens, toUInt64(greatest(sum(t2), 0)) AS cached_input_tokens, \
                     toUInt64(greatest(sum(t3), 0)) AS cache_write_tokens, toUInt64(greatest(sum(t4), 0)) AS reasoning_tokens, \
                     toUInt64(greatest(sum(t5), 0)) AS cache_write_1h_tokens, sum(c) AS billing_cost_ticks FROM ( \
                     SELECT toString(tenant_id) AS tenant_id, toString(department) AS department, toString(model) AS model, \
                     toInt64(toUnixTimestamp(minute)) AS minute_s, toInt64(events) AS e, toInt64(input_tokens) AS t0, \
                     toInt64(output_tokens) AS t1, toInt64(cached_input_tokens) AS t2, toInt64(cache_write_tokens) AS t3, \
                     toInt64(reasoning_tokens) AS t4, toInt64(cache_write_1h_tokens) AS t5, billing_cost AS c \
                     FROM usage_window_minute \
                     WHERE source_topic = ? AND source_partition = ? AND minute >= toDateTime(?) \
                     UNION ALL \
                     SELECT toString(tenant_id), toString(department), toString(model), \
                     toInt64(toUnixTimestamp(toStartOfMinute(event_time))), events_delta, input_tokens_delta, \
                     output_tokens_delta, cached_input_tokens_delta, cache_write_tokens_delta, reasoning_tokens_delta, \
                     cache_write_1h_tokens_delta, billing_cost_delta \
                     FROM usage_cost_corrections WHERE {COMPLETE_ESTIMATE_CORRECTIONS} \
                     AND event_time >= toDateTime64(?, 3)) \
                     GROUP BY tenant_id, department, model, minute_s HAVING events > 0 OR billing_cost_ticks != 0 \
                     ORDER BY minute_s"),
                )
                .bind(topic)
                .bind(partition)
                .bind((since_ms / 1000).max(0))
                .bind(topic)
                .bind(partition)
                .bind(topic)
                .bind(partition)
                .bind((since_ms / 1000).max(0))
                .fetch_all::<WindowMinute>(),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn money_ticks_are_exact() {
        assert_eq!(money_to_ticks(dec!(0.000000525)), 525_000);
        assert_eq!(money_to_ticks(dec!(12.5)), 12_500_000_000_000);
        assert_eq!(money_to_ticks(Decimal::ZERO), 0);
        assert_eq!(money_to_ticks(dec!(-3.25)), -3_250_000_000_000);
        assert_eq!(money_to_ticks(Decimal::MAX), {
            let mut d = Decimal::MAX;
            d.rescale(MONEY_SCALE);
            d.mantissa()
        });
        // More places than the column holds: rounded as `rescale` rounds.
        assert_eq!(money_to_ticks(dec!(0.0000000000015)), 2);
    }
}
