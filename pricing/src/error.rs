//! Catalog errors. Each says what is wrong and where, so an operator can fix the file; a
//! reload that fails keeps the old catalog in force.

use thiserror::Error;

/// Why a catalog was refused.
#[derive(Debug, Error)]
pub enum CatalogError {
    /// The file is not valid TOML or does not match the catalog's shape (e.g. a misspelt field).
    #[error("catalog does not parse: {0}")]
    Parse(String),
    /// The file could not be read.
    #[error("cannot read catalog {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// A price is below zero.
    #[error("{context}: price {field} is negative ({value})")]
    NegativePrice {
        context: String,
        field: &'static str,
        value: String,
    },
    /// A price has more decimal places than costs can carry exactly.
    #[error("{context}: price {field} = {value} has more than {max} decimal places")]
    TooPrecise {
        context: String,
        field: &'static str,
        value: String,
        max: u32,
    },
    /// A required price is absent.
    #[error("{context}: price {field} is required")]
    MissingPrice {
        context: String,
        field: &'static str,
    },
    /// A currency the catalog does not know.
    #[error("{context}: unknown currency {currency:?} (known: {known})")]
    UnknownCurrency {
        context: String,
        currency: String,
        known: String,
    },
    /// Two models claim the same name or alias.
    #[error("name {name:?} is claimed by both {first} and {second}")]
    DuplicateName {
        name: String,
        first: String,
        second: String,
    },
    /// A timestamp is not RFC 3339.
    #[error("{context}: {value:?} is not an RFC 3339 timestamp ({error})")]
    BadTimestamp {
        context: String,
        value: String,
        error: String,
    },
    /// `effective_to` is not after `effective_from`.
    #[error("{context}: effective_to {to} is not after effective_from {from}")]
    EmptyRange {
        context: String,
        from: String,
        to: String,
    },
    /// Two effective ranges of the same thing overlap.
    #[error("{context}: effective ranges overlap: [{first}) and [{second})")]
    OverlappingRanges {
        context: String,
        first: String,
        second: String,
    },
    /// A model has no price at all.
    #[error("model {model}: no [[models.prices]] entry")]
    NoPrices { model: String },
    /// A regex does not compile.
    #[error("model {model}: pattern {regex:?} is not a valid regex: {error}")]
    InvalidRegex {
        model: String,
        regex: String,
        error: String,
    },
    /// Patterns of two models match one name at the same priority.
    #[error(
        "name {name:?} is matched at priority {priority} by patterns of both {first} and {second}"
    )]
    AmbiguousPattern {
        name: String,
        priority: i32,
        first: String,
        second: String,
    },
    /// A pattern's example does not match the pattern.
    #[error("model {model}: example {example:?} does not match its pattern {regex:?}")]
    ExampleDoesNotMatch {
        model: String,
        regex: String,
        example: String,
    },
    /// Tier thresholds of a price period repeat.
    #[error("model {model}: two tiers above {threshold} prompt tokens")]
    DuplicateTier { model: String, threshold: u64 },
    /// A contract price names a model that is not in the catalog.
    #[error("contract price of tenant {tenant}: unknown model {model:?}")]
    UnknownContractModel { tenant: String, model: String },
    /// An exchange rate is zero or negative.
    #[error("exchange rate {from}->{to}: rate {rate} must be > 0")]
    InvalidRate {
        from: String,
        to: String,
        rate: String,
    },
    /// A price currency cannot be converted into a billing currency.
    #[error("no exchange rate {from}->{to}, needed to bill {context}")]
    MissingExchangeRate {
        from: String,
        to: String,
        context: String,
    },
    /// A discount of 100 % or more.
    #[error("adjustment of tenant {tenant}: percent {percent} must be > -100")]
    InvalidAdjustment { tenant: String, percent: String },
    /// A window's time is not "HH:MM" (00:00-23:59, or 24:00 as an end), or ends before it starts.
    #[error(
        "{context}: {value:?} is not a valid window time (\"HH:MM\" UTC, `to` may be \"24:00\")"
    )]
    BadWindowTime { context: String, value: String },
    /// A window names a day that is not a weekday name.
    #[error("{context}: {value:?} is not a weekday (mon, tue, wed, thu, fri, sat, sun)")]
    BadWeekday { context: String, value: String },
    /// Two windows of one period have the same name.
    #[error("{context}: two windows named {name:?}")]
    DuplicateWindow { context: String, name: String },
    /// A window lists no times or no days.
    #[error("{context}: a window needs at least one entry in `times`, each with at least one day")]
    EmptyWindow { context: String },
    /// Two windows (or two stretches of one) cover the same time of the week.
    #[error("{context}: price windows overlap: {first} and {second}")]
    WindowOverlap {
        context: String,
        first: String,
        second: String,
    },
    /// Some time of the week is in no window.
    #[error("{context}: price windows leave a gap: [{from}, {to}) UTC is in no window")]
    WindowGap {
        context: String,
        from: String,
        to: String,
    },
    /// A period with windows also has tiers, which are not supported together.
    #[error("{context}: a period with windows cannot have tiers")]
    WindowsWithTiers { context: String },
    /// A period with windows also has its own token prices; the windows' prices are the prices.
    #[error("{context}: a period with windows takes its prices from the windows; remove {field}")]
    WindowsWithPrices {
        context: String,
        field: &'static str,
    },
}
