//! Usage metrics: what the shell exports as `llm_tokens_total`, `llm_requests_total`,
//! `llm_cost_usd_total` and `request_cost_usd`, derived once per stored epoch rather than per
//! event, and the rule that bounds their labels.
//!
//! - [`EpochTally`] sums an epoch's events per (tenant, department, catalog model) in one
//!   pass over borrowed strings (no allocation per event), with each event's cost in USD at
//!   the catalog's rates and the per-request cost histogram's bucket counts. What cannot be
//!   put into USD is tallied apart, with its currency and reason.
//! - [`LabelCap`] decides which tenants (and, per tenant, which departments) get a label of
//!   their own: the top N by cost, the rest `other` (rule in its docs).
//!
//! Pure and synchronous like the rest of the core; the shell owns the Prometheus registry.

mod cap;
mod tally;

pub use cap::{LabelCap, OTHER};
pub use tally::{
    ticks_to_f64, usd_of, EpochTally, KeyTally, Unconverted, UsdAmount, REQUEST_COST_BOUNDS_TICKS,
    TOKEN_TYPES, USD,
};
