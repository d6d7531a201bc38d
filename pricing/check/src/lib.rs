//! `costpipe-catalog`: checks the price catalog against independent price tables (LiteLLM,
//! genai-prices, models.dev), with an allowlist of deliberate differences, and explains the
//! price that applies to a call. Reads files; the pricing rules themselves stay in the pure
//! `costpipe-pricing` crate, which this one only asks.

pub mod compare;
pub mod explain;
pub mod tables;

use std::path::Path;

pub use compare::{check, Allowlist, Disagreement, Report};
pub use tables::{Component, Table, TableError};

/// The instant the vendored snapshots describe (their date, `pricing/catalog/external/README.md`):
/// the check compares the catalog period in force then, so it never depends on today's date.
pub const SNAPSHOT_AS_OF: &str = "2026-11-30T12:00:00Z";

/// The tables found in `dir`: `litellm-<version>.json`, `genai-prices-<version>.json`,
/// `models.dev-<version>.json`. Each is named in reports after its file (`litellm 1.110.2`).
pub fn load_tables(dir: &Path) -> Result<Vec<Table>, TableError> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|source| TableError::Io {
            path: dir.display().to_string(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut tables = Vec::new();
    for path in files {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        if let Some(version) = stem.strip_prefix("litellm-") {
            tables.push(Table::litellm(&format!("litellm {version}"), &path)?);
        } else if let Some(version) = stem.strip_prefix("genai-prices-") {
            tables.push(Table::genai_prices(
                &format!("genai-prices {version}"),
                &path,
            )?);
        } else if let Some(version) = stem.strip_prefix("models.dev-") {
            tables.push(Table::models_dev(&format!("models.dev {version}"), &path)?);
        }
    }
    Ok(tables)
}
