//! The gateway client: a follower of the compacted budget control topic and a local,
//! allocation-free `decide()` that gateways call on every request.
//!
//! The decision table is pure ([`BudgetTable`]); following Kafka is a thin loop around it
//! ([`follow`]). It does not depend on the aggregator.

pub mod follower;
pub mod table;

pub use follower::{follow, read_all};
pub use table::{BudgetTable, Decision};
