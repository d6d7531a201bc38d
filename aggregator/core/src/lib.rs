//! The aggregator's pure core: everything between a Kafka record's bytes and the rows, dead
//! letters and budget decisions the shell writes out.
//!
//! It is a sans-IO state machine in the style of quinn-proto: the shell feeds records with
//! [`Processor::handle_record`] and the wall clock as a plain argument, and takes sealed
//! epochs out with [`Processor::seal_due`]. It never touches a socket, a clock, Kafka or
//! ClickHouse, so every rule here is driven by synchronous tests.

pub mod budget;
pub mod checkpoint;
pub mod dead_letter;
pub mod dedup;
pub mod epoch;
pub mod period;
pub mod processor;
pub mod reprice;
pub mod rollup;

pub use budget::{BudgetPolicy, BudgetTracker};
pub use checkpoint::{plan_resume, EpochIntent, ResumePlan, StartAt};
pub use dead_letter::DeadLetter;
pub use epoch::{EpochPolicy, PricedEvent, SealedEpoch};
pub use period::Period;
pub use processor::{Disposition, Processor, ProcessorStats, SourceRecord};
pub use rollup::{RollupKey, RollupTotals};
