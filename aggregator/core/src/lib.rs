//! The aggregator's pure core: everything between a Kafka record's bytes and the rows, dead
//! letters and budget decisions the shell writes out.
//!
//! It is a sans-IO state machine in the style of quinn-proto: the shell feeds records with
//! [`Processor::handle_record`] and the wall clock as a plain argument, and takes sealed
//! epochs out with [`Processor::seal_due`]. It never touches a socket, a clock, Kafka or
//! ClickHouse, so every rule here is driven by synchronous tests.

pub mod budgets;
pub mod checkpoint;
pub mod dead_letter;
pub mod epoch;
pub mod epoch_writer;
pub mod metrics;
pub mod period;
pub mod processor;
pub mod recent_ids;
pub mod reprice;
pub mod stores;
pub mod watermark;
pub mod windows;

pub use budgets::{BudgetBook, SpendFacts};
pub use checkpoint::{
    next_generation, plan_resume, EpochDone, EpochIntent, PartitionCheckpoint, ResumePlan, StartAt,
};
pub use dead_letter::DeadLetter;
pub use epoch::{DuplicateEvent, EpochPolicy, EstimateCorrection, PricedEvent, SealedEpoch};
pub use epoch_writer::{
    EpochWrite, Progress, RetryPolicy, StepOutcome, WriteStep, CORRECTIONS_TABLE,
};
pub use period::Period;
pub use processor::{Disposition, Processor, ProcessorStats, SourceRecord};
pub use recent_ids::{Counted, Fingerprint, RecentIds, RecentIdsPolicy, RestoredId};
pub use watermark::{Watermark, WatermarkConfig};
pub use windows::{Amounts, SpendWindows, Window, WindowError, WindowKey, WindowKeyRef};
