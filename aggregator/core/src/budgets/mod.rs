//! Budgets: definitions validated into a runtime form ([`Budget`]), per-budget spend in
//! calendar periods (in the budget's zone) and rolling windows ([`spend`]), the ladder with
//! hysteresis ([`ladder`]), hourly spend ([`hourly`]) for month-end forecasts ([`forecast`])
//! and spike detection ([`spike`]), and the state machine that turns priced events and time
//! ticks into control records ([`BudgetBook`]).
//!
//! Pure: time comes in as arguments, records go out through [`BudgetBook::poll_output`]. No
//! ClickHouse on the breach path: spend lives here, restored by the shell on assignment.

pub mod book;
pub mod budget;
pub mod calendar;
pub mod forecast;
pub mod hourly;
pub mod ladder;
pub mod ownership;
pub mod spend;
pub mod spike;

#[cfg(test)]
mod spike_tests;
#[cfg(test)]
mod tests;

pub use book::{BookStats, BudgetBook, SpendFacts, SpendMode};
pub use budget::{Budget, Dimension};
pub use calendar::{PeriodSpec, PeriodWindow};
pub use ladder::{Ladder, RuntimeRung};
pub use ownership::tenant_partition;
