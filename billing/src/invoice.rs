//! A monthly invoice, assembled from cost groups: lines by catalog model (with quantities of
//! every token kind), subtotals by department and project, the exchange rates used, and
//! adjustments for what arrived after earlier invoices were issued. Pure: no I/O.
//!
//! Exactness: every amount is a `Decimal` sum of stored amounts; each total is the sum of
//! the lines and adjustments it lists, computed here from those same values.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::costs_store::TokenCounts;

/// Costs of one group as the store reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub period: String,
    pub model: String,
    pub department: String,
    pub project: String,
    pub currency: String,
    pub billing_currency: String,
    pub requests: u64,
    pub tokens: TokenCounts,
    pub amount: Decimal,
    pub billing_amount: Decimal,
}

/// One invoice line: a catalog model's usage in one currency pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Line {
    /// Stable: `<period>/<model>/<currency>/<billing currency>`.
    pub line_id: String,
    /// The month the usage belongs to (earlier than the invoice's for an adjustment).
    pub period: String,
    pub model: String,
    pub currency: String,
    pub billing_currency: String,
    pub requests: u64,
    /// Quantities by token kind.
    pub tokens: TokenCounts,
    /// In `currency`.
    #[schema(value_type = String)]
    pub amount: Decimal,
    /// In `billing_currency`.
    #[schema(value_type = String)]
    pub billing_amount: Decimal,
}

/// A subtotal of one department or project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Subtotal {
    pub name: String,
    pub billing_currency: String,
    pub requests: u64,
    #[schema(value_type = String)]
    pub billing_amount: Decimal,
}

/// An exchange rate applied to the invoice's usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RateUsed {
    pub from: String,
    pub to: String,
    #[schema(value_type = String)]
    pub rate: Decimal,
    /// First and last event time it was applied to (RFC 3339).
    pub first_used: String,
    pub last_used: String,
}

/// The total in one billing currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Total {
    pub billing_currency: String,
    /// Σ lines.
    #[schema(value_type = String)]
    pub lines: Decimal,
    /// Σ adjustments.
    #[schema(value_type = String)]
    pub adjustments: Decimal,
    /// `lines + adjustments`.
    #[schema(value_type = String)]
    pub total: Decimal,
}

/// A tenant's invoice for a month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Invoice {
    /// Stable: `INV-<YYYYMM>-<first 16 hex digits of SHA-256(tenant)>`.
    pub invoice_id: String,
    /// `draft` (computed now, may change) or `issued` (stored, never changes).
    pub status: String,
    pub tenant_id: String,
    pub period: String,
    pub time_zone: String,
    pub period_start: String,
    pub period_end: String,
    pub issued_at: Option<String>,
    pub lines: Vec<Line>,
    pub subtotals_by_department: Vec<Subtotal>,
    pub subtotals_by_project: Vec<Subtotal>,
    pub exchange_rates: Vec<RateUsed>,
    /// Late events and repricing of earlier, issued months: what is stored now minus what
    /// earlier invoices billed.
    pub adjustments: Vec<Line>,
    pub totals: Vec<Total>,
}

/// The stable id of `tenant`'s invoice for `period`.
pub fn invoice_id(tenant: &str, period: &str) -> String {
    let h = hex::encode(Sha256::digest(tenant.as_bytes()));
    format!("INV-{}-{}", period.replace('-', ""), &h[..16])
}

type LineKey = (String, String, String, String);

fn lines_of<'a>(groups: impl Iterator<Item = &'a Group>) -> BTreeMap<LineKey, Line> {
    let mut lines: BTreeMap<LineKey, Line> = BTreeMap::new();
    for g in groups {
        let key = (
            g.period.clone(),
            g.model.clone(),
            g.currency.clone(),
            g.billing_currency.clone(),
        );
        let l = lines.entry(key).or_insert_with(|| Line {
            line_id: format!(
                "{}/{}/{}/{}",
                g.period, g.model, g.currency, g.billing_currency
            ),
            period: g.period.clone(),
            model: g.model.clone(),
            currency: g.currency.clone(),
            billing_currency: g.billing_currency.clone(),
            requests: 0,
            tokens: TokenCounts::default(),
            amount: Decimal::ZERO,
            billing_amount: Decimal::ZERO,
        });
        l.requests += g.requests;
        l.tokens.add(&g.tokens);
        l.amount += g.amount;
        l.billing_amount += g.billing_amount;
    }
    lines
}

fn subtotals<'a>(
    groups: impl Iterator<Item = &'a Group>,
    name: impl Fn(&Group) -> &str,
) -> Vec<Subtotal> {
    let mut by: BTreeMap<(String, String), Subtotal> = BTreeMap::new();
    for g in groups {
        let s = by
            .entry((name(g).to_string(), g.billing_currency.clone()))
            .or_insert_with(|| Subtotal {
                name: name(g).to_string(),
                billing_currency: g.billing_currency.clone(),
                requests: 0,
                billing_amount: Decimal::ZERO,
            });
        s.requests += g.requests;
        s.billing_amount += g.billing_amount;
    }
    by.into_values().collect()
}

/// What the invoice is built from.
pub struct Inputs<'a> {
    pub tenant: &'a str,
    pub period: &'a str,
    pub time_zone: &'a str,
    pub period_start: String,
    pub period_end: String,
    /// Groups of `period` and of every earlier period that has an issued invoice.
    pub groups: &'a [Group],
    pub rates: Vec<RateUsed>,
    /// Earlier issued invoices of the tenant.
    pub issued: &'a [Invoice],
}

/// The draft invoice.
pub fn assemble(i: Inputs<'_>) -> Invoice {
    let this: Vec<&Group> = i.groups.iter().filter(|g| g.period == i.period).collect();
    let lines: Vec<Line> = lines_of(this.iter().copied()).into_values().collect();
    // What was billed for each earlier line: its original line plus earlier adjustments.
    let mut billed: BTreeMap<String, (u64, TokenCounts, Decimal, Decimal)> = BTreeMap::new();
    for inv in i.issued {
        for l in inv.lines.iter().chain(&inv.adjustments) {
            let b = billed.entry(l.line_id.clone()).or_default();
            b.0 += l.requests;
            b.1.add(&l.tokens);
            b.2 += l.amount;
            b.3 += l.billing_amount;
        }
    }
    let issued_periods: Vec<&str> = i.issued.iter().map(|inv| inv.period.as_str()).collect();
    let now_earlier =
        lines_of(i.groups.iter().filter(|g| {
            g.period.as_str() < i.period && issued_periods.contains(&g.period.as_str())
        }));
    let mut adjustments = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for l in now_earlier.into_values() {
        seen.insert(l.line_id.clone());
        let (req, tok, amount, billing) = billed.get(&l.line_id).cloned().unwrap_or_default();
        if l.amount != amount || l.billing_amount != billing || l.requests != req {
            adjustments.push(Line {
                requests: l.requests.saturating_sub(req),
                tokens: TokenCounts {
                    input: l.tokens.input.saturating_sub(tok.input),
                    output: l.tokens.output.saturating_sub(tok.output),
                    cached_input: l.tokens.cached_input.saturating_sub(tok.cached_input),
                    cache_write_5m: l.tokens.cache_write_5m.saturating_sub(tok.cache_write_5m),
                    cache_write_1h: l.tokens.cache_write_1h.saturating_sub(tok.cache_write_1h),
                    reasoning: l.tokens.reasoning.saturating_sub(tok.reasoning),
                },
                amount: l.amount - amount,
                billing_amount: l.billing_amount - billing,
                ..l
            });
        }
    }
    // A billed line with nothing stored any more (all of it repriced to another model or
    // currency) is credited in full.
    for inv in i.issued {
        for l in &inv.lines {
            if !seen.contains(&l.line_id) && seen.insert(l.line_id.clone()) {
                let (_, _, amount, billing) = billed.get(&l.line_id).cloned().unwrap_or_default();
                if !amount.is_zero() || !billing.is_zero() {
                    adjustments.push(Line {
                        requests: 0,
                        tokens: TokenCounts::default(),
                        amount: -amount,
                        billing_amount: -billing,
                        ..l.clone()
                    });
                }
            }
        }
    }
    let mut totals: BTreeMap<String, Total> = BTreeMap::new();
    for (l, is_adj) in lines
        .iter()
        .map(|l| (l, false))
        .chain(adjustments.iter().map(|l| (l, true)))
    {
        let t = totals
            .entry(l.billing_currency.clone())
            .or_insert_with(|| Total {
                billing_currency: l.billing_currency.clone(),
                lines: Decimal::ZERO,
                adjustments: Decimal::ZERO,
                total: Decimal::ZERO,
            });
        if is_adj {
            t.adjustments += l.billing_amount;
        } else {
            t.lines += l.billing_amount;
        }
        t.total += l.billing_amount;
    }
    Invoice {
        invoice_id: invoice_id(i.tenant, i.period),
        status: "draft".into(),
        tenant_id: i.tenant.to_string(),
        period: i.period.to_string(),
        time_zone: i.time_zone.to_string(),
        period_start: i.period_start,
        period_end: i.period_end,
        issued_at: None,
        subtotals_by_department: subtotals(this.iter().copied(), |g| &g.department),
        subtotals_by_project: subtotals(this.iter().copied(), |g| &g.project),
        lines,
        exchange_rates: i.rates,
        adjustments,
        totals: totals.into_values().collect(),
    }
}

/// The invoice as CSV: one row per line, adjustment, subtotal and total, with stable ids.
pub fn to_csv(inv: &Invoice) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "invoice_id",
        "status",
        "section",
        "id",
        "period",
        "model",
        "currency",
        "billing_currency",
        "requests",
        "input_tokens",
        "cached_input_tokens",
        "cache_write_5m_tokens",
        "cache_write_1h_tokens",
        "output_tokens",
        "reasoning_tokens",
        "amount",
        "billing_amount",
    ])?;
    let line = |w: &mut csv::Writer<Vec<u8>>, section: &str, l: &Line| {
        let k = l.tokens.kinds();
        w.write_record([
            inv.invoice_id.as_str(),
            &inv.status,
            section,
            &l.line_id,
            &l.period,
            &l.model,
            &l.currency,
            &l.billing_currency,
            &l.requests.to_string(),
            &k[0].1.to_string(),
            &k[1].1.to_string(),
            &k[2].1.to_string(),
            &k[3].1.to_string(),
            &k[4].1.to_string(),
            &k[5].1.to_string(),
            &l.amount.to_string(),
            &l.billing_amount.to_string(),
        ])
    };
    for l in &inv.lines {
        line(&mut w, "line", l)?;
    }
    for l in &inv.adjustments {
        line(&mut w, "adjustment", l)?;
    }
    for (section, subs) in [
        ("department", &inv.subtotals_by_department),
        ("project", &inv.subtotals_by_project),
    ] {
        for s in subs {
            let id = format!("{section}/{}/{}", s.name, s.billing_currency);
            w.write_record([
                inv.invoice_id.as_str(),
                &inv.status,
                section,
                &id,
                &inv.period,
                "",
                "",
                &s.billing_currency,
                &s.requests.to_string(),
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                &s.billing_amount.to_string(),
            ])?;
        }
    }
    for t in &inv.totals {
        let id = format!("total/{}", t.billing_currency);
        w.write_record([
            inv.invoice_id.as_str(),
            &inv.status,
            "total",
            &id,
            &inv.period,
            "",
            "",
            &t.billing_currency,
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            &t.total.to_string(),
        ])?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn g(period: &str, model: &str, dept: &str, amount: Decimal) -> Group {
        Group {
            period: period.into(),
            model: model.into(),
            department: dept.into(),
            project: "p".into(),
            currency: "USD".into(),
            billing_currency: "EUR".into(),
            requests: 1,
            tokens: TokenCounts {
                input: 10,
                ..TokenCounts::default()
            },
            amount,
            billing_amount: amount * dec!(2),
        }
    }

    fn inputs<'a>(period: &'a str, groups: &'a [Group], issued: &'a [Invoice]) -> Inputs<'a> {
        Inputs {
            tenant: "acme",
            period,
            time_zone: "UTC",
            period_start: String::new(),
            period_end: String::new(),
            groups,
            rates: vec![],
            issued,
        }
    }

    #[test]
    fn totals_are_the_sum_of_lines_and_late_usage_is_adjusted_next_month() {
        let march = vec![
            g("2026-03", "gpt-4o", "eng", dec!(0.000000000001)),
            g("2026-03", "gpt-4o", "ops", dec!(1.5)),
            g("2026-03", "claude", "eng", dec!(2)),
        ];
        let mut issued = assemble(inputs("2026-03", &march, &[]));
        assert_eq!(issued.lines.len(), 2);
        assert_eq!(issued.totals[0].total, dec!(7.000000000002));
        issued.status = "issued".into();
        // A late March event and April usage.
        let mut later = march.clone();
        later.push(g("2026-03", "claude", "eng", dec!(0.25)));
        later.push(g("2026-04", "claude", "eng", dec!(1)));
        let april = assemble(inputs("2026-04", &later, std::slice::from_ref(&issued)));
        assert_eq!(april.adjustments.len(), 1);
        assert_eq!(april.adjustments[0].line_id, "2026-03/claude/USD/EUR");
        assert_eq!(april.adjustments[0].billing_amount, dec!(0.5));
        assert_eq!(april.adjustments[0].requests, 1);
        assert_eq!(april.totals[0].lines, dec!(2));
        assert_eq!(april.totals[0].total, dec!(2.5));
        // Nothing late: no adjustment.
        let again = assemble(inputs("2026-04", &march, std::slice::from_ref(&issued)));
        assert!(again.adjustments.is_empty());
        assert!(to_csv(&april)
            .unwrap()
            .contains("adjustment,2026-03/claude/USD/EUR"));
        assert_eq!(invoice_id("acme", "2026-03"), invoice_id("acme", "2026-03"));
        assert_ne!(
            invoice_id("acme", "2026-03"),
            invoice_id("acme2", "2026-03")
        );
    }
}
