//! Trace cost attribution: a trace's cost, span by span (`span_name`), allocated to the
//! spans that bear it. Pure: no I/O; exact to the last 10^-12.
//!
//! A span is *auxiliary* when its name is configured as such (retrieval, embeddings,
//! reranking, guardrails, …) and *primary* otherwise (the inference the caller asked for).
//! - `direct`: every span bears its own cost.
//! - `proportional`: primary spans bear their own cost and share the auxiliary spans' cost
//!   in proportion to their own costs (equally when those are all zero).
//! - `hybrid`: primary spans bear their own cost and share the auxiliary spans' cost by the
//!   configured weights of their span names (1 when not configured).
//!
//! A trace without a primary span is allocated directly. Shares are rounded down to 12
//! places and the 10^-12 units left over go one each to the largest remainders (ties to
//! the first span name), so Σ allocations = the trace's cost exactly.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;

/// How auxiliary cost is shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    Direct,
    Proportional,
    Hybrid,
}

impl Strategy {
    pub fn parse(s: &str) -> Option<Strategy> {
        match s {
            "direct" => Some(Strategy::Direct),
            "proportional" => Some(Strategy::Proportional),
            "hybrid" => Some(Strategy::Hybrid),
            _ => None,
        }
    }
}

/// Which spans are auxiliary and the hybrid weights of primary ones.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub auxiliary: BTreeSet<String>,
    pub weights: BTreeMap<String, Decimal>,
}

impl Rules {
    /// From `embedding,retrieval` and `chat=3,summarize=1` (weights ≥ 0).
    pub fn parse(auxiliary: &str, weights: &str) -> anyhow::Result<Rules> {
        let mut r = Rules {
            auxiliary: auxiliary
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            weights: BTreeMap::new(),
        };
        for entry in weights.split(',').filter(|s| !s.trim().is_empty()) {
            let (name, w) = entry
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("trace weight {entry:?} is not span=weight"))?;
            let w: Decimal = w
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("trace weight {entry:?}: not a decimal"))?;
            if w.is_sign_negative() {
                anyhow::bail!("trace weight {entry:?} is negative");
            }
            r.weights.insert(name.trim().to_string(), w);
        }
        Ok(r)
    }
}

/// One span's cost (all its calls) in one billing currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanCost {
    pub span_name: String,
    pub requests: u64,
    pub cost: Decimal,
}

/// One span's allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Allocation {
    pub span_name: String,
    /// `primary` or `auxiliary`.
    pub role: String,
    pub requests: u64,
    /// What the span's own calls cost.
    #[schema(value_type = String)]
    pub direct_cost: Decimal,
    /// What the span bears under the strategy.
    #[schema(value_type = String)]
    pub allocated_cost: Decimal,
}

const UNIT: Decimal = Decimal::from_parts(1, 0, 0, false, 12);

/// `amount` split by `weights` (not all zero), exactly: floors at 12 places, the rest by
/// largest remainder.
fn split(amount: Decimal, weights: &[Decimal]) -> Vec<Decimal> {
    let total: Decimal = weights.iter().sum();
    let n = weights.len();
    if n == 0 {
        return Vec::new();
    }
    let (sign, abs) = if amount.is_sign_negative() {
        (-Decimal::ONE, -amount)
    } else {
        (Decimal::ONE, amount)
    };
    let exact: Vec<Decimal> = weights
        .iter()
        .map(|w| {
            if total.is_zero() {
                abs / Decimal::from(n as u64)
            } else {
                abs.checked_mul(*w)
                    .and_then(|x| x.checked_div(total))
                    .unwrap_or_default()
            }
        })
        .collect();
    let mut shares: Vec<Decimal> = exact
        .iter()
        .map(|e| e.round_dp_with_strategy(12, rust_decimal::RoundingStrategy::ToZero))
        .collect();
    let mut left = abs - shares.iter().sum::<Decimal>();
    // Largest remainder first; ties to the lower index (spans come sorted by name).
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        (exact[b] - shares[b])
            .cmp(&(exact[a] - shares[a]))
            .then(a.cmp(&b))
    });
    // Normally fewer than n units are left; anything more (a product that did not fit)
    // goes whole to the first share rather than unit by unit.
    if left >= UNIT * Decimal::from(n as u64) {
        shares[order[0]] += left;
        left = Decimal::ZERO;
    }
    let mut i = 0;
    while left >= UNIT {
        shares[order[i % n]] += UNIT;
        left -= UNIT;
        i += 1;
    }
    shares.into_iter().map(|s| (s * sign).normalize()).collect()
}

/// Allocates one billing currency's span costs of a trace (spans sorted by name).
pub fn allocate(spans: &[SpanCost], strategy: Strategy, rules: &Rules) -> Vec<Allocation> {
    let mut spans = spans.to_vec();
    spans.sort_by(|a, b| a.span_name.cmp(&b.span_name));
    let is_aux = |s: &SpanCost| rules.auxiliary.contains(&s.span_name);
    let mut out: Vec<Allocation> = spans
        .iter()
        .map(|s| Allocation {
            span_name: s.span_name.clone(),
            role: if is_aux(s) { "auxiliary" } else { "primary" }.into(),
            requests: s.requests,
            direct_cost: s.cost,
            allocated_cost: s.cost,
        })
        .collect();
    let primary: Vec<usize> = (0..spans.len()).filter(|&i| !is_aux(&spans[i])).collect();
    if strategy == Strategy::Direct || primary.is_empty() || primary.len() == spans.len() {
        return out;
    }
    let shared: Decimal = spans.iter().filter(|s| is_aux(s)).map(|s| s.cost).sum();
    let weights: Vec<Decimal> = primary
        .iter()
        .map(|&i| match strategy {
            Strategy::Proportional => spans[i].cost.max(Decimal::ZERO),
            _ => rules
                .weights
                .get(&spans[i].span_name)
                .copied()
                .unwrap_or(Decimal::ONE),
        })
        .collect();
    for (a, s) in out.iter_mut().zip(&spans) {
        if is_aux(s) {
            a.allocated_cost = Decimal::ZERO;
        }
    }
    for (&i, share) in primary.iter().zip(split(shared, &weights)) {
        out[i].allocated_cost = (out[i].allocated_cost + share).normalize();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{prop_assert, prop_assert_eq, proptest};
    use rust_decimal_macros::dec;

    fn rules() -> Rules {
        Rules::parse("retrieval,embedding", "chat=3,summarize=1").unwrap()
    }

    fn span(name: &str, cost: Decimal) -> SpanCost {
        SpanCost {
            span_name: name.into(),
            requests: 1,
            cost,
        }
    }

    #[test]
    fn each_strategy_by_hand() {
        let spans = [
            span("chat", dec!(0.6)),
            span("summarize", dec!(0.2)),
            span("retrieval", dec!(0.1)),
            span("embedding", dec!(0.000000000001)),
        ];
        let got = |s| {
            allocate(&spans, s, &rules())
                .into_iter()
                .map(|a| (a.span_name, a.allocated_cost))
                .collect::<BTreeMap<_, _>>()
        };
        let d = got(Strategy::Direct);
        assert_eq!(d["retrieval"], dec!(0.1));
        // Shared 0.100000000001: 3:1 by cost (0.6:0.2) and by weights (3:1) alike here.
        let p = got(Strategy::Proportional);
        assert_eq!(p["chat"], dec!(0.675000000001));
        assert_eq!(p["summarize"], dec!(0.225));
        assert_eq!(p["retrieval"], dec!(0));
        let h = got(Strategy::Hybrid);
        assert_eq!(h["chat"], dec!(0.675000000001));
        // Equal weights when none configured: a third each, remainder to the first names.
        let r = Rules::parse("aux", "").unwrap();
        let three = [
            span("a", dec!(0)),
            span("b", dec!(0)),
            span("c", dec!(0)),
            span("aux", dec!(1)),
        ];
        let h: Vec<Decimal> = allocate(&three, Strategy::Hybrid, &r)
            .into_iter()
            .map(|a| a.allocated_cost)
            .collect();
        assert_eq!(
            h,
            [
                dec!(0.333333333334),
                dec!(0),
                dec!(0.333333333333),
                dec!(0.333333333333)
            ]
        );
        assert!(Rules::parse("", "chat=-1").is_err());
        assert!(Rules::parse("", "chat").is_err());
    }

    proptest! {
        #[test]
        fn allocations_sum_to_the_trace_cost(
            costs in proptest::collection::vec((0u8..6, -1_000_000_000_000i64..1_000_000_000_000_000i64), 1..12),
            strategy in 0u8..3,
        ) {
            let names = ["chat", "summarize", "plan", "retrieval", "embedding", "rerank"];
            let mut by: BTreeMap<&str, Decimal> = BTreeMap::new();
            for (n, c) in &costs {
                *by.entry(names[*n as usize]).or_default() += Decimal::new(*c, 12);
            }
            let spans: Vec<SpanCost> = by.iter().map(|(n, c)| span(n, *c)).collect();
            let s = [Strategy::Direct, Strategy::Proportional, Strategy::Hybrid][strategy as usize];
            let a = allocate(&spans, s, &Rules::parse("retrieval,embedding,rerank", "chat=2.5").unwrap());
            let total: Decimal = spans.iter().map(|s| s.cost).sum();
            prop_assert_eq!(a.iter().map(|a| a.allocated_cost).sum::<Decimal>(), total);
            prop_assert!(a.iter().all(|a| a.allocated_cost.scale() <= 12));
        }
    }
}
