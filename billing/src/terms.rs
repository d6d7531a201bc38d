//! Tenants' commercial terms on invoices: a percent discount and/or a percent markup per
//! tenant, read once at start-up from the TOML file `COSTPIPE_BILLING_TENANT_TERMS`, and
//! the explicit invoice lines they make. Pure apart from reading the file.
//!
//! ```toml
//! [acme]
//! discount_percent = "10"     # 10 % off usage
//! [globex]
//! markup_percent = "2.5"
//! ```
//!
//! A line's amount is `base × percent / 100`, rounded once to 12 decimal places (half to
//! even, like every rounding in costpipe), negative for a discount; `base` is what the
//! invoice bills before terms (its lines and adjustments) in that billing currency.

use std::collections::BTreeMap;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One tenant's terms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantTerms {
    /// Percent taken off (0–100), as a decimal string.
    #[serde(default)]
    pub discount_percent: Decimal,
    /// Percent added (0–1000), as a decimal string.
    #[serde(default)]
    pub markup_percent: Decimal,
}

/// Every tenant's terms.
#[derive(Debug, Clone, Default)]
pub struct Terms(pub BTreeMap<String, TenantTerms>);

impl Terms {
    /// Parses the file's text; percents are checked (range, at most 6 decimal places).
    pub fn parse(text: &str) -> anyhow::Result<Terms> {
        let by: BTreeMap<String, TenantTerms> =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("tenant terms: {e}"))?;
        for (tenant, t) in &by {
            for (what, p, max) in [
                ("discount_percent", t.discount_percent, Decimal::ONE_HUNDRED),
                ("markup_percent", t.markup_percent, Decimal::from(1000)),
            ] {
                if p.is_sign_negative() || p > max || p.scale() > 6 {
                    anyhow::bail!(
                        "tenant terms of {tenant:?}: {what} must be between 0 and {max} with at most 6 decimal places, not {p}"
                    );
                }
            }
        }
        Ok(Terms(by))
    }

    /// Reads `path` (no terms when `None`).
    pub fn load(path: Option<&std::path::Path>) -> anyhow::Result<Terms> {
        match path {
            None => Ok(Terms::default()),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("reading tenant terms {}: {e}", p.display()))?;
                Terms::parse(&text)
            }
        }
    }

    pub fn of(&self, tenant: &str) -> TenantTerms {
        self.0.get(tenant).cloned().unwrap_or_default()
    }
}

/// A discount or markup line of an invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TermsLine {
    /// Stable: `terms/<discount|markup>/<billing currency>`.
    pub line_id: String,
    /// `discount` or `markup`.
    pub kind: String,
    #[schema(value_type = String)]
    pub percent: Decimal,
    pub billing_currency: String,
    /// What the percent applies to: the invoice's lines and adjustments in this currency.
    #[schema(value_type = String)]
    pub base: Decimal,
    /// `±round12(base × percent / 100)`: negative for a discount.
    #[schema(value_type = String)]
    pub billing_amount: Decimal,
}

fn percent_of(base: Decimal, percent: Decimal) -> Decimal {
    // base has at most 12 places and percent 6: the product is exact in a Decimal for any
    // real bill; a product that does not fit is taken as zero rather than a panic.
    base.checked_mul(percent)
        .and_then(|p| p.checked_div(Decimal::ONE_HUNDRED))
        .map(|p| {
            p.round_dp_with_strategy(12, RoundingStrategy::MidpointNearestEven)
                .normalize()
        })
        .unwrap_or_default()
}

/// The terms lines for `bases` (billing currency → base), in currency order.
pub fn lines(t: &TenantTerms, bases: &BTreeMap<String, Decimal>) -> Vec<TermsLine> {
    let mut out = Vec::new();
    for (currency, base) in bases {
        for (kind, percent, sign) in [
            ("discount", t.discount_percent, -Decimal::ONE),
            ("markup", t.markup_percent, Decimal::ONE),
        ] {
            if percent.is_zero() {
                continue;
            }
            out.push(TermsLine {
                line_id: format!("terms/{kind}/{currency}"),
                kind: kind.into(),
                percent,
                billing_currency: currency.clone(),
                base: *base,
                billing_amount: sign * percent_of(*base, percent),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn terms_are_checked_and_applied_as_lines() {
        let t =
            Terms::parse("[acme]\ndiscount_percent = \"10\"\n[globex]\nmarkup_percent = \"2.5\"\n")
                .unwrap();
        assert!(Terms::parse("[acme]\ndiscount_percent = \"101\"\n").is_err());
        assert!(Terms::parse("[acme]\ndiscount_percent = \"-1\"\n").is_err());
        assert!(Terms::parse("[acme]\nrebate = \"1\"\n").is_err());
        let bases = BTreeMap::from([("EUR".to_string(), dec!(12.345678901234))]);
        let acme = lines(&t.of("acme"), &bases);
        assert_eq!(acme.len(), 1);
        assert_eq!(acme[0].line_id, "terms/discount/EUR");
        // 12.345678901234 × 10 / 100 = 1.2345678901234 → 1.234567890123 (half to even).
        assert_eq!(acme[0].billing_amount, dec!(-1.234567890123));
        let globex = lines(&t.of("globex"), &bases);
        // × 2.5 / 100 = 0.30864197253085 → 0.308641972531.
        assert_eq!(globex[0].billing_amount, dec!(0.308641972531));
        assert!(lines(&t.of("nobody"), &bases).is_empty());
    }
}
