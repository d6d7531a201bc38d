//! Comparing the catalog with external tables, and the allowlist of deliberate differences.
//!
//! The rule: for every USD model, the period in force at the check instant (`as_of`, the
//! snapshots' date, never today's) is compared component by component with what each table
//! states; a component a table does not state is not compared. A catalog value is the
//! resolved one (a missing `cached_input` is the input price), so a table that prices cache
//! reads apart catches a catalog that forgot to. Periods with time-of-day windows are compared
//! at one instant inside each window; a table without times of day agrees when its value equals
//! one of the windows' (it can only hold one price), a time-aware table is compared at that
//! window's instant. Differences listed in the allowlist, with their reason, are reported but
//! do not fail the check; an allowlist entry that explains nothing fails it (stale reasons
//! must go).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;

use costpipe_pricing::window::{ms_of_week, WEEK_MS};
use costpipe_pricing::{Catalog, Model, PricePeriod, Prices};

use crate::tables::{Component, Table};

/// One difference between the catalog and a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disagreement {
    pub model: String,
    pub component: Component,
    /// Long-context tier (`above_prompt_tokens`), if the difference is in one.
    pub tier: Option<u64>,
    /// `[from, to)` of the catalog period.
    pub period: String,
    /// The window(s) compared, if the period has windows.
    pub window: Option<String>,
    /// The catalog's value(s) (one per window for a table without times of day).
    pub catalog: String,
    pub source: String,
    pub entry: String,
    pub value: Decimal,
    /// The allowlist's reason, when the difference is deliberate.
    pub allowed: Option<String>,
}

impl std::fmt::Display for Disagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.model, self.component.as_str())?;
        if let Some(t) = self.tier {
            write!(f, " (tier above {t})")?;
        }
        write!(f, ", period {}", self.period)?;
        if let Some(w) = &self.window {
            write!(f, ", window {w}")?;
        }
        write!(
            f,
            ": catalog {}, {} {:?} says {}",
            self.catalog, self.source, self.entry, self.value
        )
    }
}

/// A deliberate difference and why.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allowed {
    pub model: String,
    /// The table's name as in reports (`litellm 1.110.2`, `genai-prices 0.2.3`).
    pub source: String,
    /// A catalog field name; absent: every component of the model in that table.
    pub component: Option<String>,
    /// A window name (`peak`, `off-peak`, or `any` for a table without times of day);
    /// absent: any window.
    pub window: Option<String>,
    /// Why the difference is deliberate, with the evidence (page and date).
    pub reason: String,
}

/// The allowlist file (`pricing/catalog/check-allowlist.toml`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Allowlist {
    #[serde(default)]
    pub difference: Vec<Allowed>,
}

impl Allowlist {
    /// Parses an allowlist; every entry needs a reason.
    pub fn from_toml(text: &str) -> Result<Allowlist, String> {
        let list: Allowlist = toml::from_str(text).map_err(|e| e.to_string())?;
        if let Some(a) = list.difference.iter().find(|a| a.reason.trim().is_empty()) {
            return Err(format!(
                "allowlist entry for {} / {} has no reason",
                a.model, a.source
            ));
        }
        Ok(list)
    }

    fn find(&self, d: &Disagreement) -> Option<usize> {
        self.difference.iter().position(|a| {
            a.model == d.model
                && a.source == d.source
                && a.component
                    .as_deref()
                    .is_none_or(|c| c == d.component.as_str())
                && a.window.as_deref().is_none_or(|w| {
                    d.window
                        .as_deref()
                        .is_some_and(|dw| dw.split(' ').next() == Some(w))
                })
        })
    }
}

/// The outcome of a check.
#[derive(Debug, Default)]
pub struct Report {
    pub disagreements: Vec<Disagreement>,
    /// Allowlist entries that matched nothing.
    pub stale: Vec<Allowed>,
    /// Values compared and found equal.
    pub agreed: usize,
    /// Models no table quotes (not USD, or absent from every table).
    pub not_compared: Vec<String>,
}

impl Report {
    /// Disagreements the allowlist does not explain.
    pub fn unexplained(&self) -> impl Iterator<Item = &Disagreement> {
        self.disagreements.iter().filter(|d| d.allowed.is_none())
    }

    /// Whether the check passes.
    pub fn passed(&self) -> bool {
        self.unexplained().next().is_none() && self.stale.is_empty()
    }
}

fn show_ms(ms: i64) -> String {
    if ms == i64::MAX {
        "open".into()
    } else {
        DateTime::from_timestamp_millis(ms).map_or(ms.to_string(), |t| {
            t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
        })
    }
}

fn value_of(p: &Prices, c: Component) -> Option<Decimal> {
    match c {
        Component::Input => Some(p.input),
        Component::CachedInput => Some(p.cached_input),
        Component::CacheWrite5m => Some(p.cache_write_5m),
        Component::CacheWrite1h => Some(p.cache_write_1h),
        Component::Output => Some(p.output),
        // Reasoning priced as output when the catalog has no price of its own.
        Component::Reasoning => Some(p.reasoning.unwrap_or(p.output)),
    }
}

/// The catalog prices for `tier` (`None`: base) of a period without windows.
fn tier_prices(period: &PricePeriod, tier: Option<u64>) -> Option<&Prices> {
    match tier {
        None => Some(&period.base),
        Some(t) => period
            .tiers
            .iter()
            .find(|x| x.above_prompt_tokens == t)
            .map(|x| &x.prices),
    }
}

/// Instants to compare a windowed period at: one minute past every hour of the week of
/// `as_of` (moved a week on where that is before the period starts), so that every window
/// and every weekday is visited: `(window name, instant, prices)`.
fn window_instants(
    period: &PricePeriod,
    as_of: DateTime<Utc>,
) -> Vec<(String, DateTime<Utc>, &Prices)> {
    let Some(schedule) = &period.windows else {
        return Vec::new();
    };
    let week_start = as_of.timestamp_millis() - ms_of_week(as_of.timestamp_millis());
    (0..168)
        .filter_map(|hour| {
            let mut t = week_start + hour * 3_600_000 + 60_000;
            if t < period.from_ms {
                t += WEEK_MS;
            }
            if t >= period.to_ms {
                return None;
            }
            let w = schedule.window_at(t);
            Some((
                w.name.to_string(),
                DateTime::from_timestamp_millis(t)?,
                &w.prices,
            ))
        })
        .collect()
}

/// Compares `catalog` with `tables` at `as_of`.
pub fn check(
    catalog: &Catalog,
    tables: &[Table],
    allow: &Allowlist,
    as_of: DateTime<Utc>,
) -> Report {
    let mut report = Report::default();
    let at_ms = as_of.timestamp_millis();
    for model in catalog.models() {
        let Some(period) = model.period_at(at_ms) else {
            continue;
        };
        let mut quoted = false;
        for table in tables {
            quoted |= compare_model(model, period, table, as_of, &mut report);
        }
        if !quoted {
            report
                .not_compared
                .push(format!("{} ({})", model.key, model.currency));
        }
    }
    let mut used = vec![false; allow.difference.len()];
    for d in &mut report.disagreements {
        if let Some(i) = allow.find(d) {
            used[i] = true;
            d.allowed = Some(allow.difference[i].reason.clone());
        }
    }
    report.stale = allow
        .difference
        .iter()
        .zip(used)
        .filter(|(_, u)| !u)
        .map(|(a, _)| a.clone())
        .collect();
    report
}

/// Compares one model's period with one table; whether the table quotes the model.
fn compare_model(
    model: &Model,
    period: &PricePeriod,
    table: &Table,
    as_of: DateTime<Utc>,
    report: &mut Report,
) -> bool {
    let period_text = format!("[{}, {})", show_ms(period.from_ms), show_ms(period.to_ms));
    let mut disagree =
        |component, tier, window: Option<String>, catalog: String, entry: &str, value| {
            // Hourly instants find one difference many times: keep the first of each kind.
            let window_name = window
                .as_deref()
                .map(|w| w.split(" (at ").next().unwrap_or(w).to_string());
            if report.disagreements.iter().any(|d| {
                d.model == *model.key
                    && d.source == table.name
                    && d.component == component
                    && d.tier == tier
                    && d.catalog == catalog
                    && d.value == value
                    && d.window
                        .as_deref()
                        .map(|w| w.split(" (at ").next().unwrap_or(w).to_string())
                        == window_name
            }) {
                return;
            }
            report.disagreements.push(Disagreement {
                model: model.key.to_string(),
                component,
                tier,
                period: period_text.clone(),
                window,
                catalog,
                source: table.name.clone(),
                entry: entry.to_string(),
                value,
                allowed: None,
            });
        };
    let mut agreed = 0;
    let windows = window_instants(period, as_of);
    if windows.is_empty() {
        let Some(q) = table.quote(model, as_of) else {
            return false;
        };
        for (c, tier, value) in &q.values {
            let ours = tier_prices(period, *tier).and_then(|p| value_of(p, *c));
            match ours {
                Some(v) if v == *value => agreed += 1,
                Some(v) => disagree(*c, *tier, None, v.to_string(), &q.entry, *value),
                None => disagree(*c, *tier, None, "no such tier".into(), &q.entry, *value),
            }
        }
    } else if table.time_aware {
        let mut any = false;
        for (name, instant, prices) in &windows {
            let Some(q) = table.quote(model, *instant) else {
                continue;
            };
            any = true;
            for (c, tier, value) in &q.values {
                let ours = if tier.is_none() {
                    value_of(prices, *c)
                } else {
                    None
                };
                match ours {
                    Some(v) if v == *value => agreed += 1,
                    Some(v) => disagree(
                        *c,
                        *tier,
                        Some(format!(
                            "{name} (at {})",
                            instant.format("%a %Y-%m-%dT%H:%MZ")
                        )),
                        v.to_string(),
                        &q.entry,
                        *value,
                    ),
                    None => disagree(
                        *c,
                        *tier,
                        Some(name.clone()),
                        "no such tier".into(),
                        &q.entry,
                        *value,
                    ),
                }
            }
        }
        if !any {
            return false;
        }
    } else {
        let Some(q) = table.quote(model, as_of) else {
            return false;
        };
        for (c, tier, value) in &q.values {
            let mut ours: Vec<(String, Option<Decimal>)> = Vec::new();
            for (n, _, p) in &windows {
                if !ours.iter().any(|(m, _)| m == n) {
                    ours.push((
                        n.clone(),
                        if tier.is_none() {
                            value_of(p, *c)
                        } else {
                            None
                        },
                    ));
                }
            }
            if ours.iter().any(|(_, v)| *v == Some(*value)) {
                agreed += 1;
            } else {
                let all = ours
                    .iter()
                    .map(|(n, v)| format!("{n} {}", v.map_or("-".into(), |v| v.to_string())))
                    .collect::<Vec<_>>()
                    .join(" / ");
                disagree(
                    *c,
                    *tier,
                    Some("any (the table has no times of day)".into()),
                    all,
                    &q.entry,
                    *value,
                );
            }
        }
    }
    report.agreed += agreed;
    true
}
