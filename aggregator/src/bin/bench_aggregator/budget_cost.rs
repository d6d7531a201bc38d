//! `budget-cost`: what budgets cost the run loop, in process and without I/O, so that the
//! end-to-end difference `throughput --budgets N` measures can be attributed.
//!
//! The first `--events` records of a topic are decoded and priced up front (not timed);
//! then a `BudgetBook` holding `bench_budgets(N)` (owned, restored, as in a single
//! aggregator) counts them with `handle_spend`, exactly as the processor does for each
//! accepted event, and is ticked with `handle_tick`, as the shell does every
//! `COSTPIPE_BUDGET_TICK_MS`. Reports ns per event, (event, budget) matches per event, and
//! ms per tick.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use clap::Args;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use costpipe_aggregator_core::budgets::{BudgetBook, SpendFacts, SpendMode};
use costpipe_pricing::{price_event, Catalog, PricedCost};
use costpipe_progress::Progress;
use costpipe_schemas::{BudgetDefinition, UsageCodec, UsageEvent};

use super::{bench_budgets, median, partitions_of, short_id, BudgetShape, Common};

#[derive(Debug, Clone, Args)]
pub struct BudgetCostArgs {
    /// A pre-filled usage topic (the one `throughput` reads).
    #[arg(long)]
    topic: String,
    /// Events taken from it.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Budgets (`bench_budgets`).
    #[arg(long, default_value_t = 10_000)]
    budgets: usize,
    /// How those budgets are laid out over the stream.
    #[arg(long, value_enum, default_value_t = BudgetShape::Dense)]
    budget_shape: BudgetShape,
    /// Rounds of the timed loop.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

fn read_events(brokers: &str, topic: &str, n: usize) -> anyhow::Result<Vec<UsageEvent>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-budget-cost-{}", short_id()))
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions_of(brokers, topic)? {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let codec = UsageCodec::current();
    let mut events = Vec::with_capacity(n);
    let mut last = Instant::now();
    while events.len() < n && last.elapsed() < Duration::from_secs(10) {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            last = Instant::now();
            if let Some(e) = m?.payload().and_then(|p| codec.decode(p).ok()) {
                events.push(e);
            }
        }
    }
    Ok(events)
}

/// A book holding `defs`, every budget owned and restored, as in a single aggregator.
fn book_of(
    defs: &[BudgetDefinition],
    catalog: &Catalog,
    now_ms: i64,
) -> anyhow::Result<BudgetBook> {
    let mut book = BudgetBook::new();
    book.set_assignment(1, BTreeSet::from([0]));
    for d in defs {
        book.upsert(d.clone(), catalog, now_ms)?;
    }
    for id in book.pending_backfill() {
        book.mark_backfilled(&id, now_ms);
    }
    Ok(book)
}

pub async fn budget_cost(common: &Common, a: &BudgetCostArgs) -> anyhow::Result<()> {
    let (brokers, topic, n) = (common.brokers.clone(), a.topic.clone(), a.events);
    let events = tokio::task::spawn_blocking(move || read_events(&brokers, &topic, n)).await??;
    anyhow::ensure!(!events.is_empty(), "no events read from {}", a.topic);
    let catalog = Catalog::builtin();
    let priced: Vec<(PricedCost, String)> = events
        .iter()
        .map(|e| (price_event(&catalog, e), e.event_id.to_string()))
        .collect();
    let defs: Vec<BudgetDefinition> = bench_budgets(a.budgets, a.budget_shape)
        .into_iter()
        .map(|v| Ok(BudgetDefinition::from_json(&serde_json::to_vec(&v)?)?))
        .collect::<anyhow::Result<_>>()?;
    let (mut per_event_ns, mut tick_ms) = (Vec::new(), Vec::new());
    let mut matched_per_event = 0.0;
    let bar = Progress::bar(a.rounds as u64, "rounds", "budget cost");
    for round in 1..=a.rounds {
        bar.set_message(format!("round {round}"));
        let now = chrono::Utc::now().timestamp_millis();
        let mut book = book_of(&defs, &catalog, now)?;
        let t = Instant::now();
        for (e, (p, id)) in events.iter().zip(&priced) {
            let mut facts = SpendFacts::of_event(e, p);
            facts.event_id = Some(id);
            book.handle_spend(&facts, &catalog, now, SpendMode::Live);
        }
        let spend_s = t.elapsed().as_secs_f64();
        while book.poll_output().is_some() {}
        let t = Instant::now();
        book.handle_tick(now + 1_000);
        let tick_s = t.elapsed().as_secs_f64();
        matched_per_event = book.stats().matched as f64 / events.len() as f64;
        bar.println(format!(
            "round {round}: handle_spend {:.0} ns/event ({:.1} budgets matched per event, {} control records), handle_tick {:.1} ms for {} budgets",
            spend_s * 1e9 / events.len() as f64,
            matched_per_event,
            book.stats().controls,
            tick_s * 1e3,
            book.len()
        ));
        per_event_ns.push(spend_s * 1e9 / events.len() as f64);
        tick_ms.push(tick_s * 1e3);
        bar.inc(1);
    }
    bar.clear();
    println!(
        "median over {} events and {} budgets: handle_spend {:.0} ns per event ({matched_per_event:.1} matches, {:.0} ns per match), handle_tick {:.1} ms",
        events.len(),
        a.budgets,
        median(per_event_ns.clone()),
        median(per_event_ns) / matched_per_event.max(f64::MIN_POSITIVE),
        median(tick_ms)
    );
    Ok(())
}
