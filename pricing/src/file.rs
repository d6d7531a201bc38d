//! The catalog file as written (`CATALOG.md`): serde types only, no rules. `catalog.rs`
//! turns it into a validated `Catalog`.

use rust_decimal::Decimal;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CatalogFile {
    pub catalog_version: String,
    pub default_billing_currency: String,
    #[serde(default)]
    pub exchange_rates: Vec<ExchangeRateFile>,
    pub models: Vec<ModelFile>,
    #[serde(default)]
    pub tenants: Vec<TenantFile>,
    #[serde(default)]
    pub adjustments: Vec<AdjustmentFile>,
    #[serde(default)]
    pub contract_prices: Vec<ContractFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExchangeRateFile {
    pub from: String,
    pub to: String,
    pub rate: Decimal,
    pub effective_from: String,
    pub effective_to: Option<String>,
    pub source: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatternFile {
    pub regex: String,
    pub priority: i32,
    #[serde(default)]
    pub examples: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    Chat,
    Embedding,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModelFile {
    pub key: String,
    pub provider: String,
    pub kind: ModelKind,
    pub currency: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub patterns: Vec<PatternFile>,
    /// A call with reasoning bills its whole output (reasoning and answer) at `reasoning`.
    #[serde(default)]
    pub reasoning_bills_whole_output: bool,
    pub prices: Vec<PricePeriodFile>,
}

/// Token prices as written; shared by list prices, tiers and contract prices.
#[derive(Debug, Clone, Default)]
pub(crate) struct PriceFields {
    pub input: Option<Decimal>,
    pub output: Option<Decimal>,
    pub cached_input: Option<Decimal>,
    pub cache_write_5m: Option<Decimal>,
    pub cache_write_1h: Option<Decimal>,
    pub reasoning: Option<Decimal>,
    pub per_request: Option<Decimal>,
}

/// Declares a file struct with the price fields spelled out (serde's `flatten` does not
/// combine with `deny_unknown_fields`, and a typo in a price name must be an error).
macro_rules! with_price_fields {
    ($name:ident { $($(#[$fm:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct $name {
            $($(#[$fm])* pub $field: $ty,)*
            pub input: Option<Decimal>,
            pub output: Option<Decimal>,
            pub cached_input: Option<Decimal>,
            pub cache_write_5m: Option<Decimal>,
            pub cache_write_1h: Option<Decimal>,
            pub reasoning: Option<Decimal>,
            pub per_request: Option<Decimal>,
        }

        impl $name {
            pub fn price_fields(&self) -> PriceFields {
                PriceFields {
                    input: self.input,
                    output: self.output,
                    cached_input: self.cached_input,
                    cache_write_5m: self.cache_write_5m,
                    cache_write_1h: self.cache_write_1h,
                    reasoning: self.reasoning,
                    per_request: self.per_request,
                }
            }
        }
    };
}

with_price_fields!(TierFile {
    above_prompt_tokens: u64
});

/// One stretch of the week a price window covers: `days` at `[from, to)` UTC ("HH:MM",
/// `to` may be "24:00").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WindowTimesFile {
    pub days: Vec<String>,
    pub from: String,
    pub to: String,
}

with_price_fields!(WindowFile {
    name: String,
    times: Vec<WindowTimesFile>,
});

with_price_fields!(PricePeriodFile {
    effective_from: String,
    effective_to: Option<String>,
    source: String,
    #[serde(default)]
    tiers: Vec<TierFile>,
    #[serde(default)]
    windows: Vec<WindowFile>,
});

with_price_fields!(ContractFile {
    tenant: String,
    model: String,
    currency: String,
    effective_from: String,
    effective_to: Option<String>,
});

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantFile {
    pub id: String,
    pub billing_currency: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdjustmentFile {
    pub tenant: String,
    pub department: Option<String>,
    pub percent: Decimal,
    pub effective_from: String,
    pub effective_to: Option<String>,
}
