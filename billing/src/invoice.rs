//! A monthly invoice, assembled from cost groups: lines by catalog model (with quantities of
//! every token kind), subtotals by department and project, the exchange rates used, and
//! adjustments for what arrived after earlier invoices were issued. Pure: no I/O.
//!
//! Exactness: every amount is a `Decimal` sum of stored amounts; each total is the sum of
//! the lines, adjustments and terms lines it lists, computed here from those same values.
//! Within a line (price currency): `amount = list_amount + catalog_adjustment + repricing`,
//! where `list_amount` = Σ items and each item's amount is quantity × unit price exactly
//! (items group usage by the unit price actually applied); `catalog_adjustment` is what the
//! catalog's tenant discount or markup changed (rounded once per event, as priced) and
//! `repricing` the corrections since. `billing_amount` is Σ the events' billing amounts,
//! each converted once at the rate listed in `exchange_rates`.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::costs_store::TokenCounts;
use crate::terms::{self, TenantTerms, TermsLine};

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
    /// Of `amount`: what the events were priced at (without repricing corrections).
    pub event_amount: Decimal,
}

/// Usage of one token kind at one unit price within a line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Item {
    /// Stable: `<line_id>/<kind>/<unit_price>`.
    pub item_id: String,
    /// input, cached_input, cache_write_5m, cache_write_1h, output (not reasoning),
    /// reasoning or request.
    pub kind: String,
    /// Price per `unit`, in the line's `currency`.
    #[schema(value_type = String)]
    pub unit_price: Decimal,
    /// `1M tokens` or `request`.
    pub unit: String,
    pub quantity: u64,
    /// `quantity × unit_price` (÷ 10^6 for tokens), exactly.
    #[schema(value_type = String)]
    pub amount: Decimal,
}

impl Item {
    /// The item of `quantity` at `unit_price`; `None` when the product does not fit.
    pub fn new(line_id: &str, kind: &str, unit_price: Decimal, quantity: u64) -> Option<Item> {
        let per_request = kind == "request";
        let amount = Decimal::from(quantity).checked_mul(unit_price)?;
        let amount = if per_request {
            amount
        } else {
            amount.checked_div(Decimal::from(1_000_000))?
        };
        let unit_price = unit_price.normalize();
        Some(Item {
            item_id: format!("{line_id}/{kind}/{unit_price}"),
            kind: kind.into(),
            unit_price,
            unit: if per_request { "request" } else { "1M tokens" }.into(),
            quantity,
            amount: amount.normalize(),
        })
    }
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
    /// Usage by token kind and unit price (empty on adjustments).
    #[serde(default)]
    pub items: Vec<Item>,
    /// Σ items' amounts, in `currency`.
    #[serde(default)]
    #[schema(value_type = String)]
    pub list_amount: Decimal,
    /// The catalog's tenant discount or markup: events' amounts − `list_amount`.
    #[serde(default)]
    #[schema(value_type = String)]
    pub catalog_adjustment: Decimal,
    /// Repricing corrections: `amount` − the events' amounts.
    #[serde(default)]
    #[schema(value_type = String)]
    pub repricing: Decimal,
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
    /// Σ discount and markup lines.
    #[serde(default)]
    #[schema(value_type = String)]
    pub terms: Decimal,
    /// `lines + adjustments + terms`.
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
    /// The tenant's discount and markup (`COSTPIPE_BILLING_TENANT_TERMS`), on lines and
    /// adjustments.
    #[serde(default)]
    pub terms: Vec<TermsLine>,
    pub totals: Vec<Total>,
}

/// The stable id of `tenant`'s invoice for `period`.
pub fn invoice_id(tenant: &str, period: &str) -> String {
    let h = hex::encode(Sha256::digest(tenant.as_bytes()));
    format!("INV-{}-{}", period.replace('-', ""), &h[..16])
}

/// (period, model, currency, billing currency).
pub type LineKey = (String, String, String, String);

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
            items: Vec::new(),
            list_amount: Decimal::ZERO,
            catalog_adjustment: Decimal::ZERO,
            repricing: Decimal::ZERO,
        });
        l.requests += g.requests;
        l.tokens.add(&g.tokens);
        l.amount += g.amount;
        l.billing_amount += g.billing_amount;
        // Held here until the items are known (`with_items`).
        l.catalog_adjustment += g.event_amount;
    }
    lines
}

/// Attaches its items to each line and splits its amount into list, catalog adjustment and
/// repricing.
fn with_items(lines: &mut BTreeMap<LineKey, Line>, items: &[(LineKey, Item)]) {
    for (key, item) in items {
        if let Some(l) = lines.get_mut(key) {
            l.list_amount += item.amount;
            l.items.push(item.clone());
        }
    }
    for l in lines.values_mut() {
        let event_amount = l.catalog_adjustment;
        l.catalog_adjustment = event_amount - l.list_amount;
        l.repricing = l.amount - event_amount;
    }
}

fn bare(l: Line) -> Line {
    Line {
        items: Vec::new(),
        list_amount: Decimal::ZERO,
        catalog_adjustment: Decimal::ZERO,
        repricing: Decimal::ZERO,
        ..l
    }
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
    /// Items of `period`'s lines, keyed by line (period, model, currency, billing currency).
    pub items: &'a [(LineKey, Item)],
    /// The tenant's discount and markup.
    pub terms: TenantTerms,
}

/// The draft invoice.
pub fn assemble(i: Inputs<'_>) -> Invoice {
    let this: Vec<&Group> = i.groups.iter().filter(|g| g.period == i.period).collect();
    let mut lines = lines_of(this.iter().copied());
    with_items(&mut lines, i.items);
    let lines: Vec<Line> = lines.into_values().collect();
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
            let l = bare(l);
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
                        ..bare(l.clone())
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
                terms: Decimal::ZERO,
                total: Decimal::ZERO,
            });
        if is_adj {
            t.adjustments += l.billing_amount;
        } else {
            t.lines += l.billing_amount;
        }
        t.total += l.billing_amount;
    }
    let bases: BTreeMap<String, Decimal> =
        totals.iter().map(|(c, t)| (c.clone(), t.total)).collect();
    let terms = terms::lines(&i.terms, &bases);
    for l in &terms {
        if let Some(t) = totals.get_mut(&l.billing_currency) {
            t.terms += l.billing_amount;
            t.total += l.billing_amount;
        }
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
        terms,
        totals: totals.into_values().collect(),
    }
}

const CSV_HEADER: [&str; 20] = [
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
    "kind",
    "unit_price",
    "quantity",
    "amount",
    "billing_amount",
];

/// One CSV record: the named fields set, the rest empty.
fn record(fields: &[(&str, String)]) -> Vec<String> {
    CSV_HEADER
        .iter()
        .map(|h| {
            fields
                .iter()
                .find(|(k, _)| k == h)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        })
        .collect()
}

/// The invoice as CSV: one row per line, item, adjustment, terms line, subtotal and total,
/// each with its stable id (`section` says which).
pub fn to_csv(inv: &Invoice) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(CSV_HEADER)?;
    let head = |section: &str, id: &str| {
        vec![
            ("invoice_id", inv.invoice_id.clone()),
            ("status", inv.status.clone()),
            ("section", section.to_string()),
            ("id", id.to_string()),
        ]
    };
    let line = |section: &str, l: &Line| {
        let mut f = head(section, &l.line_id);
        let k = l.tokens.kinds();
        f.extend([
            ("period", l.period.clone()),
            ("model", l.model.clone()),
            ("currency", l.currency.clone()),
            ("billing_currency", l.billing_currency.clone()),
            ("requests", l.requests.to_string()),
            ("input_tokens", k[0].1.to_string()),
            ("cached_input_tokens", k[1].1.to_string()),
            ("cache_write_5m_tokens", k[2].1.to_string()),
            ("cache_write_1h_tokens", k[3].1.to_string()),
            ("output_tokens", k[4].1.to_string()),
            ("reasoning_tokens", k[5].1.to_string()),
            ("amount", l.amount.to_string()),
            ("billing_amount", l.billing_amount.to_string()),
        ]);
        record(&f)
    };
    for l in &inv.lines {
        w.write_record(line("line", l))?;
        for it in &l.items {
            let mut f = head("item", &it.item_id);
            f.extend([
                ("period", l.period.clone()),
                ("model", l.model.clone()),
                ("currency", l.currency.clone()),
                ("kind", it.kind.clone()),
                ("unit_price", it.unit_price.to_string()),
                ("quantity", it.quantity.to_string()),
                ("amount", it.amount.to_string()),
            ]);
            w.write_record(record(&f))?;
        }
        for (kind, amount) in [
            ("catalog_adjustment", l.catalog_adjustment),
            ("repricing", l.repricing),
        ] {
            if !amount.is_zero() {
                let mut f = head("item", &format!("{}/{kind}", l.line_id));
                f.extend([
                    ("period", l.period.clone()),
                    ("model", l.model.clone()),
                    ("currency", l.currency.clone()),
                    ("kind", kind.to_string()),
                    ("amount", amount.to_string()),
                ]);
                w.write_record(record(&f))?;
            }
        }
    }
    for l in &inv.adjustments {
        w.write_record(line("adjustment", l))?;
    }
    for t in &inv.terms {
        let mut f = head("terms", &t.line_id);
        f.extend([
            ("period", inv.period.clone()),
            ("billing_currency", t.billing_currency.clone()),
            ("kind", t.kind.clone()),
            ("unit_price", format!("{}%", t.percent)),
            ("amount", t.base.to_string()),
            ("billing_amount", t.billing_amount.to_string()),
        ]);
        w.write_record(record(&f))?;
    }
    for (section, subs) in [
        ("department", &inv.subtotals_by_department),
        ("project", &inv.subtotals_by_project),
    ] {
        for s in subs {
            let mut f = head(
                section,
                &format!("{section}/{}/{}", s.name, s.billing_currency),
            );
            f.extend([
                ("period", inv.period.clone()),
                ("billing_currency", s.billing_currency.clone()),
                ("requests", s.requests.to_string()),
                ("billing_amount", s.billing_amount.to_string()),
            ]);
            w.write_record(record(&f))?;
        }
    }
    for t in &inv.totals {
        let mut f = head("total", &format!("total/{}", t.billing_currency));
        f.extend([
            ("period", inv.period.clone()),
            ("billing_currency", t.billing_currency.clone()),
            ("billing_amount", t.total.to_string()),
        ]);
        w.write_record(record(&f))?;
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
            event_amount: amount,
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
            items: &[],
            terms: TenantTerms::default(),
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

    #[test]
    fn items_split_a_line_and_terms_are_explicit_lines() {
        let mut a = g("2026-03", "gpt-4o", "eng", dec!(0.9));
        a.event_amount = dec!(0.8);
        let groups = vec![a];
        let id = "2026-03/gpt-4o/USD/EUR";
        let key = (
            "2026-03".to_string(),
            "gpt-4o".to_string(),
            "USD".to_string(),
            "EUR".to_string(),
        );
        let items = vec![
            (
                key.clone(),
                Item::new(id, "input", dec!(2.5), 100_000).unwrap(),
            ),
            (key, Item::new(id, "request", dec!(0.01), 30).unwrap()),
        ];
        assert_eq!(items[0].1.amount, dec!(0.25));
        assert_eq!(items[0].1.item_id, "2026-03/gpt-4o/USD/EUR/input/2.5");
        assert_eq!(items[1].1.amount, dec!(0.3));
        let mut i = inputs("2026-03", &groups, &[]);
        i.items = &items;
        i.terms = TenantTerms {
            discount_percent: dec!(10),
            markup_percent: Decimal::ZERO,
        };
        let inv = assemble(i);
        let l = &inv.lines[0];
        assert_eq!(l.list_amount, dec!(0.55));
        assert_eq!(l.catalog_adjustment, dec!(0.25));
        assert_eq!(l.repricing, dec!(0.1));
        assert_eq!(l.list_amount + l.catalog_adjustment + l.repricing, l.amount);
        // 1.8 EUR billed, 10 % off.
        assert_eq!(inv.terms[0].billing_amount, dec!(-0.18));
        assert_eq!(inv.totals[0].total, dec!(1.62));
        let csv = to_csv(&inv).unwrap();
        assert!(csv.contains(",item,2026-03/gpt-4o/USD/EUR/input/2.5,"));
        assert!(csv.contains(",terms,terms/discount/EUR,"));
    }
}
