//! Catalog errors.

use thiserror::Error;

/// Why a catalog was refused. The old catalog stays in force when a reload fails.
#[derive(Debug, Error)]
pub enum CatalogError {
    /// The file is not valid TOML or does not match the catalog's shape.
    #[error("catalog does not parse: {0}")]
    Parse(String),
    /// A price is below zero.
    #[error("model {model}: price {field} is negative ({value})")]
    NegativePrice {
        model: String,
        field: &'static str,
        value: String,
    },
    /// A price has more decimal places than costs can carry exactly.
    #[error("model {model}: price {field} = {value} has more than {max} decimal places")]
    TooPrecise {
        model: String,
        field: &'static str,
        value: String,
        max: u32,
    },
    /// A currency the catalog does not know.
    #[error("model {model}: unknown currency {currency:?} (known: {known})")]
    UnknownCurrency {
        model: String,
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
    /// The file could not be read.
    #[error("cannot read catalog {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}
