//! The catalog: which models exist, their names and aliases, and their per-million-token prices.

use std::collections::HashMap;
use std::path::Path;

use rust_decimal::Decimal;
use serde::Deserialize;

use crate::error::CatalogError;

/// Largest number of decimal places a per-million price may have (see the crate docs).
pub const MAX_PRICE_SCALE: u32 = 6;
/// Currencies a price may be in.
pub const CURRENCIES: &[&str] = &["USD", "CNY", "EUR"];

/// Prices of each token bucket per 1,000,000 tokens.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenPrices {
    /// Plain input tokens.
    pub input: Decimal,
    /// Output tokens (reasoning included unless `reasoning` is set).
    pub output: Decimal,
    /// Input read from the prompt cache; `input` when the provider has no cache discount.
    pub cached_input: Option<Decimal>,
    /// Input written to the prompt cache; `input` when the provider does not charge extra.
    pub cache_write: Option<Decimal>,
    /// Reasoning output tokens, where priced apart from output.
    pub reasoning: Option<Decimal>,
}

/// One model of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Canonical model name, stored as `price_model` on each priced event.
    pub key: String,
    /// The provider that bills it.
    pub provider: String,
    /// ISO 4217 code of the provider's billing currency.
    pub currency: String,
    /// Other names the model is reported under (dated snapshots, `provider/model`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Where the price was read, and when.
    pub source: String,
    /// The prices.
    pub price: TokenPrices,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    version: String,
    models: Vec<ModelPrice>,
}

/// A validated catalog with a name index.
#[derive(Debug, Clone)]
pub struct Catalog {
    version: String,
    models: Vec<ModelPrice>,
    by_name: HashMap<String, usize>,
}

impl Catalog {
    /// The catalog shipped with costpipe.
    pub const DEFAULT_TOML: &'static str = include_str!("../catalog/default.toml");

    /// Parses and validates a catalog.
    pub fn from_toml(text: &str) -> Result<Catalog, CatalogError> {
        let file: CatalogFile =
            toml::from_str(text).map_err(|e| CatalogError::Parse(e.to_string()))?;
        let mut by_name: HashMap<String, usize> = HashMap::new();
        for (i, m) in file.models.iter().enumerate() {
            validate_model(m)?;
            for name in std::iter::once(&m.key).chain(m.aliases.iter()) {
                if let Some(&j) = by_name.get(name) {
                    return Err(CatalogError::DuplicateName {
                        name: name.clone(),
                        first: file.models[j].key.clone(),
                        second: m.key.clone(),
                    });
                }
                by_name.insert(name.clone(), i);
            }
        }
        Ok(Catalog {
            version: file.version,
            models: file.models,
            by_name,
        })
    }

    /// Reads and validates a catalog file.
    pub fn from_path(path: &Path) -> Result<Catalog, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Catalog::from_toml(&text)
    }

    /// The shipped catalog.
    pub fn builtin() -> Catalog {
        Catalog::from_toml(Self::DEFAULT_TOML).expect("the shipped catalog is valid (tested)")
    }

    /// The catalog's version string, stored with each priced event.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Every model.
    pub fn models(&self) -> &[ModelPrice] {
        &self.models
    }

    /// The model a reported name refers to, by exact name or alias.
    pub fn lookup(&self, name: &str) -> Option<&ModelPrice> {
        self.by_name.get(name).map(|&i| &self.models[i])
    }
}

fn validate_model(m: &ModelPrice) -> Result<(), CatalogError> {
    if !CURRENCIES.contains(&m.currency.as_str()) {
        return Err(CatalogError::UnknownCurrency {
            model: m.key.clone(),
            currency: m.currency.clone(),
            known: CURRENCIES.join(", "),
        });
    }
    let p = &m.price;
    let fields = [
        ("input", Some(p.input)),
        ("output", Some(p.output)),
        ("cached_input", p.cached_input),
        ("cache_write", p.cache_write),
        ("reasoning", p.reasoning),
    ];
    for (field, value) in fields {
        let Some(value) = value else { continue };
        if value.is_sign_negative() && !value.is_zero() {
            return Err(CatalogError::NegativePrice {
                model: m.key.clone(),
                field,
                value: value.to_string(),
            });
        }
        if value.normalize().scale() > MAX_PRICE_SCALE {
            return Err(CatalogError::TooPrecise {
                model: m.key.clone(),
                field,
                value: value.to_string(),
                max: MAX_PRICE_SCALE,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_catalog_is_valid() {
        let c = Catalog::builtin();
        assert!(c.lookup("gpt-4o-2024-08-06").is_some());
        assert_eq!(c.lookup("openai/gpt-4o-mini").unwrap().key, "gpt-4o-mini");
        assert!(c.lookup("gpt-5-unknown").is_none());
    }

    fn one_model(price_block: &str, currency: &str) -> String {
        format!(
            "version = \"t\"\n[[models]]\nkey = \"m\"\nprovider = \"p\"\ncurrency = \"{currency}\"\nsource = \"s\"\n[models.price]\n{price_block}\n"
        )
    }

    #[test]
    fn rejects_bad_catalogs_with_clear_messages() {
        let neg =
            Catalog::from_toml(&one_model("input = \"-1\"\noutput = \"1\"", "USD")).unwrap_err();
        assert_eq!(neg.to_string(), "model m: price input is negative (-1)");
        let cur =
            Catalog::from_toml(&one_model("input = \"1\"\noutput = \"1\"", "XYZ")).unwrap_err();
        assert!(
            cur.to_string().contains("unknown currency \"XYZ\""),
            "{cur}"
        );
        let precise =
            Catalog::from_toml(&one_model("input = \"0.0000001\"\noutput = \"1\"", "USD"))
                .unwrap_err();
        assert!(
            matches!(precise, CatalogError::TooPrecise { .. }),
            "{precise}"
        );
        let dup = format!(
            "{}\n[[models]]\nkey = \"n\"\nprovider = \"p\"\ncurrency = \"USD\"\nsource = \"s\"\naliases = [\"m\"]\n[models.price]\ninput = \"1\"\noutput = \"1\"\n",
            one_model("input = \"1\"\noutput = \"1\"", "USD")
        );
        let dup = Catalog::from_toml(&dup).unwrap_err();
        assert_eq!(dup.to_string(), "name \"m\" is claimed by both m and n");
    }
}
