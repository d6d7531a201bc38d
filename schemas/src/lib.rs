//! The contract every costpipe component shares: the Avro schemas of the usage event and the
//! budget control event, their Rust types, the budget definition, the Confluent wire format, the compiled-in schema
//! registry, the validation rules for a usage event, and the ClickHouse DDL.
//!
//! Decoding takes untrusted bytes: it is bounded ([`bounds`]), returns a [`DecodeError`] with
//! a stable code for anything it cannot read, and never panics.
//!
//! This crate does no I/O and depends on no other costpipe crate.

pub mod bounds;
pub mod budget_definition;
pub mod clickhouse_ddl;
pub mod codec;
pub mod control_codec;
pub mod control_event;
pub mod control_event_v1;
pub mod dead_letter;
pub mod error;
pub mod registry;
pub mod usage_event;
mod usage_read;
pub mod usage_wire;
pub mod validate;
pub mod wire;

pub use budget_definition::{
    BudgetDefinition, BudgetDefinitionError, BudgetPeriod, CalendarUnit, LimitOverride,
    RollingWindow, Rung, RungAction, SpikeOptions,
};
pub use codec::{Codec, UsageCodec};
pub use control_codec::ControlCodec;
pub use control_event::{
    control_id, control_id_at_rung, BudgetControl, BudgetLevel, ControlKind, Direction, FxRate,
};
pub use control_event_v1::BudgetControlV1;
pub use error::{DecodeError, EncodeError};
pub use registry::{SchemaRegistry, CONTROL_V1_ID, CONTROL_V2_ID, USAGE_V1_ID, USAGE_V2_ID};
pub use usage_event::UsageEvent;
pub use validate::{RejectCode, ValidationError, ValidationLimits, MAX_TOKENS_PER_FIELD};
