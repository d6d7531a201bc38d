//! The price catalog and the exact cost of a usage event.
//!
//! Pure: loading parses a string, pricing is arithmetic on `rust_decimal::Decimal`. Never `f64`.
//! A cost is computed without rounding: prices carry at most 6 decimal places per million
//! tokens, so a per-token cost has at most 12, which is the scale ClickHouse stores.

pub mod catalog;
pub mod cost;
pub mod error;

pub use catalog::{Catalog, ModelPrice, TokenPrices};
pub use cost::{price_event, PricedCost};
pub use error::CatalogError;
