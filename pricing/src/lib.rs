//! The price catalog and the exact cost of a usage event.
//!
//! Pure: loading parses a string, pricing is arithmetic on `rust_decimal::Decimal`, never
//! `f64`. The catalog format and the matching rules are in `CATALOG.md`; the rounding rule
//! is in [`cost`].

pub mod catalog;
pub mod cost;
pub mod error;
mod file;
pub mod window;

pub use catalog::{Applied, Catalog, Model, PricePeriod, Prices, Tier};
pub use cost::{
    convert, cost_at, price_event, PricedCost, Tokens, UnitPrices, UnpricedReason, COST_SCALE,
};
pub use error::CatalogError;
pub use file::ModelKind;
pub use window::{PriceWindow, WeekSchedule};
