//! The pure gateway client: the budget table and `decide()`, reservations, cost estimates,
//! token counting, throttle windows and staleness. No I/O and no clock: callers pass the
//! time in, so that every decision can be tested and replayed.

pub mod decision;
pub mod estimate;
pub mod reserve;
pub mod staleness;
pub mod state;
pub mod table;
pub mod throttle;
pub mod tokens;
