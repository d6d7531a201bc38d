//! The budget control event: the current level of one budget scope, as gateways enforce it.

use serde::{Deserialize, Serialize};

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

/// One record of the compacted control topic, keyed by `scope_key`.
/// Money is carried as exact decimal strings (Avro has no decimal that serde maps losslessly).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetControl {
    pub scope_key: String,
    pub scope_kind: String,
    pub tenant_id: String,
    pub period: String,
    pub level: BudgetLevel,
    pub previous_level: Option<BudgetLevel>,
    pub spend: String,
    pub limit: String,
    pub currency: String,
    /// UTC milliseconds since the Unix epoch.
    pub decided_at: i64,
    pub reason: String,
}
