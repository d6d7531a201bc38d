//! `ControlState`: the gateway's own view of one STATE record of the control topic (v2), with
//! the scope parsed into fixed dimensions so that matching a request costs a few string
//! compares. Built from the Avro record by `crate::convert`; nothing here does I/O.

use std::sync::Arc;

use rust_decimal::Decimal;

use costpipe_schemas::BudgetLevel;

/// A scope dimension a budget can be restricted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dimension {
    Tenant,
    Department,
    User,
    Project,
    /// The catalog model (resolved through the catalog's aliases), not the caller's string.
    Model,
    Feature,
    ApiKey,
}

impl Dimension {
    /// Every dimension, in the order of [`Scope`]'s slots.
    pub const ALL: [Dimension; 7] = [
        Dimension::Tenant,
        Dimension::Department,
        Dimension::User,
        Dimension::Project,
        Dimension::Model,
        Dimension::Feature,
        Dimension::ApiKey,
    ];

    /// The name used in a budget definition's `scope` map.
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Tenant => "tenant",
            Dimension::Department => "department",
            Dimension::User => "user",
            Dimension::Project => "project",
            Dimension::Model => "model",
            Dimension::Feature => "feature",
            Dimension::ApiKey => "api_key",
        }
    }

    /// The dimension called `name`, if it is one.
    pub fn parse(name: &str) -> Option<Dimension> {
        Dimension::ALL.into_iter().find(|d| d.as_str() == name)
    }
}

/// What a request is, as far as budgets care. Borrowed: building one allocates nothing.
/// `model` is the catalog model (see [`crate::core::estimate::catalog_model`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestContext<'a> {
    pub tenant: &'a str,
    pub department: Option<&'a str>,
    pub user: Option<&'a str>,
    pub project: Option<&'a str>,
    pub model: Option<&'a str>,
    pub feature: Option<&'a str>,
    pub api_key: Option<&'a str>,
}

impl<'a> RequestContext<'a> {
    /// The request's value of `d`.
    pub fn get(&self, d: Dimension) -> Option<&'a str> {
        match d {
            Dimension::Tenant => Some(self.tenant),
            Dimension::Department => self.department,
            Dimension::User => self.user,
            Dimension::Project => self.project,
            Dimension::Model => self.model,
            Dimension::Feature => self.feature,
            Dimension::ApiKey => self.api_key,
        }
    }
}

/// A budget's scope: a value per restricted dimension; all `None` is global.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    slots: [Option<Box<str>>; 7],
}

impl Scope {
    /// The global scope.
    pub fn global() -> Scope {
        Scope::default()
    }

    /// This scope, also restricted to `d = value`.
    pub fn with(mut self, d: Dimension, value: impl Into<Box<str>>) -> Scope {
        self.slots[d as usize] = Some(value.into());
        self
    }

    /// The scope's value of `d`, if it restricts it.
    pub fn get(&self, d: Dimension) -> Option<&str> {
        self.slots[d as usize].as_deref()
    }

    /// The tenant the scope is restricted to, which the table indexes by.
    pub fn tenant(&self) -> Option<&str> {
        self.get(Dimension::Tenant)
    }

    /// Whether every restricted dimension equals the request's value (a request without a
    /// value for a restricted dimension does not match).
    pub fn matches(&self, ctx: &RequestContext<'_>) -> bool {
        Dimension::ALL
            .into_iter()
            .zip(&self.slots)
            .all(|(d, want)| match want {
                None => true,
                Some(want) => ctx.get(d) == Some(&**want),
            })
    }
}

/// One budget's current state, as the aggregator published it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlState {
    /// Deterministic id of the transition; the same when re-published after a crash.
    pub control_id: Arc<str>,
    pub budget_id: Arc<str>,
    pub scope: Scope,
    pub level: BudgetLevel,
    /// Set when `level` is THROTTLE (conversion refuses a THROTTLE without it).
    pub throttle_requests_per_minute: Option<u32>,
    /// Set when `level` is DOWNGRADE (conversion refuses a DOWNGRADE without it).
    pub downgrade_to: Option<Arc<str>>,
    /// Time until the period ends or the window slides below, from `decided_at_ms`.
    pub retry_after_ms: Option<u64>,
    /// Spend in `currency` when the record was decided.
    pub spend: Decimal,
    pub limit: Decimal,
    pub currency: Arc<str>,
    /// End of a calendar period (exclusive), UTC ms; `None` for rolling windows.
    pub period_end_ms: Option<i64>,
    /// Evaluated and published, never enforced.
    pub shadow: bool,
    /// Features this budget never blocks, throttles or downgrades.
    pub whitelist_features: Box<[Box<str>]>,
    pub reason: Arc<str>,
    pub decided_at_ms: i64,
}

impl ControlState {
    /// Whether the record's calendar period has ended at `now_ms`: its level no longer holds
    /// (the aggregator's rollover record may not have arrived yet) and it counts as OK.
    pub fn expired(&self, now_ms: i64) -> bool {
        self.period_end_ms.is_some_and(|end| now_ms >= end)
    }

    /// Whether `feature` is whitelisted.
    pub fn whitelists(&self, feature: Option<&str>) -> bool {
        feature.is_some_and(|f| self.whitelist_features.iter().any(|w| &**w == f))
    }

    /// Whether this budget constrains `ctx` at all: enforced, in scope and not whitelisted.
    /// Reservations hold against such a budget even after its period ended (with the whole
    /// limit as headroom), since the next period's spend counts against the same limit.
    pub fn constrains(&self, ctx: &RequestContext<'_>) -> bool {
        !self.shadow && self.scope.matches(ctx) && !self.whitelists(ctx.feature)
    }

    /// Whether this budget's level applies to `ctx` at `now_ms`: it constrains it and its
    /// period has not ended.
    pub fn applies(&self, ctx: &RequestContext<'_>, now_ms: i64) -> bool {
        self.constrains(ctx) && !self.expired(now_ms)
    }

    /// How long a blocked caller should wait at `now_ms`: until the period ends, else the
    /// published `retry_after_ms` counted from `decided_at_ms`; at least one second.
    pub fn retry_after_ms(&self, now_ms: i64) -> u64 {
        let left = match (self.period_end_ms, self.retry_after_ms) {
            (Some(end), _) => end.saturating_sub(now_ms),
            (None, Some(after)) => {
                let until = self
                    .decided_at_ms
                    .saturating_add(i64::try_from(after).unwrap_or(i64::MAX));
                until.saturating_sub(now_ms)
            }
            (None, None) => 0,
        };
        u64::try_from(left).unwrap_or(0).max(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_matches_only_when_every_dimension_equals() {
        let s = Scope::global()
            .with(Dimension::Tenant, "acme")
            .with(Dimension::Department, "research");
        let mut ctx = RequestContext {
            tenant: "acme",
            department: Some("research"),
            ..Default::default()
        };
        assert!(s.matches(&ctx));
        ctx.department = Some("sales");
        assert!(!s.matches(&ctx));
        ctx.department = None;
        assert!(!s.matches(&ctx));
        assert!(Scope::global().matches(&ctx));
        ctx.tenant = "globex";
        assert!(!Scope::global()
            .with(Dimension::Tenant, "acme")
            .matches(&ctx));
    }

    #[test]
    fn dimensions_round_trip_through_their_names() {
        for d in Dimension::ALL {
            assert_eq!(Dimension::parse(d.as_str()), Some(d));
        }
        assert_eq!(Dimension::parse("region"), None);
    }
}
