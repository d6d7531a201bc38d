//! Pricing throughput, single core: events priced per second with the full shipped catalog
//! (time-of-day windows and the thinking rule included), against a baseline run in the same
//! process (a one-model catalog, exact names, no tenant terms, no windows). `cargo bench -p costpipe-pricing`; results are recorded in `pricing/BENCHMARKS.md`.

use std::hint::black_box;
use std::time::Instant;

use uuid::Uuid;

use costpipe_pricing::{price_event, Catalog};
use costpipe_schemas::UsageEvent;

/// Events in the working set: small enough to stay in cache, as a just-decoded event is in
/// the aggregator. `COSTPIPE_BENCH_EVENTS=100000` measures a cold working set instead (cache
/// misses on scattered heap strings).
fn working_set() -> usize {
    std::env::var("COSTPIPE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

/// Prices computed per run (about 3 M).
const PRICINGS: usize = 3_000_000;

const BASELINE: &str = r#"
catalog_version = "bench-baseline"
default_billing_currency = "USD"
[[models]]
key = "gpt-4o"
provider = "openai"
kind = "chat"
currency = "USD"
  [[models.prices]]
  effective_from = "2024-10-02T00:00:00Z"
  source = "bench"
  input = "2.50"
  output = "10.00"
  cached_input = "1.25"
"#;

fn events(names: &[&str], tenants: &[&str]) -> Vec<UsageEvent> {
    events_every(names, tenants, 1)
}

/// Events `step_ms` apart from 2026-11-15T12:00Z: a step of a week / working set spreads
/// them over every window of a week.
fn events_every(names: &[&str], tenants: &[&str], step_ms: i64) -> Vec<UsageEvent> {
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-15T12:00:00Z")
        .unwrap()
        .timestamp_millis();
    (0..working_set())
        .map(|i| {
            let mut e = UsageEvent::new(
                Uuid::from_u128(i as u128),
                at + i as i64 * step_ms,
                tenants[i % tenants.len()],
                "p",
                names[(i * 7) % names.len()],
            );
            e.input_tokens = 500 + (i as i64 * 37) % 20_000;
            e.cached_input_tokens = (i as i64 * 13) % 3_000;
            e.output_tokens = 50 + (i as i64 * 11) % 2_000;
            e.department = Some(["research", "support"][i % 2].to_string());
            e
        })
        .collect()
}

/// qwen-plus and qwen-turbo calls with reasoning, billed whole at the thinking price.
fn thinking_events() -> Vec<UsageEvent> {
    let mut out = events(&["qwen-plus", "qwen-turbo"], &["t"]);
    for e in &mut out {
        e.reasoning_tokens = e.output_tokens / 2;
    }
    out
}

/// Events priced per second over about `PRICINGS` pricings (after one warm-up pass).
fn measure(catalog: &Catalog, events: &[UsageEvent]) -> f64 {
    for e in events {
        black_box(price_event(catalog, black_box(e)));
    }
    let rounds = (PRICINGS / events.len()).max(1);
    let start = Instant::now();
    for _ in 0..rounds {
        for e in events {
            black_box(price_event(catalog, black_box(e)));
        }
    }
    (rounds * events.len()) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let baseline = Catalog::from_toml(BASELINE).expect("baseline catalog");
    let full = Catalog::builtin();
    let exact: Vec<&str> = full.models().iter().map(|m| &*m.key).collect();
    let with_terms = format!(
        "{}\n[[adjustments]]\ntenant = \"acme\"\npercent = \"-10\"\neffective_from = \"2026-01-01T00:00:00Z\"\n\n\
         [[contract_prices]]\ntenant = \"bigco\"\nmodel = \"gpt-4o\"\ncurrency = \"USD\"\neffective_from = \"2026-01-01T00:00:00Z\"\ninput = \"2\"\noutput = \"8\"\n",
        Catalog::DEFAULT_TOML
    );
    let terms = Catalog::from_toml(&with_terms).expect("catalog with tenant terms");

    let runs: Vec<(&str, f64)> = vec![
        (
            "baseline: 1-model catalog, exact name",
            measure(&baseline, &events(&["gpt-4o"], &["t"])),
        ),
        (
            "full catalog, exact names of all models",
            measure(&full, &events(&exact, &["t"])),
        ),
        (
            "full catalog, aliases and provider/ prefixes",
            measure(
                &full,
                &events(
                    &[
                        "openai/gpt-4o",
                        "gpt-4o-2024-08-06",
                        "anthropic/claude-sonnet-4-5",
                        "gpt-4o-mini",
                    ],
                    &["t"],
                ),
            ),
        ),
        (
            "full catalog, dated snapshots matched by pattern",
            measure(
                &full,
                &events(
                    &["claude-sonnet-4-5-20991231", "claude-opus-4-6-20990101"],
                    &["t"],
                ),
            ),
        ),
        (
            "full catalog + tenant discount and contract price",
            measure(&terms, &events(&exact, &["acme", "bigco", "other"])),
        ),
        (
            "full catalog, DeepSeek peak/off-peak windows, a week",
            measure(
                &full,
                &events_every(
                    &["deepseek-v4-pro", "deepseek-v4-flash"],
                    &["t"],
                    7 * 86_400_000 / working_set() as i64,
                ),
            ),
        ),
        (
            "full catalog, all models, events over a week",
            measure(
                &full,
                &events_every(&exact, &["t"], 7 * 86_400_000 / working_set() as i64),
            ),
        ),
        (
            "full catalog, Qwen thinking calls, CNY->USD",
            measure(&full, &thinking_events()),
        ),
        (
            "full catalog, Qwen calls, no reasoning, CNY->USD",
            measure(&full, &events(&["qwen-plus", "qwen-turbo"], &["t"])),
        ),
    ];
    let base = runs[0].1;
    println!(
        "{:<52} {:>14} {:>10}",
        "pricing, single core", "events/s", "vs base"
    );
    for (name, rate) in &runs {
        println!("{name:<52} {rate:>14.0} {:>9.2}x", rate / base);
    }
}
