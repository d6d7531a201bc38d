//! `decide()` and `reserve()` + `settle()` per call with 100,000 budgets loaded (50,000
//! tenants, each with a tenant budget and a department budget), against a baseline of the
//! same calls with one budget loaded, in the same run. Contexts are drawn from a fixed
//! seed so that every run asks the same questions. See gateway/BENCHMARKS.md.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use rust_decimal::Decimal;

use costpipe_gateway::core::estimate::{self, Caller, Cost};
use costpipe_gateway::{
    BudgetTable, ControlState, Dimension, Ledger, LedgerConfig, RequestContext, Scope,
};
use costpipe_pricing::Catalog;
use costpipe_schemas::BudgetLevel;

/// 2026-11-15T00:00:00Z.
const NOW: i64 = 1_794_700_800_000;

fn budget(id: String, scope: Scope, level: BudgetLevel) -> ControlState {
    ControlState {
        control_id: format!("{id}-c").into(),
        budget_id: id.into(),
        scope,
        level,
        throttle_requests_per_minute: (level == BudgetLevel::Throttle).then_some(60),
        downgrade_to: (level == BudgetLevel::Downgrade).then(|| Arc::from("gpt-4o-mini")),
        retry_after_ms: None,
        spend: Decimal::from(10),
        limit: Decimal::from(1_000_000),
        currency: "USD".into(),
        period_end_ms: Some(NOW + 86_400_000),
        shadow: false,
        whitelist_features: Box::new([]),
        reason: "bench".into(),
        decided_at_ms: NOW - 1_000,
    }
}

fn tenants(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("tenant-{i:06}")).collect()
}

fn table(names: &[String]) -> BudgetTable {
    let mut t = BudgetTable::default();
    for (i, name) in names.iter().enumerate() {
        let level = BudgetLevel::ALL[i % 5];
        t.apply(budget(
            format!("{name}-month"),
            Scope::global().with(Dimension::Tenant, name.as_str()),
            level,
        ));
        t.apply(budget(
            format!("{name}-research"),
            Scope::global()
                .with(Dimension::Tenant, name.as_str())
                .with(Dimension::Department, "research"),
            BudgetLevel::ALL[(i + 2) % 5],
        ));
    }
    t
}

/// A fixed pseudo-random sequence (xorshift) of tenant indexes.
fn picks(n: usize, count: usize) -> Vec<usize> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let catalog = Catalog::builtin();
    for (label, n) in [("1 budget", 1usize), ("100,000 budgets", 50_000)] {
        let names = tenants(n);
        let mut t = table(&names);
        if n == 1 {
            // Exactly one budget: drop the department one.
            t.remove(&format!("{}-research", names[0]));
        }
        let order = picks(n, 4096);
        let mut i = 0;
        c.bench_function(&format!("decide, {label} loaded"), |b| {
            b.iter(|| {
                i = (i + 1) % order.len();
                let ctx = RequestContext {
                    tenant: &names[order[i]],
                    department: Some("research"),
                    model: Some("gpt-4o"),
                    ..Default::default()
                };
                black_box(t.decide(black_box(&ctx), NOW))
            })
        });
        let mut ledger = Ledger::new(LedgerConfig::default());
        let cost = Cost {
            amount: Decimal::new(123, 6),
            currency: "USD".into(),
            at_ms: NOW,
        };
        let mut j = 0;
        c.bench_function(&format!("reserve + settle, {label} loaded"), |b| {
            b.iter(|| {
                j = (j + 1) % order.len();
                let ctx = RequestContext {
                    tenant: &names[order[j]],
                    department: Some("research"),
                    model: Some("gpt-4o"),
                    ..Default::default()
                };
                if let Ok(r) = ledger.reserve(&t, &ctx, &cost, &catalog, NOW) {
                    ledger.settle(r, &cost, &catalog, NOW);
                }
            })
        });
    }
    c.bench_function("worst-case estimate (catalog pricing, gpt-4o)", |b| {
        let caller = Caller {
            tenant: "tenant-000001",
            department: Some("research"),
        };
        b.iter(|| {
            black_box(estimate::worst_case(
                &catalog, caller, "gpt-4o", 1_200, 500, NOW,
            ))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
