//! The gateway client: a follower of the compacted budget control topic and a local
//! `decide()` and `reserve()` that gateways call on every request.
//!
//! The decisions are pure ([`core`]); following Kafka is a thin loop around them
//! ([`follower`]); [`convert`] turns Avro control records into the core's state. It does not
//! depend on the aggregator. `example/` holds the example gateway and the stub provider.

pub mod convert;
pub mod core;
pub mod example;
pub mod follower;

pub use crate::core::decision::{Action, Decision};
pub use crate::core::estimate::{Caller, Cost, Usage};
pub use crate::core::reserve::{Denied, Ledger, LedgerConfig, Reservation};
pub use crate::core::staleness::{Freshness, StalePolicy, Staleness};
pub use crate::core::state::{ControlState, Dimension, RequestContext, Scope};
pub use crate::core::table::BudgetTable;
pub use follower::{follow, follow_with, read_all, FollowOptions, Follower};
