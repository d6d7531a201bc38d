//! `Decision`: what a gateway does with one request, and why.

use std::sync::Arc;

/// The action, from least to most restrictive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Forward the request as it is.
    Allow,
    /// Forward at most `requests_per_minute` of the budget's requests.
    Throttle { requests_per_minute: u32 },
    /// Forward to `model` (a catalog model) instead.
    Downgrade { model: Arc<str> },
    /// Refuse; the caller may retry after `retry_after_ms`.
    Block { retry_after_ms: u64 },
}

impl Action {
    /// Stable name for headers, logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Throttle { .. } => "throttle",
            Action::Downgrade { .. } => "downgrade",
            Action::Block { .. } => "block",
        }
    }
}

/// The action and the budget that decided it. `budget_id` and `reason` are set whenever a
/// budget above OK matched, also for `Allow` (a WARNING budget: allowed, close to its limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub budget_id: Option<Arc<str>>,
    pub reason: Option<Arc<str>>,
}

impl Decision {
    /// Allowed, no budget above OK.
    pub const ALLOW: Decision = Decision {
        action: Action::Allow,
        budget_id: None,
        reason: None,
    };
}
