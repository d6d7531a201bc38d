//! The external price tables and how each is read: LiteLLM's
//! `model_prices_and_context_window.json`, genai-prices' data (as JSON, see
//! `pricing/catalog/external/extract.py`) and models.dev's `api.json`. Each answers one
//! question: what does this table quote for a catalog model at an instant, per component, in
//! USD per million tokens. Reading only; comparing is `compare.rs`'s job.

use std::path::Path;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use regex::Regex;
use rust_decimal::Decimal;
use serde_json::Value;

use costpipe_pricing::Model;

/// A price component, named as the catalog names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    Input,
    CachedInput,
    CacheWrite5m,
    CacheWrite1h,
    Output,
    Reasoning,
}

impl Component {
    /// The catalog's field name.
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Input => "input",
            Component::CachedInput => "cached_input",
            Component::CacheWrite5m => "cache_write_5m",
            Component::CacheWrite1h => "cache_write_1h",
            Component::Output => "output",
            Component::Reasoning => "reasoning",
        }
    }
}

/// What a table quotes for one model: the entry's name there and its values, each keyed by
/// component and long-context tier (`None`: the base price; `Some(n)`: above `n` prompt tokens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    pub entry: String,
    pub values: Vec<(Component, Option<u64>, Decimal)>,
}

/// An external table.
#[derive(Debug)]
pub struct Table {
    /// Name and version, e.g. `litellm 1.110.2`, as shown in reports and the allowlist.
    pub name: String,
    /// Whether the table distinguishes times of day (genai-prices does).
    pub time_aware: bool,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Litellm(serde_json::Map<String, Value>),
    GenaiPrices(Vec<Value>),
    ModelsDev(serde_json::Map<String, Value>),
}

/// Why a table could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The file is not the JSON shape expected.
    #[error("{path} is not a {format} table: {reason}")]
    Shape {
        path: String,
        format: &'static str,
        reason: String,
    },
}

fn read_json(path: &Path) -> Result<Value, TableError> {
    let text = std::fs::read_to_string(path).map_err(|source| TableError::Io {
        path: path.display().to_string(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| TableError::Shape {
        path: path.display().to_string(),
        format: "JSON",
        reason: e.to_string(),
    })
}

fn shape(path: &Path, format: &'static str, reason: &str) -> TableError {
    TableError::Shape {
        path: path.display().to_string(),
        format,
        reason: reason.to_string(),
    }
}

/// A JSON number or decimal string as an exact `Decimal`. LiteLLM stores prices per token as
/// floats; their shortest decimal text (what serde_json prints) is parsed exactly, and the
/// per-million value is rounded to the catalog's 6 places so that `1.6000000000000001e-06`
/// reads as 1.60. This rounds the external figure, never a bill.
fn decimal(v: &Value, per_token: bool) -> Option<Decimal> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return None,
    };
    let d = Decimal::from_str(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .ok()?;
    let d = if per_token {
        d.checked_mul(Decimal::from(1_000_000))?
    } else {
        d
    };
    Some(d.round_dp(6).normalize())
}

impl Table {
    /// LiteLLM's JSON (flat: per-token USD prices, no history, no time of day).
    pub fn litellm(name: &str, path: &Path) -> Result<Table, TableError> {
        match read_json(path)? {
            Value::Object(map) => Ok(Table {
                name: name.to_string(),
                time_aware: false,
                kind: Kind::Litellm(map),
            }),
            _ => Err(shape(path, "LiteLLM", "top level is not an object")),
        }
    }

    /// genai-prices' providers as JSON (prices per million, start dates, times of day).
    pub fn genai_prices(name: &str, path: &Path) -> Result<Table, TableError> {
        let v = read_json(path)?;
        let providers = v
            .get("providers")
            .and_then(Value::as_array)
            .ok_or_else(|| shape(path, "genai-prices", "no `providers` array"))?;
        Ok(Table {
            name: name.to_string(),
            time_aware: true,
            kind: Kind::GenaiPrices(providers.clone()),
        })
    }

    /// models.dev's `api.json` (`{provider: {models: {id: {cost: {...}}}}}`, USD per million).
    pub fn models_dev(name: &str, path: &Path) -> Result<Table, TableError> {
        match read_json(path)? {
            Value::Object(map) => Ok(Table {
                name: name.to_string(),
                time_aware: false,
                kind: Kind::ModelsDev(map),
            }),
            _ => Err(shape(path, "models.dev", "top level is not an object")),
        }
    }

    /// What the table quotes for `model` at `at` (USD only: `None` for other currencies, and
    /// when the table has no entry for the model).
    pub fn quote(&self, model: &Model, at: DateTime<Utc>) -> Option<Quote> {
        if &*model.currency != "USD" {
            return None;
        }
        match &self.kind {
            Kind::Litellm(map) => litellm_quote(map, model),
            Kind::GenaiPrices(providers) => genai_quote(providers, model, at),
            Kind::ModelsDev(map) => models_dev_quote(map, model),
        }
    }
}

/// The names a model goes by: key, then aliases.
fn names(model: &Model) -> impl Iterator<Item = &str> {
    std::iter::once(&*model.key).chain(model.aliases.iter().map(String::as_str))
}

fn litellm_quote(map: &serde_json::Map<String, Value>, model: &Model) -> Option<Quote> {
    // The entry of the provider's own API, never a reseller's (LiteLLM lists both).
    let (prefixes, provider): (&[&str], &[&str]) = match model.provider.as_str() {
        "openai" => (&[""], &["openai"]),
        "anthropic" => (&["", "anthropic/"], &["anthropic"]),
        "google" => (&["gemini/"], &["gemini"]),
        "mistral" => (&["mistral/"], &["mistral"]),
        "deepseek" => (&["deepseek/", ""], &["deepseek"]),
        _ => return None,
    };
    let (entry, v) = names(model).find_map(|name| {
        prefixes.iter().find_map(|p| {
            let key = format!("{p}{name}");
            let v = map.get(&key)?;
            let lp = v.get("litellm_provider")?.as_str()?;
            provider.contains(&lp).then_some((key, v))
        })
    })?;
    let fields: &[(&str, Component, Option<u64>)] = &[
        ("input_cost_per_token", Component::Input, None),
        ("output_cost_per_token", Component::Output, None),
        ("cache_read_input_token_cost", Component::CachedInput, None),
        (
            "cache_creation_input_token_cost",
            Component::CacheWrite5m,
            None,
        ),
        (
            "cache_creation_input_token_cost_above_1hr",
            Component::CacheWrite1h,
            None,
        ),
        (
            "output_cost_per_reasoning_token",
            Component::Reasoning,
            None,
        ),
        (
            "input_cost_per_token_above_200k_tokens",
            Component::Input,
            Some(200_000),
        ),
        (
            "output_cost_per_token_above_200k_tokens",
            Component::Output,
            Some(200_000),
        ),
        (
            "cache_read_input_token_cost_above_200k_tokens",
            Component::CachedInput,
            Some(200_000),
        ),
        (
            "cache_creation_input_token_cost_above_200k_tokens",
            Component::CacheWrite5m,
            Some(200_000),
        ),
        (
            "input_cost_per_token_above_272k_tokens",
            Component::Input,
            Some(272_000),
        ),
        (
            "output_cost_per_token_above_272k_tokens",
            Component::Output,
            Some(272_000),
        ),
        (
            "cache_read_input_token_cost_above_272k_tokens",
            Component::CachedInput,
            Some(272_000),
        ),
    ];
    let values = fields
        .iter()
        .filter_map(|(f, c, tier)| Some((*c, *tier, decimal(v.get(*f)?, true)?)))
        .collect();
    Some(Quote { entry, values })
}

fn models_dev_quote(map: &serde_json::Map<String, Value>, model: &Model) -> Option<Quote> {
    let provider = match model.provider.as_str() {
        "openai" | "anthropic" | "google" | "mistral" | "deepseek" => model.provider.as_str(),
        _ => return None,
    };
    let models = map.get(provider)?.get("models")?;
    let (entry, v) = names(model).find_map(|n| Some((n.to_string(), models.get(n)?)))?;
    let cost = v.get("cost")?;
    let fields: &[(&str, Component)] = &[
        ("input", Component::Input),
        ("output", Component::Output),
        ("cache_read", Component::CachedInput),
        ("cache_write", Component::CacheWrite5m),
        ("reasoning", Component::Reasoning),
    ];
    let mut values: Vec<_> = fields
        .iter()
        .filter_map(|(f, c)| Some((*c, None, decimal(cost.get(*f)?, false)?)))
        .collect();
    // Long-context tiers: `tiers` with their sizes when present (`context_over_200k` is a
    // legacy field that also holds 272k tiers, so it is read only without `tiers`).
    match cost.get("tiers").and_then(Value::as_array) {
        Some(tiers) => {
            for t in tiers {
                let Some(size) = t
                    .get("tier")
                    .filter(|k| k.get("type").and_then(Value::as_str) == Some("context"))
                    .and_then(|k| k.get("size"))
                    .and_then(Value::as_u64)
                else {
                    continue;
                };
                values.extend(
                    fields
                        .iter()
                        .filter_map(|(f, c)| Some((*c, Some(size), decimal(t.get(*f)?, false)?))),
                );
            }
        }
        None => {
            if let Some(ctx) = cost.get("context_over_200k") {
                values.extend(
                    fields.iter().filter_map(|(f, c)| {
                        Some((*c, Some(200_000), decimal(ctx.get(*f)?, false)?))
                    }),
                );
            }
        }
    }
    Some(Quote {
        entry: format!("{provider}/{entry}"),
        values,
    })
}

/// genai-prices' match clauses (`ClauseEquals`, `ClauseOr`, ...), evaluated on a name.
fn clause_matches(clause: &Value, name: &str) -> bool {
    let s = |k: &str| clause.get(k).and_then(Value::as_str).unwrap_or("");
    let all = |k: &str| clause.get(k).and_then(Value::as_array);
    match clause.get("type").and_then(Value::as_str) {
        Some("ClauseEquals") => name == s("equals"),
        Some("ClauseStartsWith") => name.starts_with(s("starts_with")),
        Some("ClauseEndsWith") => name.ends_with(s("ends_with")),
        Some("ClauseContains") => name.contains(s("contains")),
        Some("ClauseRegex") => Regex::new(s("regex")).is_ok_and(|r| r.is_match(name)),
        Some("ClauseOr") => all("or_").is_some_and(|v| v.iter().any(|c| clause_matches(c, name))),
        Some("ClauseAnd") => all("and_").is_some_and(|v| v.iter().all(|c| clause_matches(c, name))),
        _ => false,
    }
}

/// Whether a genai-prices constraint holds at `at` (their rules: a start date compares UTC
/// dates; a time of day is `[start, end)` in UTC, wrapping past midnight).
fn constraint_active(c: &Value, at: DateTime<Utc>) -> bool {
    let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("");
    match c.get("type").and_then(Value::as_str) {
        None => true,
        Some("StartDateConstraint") => NaiveDate::parse_from_str(s("start_date"), "%Y-%m-%d")
            .is_ok_and(|d| at.date_naive() >= d),
        Some("TimeOfDateConstraint") => {
            let t =
                |k: &str| NaiveTime::parse_from_str(&s(k)[..8.min(s(k).len())], "%H:%M:%S").ok();
            let (Some(start), Some(end)) = (t("start_time"), t("end_time")) else {
                return false;
            };
            let now = at.time();
            if end < start {
                now >= start || now < end
            } else {
                start <= now && now < end
            }
        }
        Some(_) => false,
    }
}

fn genai_quote(providers: &[Value], model: &Model, at: DateTime<Utc>) -> Option<Quote> {
    let provider = providers
        .iter()
        .find(|p| p.get("id").and_then(Value::as_str) == Some(model.provider.as_str()))?;
    let models = provider.get("models")?.as_array()?;
    let (entry, m) = names(model).find_map(|n| {
        models
            .iter()
            .find(|m| m.get("match").is_some_and(|c| clause_matches(c, n)))
            .map(|m| {
                (
                    m.get("id").and_then(Value::as_str).unwrap_or(n).to_string(),
                    m,
                )
            })
    })?;
    // A list of conditional prices: the last one whose constraint holds wins.
    let prices = match m.get("prices")? {
        Value::Array(list) => list
            .iter()
            .rev()
            .find(|c| {
                c.get("constraint")
                    .is_none_or(|k| k.is_null() || constraint_active(k, at))
            })?
            .get("prices")?,
        single => single,
    };
    let fields: &[(&str, Component)] = &[
        ("input_mtok", Component::Input),
        ("output_mtok", Component::Output),
        ("cache_read_mtok", Component::CachedInput),
        ("cache_write_mtok", Component::CacheWrite5m),
        ("cache_write_1h_mtok", Component::CacheWrite1h),
        ("output_reasoning_mtok", Component::Reasoning),
    ];
    let mut values = Vec::new();
    for (f, c) in fields {
        match prices.get(*f) {
            Some(Value::Object(tiered)) => {
                if let Some(base) = tiered.get("base").and_then(|b| decimal(b, false)) {
                    values.push((*c, None, base));
                }
                for t in tiered
                    .get("tiers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let (Some(start), Some(price)) = (
                        t.get("start").and_then(Value::as_u64),
                        t.get("price").and_then(|p| decimal(p, false)),
                    ) {
                        values.push((*c, Some(start), price));
                    }
                }
            }
            Some(v) => {
                if let Some(d) = decimal(v, false) {
                    values.push((*c, None, d));
                }
            }
            None => {}
        }
    }
    Some(Quote { entry, values })
}
