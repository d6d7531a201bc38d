//! The budget control record v2 (`avro/budget_control_v2.avsc`): one budget's state, forecast
//! or spike, as the aggregator publishes it to the compacted control topic keyed by
//! `budget_id`, and as gateways enforce it. Also the deterministic id of a transition, so that
//! every writer (the aggregator, a re-publish after a crash) names it the same way.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How hard a gateway should push back on a scope's requests. Ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BudgetLevel {
    Ok,
    Warning,
    Downgrade,
    Throttle,
    Block,
}

impl BudgetLevel {
    /// Every level, least severe first.
    pub const ALL: [BudgetLevel; 5] = [
        BudgetLevel::Ok,
        BudgetLevel::Warning,
        BudgetLevel::Downgrade,
        BudgetLevel::Throttle,
        BudgetLevel::Block,
    ];

    /// The Avro symbol, also used in logs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetLevel::Ok => "OK",
            BudgetLevel::Warning => "WARNING",
            BudgetLevel::Downgrade => "DOWNGRADE",
            BudgetLevel::Throttle => "THROTTLE",
            BudgetLevel::Block => "BLOCK",
        }
    }
}

impl std::fmt::Display for BudgetLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a control record says. Gateways act on `State` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ControlKind {
    /// The budget's current level; the latest per `budget_id` is in force.
    State,
    /// The projected period-end spend exceeds the limit (once per period).
    Forecast,
    /// The last hour's cost is far above the trailing hourly mean.
    Spike,
}

impl ControlKind {
    /// The Avro symbol.
    pub fn as_str(self) -> &'static str {
        match self {
            ControlKind::State => "STATE",
            ControlKind::Forecast => "FORECAST",
            ControlKind::Spike => "SPIKE",
        }
    }
}

/// An exchange rate a control record's spend was converted with: `1 from = rate to`, dated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FxRate {
    pub from: String,
    pub to: String,
    /// Exact decimal string.
    pub rate: String,
    /// `YYYY-MM-DD` of the catalog rate used.
    pub date: String,
}

/// One record of the compacted control topic, keyed by `budget_id`. Money and ratios are
/// exact decimal strings. Field meanings are documented in `avro/budget_control_v2.avsc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetControl {
    pub control_id: String,
    pub budget_id: String,
    pub kind: ControlKind,
    pub scope: BTreeMap<String, String>,
    pub tenant_id: Option<String>,
    pub level: BudgetLevel,
    pub previous_level: Option<BudgetLevel>,
    pub threshold: String,
    pub throttle_requests_per_minute: Option<i64>,
    pub downgrade_to: Option<String>,
    pub retry_after_ms: Option<i64>,
    pub spend: String,
    pub limit: String,
    pub ratio: String,
    pub currency: String,
    pub period_kind: String,
    pub period: String,
    /// UTC milliseconds; `None` for rolling windows.
    pub period_start: Option<i64>,
    /// UTC milliseconds, exclusive; `None` for rolling windows.
    pub period_end: Option<i64>,
    pub shadow: bool,
    pub whitelist_features: Vec<String>,
    pub reason: String,
    pub trigger_event_id: Option<String>,
    pub fx_rates: Vec<FxRate>,
    pub forecast_spend: Option<String>,
    pub method: Option<String>,
    /// UTC milliseconds since the Unix epoch.
    pub decided_at: i64,
}

/// Which way a state transition went; part of its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Up,
    Down,
}

/// Namespace of control ids (a fixed random UUID, so ids are UUIDv5 under it).
const CONTROL_ID_NAMESPACE: Uuid = Uuid::from_u128(0x5c1e_4b0a_8f7e_4d6e_9a3b_2f61_c0de_b0d6);

/// The deterministic id of one logical transition: UUIDv5 over the budget, the period (its
/// start, or for rolling windows the "episode": when the window left OK), the limit in force
/// (so that climbing again after a raised-then-lowered limit is a new transition), the kind,
/// the direction and the level reached. Recomputed identically after a crash, so a
/// re-published transition keeps its id and consumers apply it once.
pub fn control_id(
    budget_id: &str,
    kind: ControlKind,
    period_key: i64,
    limit: &str,
    direction: Direction,
    level: BudgetLevel,
) -> String {
    let dir = match direction {
        Direction::Up => "up",
        Direction::Down => "down",
    };
    let name = format!(
        "{budget_id}\u{1f}{}\u{1f}{period_key}\u{1f}{limit}\u{1f}{dir}\u{1f}{}",
        kind.as_str(),
        level.as_str()
    );
    Uuid::new_v5(&CONTROL_ID_NAMESPACE, name.as_bytes())
        .hyphenated()
        .to_string()
}

/// [`control_id`] for a STATE transition to one rung of a ladder in which `level` has several
/// rungs (two `notify` thresholds, say): `rung_threshold` (the rung's `at`, as published in
/// `threshold`) is part of the name, so that crossing 50 % and then 70 % are two transitions
/// with two ids. `None` (the level has one rung, or no rung: OK) is exactly [`control_id`],
/// so the ids of every other ladder are those earlier builds published.
pub fn control_id_at_rung(
    budget_id: &str,
    kind: ControlKind,
    period_key: i64,
    limit: &str,
    direction: Direction,
    level: BudgetLevel,
    rung_threshold: Option<&str>,
) -> String {
    let Some(threshold) = rung_threshold else {
        return control_id(budget_id, kind, period_key, limit, direction, level);
    };
    let dir = match direction {
        Direction::Up => "up",
        Direction::Down => "down",
    };
    let name = format!(
        "{budget_id}\u{1f}{}\u{1f}{period_key}\u{1f}{limit}\u{1f}{dir}\u{1f}{}\u{1f}at={threshold}",
        kind.as_str(),
        level.as_str()
    );
    Uuid::new_v5(&CONTROL_ID_NAMESPACE, name.as_bytes())
        .hyphenated()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rung_thresholds_separate_ids_only_when_given() {
        use BudgetLevel::Warning;
        use ControlKind::State;
        use Direction::Up;
        let plain = control_id("b1", State, 7, "1", Up, Warning);
        assert_eq!(
            control_id_at_rung("b1", State, 7, "1", Up, Warning, None),
            plain
        );
        let at50 = control_id_at_rung("b1", State, 7, "1", Up, Warning, Some("0.5"));
        let at70 = control_id_at_rung("b1", State, 7, "1", Up, Warning, Some("0.7"));
        assert_ne!(at50, at70);
        assert_ne!(at50, plain);
        assert_eq!(
            at50,
            control_id_at_rung("b1", State, 7, "1", Up, Warning, Some("0.5"))
        );
    }

    #[test]
    fn control_ids_are_deterministic_and_distinct() {
        use BudgetLevel::{Block, Throttle};
        use ControlKind::{Spike, State};
        use Direction::{Down, Up};
        let a = control_id("b1", State, 7, "1", Up, Block);
        assert_eq!(a, control_id("b1", State, 7, "1", Up, Block));
        for other in [
            control_id("b2", State, 7, "1", Up, Block),
            control_id("b1", State, 8, "1", Up, Block),
            control_id("b1", State, 7, "2", Up, Block),
            control_id("b1", State, 7, "1", Down, Block),
            control_id("b1", State, 7, "1", Up, Throttle),
            control_id("b1", Spike, 7, "1", Up, Block),
        ] {
            assert_ne!(a, other);
        }
        assert_eq!(Uuid::parse_str(&a).unwrap().get_version_num(), 5);
    }
}
