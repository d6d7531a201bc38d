//! One epoch's priced events as a ClickHouse `Native` block, encoded in one pass over the
//! events into one buffer per column.
//!
//! Why Native and not RowBinary: ClickHouse parses a RowBinary row one value at a time, and
//! every `LowCardinality` value goes through a dictionary lookup on the way; measured on the
//! local stack, parsing was two thirds of the server's cost of the events insert (200,000
//! rows: 0.98 s of server CPU as RowBinary, 0.33 s as Native).
//!
//! Why not the `clickhouse` crate's `BlockBuilder`: it fills one column at a time, so an epoch
//! of 200,000 events (~80 MB of decoded events) streams through the cache once per column,
//! 40 times; then its writer slices and copies every string again. That was a quarter of the
//! aggregator's CPU (`aggregator/BENCHMARKS.md`). Here each event is read once and its values
//! are appended to the column buffers, which are sent as they are, without another copy.
//!
//! The format (<https://clickhouse.com/docs/interfaces/formats/Native>): the number of
//! columns and rows as varints, then per column its name, its type name, and its values:
//! fixed-width values little-endian; strings as a varint length and the bytes; `Nullable(T)`
//! as a null map (one byte per row) followed by `T`'s values; `Map(K, V)` as the cumulative
//! end index of each row's entries (`UInt64`) followed by every key, then every value.
//! `LowCardinality(String)` columns are sent as `String`, which ClickHouse converts on
//! insert. The columns mirror `schemas/clickhouse/002_usage_events_priced.sql` and its later
//! `ADD COLUMN`s; a unit test decodes a block and compares its columns with the migrations'.

use bytes::Bytes;

use costpipe_aggregator_core::recent_ids::is_estimated;
use costpipe_aggregator_core::{PricedEvent, SealedEpoch};

use crate::clickhouse_store::{money_to_ticks, percent_to_ticks};

/// An encoded block, ready to be sent as the body of `INSERT … FORMAT Native`: the block
/// header, then one chunk per column.
#[derive(Debug)]
pub struct EventsBlock {
    pub chunks: Vec<Bytes>,
    pub rows: usize,
}

/// ClickHouse's unsigned LEB128.
fn put_varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_varint(buf, s.len() as u64);
    buf.extend_from_slice(s.as_bytes());
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("")
}

/// One column being filled: its header already written, values appended.
struct Column {
    buf: Vec<u8>,
}

impl Column {
    /// A column whose values take about `bytes_per_row` bytes each.
    fn new(name: &str, type_name: &str, rows: usize, bytes_per_row: usize) -> Self {
        let header = name.len() + type_name.len() + 4;
        let mut buf = Vec::with_capacity(header + rows.saturating_mul(bytes_per_row));
        put_str(&mut buf, name);
        put_str(&mut buf, type_name);
        Column { buf }
    }

    fn str(&mut self, s: &str) {
        put_str(&mut self.buf, s);
    }

    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn i128(&mut self, v: i128) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }

    fn uuid(&mut self, id: &uuid::Uuid) {
        // Two little-endian u64 halves, high half first (ClickHouse's UUID layout).
        let (high, low) = id.as_u64_pair();
        self.u64(high);
        self.u64(low);
    }

    fn append(&mut self, other: Vec<u8>) {
        self.buf.extend_from_slice(&other);
    }

    fn done(self) -> Bytes {
        Bytes::from(self.buf)
    }
}

/// A `Map(String, String)` column: offsets, keys and values fill separately and are joined
/// at the end.
struct MapColumn {
    head: Column,
    end: u64,
    keys: Vec<u8>,
    values: Vec<u8>,
}

impl MapColumn {
    fn new(name: &str, rows: usize) -> Self {
        MapColumn {
            head: Column::new(name, "Map(String, String)", rows, 8),
            end: 0,
            keys: Vec::new(),
            values: Vec::new(),
        }
    }

    fn push<'a>(&mut self, entries: impl Iterator<Item = (&'a String, &'a String)>) {
        for (k, v) in entries {
            put_str(&mut self.keys, k);
            put_str(&mut self.values, v);
            self.end += 1;
        }
        self.head.u64(self.end);
    }

    fn done(mut self) -> Bytes {
        self.head.append(self.keys);
        self.head.append(self.values);
        self.head.done()
    }
}

/// A `Nullable(UInt64)` column: the null map and the values fill separately.
struct NullableU64Column {
    head: Column,
    values: Vec<u8>,
}

impl NullableU64Column {
    fn new(name: &str, rows: usize) -> Self {
        NullableU64Column {
            head: Column::new(name, "Nullable(UInt64)", rows, 9),
            values: Vec::with_capacity(rows.saturating_mul(8)),
        }
    }

    fn push(&mut self, v: Option<u64>) {
        self.head.bool(v.is_none());
        self.values.extend_from_slice(&v.unwrap_or(0).to_le_bytes());
    }

    fn done(mut self) -> Bytes {
        self.head.append(self.values);
        self.head.done()
    }
}

const MILLIS_UTC: &str = "DateTime64(3, 'UTC')";
const MONEY: &str = "Decimal(38, 12)";
const PERCENT: &str = "Decimal(18, 6)";

/// The block of `epoch`'s events as written by `generation`, stamped `ingested_at_ms`.
/// `None` for an epoch without events.
pub fn events_block(
    epoch: &SealedEpoch,
    generation: u64,
    ingested_at_ms: i64,
) -> Option<EventsBlock> {
    let events: &[PricedEvent] = &epoch.events;
    let rows = events.len();
    if rows == 0 {
        return None;
    }
    let col = |name: &str, type_name: &str, width: usize| Column::new(name, type_name, rows, width);
    let mut event_id = col("event_id", "UUID", 16);
    let mut event_time = col("event_time", MILLIS_UTC, 8);
    let mut tenant_id = col("tenant_id", "String", 12);
    let mut department = col("department", "String", 12);
    let mut user_id = col("user_id", "String", 16);
    let mut project_id = col("project_id", "String", 12);
    let mut feature = col("feature", "String", 12);
    let mut environment = col("environment", "String", 6);
    let mut provider = col("provider", "String", 10);
    let mut model = col("model", "String", 20);
    let mut price_model = col("price_model", "String", 20);
    let mut input_tokens = col("input_tokens", "UInt64", 8);
    let mut output_tokens = col("output_tokens", "UInt64", 8);
    let mut cached_input_tokens = col("cached_input_tokens", "UInt64", 8);
    let mut cache_write_tokens = col("cache_write_tokens", "UInt64", 8);
    let mut reasoning_tokens = col("reasoning_tokens", "UInt64", 8);
    let mut cache_write_1h_tokens = col("cache_write_1h_tokens", "UInt64", 8);
    let mut cost = col("cost", MONEY, 16);
    let mut currency = col("currency", "String", 4);
    let mut billing_cost = col("billing_cost", MONEY, 16);
    let mut billing_currency = col("billing_currency", "String", 4);
    let mut exchange_rate = col("exchange_rate", MONEY, 16);
    let mut tier_above = NullableU64Column::new("tier_above", rows);
    let mut contract_price = col("contract_price", "Bool", 1);
    let mut adjustment_percent = col("adjustment_percent", PERCENT, 8);
    let mut unpriced = col("unpriced", "Bool", 1);
    let mut unpriced_reason = col("unpriced_reason", "String", 1);
    let mut catalog_version = col("catalog_version", "String", 1 + epoch.catalog_version.len());
    let mut request_id = col("request_id", "String", 37);
    let mut trace_id = col("trace_id", "String", 33);
    let mut span_name = col("span_name", "String", 12);
    let mut labels = MapColumn::new("labels", rows);
    let mut source_partition = col("source_partition", "Int32", 4);
    let mut source_offset = col("source_offset", "Int64", 8);
    let mut ingested_at = col("ingested_at", MILLIS_UTC, 8);
    let mut source_topic = col("source_topic", "String", 1 + epoch.topic.len());
    let mut epoch_start = col("epoch_start", "Int64", 8);
    let mut epoch_end = col("epoch_end", "Int64", 8);
    let mut generation_col = col("generation", "UInt64", 8);
    let mut late = col("late", "Bool", 1);
    let mut price_window = col("price_window", "String", 1);
    // 060: the prices applied per token kind, and what cached reads saved.
    let mut unit_price_input = col("unit_price_input", MONEY, 16);
    let mut unit_price_cached_input = col("unit_price_cached_input", MONEY, 16);
    let mut unit_price_cache_write_5m = col("unit_price_cache_write_5m", MONEY, 16);
    let mut unit_price_cache_write_1h = col("unit_price_cache_write_1h", MONEY, 16);
    let mut unit_price_output = col("unit_price_output", MONEY, 16);
    let mut unit_price_reasoning = col("unit_price_reasoning", MONEY, 16);
    let mut unit_price_request = col("unit_price_request", MONEY, 16);
    let mut cache_savings = col("cache_savings", MONEY, 16);
    let mut billing_cache_savings = col("billing_cache_savings", MONEY, 16);
    // 078: estimated tokens, for the restore of estimates awaiting their real count.
    let mut estimated = col("estimated", "Bool", 1);

    for p in events {
        let e = &p.event;
        let c = &p.priced;
        event_id.uuid(&e.event_id);
        event_time.i64(e.event_time);
        tenant_id.str(&e.tenant_id);
        department.str(opt(&e.department));
        user_id.str(opt(&e.user_id));
        project_id.str(opt(&e.project_id));
        feature.str(opt(&e.feature));
        environment.str(opt(&e.environment));
        provider.str(&e.provider);
        model.str(&e.model);
        price_model.str(c.price_model.as_deref().unwrap_or(""));
        // Token counts are validated non-negative and bounded before pricing.
        input_tokens.u64(e.input_tokens as u64);
        output_tokens.u64(e.output_tokens as u64);
        cached_input_tokens.u64(e.cached_input_tokens as u64);
        cache_write_tokens.u64(e.cache_write_tokens as u64);
        reasoning_tokens.u64(e.reasoning_tokens as u64);
        cache_write_1h_tokens.u64(e.cache_write_1h_tokens.unwrap_or(0) as u64);
        cost.i128(money_to_ticks(c.cost));
        currency.str(&c.currency);
        billing_cost.i128(money_to_ticks(c.billing_cost));
        billing_currency.str(&c.billing_currency);
        exchange_rate.i128(money_to_ticks(c.exchange_rate));
        tier_above.push(c.tier_above);
        contract_price.bool(c.contract);
        adjustment_percent.i64(percent_to_ticks(c.adjustment_percent));
        unpriced.bool(c.is_unpriced());
        unpriced_reason.str(c.unpriced.map_or("", |r| r.as_str()));
        catalog_version.str(&epoch.catalog_version);
        request_id.str(opt(&e.request_id));
        trace_id.str(opt(&e.trace_id));
        span_name.str(opt(&e.span_name));
        labels.push(e.labels.iter());
        source_partition.i32(p.partition);
        source_offset.i64(p.offset);
        ingested_at.i64(ingested_at_ms);
        source_topic.str(&epoch.topic);
        epoch_start.i64(epoch.start_offset);
        epoch_end.i64(epoch.end_offset);
        generation_col.u64(generation);
        late.bool(p.late);
        price_window.str(c.price_window.as_deref().unwrap_or(""));
        let u = &c.unit_prices;
        unit_price_input.i128(money_to_ticks(u.input));
        unit_price_cached_input.i128(money_to_ticks(u.cached_input));
        unit_price_cache_write_5m.i128(money_to_ticks(u.cache_write_5m));
        unit_price_cache_write_1h.i128(money_to_ticks(u.cache_write_1h));
        unit_price_output.i128(money_to_ticks(u.output));
        unit_price_reasoning.i128(money_to_ticks(u.reasoning));
        unit_price_request.i128(money_to_ticks(u.per_request));
        cache_savings.i128(money_to_ticks(c.cache_savings));
        billing_cache_savings.i128(money_to_ticks(c.billing_cache_savings));
        estimated.bool(is_estimated(e));
    }

    let mut head = Vec::with_capacity(16);
    let columns = vec![
        event_id.done(),
        event_time.done(),
        tenant_id.done(),
        department.done(),
        user_id.done(),
        project_id.done(),
        feature.done(),
        environment.done(),
        provider.done(),
        model.done(),
        price_model.done(),
        input_tokens.done(),
        output_tokens.done(),
        cached_input_tokens.done(),
        cache_write_tokens.done(),
        reasoning_tokens.done(),
        cache_write_1h_tokens.done(),
        cost.done(),
        currency.done(),
        billing_cost.done(),
        billing_currency.done(),
        exchange_rate.done(),
        tier_above.done(),
        contract_price.done(),
        adjustment_percent.done(),
        unpriced.done(),
        unpriced_reason.done(),
        catalog_version.done(),
        request_id.done(),
        trace_id.done(),
        span_name.done(),
        labels.done(),
        source_partition.done(),
        source_offset.done(),
        ingested_at.done(),
        source_topic.done(),
        epoch_start.done(),
        epoch_end.done(),
        generation_col.done(),
        late.done(),
        price_window.done(),
        unit_price_input.done(),
        unit_price_cached_input.done(),
        unit_price_cache_write_5m.done(),
        unit_price_cache_write_1h.done(),
        unit_price_output.done(),
        unit_price_reasoning.done(),
        unit_price_request.done(),
        cache_savings.done(),
        billing_cache_savings.done(),
        estimated.done(),
    ];
    put_varint(&mut head, columns.len() as u64);
    put_varint(&mut head, rows as u64);
    let mut chunks = Vec::with_capacity(columns.len() + 1);
    chunks.push(Bytes::from(head));
    chunks.extend(columns);
    Some(EventsBlock { chunks, rows })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use costpipe_pricing::{price_event, Catalog};
    use costpipe_schemas::clickhouse_ddl::MIGRATIONS;
    use costpipe_schemas::UsageEvent;
    use rust_decimal::Decimal;

    use super::*;

    /// The events table's columns as the migrations declare them: the `CREATE TABLE` body
    /// plus every later `ADD COLUMN`, with their types.
    fn table_columns() -> BTreeMap<String, String> {
        let mut columns = BTreeMap::new();
        for m in MIGRATIONS {
            let sql = m.render("db");
            if sql.contains("CREATE TABLE IF NOT EXISTS db.usage_events_priced") {
                let body = &sql[sql.find('(').unwrap() + 1..sql.find("\n)").unwrap()];
                for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
                    let (name, ty) = line.split_once(char::is_whitespace).unwrap();
                    columns.insert(name.to_owned(), ty.trim().trim_end_matches(',').to_owned());
                }
            }
            if sql.contains("ALTER TABLE db.usage_events_priced") {
                for part in sql.split("ADD COLUMN IF NOT EXISTS").skip(1) {
                    let (name, rest) = part.trim().split_once(char::is_whitespace).unwrap();
                    // The type runs to its DEFAULT, or to the end of the clause.
                    let ty = rest.split(" DEFAULT").next().unwrap();
                    let ty = ty.trim().trim_end_matches(',').trim();
                    columns.insert(name.to_owned(), ty.to_owned());
                }
            }
        }
        columns
    }

    /// A minimal Native reader for the types this encoder writes; independent of the encoder
    /// so that a wrong length or layout shows up as a decode failure.
    struct Reader<'a> {
        bytes: &'a [u8],
    }

    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> &'a [u8] {
            let (head, rest) = self.bytes.split_at(n);
            self.bytes = rest;
            head
        }
        fn varint(&mut self) -> u64 {
            let (mut value, mut shift) = (0u64, 0);
            loop {
                let b = self.take(1)[0];
                value |= u64::from(b & 0x7f) << shift;
                if b < 0x80 {
                    return value;
                }
                shift += 7;
            }
        }
        fn string(&mut self) -> String {
            let n = self.varint() as usize;
            String::from_utf8(self.take(n).to_vec()).unwrap()
        }
        fn u64(&mut self) -> u64 {
            u64::from_le_bytes(self.take(8).try_into().unwrap())
        }
        /// Values of one column of `rows` rows, each rendered as text.
        fn values(&mut self, ty: &str, rows: usize) -> Vec<String> {
            let fixed = |r: &mut Self, width: usize| {
                (0..rows)
                    .map(|_| format!("{:?}", r.take(width)))
                    .collect::<Vec<_>>()
            };
            match ty {
                "String" => (0..rows).map(|_| self.string()).collect(),
                "UUID" | "Decimal(38, 12)" => fixed(self, 16),
                "DateTime64(3, 'UTC')" | "UInt64" | "Int64" | "Decimal(18, 6)" => fixed(self, 8),
                "Int32" => fixed(self, 4),
                "Bool" => fixed(self, 1),
                "Nullable(UInt64)" => {
                    let nulls = self.take(rows).to_vec();
                    let values = fixed(self, 8);
                    nulls
                        .iter()
                        .zip(values)
                        .map(|(n, v)| if *n == 1 { "NULL".into() } else { v })
                        .collect()
                }
                "Map(String, String)" => {
                    let ends: Vec<u64> = (0..rows).map(|_| self.u64()).collect();
                    let total = ends.last().copied().unwrap_or(0) as usize;
                    let keys: Vec<String> = (0..total).map(|_| self.string()).collect();
                    let vals: Vec<String> = (0..total).map(|_| self.string()).collect();
                    let mut start = 0;
                    ends.iter()
                        .map(|&end| {
                            let row: Vec<String> = (start..end as usize)
                                .map(|i| format!("{}={}", keys[i], vals[i]))
                                .collect();
                            start = end as usize;
                            row.join(",")
                        })
                        .collect()
                }
                other => panic!("the test reader does not know {other}"),
            }
        }
    }

    /// Column name → (type, values).
    fn decode(block: &EventsBlock) -> BTreeMap<String, (String, Vec<String>)> {
        let bytes: Vec<u8> = block.chunks.iter().flat_map(|c| c.to_vec()).collect();
        let mut r = Reader { bytes: &bytes };
        let columns = r.varint();
        let rows = r.varint() as usize;
        assert_eq!(rows, block.rows);
        let mut out = BTreeMap::new();
        for _ in 0..columns {
            let name = r.string();
            let ty = r.string();
            let values = r.values(&ty, rows);
            out.insert(name, (ty, values));
        }
        assert!(r.bytes.is_empty(), "{} bytes left over", r.bytes.len());
        out
    }

    fn epoch_of(events: Vec<UsageEvent>) -> SealedEpoch {
        let catalog = Catalog::builtin();
        let events: Vec<PricedEvent> = events
            .into_iter()
            .enumerate()
            .map(|(i, e)| PricedEvent {
                priced: price_event(&catalog, &e),
                event: e,
                partition: 3,
                offset: 10 + i as i64,
                late: i == 1,
            })
            .collect();
        SealedEpoch {
            topic: "usage".into(),
            partition: 3,
            start_offset: 10,
            end_offset: 10 + events.len() as i64,
            catalog_version: "v".into(),
            events,
            dead_letters: vec![],
            duplicates: vec![],
            corrections: vec![],
            replay: false,
        }
    }

    /// 2026-11-15T00:00:00Z, inside the built-in catalog's price periods.
    const NOV_15: i64 = 1_794_700_800_000;

    fn two_events() -> Vec<UsageEvent> {
        let mut a = UsageEvent::new(uuid::Uuid::from_u128(1), NOV_15, "acme", "openai", "gpt-4o");
        a.input_tokens = 1_000;
        a.department = Some("research".into());
        a.labels.insert("team".into(), "core".into());
        a.labels.insert("ünï".into(), "{'\\\"}".into());
        let mut b = UsageEvent::new(
            uuid::Uuid::from_u128(2),
            NOV_15 + 1,
            "globex",
            "acme-ai",
            "nope",
        );
        b.output_tokens = 7;
        b.request_id = Some("r".repeat(300));
        b.labels.insert("costpipe_usage".into(), "estimated".into());
        vec![a, b]
    }

    #[test]
    fn the_block_fills_every_column_of_the_events_table_with_its_type() {
        // A column the block leaves out would silently get its default in ClickHouse.
        let block = events_block(&epoch_of(two_events()), 1, 0).unwrap();
        let sent: BTreeMap<String, String> = decode(&block)
            .into_iter()
            .map(|(name, (ty, _))| (name, ty))
            .collect();
        let declared: BTreeMap<String, String> = table_columns()
            .into_iter()
            .map(|(name, ty)| {
                // LowCardinality(String) is sent as String (see the module doc).
                let ty = if ty == "LowCardinality(String)" {
                    "String".to_owned()
                } else {
                    ty
                };
                (name, ty)
            })
            .collect();
        assert_eq!(
            sent.keys().collect::<BTreeSet<_>>(),
            declared.keys().collect::<BTreeSet<_>>()
        );
        assert_eq!(sent, declared);
    }

    #[test]
    fn values_land_in_their_rows() {
        let events = two_events();
        let block = events_block(&epoch_of(events.clone()), 7, 99).unwrap();
        let cols = decode(&block);
        let strings = |name: &str| cols[name].1.clone();
        assert_eq!(strings("tenant_id"), ["acme", "globex"]);
        assert_eq!(strings("department"), ["research", ""]);
        assert_eq!(strings("request_id")[1], "r".repeat(300));
        assert_eq!(
            strings("labels"),
            ["team=core,ünï={'\\\"}", "costpipe_usage=estimated"]
        );
        assert_eq!(strings("source_topic"), ["usage", "usage"]);
        let le = |v: i128, width: usize| format!("{:?}", &v.to_le_bytes()[..width]);
        assert_eq!(strings("generation"), [le(7, 8), le(7, 8)]);
        assert_eq!(strings("ingested_at"), [le(99, 8), le(99, 8)]);
        assert_eq!(strings("source_offset"), [le(10, 8), le(11, 8)]);
        assert_eq!(strings("late"), [le(0, 1), le(1, 1)]);
        assert_eq!(strings("estimated"), [le(0, 1), le(1, 1)]);
        assert_eq!(strings("tier_above"), ["NULL", "NULL"]);
        // UUID 1: high half 0 first, then the low half 1.
        assert_eq!(
            strings("event_id")[0],
            format!("{:?}", [[0u8; 8], 1u64.to_le_bytes()].concat())
        );
        // The unknown model is unpriced, at zero cost.
        assert_eq!(strings("unpriced")[1], le(1, 1));
        assert_eq!(strings("cost")[1], le(0, 16));
        let catalog = Catalog::builtin();
        let priced = price_event(&catalog, &events[0]);
        assert!(priced.cost > Decimal::ZERO);
        assert_eq!(strings("cost")[0], le(money_to_ticks(priced.cost), 16));
    }

    #[test]
    fn an_epoch_without_events_has_no_block() {
        assert!(events_block(&epoch_of(vec![]), 1, 0).is_none());
    }
}
