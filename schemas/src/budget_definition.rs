//! The budget definition: the JSON value on the compacted budgets topic, keyed by
//! `budget_id` (a tombstone deletes), and the entries of a budgets file. This module owns the
//! shape and the checks that need nothing but the definition itself; checks against the
//! pricing catalog (currencies, models) belong to whoever holds the catalog.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Schema version of definitions this build writes and reads.
pub const BUDGET_DEFINITION_VERSION: u32 = 1;

/// Longest budget id, in bytes.
pub const MAX_BUDGET_ID_LEN: usize = 128;

/// The scope dimensions a budget may name.
pub const SCOPE_DIMENSIONS: [&str; 7] = [
    "tenant",
    "department",
    "user",
    "project",
    "model",
    "feature",
    "api_key",
];

/// Throttle rate of the default ladder's 80 % rung, which is a throttle because a default
/// ladder has no downgrade target.
pub const DEFAULT_THROTTLE_RPM: u32 = 60;

/// One budget. Money is a decimal string in JSON, never a float.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetDefinition {
    /// Compaction key: `[A-Za-z0-9._:-]{1,128}`.
    pub budget_id: String,
    /// Definition schema version; 1.
    #[serde(default = "default_version")]
    pub version: u32,
    /// Dimension → value; every dimension must match. Empty = global.
    #[serde(default)]
    pub scope: BTreeMap<String, String>,
    /// Calendar period or rolling window.
    pub period: BudgetPeriod,
    /// Limit per period, in `currency`.
    #[serde(with = "rust_decimal::serde::str")]
    pub limit: Decimal,
    /// A catalog currency, e.g. USD.
    pub currency: String,
    /// Rungs, lowest first; default 0.5 notify, 0.8 throttle, 1.0 block.
    #[serde(default = "default_ladder")]
    pub ladder: Vec<Rung>,
    /// A level drops only when the ratio is below `at − hysteresis`.
    #[serde(default = "default_hysteresis", with = "rust_decimal::serde::str")]
    pub hysteresis: Decimal,
    /// Features never blocked, throttled or downgraded (e.g. health checks).
    #[serde(default)]
    pub whitelist_features: Vec<String>,
    /// Evaluated and published, never enforced.
    #[serde(default)]
    pub shadow: bool,
    /// Temporary limits; the latest-expiring unexpired one applies.
    #[serde(default)]
    pub overrides: Vec<LimitOverride>,
    /// Zone of calendar periods when the period names none.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Spike detection; absent = on with [`SpikeOptions::default`]. Left out of the JSON when
    /// absent, so that definitions without it read as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spike: Option<SpikeOptions>,
}

/// When a budget publishes a SPIKE record: the current UTC hour's spend so far is above
/// `factor` × the trailing hourly mean, or above the mean + `sigmas` × σ, over the
/// `trailing_hours` full hours before it (hours without spend count as 0), and at least
/// `min_spend` (in the budget's currency), so that small scopes page no one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpikeOptions {
    /// `false` turns spike detection off for this budget.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Least spend in the hour for a spike, in the budget's currency; default 1.
    #[serde(default = "default_spike_min_spend", with = "rust_decimal::serde::str")]
    pub min_spend: Decimal,
    /// The mean rule's multiple; default 3, at least 1.
    #[serde(default = "default_spike_factor", with = "rust_decimal::serde::str")]
    pub factor: Decimal,
    /// The σ rule's multiple of the standard deviation; default 3, above 0.
    #[serde(default = "default_spike_sigmas", with = "rust_decimal::serde::str")]
    pub sigmas: Decimal,
    /// Full hours the mean and σ are taken over; default 24, 2 to
    /// [`MAX_SPIKE_TRAILING_HOURS`].
    #[serde(default = "default_spike_trailing_hours")]
    pub trailing_hours: u32,
}

/// Longest trailing window of spike detection: a week of hours.
pub const MAX_SPIKE_TRAILING_HOURS: u32 = 168;

impl Default for SpikeOptions {
    fn default() -> Self {
        SpikeOptions {
            enabled: true,
            min_spend: default_spike_min_spend(),
            factor: default_spike_factor(),
            sigmas: default_spike_sigmas(),
            trailing_hours: default_spike_trailing_hours(),
        }
    }
}

/// The period a budget's spend is summed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum BudgetPeriod {
    /// A calendar day, ISO week (Monday first) or month in a time zone.
    Calendar {
        calendar: CalendarUnit,
        /// IANA zone; the budget's `time_zone` when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        time_zone: Option<String>,
    },
    /// A window sliding with event time.
    Rolling { rolling: RollingWindow },
}

/// Calendar period units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalendarUnit {
    Day,
    Week,
    Month,
}

/// Rolling window lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RollingWindow {
    #[serde(rename = "1h")]
    Hour,
    #[serde(rename = "24h")]
    Day,
    #[serde(rename = "7d")]
    Week,
}

impl RollingWindow {
    /// Length in milliseconds.
    pub fn millis(self) -> i64 {
        match self {
            RollingWindow::Hour => 3_600_000,
            RollingWindow::Day => 86_400_000,
            RollingWindow::Week => 7 * 86_400_000,
        }
    }

    /// `1h`, `24h` or `7d`.
    pub fn as_str(self) -> &'static str {
        match self {
            RollingWindow::Hour => "1h",
            RollingWindow::Day => "24h",
            RollingWindow::Week => "7d",
        }
    }
}

impl CalendarUnit {
    /// `day`, `week` or `month`.
    pub fn as_str(self) -> &'static str {
        match self {
            CalendarUnit::Day => "day",
            CalendarUnit::Week => "week",
            CalendarUnit::Month => "month",
        }
    }
}

/// One rung of the ladder: at `at` × limit, take `action`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rung {
    /// Ratio of the limit, e.g. "0.8".
    #[serde(with = "rust_decimal::serde::str")]
    pub at: Decimal,
    pub action: RungAction,
}

/// What a gateway does once a rung is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RungAction {
    /// Tell the caller (level WARNING).
    Notify,
    /// Rate-limit the scope.
    Throttle { requests_per_minute: u32 },
    /// Route to a cheaper catalog model.
    Downgrade { to: String },
    /// Refuse (whitelisted features excepted).
    Block,
}

/// A temporary limit, in force until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverride {
    #[serde(with = "rust_decimal::serde::str")]
    pub limit: Decimal,
    /// RFC 3339.
    pub expires_at: DateTime<Utc>,
}

fn default_version() -> u32 {
    BUDGET_DEFINITION_VERSION
}

fn default_hysteresis() -> Decimal {
    Decimal::new(2, 2)
}

fn default_time_zone() -> String {
    "UTC".to_string()
}

fn default_true() -> bool {
    true
}

fn default_spike_min_spend() -> Decimal {
    Decimal::ONE
}

fn default_spike_factor() -> Decimal {
    Decimal::from(3)
}

fn default_spike_sigmas() -> Decimal {
    Decimal::from(3)
}

fn default_spike_trailing_hours() -> u32 {
    24
}

/// The seeds' ladder: 50 % notify, 80 % throttle (a downgrade needs a target, which a
/// default cannot name), 100 % block.
pub fn default_ladder() -> Vec<Rung> {
    vec![
        Rung {
            at: Decimal::new(5, 1),
            action: RungAction::Notify,
        },
        Rung {
            at: Decimal::new(8, 1),
            action: RungAction::Throttle {
                requests_per_minute: DEFAULT_THROTTLE_RPM,
            },
        },
        Rung {
            at: Decimal::ONE,
            action: RungAction::Block,
        },
    ]
}

/// Why a definition is refused; each names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("budget {budget_id:?}: {field}: {message}")]
pub struct BudgetDefinitionError {
    /// The budget's id as given (possibly the invalid one).
    pub budget_id: String,
    /// JSON path of the field, e.g. `ladder[1].at`.
    pub field: String,
    pub message: String,
}

impl BudgetDefinition {
    fn err(&self, field: impl Into<String>, message: impl Into<String>) -> BudgetDefinitionError {
        BudgetDefinitionError {
            budget_id: self.budget_id.clone(),
            field: field.into(),
            message: message.into(),
        }
    }

    /// The zone calendar periods are counted in.
    pub fn effective_time_zone(&self) -> &str {
        match &self.period {
            BudgetPeriod::Calendar {
                time_zone: Some(tz),
                ..
            } => tz,
            _ => &self.time_zone,
        }
    }

    /// The spike options in force: the definition's, or the defaults.
    pub fn spike_options(&self) -> SpikeOptions {
        self.spike.clone().unwrap_or_default()
    }

    /// Checks everything that needs no catalog: id, version, scope dimensions, limit, ladder
    /// order and actions, hysteresis, time zones, overrides, spike options.
    pub fn validate(&self) -> Result<(), BudgetDefinitionError> {
        if !valid_budget_id(&self.budget_id) {
            return Err(self.err(
                "budget_id",
                format!("must match [A-Za-z0-9._:-]{{1,{MAX_BUDGET_ID_LEN}}}"),
            ));
        }
        if self.version != BUDGET_DEFINITION_VERSION {
            return Err(self.err(
                "version",
                format!(
                    "unsupported version {}, this build reads {BUDGET_DEFINITION_VERSION}",
                    self.version
                ),
            ));
        }
        for (dim, value) in &self.scope {
            if !SCOPE_DIMENSIONS.contains(&dim.as_str()) {
                return Err(self.err(
                    format!("scope.{dim}"),
                    format!("unknown dimension, expected one of {SCOPE_DIMENSIONS:?}"),
                ));
            }
            if value.is_empty() || value.len() > 256 {
                return Err(self.err(format!("scope.{dim}"), "value must be 1-256 bytes"));
            }
        }
        if self.limit <= Decimal::ZERO {
            return Err(self.err("limit", "must be above zero"));
        }
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(self.err("currency", "must be an ISO 4217 code such as USD"));
        }
        if self.ladder.is_empty() {
            return Err(self.err("ladder", "must have at least one rung"));
        }
        let mut previous = Decimal::ZERO;
        for (i, rung) in self.ladder.iter().enumerate() {
            if rung.at <= previous {
                return Err(self.err(
                    format!("ladder[{i}].at"),
                    "must be above 0 and above the previous rung's",
                ));
            }
            previous = rung.at;
            match &rung.action {
                RungAction::Throttle {
                    requests_per_minute: 0,
                } => {
                    return Err(self.err(
                        format!("ladder[{i}].action.throttle.requests_per_minute"),
                        "must be at least 1",
                    ))
                }
                RungAction::Downgrade { to } if to.trim().is_empty() => {
                    return Err(self.err(
                        format!("ladder[{i}].action.downgrade.to"),
                        "must name a catalog model",
                    ))
                }
                _ => {}
            }
        }
        if self.hysteresis < Decimal::ZERO || self.hysteresis >= Decimal::ONE {
            return Err(self.err("hysteresis", "must be in [0, 1)"));
        }
        if self.time_zone.parse::<chrono_tz::Tz>().is_err() {
            return Err(self.err("time_zone", "not an IANA time zone"));
        }
        if let BudgetPeriod::Calendar {
            time_zone: Some(tz),
            ..
        } = &self.period
        {
            if tz.parse::<chrono_tz::Tz>().is_err() {
                return Err(self.err("period.time_zone", "not an IANA time zone"));
            }
        }
        for (i, feature) in self.whitelist_features.iter().enumerate() {
            if feature.is_empty() {
                return Err(self.err(format!("whitelist_features[{i}]"), "must not be empty"));
            }
        }
        for (i, o) in self.overrides.iter().enumerate() {
            if o.limit <= Decimal::ZERO {
                return Err(self.err(format!("overrides[{i}].limit"), "must be above zero"));
            }
        }
        if let Some(spike) = &self.spike {
            if spike.min_spend < Decimal::ZERO {
                return Err(self.err("spike.min_spend", "must not be negative"));
            }
            if spike.factor < Decimal::ONE {
                return Err(self.err("spike.factor", "must be at least 1"));
            }
            if spike.sigmas <= Decimal::ZERO {
                return Err(self.err("spike.sigmas", "must be above zero"));
            }
            if !(2..=MAX_SPIKE_TRAILING_HOURS).contains(&spike.trailing_hours) {
                return Err(self.err(
                    "spike.trailing_hours",
                    format!("must be 2 to {MAX_SPIKE_TRAILING_HOURS}"),
                ));
            }
        }
        Ok(())
    }

    /// Parses and validates one definition from JSON; serde's message names the field for
    /// shape errors.
    pub fn from_json(bytes: &[u8]) -> Result<Self, BudgetDefinitionError> {
        let def: BudgetDefinition =
            serde_json::from_slice(bytes).map_err(|e| BudgetDefinitionError {
                budget_id: String::new(),
                field: "(json)".into(),
                message: e.to_string(),
            })?;
        def.validate()?;
        Ok(def)
    }
}

/// Whether `id` is a valid budget id.
pub fn valid_budget_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_BUDGET_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{
        "budget_id": "acme:research:month",
        "version": 1,
        "scope": {"tenant": "acme", "department": "research"},
        "period": {"calendar": "month", "time_zone": "Europe/Paris"},
        "limit": "1000.50",
        "currency": "USD",
        "ladder": [
            {"at": "0.5", "action": "notify"},
            {"at": "0.8", "action": {"downgrade": {"to": "gpt-4o-mini"}}},
            {"at": "0.9", "action": {"throttle": {"requests_per_minute": 30}}},
            {"at": "1.0", "action": "block"}
        ],
        "hysteresis": "0.05",
        "whitelist_features": ["healthcheck"],
        "shadow": true,
        "overrides": [{"limit": "2000", "expires_at": "2026-12-01T00:00:00Z"}],
        "time_zone": "UTC",
        "spike": {"min_spend": "25", "sigmas": "4"}
    }"#;

    #[test]
    fn full_definition_parses_and_round_trips() {
        let def = BudgetDefinition::from_json(FULL.as_bytes()).unwrap();
        assert_eq!(def.limit, Decimal::new(100050, 2));
        assert_eq!(def.effective_time_zone(), "Europe/Paris");
        assert_eq!(
            def.ladder[1].action,
            RungAction::Downgrade {
                to: "gpt-4o-mini".into()
            }
        );
        let spike = def.spike_options();
        assert_eq!(
            (
                spike.min_spend,
                spike.factor,
                spike.sigmas,
                spike.trailing_hours
            ),
            (Decimal::from(25), Decimal::from(3), Decimal::from(4), 24),
            "given values, and defaults for the others"
        );
        assert!(spike.enabled);
        let json = serde_json::to_vec(&def).unwrap();
        assert_eq!(BudgetDefinition::from_json(&json).unwrap(), def);
    }

    #[test]
    fn defaults_are_the_seeds_ladder() {
        let def = BudgetDefinition::from_json(
            br#"{"budget_id":"g","period":{"rolling":"24h"},"limit":"10","currency":"EUR"}"#,
        )
        .unwrap();
        assert!(def.scope.is_empty());
        assert_eq!(def.ladder, default_ladder());
        assert_eq!(def.hysteresis, Decimal::new(2, 2));
        assert_eq!(def.time_zone, "UTC");
        assert_eq!(def.spike, None);
        assert_eq!(
            def.spike_options(),
            SpikeOptions {
                enabled: true,
                min_spend: Decimal::ONE,
                factor: Decimal::from(3),
                sigmas: Decimal::from(3),
                trailing_hours: 24,
            }
        );
        // Written back without the field, so that readers that predate it read it.
        let json = serde_json::to_string(&def).unwrap();
        assert!(!json.contains("spike"), "{json}");
        assert_eq!(
            def.period,
            BudgetPeriod::Rolling {
                rolling: RollingWindow::Day
            }
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, &str)] = &[
            (r#""budget_id": "a b""#, "budget_id"),
            (r#""scope": {"team": "x"}"#, "scope.team"),
            (r#""currency": "usd""#, "currency"),
            (r#""limit": "-1""#, "limit"),
            (
                r#""ladder": [{"at": "0.8", "action": "notify"}, {"at": "0.5", "action": "block"}]"#,
                "ladder[1].at",
            ),
            (
                r#""ladder": [{"at": "1", "action": {"throttle": {"requests_per_minute": 0}}}]"#,
                "ladder[0].action.throttle.requests_per_minute",
            ),
            (r#""hysteresis": "1""#, "hysteresis"),
            (r#""time_zone": "Mars/Olympus""#, "time_zone"),
            (r#""version": 2"#, "version"),
            (r#""spike": {"min_spend": "-1"}"#, "spike.min_spend"),
            (r#""spike": {"factor": "0.5"}"#, "spike.factor"),
            (r#""spike": {"sigmas": "0"}"#, "spike.sigmas"),
            (r#""spike": {"trailing_hours": 1}"#, "spike.trailing_hours"),
            (
                r#""spike": {"trailing_hours": 169}"#,
                "spike.trailing_hours",
            ),
        ];
        for (field_json, field) in cases {
            let mut base: serde_json::Value = serde_json::json!({
                "budget_id": "b", "period": {"calendar": "day"}, "limit": "5", "currency": "USD"
            });
            let patch: serde_json::Value =
                serde_json::from_str(&format!("{{{field_json}}}")).unwrap();
            for (k, v) in patch.as_object().unwrap() {
                base[k] = v.clone();
            }
            let err = BudgetDefinition::from_json(base.to_string().as_bytes()).unwrap_err();
            assert_eq!(&err.field, field, "{err}");
        }
    }

    #[test]
    fn shape_errors_are_refused_with_serde_messages() {
        for bad in [
            r#"{"budget_id":"b","period":{"calendar":"day"},"limit":5,"currency":"USD"}"#,
            r#"{"budget_id":"b","period":{"calendar":"year"},"limit":"5","currency":"USD"}"#,
            r#"{"budget_id":"b","period":{"rolling":"2h"},"limit":"5","currency":"USD"}"#,
            r#"{"budget_id":"b","period":{"calendar":"day"},"limit":"5","currency":"USD","colour":1}"#,
            r#"{"budget_id":"b","period":{"calendar":"day"},"limit":"5","currency":"USD","spike":{"min":"1"}}"#,
            r#"{"budget_id":"b","period":{"calendar":"day"},"limit":"5","currency":"USD","spike":{"factor":3}}"#,
        ] {
            let err = BudgetDefinition::from_json(bad.as_bytes()).unwrap_err();
            assert_eq!(err.field, "(json)", "{bad}");
        }
    }
}
