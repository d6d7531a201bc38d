//! What the usage metrics cost per event, against the consuming hot path in the same run.
//!
//! - **baseline**: `Processor::handle_record` for one epoch of encoded records (decode,
//!   validate, price, deduplicate, windows): the per-event work of the aggregator's
//!   consuming task, without Kafka and ClickHouse;
//! - **tally**: `EpochTally::of` on the sealed epoch, the one pass the epoch sink makes for
//!   the metrics (per-key sums, USD conversion, histogram buckets). The epoch (about 140 MB
//!   at 200,000 events) is out of cache by then: most of this pass is memory latency;
//!
//! Alternating rounds on the same events; medians and the ratio tally / baseline (the load
//! of a shared machine moves both alike).
//! `cargo bench -p costpipe-aggregator-core --bench metrics_tally`; results are recorded in
//! `aggregator/BENCHMARKS.md`. `COSTPIPE_BENCH_EVENTS` sets the epoch size (default 200,000,
//! the aggregator's default epoch).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use costpipe_aggregator_core::metrics::EpochTally;
use costpipe_aggregator_core::{
    plan_resume, EpochPolicy, PartitionCheckpoint, Processor, RecentIds, SourceRecord,
};
use costpipe_pricing::Catalog;
use costpipe_schemas::{UsageCodec, UsageEvent, ValidationLimits};

/// 2026-11-20T12:00:00Z: inside the shipped catalog's open-ended CNY rates.
const NOW: i64 = 1_795_176_000_000;
const ROUNDS: usize = 7;

fn events(n: usize) -> Vec<Vec<u8>> {
    const TENANTS: [&str; 10] = [
        "acme",
        "globex",
        "initech",
        "umbrella",
        "hooli",
        "stark",
        "wayne",
        "wonka",
        "tyrell",
        "cyberdyne",
    ];
    const DEPARTMENTS: [&str; 6] = [
        "engineering",
        "research",
        "support",
        "marketing",
        "sales",
        "legal",
    ];
    // The synthetic stream's models, a CNY-priced one (converted per event) and one the
    // catalog does not know.
    const MODELS: [&str; 6] = [
        "gpt-4o-mini",
        "gpt-4o",
        "gpt-4o-2024-08-06",
        "claude-sonnet-4-5",
        "qwen-plus",
        "mistral-large-latest",
    ];
    let mut rng = StdRng::seed_from_u64(7);
    let codec = UsageCodec::current();
    (0..n)
        .map(|_| {
            let mut e = UsageEvent::new(
                Uuid::from_u128(rng.random()),
                NOW - rng.random_range(0..600_000),
                TENANTS[rng.random_range(0..TENANTS.len())],
                "p",
                MODELS[rng.random_range(0..MODELS.len())],
            );
            e.department = Some(DEPARTMENTS[rng.random_range(0..DEPARTMENTS.len())].into());
            e.input_tokens = rng.random_range(100..20_000);
            e.output_tokens = rng.random_range(10..2_000);
            e.cached_input_tokens = rng.random_range(0..500);
            codec.encode(&e).expect("encodable event")
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let n = std::env::var("COSTPIPE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let catalog = Arc::new(Catalog::builtin());
    let records = events(n);
    let mut base_ns = Vec::new();
    let mut tally_ns = Vec::new();
    let mut ratios = Vec::new();
    let mut keys = 0;
    for round in 0..ROUNDS {
        let mut p = Processor::new(
            "usage",
            catalog.clone(),
            ValidationLimits::default(),
            EpochPolicy {
                max_records: usize::MAX,
                max_age_ms: i64::MAX,
                max_hold_ms: i64::MAX,
                min_records: 0,
            },
        );
        p.assign(
            0,
            plan_resume(&PartitionCheckpoint::default()),
            RecentIds::new(),
        );
        let started = Instant::now();
        for (offset, payload) in records.iter().enumerate() {
            black_box(p.handle_record(
                SourceRecord {
                    partition: 0,
                    offset: offset as i64,
                    key: None,
                    payload: Some(payload),
                },
                NOW,
            ));
        }
        let base = started.elapsed().as_nanos() as f64 / n as f64;
        let sealed = p.seal_all();
        let events = &sealed[0].events;
        let started = Instant::now();
        let tally = black_box(EpochTally::of(events, &catalog));
        let tally_cost = started.elapsed().as_nanos() as f64 / n as f64;
        keys = tally.keys.len();
        println!(
            "round {round}: baseline {base:.0} ns/event, tally {tally_cost:.1} ns/event ({:.2} %); {} events, {} keys, {} in USD",
            100.0 * tally_cost / base,
            tally.events,
            keys,
            tally.cost_count
        );
        base_ns.push(base);
        tally_ns.push(tally_cost);
        ratios.push(100.0 * tally_cost / base);
    }
    let (b, t, r) = (median(base_ns), median(tally_ns), median(ratios));
    println!(
        "median of {ROUNDS}: baseline (handle_record) {b:.0} ns/event; EpochTally::of on the sealed epoch {t:.1} ns/event; median ratio of the rounds {r:.2} % ({n} events, {keys} keys per epoch)"
    );
}
