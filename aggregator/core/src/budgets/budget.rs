//! `Budget`: a definition validated against the catalog into the form evaluation uses —
//! scope as (dimension, value) pairs with `model` resolved to its catalog key, the zone
//! parsed, the ladder's actions resolved, overrides as expiry instants, the spike rule with
//! its defaults applied.

use std::sync::Arc;

use chrono_tz::Tz;
use rust_decimal::Decimal;

use costpipe_pricing::Catalog;
use costpipe_schemas::{BudgetDefinition, BudgetDefinitionError, BudgetPeriod, RungAction};

use super::calendar::PeriodSpec;
use super::ladder::{Ladder, RuntimeRung};
use super::spike::SpikeRule;

/// A scope dimension. `ApiKey` matches the usage event's `api_key` label (usage events
/// carry no key field; gateways label events with the key's id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dimension {
    Tenant,
    Department,
    User,
    Project,
    Model,
    Feature,
    ApiKey,
}

impl Dimension {
    /// The dimension named `name` in a definition's scope.
    pub fn parse(name: &str) -> Option<Dimension> {
        Some(match name {
            "tenant" => Dimension::Tenant,
            "department" => Dimension::Department,
            "user" => Dimension::User,
            "project" => Dimension::Project,
            "model" => Dimension::Model,
            "feature" => Dimension::Feature,
            "api_key" => Dimension::ApiKey,
            _ => return None,
        })
    }
}

/// A validated budget.
#[derive(Debug, Clone)]
pub struct Budget {
    pub id: Arc<str>,
    /// The definition as given (published scope, whitelist, …).
    pub definition: BudgetDefinition,
    /// Every pair must match; `model` holds the catalog key.
    pub scope: Vec<(Dimension, String)>,
    /// The tenant the scope names, if any (index and ownership).
    pub tenant: Option<String>,
    pub period: PeriodSpec,
    pub limit: Decimal,
    pub currency: Arc<str>,
    pub ladder: Ladder,
    /// (limit, expires_at ms), unexpired ones applying.
    pub overrides: Vec<(Decimal, i64)>,
    /// Spike detection, when on.
    pub spike: Option<SpikeRule>,
}

impl Budget {
    /// Validates `def` (shape, then against `catalog`: currency, scope model, downgrade
    /// targets) into a runtime budget. Errors name the field.
    pub fn from_definition(
        def: BudgetDefinition,
        catalog: &Catalog,
    ) -> Result<Budget, BudgetDefinitionError> {
        def.validate()?;
        let err = |field: &str, message: String| BudgetDefinitionError {
            budget_id: def.budget_id.clone(),
            field: field.to_string(),
            message,
        };
        if !catalog.knows_currency(&def.currency) {
            return Err(err(
                "currency",
                format!("{} is not a currency of the catalog", def.currency),
            ));
        }
        let mut scope = Vec::with_capacity(def.scope.len());
        for (name, value) in &def.scope {
            let dim = Dimension::parse(name)
                .ok_or_else(|| err(&format!("scope.{name}"), "unknown dimension".into()))?;
            let value = if dim == Dimension::Model {
                catalog
                    .lookup(value)
                    .map(|m| m.key.to_string())
                    .ok_or_else(|| {
                        err(
                            "scope.model",
                            format!("{value} is not a model of the catalog"),
                        )
                    })?
            } else {
                value.clone()
            };
            scope.push((dim, value));
        }
        let mut rungs = Vec::with_capacity(def.ladder.len());
        for (i, rung) in def.ladder.iter().enumerate() {
            if let RungAction::Downgrade { to } = &rung.action {
                if catalog.lookup(to).is_none() {
                    return Err(err(
                        &format!("ladder[{i}].action.downgrade.to"),
                        format!("{to} is not a model of the catalog"),
                    ));
                }
            }
            rungs.push(RuntimeRung::new(rung.at, &rung.action));
        }
        let period = match &def.period {
            BudgetPeriod::Calendar { calendar, .. } => PeriodSpec::Calendar {
                unit: *calendar,
                zone: def
                    .effective_time_zone()
                    .parse::<Tz>()
                    .map_err(|_| err("time_zone", "not an IANA time zone".into()))?,
            },
            BudgetPeriod::Rolling { rolling } => PeriodSpec::Rolling(*rolling),
        };
        let tenant = def.scope.get("tenant").cloned();
        Ok(Budget {
            id: Arc::from(def.budget_id.as_str()),
            scope,
            tenant,
            period,
            limit: def.limit,
            currency: Arc::from(def.currency.as_str()),
            ladder: Ladder {
                rungs,
                hysteresis: def.hysteresis,
            },
            overrides: def
                .overrides
                .iter()
                .map(|o| (o.limit, o.expires_at.timestamp_millis()))
                .collect(),
            spike: SpikeRule::from_options(&def.spike_options()),
            definition: def,
        })
    }

    /// The limit in force at `now_ms`: the unexpired override expiring last, else the limit.
    pub fn limit_at(&self, now_ms: i64) -> Decimal {
        self.overrides
            .iter()
            .filter(|(_, expires)| *expires > now_ms)
            .max_by_key(|(_, expires)| *expires)
            .map_or(self.limit, |(limit, _)| *limit)
    }

    /// When the limit in force next changes after `now_ms` (an override expiring).
    pub fn next_limit_change(&self, now_ms: i64) -> Option<i64> {
        self.overrides
            .iter()
            .map(|(_, e)| *e)
            .filter(|e| *e > now_ms)
            .min()
    }
}
