//! The ladder: rungs of increasing ratios, each with an action, and the rule that moves a
//! budget between them. Up as soon as a rung's ratio is reached; down only when the ratio is
//! below `at − hysteresis` of the rung held, so that spend hovering at a rung does not flap.

use rust_decimal::Decimal;

use costpipe_schemas::{BudgetLevel, RungAction};

/// One rung, with its action resolved into what a control record carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeRung {
    pub at: Decimal,
    pub level: BudgetLevel,
    pub throttle_requests_per_minute: Option<i64>,
    pub downgrade_to: Option<String>,
}

impl RuntimeRung {
    /// The rung for a definition's action.
    pub fn new(at: Decimal, action: &RungAction) -> Self {
        let (level, rpm, to) = match action {
            RungAction::Notify => (BudgetLevel::Warning, None, None),
            RungAction::Throttle {
                requests_per_minute,
            } => (
                BudgetLevel::Throttle,
                Some(i64::from(*requests_per_minute)),
                None,
            ),
            RungAction::Downgrade { to } => (BudgetLevel::Downgrade, None, Some(to.clone())),
            RungAction::Block => (BudgetLevel::Block, None, None),
        };
        RuntimeRung {
            at,
            level,
            throttle_requests_per_minute: rpm,
            downgrade_to: to,
        }
    }
}

/// Rungs, strictly increasing `at` (validated), and the hysteresis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ladder {
    pub rungs: Vec<RuntimeRung>,
    pub hysteresis: Decimal,
}

impl Ladder {
    /// The highest rung `ratio` reaches, with no history (a new period).
    pub fn fresh(&self, ratio: Decimal) -> Option<usize> {
        self.rungs.iter().rposition(|r| ratio >= r.at)
    }

    /// The rung after `ratio` is seen while `held` is in force: up to any higher rung reached;
    /// down only past the held rung's `at − hysteresis` (and then to the highest rung whose
    /// `at − hysteresis` still holds).
    pub fn next(&self, held: Option<usize>, ratio: Decimal) -> Option<usize> {
        let reached = self.fresh(ratio);
        if reached >= held {
            return reached;
        }
        let held = held?;
        (0..=held.min(self.rungs.len().saturating_sub(1)))
            .rev()
            .find(|&i| ratio >= self.rungs[i].at - self.hysteresis)
    }

    /// The level of a rung (OK for none).
    pub fn level(&self, rung: Option<usize>) -> BudgetLevel {
        rung.and_then(|i| self.rungs.get(i))
            .map_or(BudgetLevel::Ok, |r| r.level)
    }
}
