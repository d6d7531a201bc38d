//! `EpochWrite`: the order in which one sealed epoch reaches the outside world, as a state
//! machine the shell drives (quinn-style: [`EpochWrite::poll`] says what to do next, the shell
//! does it and reports back with [`EpochWrite::handle`]).
//!
//! The order is: dead letters delivered → intent stored → corrections stored (only when the
//! epoch has any: real counts replacing estimates of earlier epochs) → rows stored (with the
//! completion marker derived from them, or a bare marker when the epoch has no rows) → offset
//! committed to Kafka (progress display only).
//!
//! The corrections step is fenced and verified like the rows: nothing is added when a higher
//! generation has claimed the partition, when the epoch's marker exists, or when corrections
//! under the epoch's corrections token are already stored (a crash between the corrections
//! and the rows; the rebuilt epoch decides the same corrections and finds them there). Until
//! the marker exists, readers that rebuild state (recent ids, windows, budgets) ignore a
//! stored correction, so the rebuild counts it exactly once. Why each step is where it is: see [`crate::checkpoint`].
//!
//! The rows step is **fenced and verified** by the store, back to back with the insert: it
//! adds nothing when a higher generation has claimed the partition (the writer is a zombie)
//! or when the epoch's completion marker is already stored (an earlier attempt landed and
//! only its reply was lost). So a retry never depends on the store still remembering the
//! dedup token; the token only covers two writers racing on the same range within
//! milliseconds (a zombie that passed the fence just before the new owner's claim).
//!
//! A failed step is retried from the same step after a backoff the machine computes; a step
//! whose outcome is unknown (a timeout after the request left) is also simply retried: every
//! step is idempotent (dead letters are delivered at least once and carry their source
//! position; intents and markers are positions, not counts; rows are verified first).
//! Epochs of one partition must be written one after another: the next intent may only be
//! stored once the previous epoch is complete.

use crate::checkpoint::{EpochDone, EpochIntent};
use crate::dead_letter::DeadLetter;
use crate::epoch::SealedEpoch;

/// The table of corrections; its name is part of their dedup token.
pub const CORRECTIONS_TABLE: &str = "usage_cost_corrections";

/// The next thing the shell must do for an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteStep {
    /// Deliver [`SealedEpoch::dead_letters`] to the dead-letter topic.
    DeadLetters,
    /// Store [`EpochWrite::intent`].
    Intent,
    /// Fenced and verified: store the epoch's corrections under
    /// `EpochWrite::token(CORRECTIONS_TABLE)`, unless already stored.
    Corrections,
    /// Fenced and verified: store the events under [`EpochWrite::token`]; the store derives
    /// the marker.
    Rows,
    /// Fenced and verified: store [`EpochWrite::done`] directly (an epoch with no rows).
    Done,
    /// Commit [`EpochWrite::commit_offset`] to Kafka; failure is harmless.
    Commit,
}

/// How a step went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// It worked (for rows and markers: written now, or found already complete).
    Ok,
    /// A higher generation has claimed the partition; nothing was written.
    Fenced,
    /// It failed (or its outcome is unknown); retry after the returned delay.
    Failed,
}

/// What became of the epoch after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Go on with [`EpochWrite::poll`].
    Continue,
    /// Retry the same step after this many milliseconds.
    RetryAfterMs(u64),
    /// The epoch is complete.
    Complete,
    /// Another owner claimed the partition: drop it, write nothing more.
    Fenced,
}

/// Backoff of failed steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_backoff_ms: 100,
            max_backoff_ms: 10_000,
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt `failures + 1`: doubling from the initial, capped.
    pub fn delay_ms(&self, failures: u32) -> u64 {
        let factor = 1u64.checked_shl(failures.min(30)).unwrap_or(u64::MAX);
        self.initial_backoff_ms
            .saturating_mul(factor)
            .min(self.max_backoff_ms)
    }
}

/// One epoch on its way out.
#[derive(Debug)]
pub struct EpochWrite {
    epoch: SealedEpoch,
    generation: u64,
    step: Option<WriteStep>,
    failures: u32,
    retry: RetryPolicy,
}

impl EpochWrite {
    /// Starts writing `epoch` as the owner of `generation`.
    pub fn new(epoch: SealedEpoch, generation: u64, retry: RetryPolicy) -> Self {
        // A rebuilt epoch had an intent, which is stored only after its dead letters were.
        let first = if epoch.dead_letters.is_empty() || epoch.replay {
            WriteStep::Intent
        } else {
            WriteStep::DeadLetters
        };
        EpochWrite {
            epoch,
            generation,
            step: Some(first),
            failures: 0,
            retry,
        }
    }

    /// The step to do now; `None` once complete or fenced.
    pub fn poll(&self) -> Option<WriteStep> {
        self.step
    }

    /// The epoch.
    pub fn epoch(&self) -> &SealedEpoch {
        &self.epoch
    }

    /// The writer's generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Consecutive failures of the current step.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The dead letters to deliver.
    pub fn dead_letters(&self) -> &[DeadLetter] {
        &self.epoch.dead_letters
    }

    /// The intent to store.
    pub fn intent(&self) -> EpochIntent {
        EpochIntent::of(&self.epoch, self.generation)
    }

    /// The marker of an epoch with no rows.
    pub fn done(&self) -> EpochDone {
        EpochDone {
            partition: self.epoch.partition,
            start_offset: self.epoch.start_offset,
            end_offset: self.epoch.end_offset,
            generation: self.generation,
        }
    }

    /// The rows' insert deduplication token for `table`: the offset range only, so that
    /// every writer of the range, and every retry, carries the same token.
    pub fn token(&self, table: &str) -> String {
        self.epoch.dedup_token(table)
    }

    /// The offset to commit to Kafka.
    pub fn commit_offset(&self) -> i64 {
        self.epoch.end_offset
    }

    /// Takes the outcome of the current step.
    pub fn handle(&mut self, outcome: StepOutcome) -> Progress {
        let Some(step) = self.step else {
            return Progress::Complete;
        };
        if outcome == StepOutcome::Failed {
            let delay = self.retry.delay_ms(self.failures);
            self.failures = self.failures.saturating_add(1);
            return Progress::RetryAfterMs(delay);
        }
        self.failures = 0;
        if outcome == StepOutcome::Fenced {
            self.step = None;
            return Progress::Fenced;
        }
        let next = match step {
            WriteStep::DeadLetters => Some(WriteStep::Intent),
            WriteStep::Intent if !self.epoch.corrections.is_empty() => Some(WriteStep::Corrections),
            WriteStep::Intent | WriteStep::Corrections if self.epoch.events.is_empty() => {
                Some(WriteStep::Done)
            }
            WriteStep::Intent | WriteStep::Corrections => Some(WriteStep::Rows),
            WriteStep::Rows | WriteStep::Done => Some(WriteStep::Commit),
            WriteStep::Commit => None,
        };
        self.step = next;
        match next {
            Some(_) => Progress::Continue,
            None => Progress::Complete,
        }
    }

    /// Gives the epoch back (after completion, for metrics).
    pub fn into_epoch(self) -> SealedEpoch {
        self.epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(events: usize, dead_letters: usize) -> SealedEpoch {
        use costpipe_pricing::{price_event, Catalog};
        use costpipe_schemas::UsageEvent;
        let catalog = Catalog::builtin();
        let e = UsageEvent::new(uuid::Uuid::nil(), 0, "acme", "openai", "gpt-4o");
        let priced = price_event(&catalog, &e);
        SealedEpoch {
            topic: "usage".into(),
            partition: 2,
            start_offset: 10,
            end_offset: 20,
            catalog_version: "v".into(),
            events: (0..events)
                .map(|i| crate::epoch::PricedEvent {
                    event: e.clone(),
                    priced: priced.clone(),
                    partition: 2,
                    offset: 10 + i as i64,
                    late: false,
                })
                .collect(),
            dead_letters: (0..dead_letters)
                .map(|i| DeadLetter {
                    partition: 2,
                    offset: 15 + i as i64,
                    key: None,
                    payload: vec![1],
                    reason_code: "x",
                    reason: "x".into(),
                })
                .collect(),
            duplicates: Vec::new(),
            corrections: Vec::new(),
            replay: false,
        }
    }

    fn run(w: &mut EpochWrite, claimed: u64) -> Vec<WriteStep> {
        let mut steps = Vec::new();
        while let Some(step) = w.poll() {
            steps.push(step);
            let fenced = matches!(
                step,
                WriteStep::Rows | WriteStep::Done | WriteStep::Corrections
            ) && !crate::checkpoint::may_write(w.generation(), claimed);
            let outcome = if fenced {
                StepOutcome::Fenced
            } else {
                StepOutcome::Ok
            };
            if w.handle(outcome) == Progress::Fenced {
                break;
            }
        }
        steps
    }

    #[test]
    fn steps_come_in_protocol_order() {
        use WriteStep::*;
        let mut w = EpochWrite::new(epoch(3, 1), 4, RetryPolicy::default());
        assert_eq!(run(&mut w, 4), vec![DeadLetters, Intent, Rows, Commit]);
        let mut w = EpochWrite::new(epoch(0, 0), 4, RetryPolicy::default());
        assert_eq!(run(&mut w, 4), vec![Intent, Done, Commit]);
    }

    #[test]
    fn a_zombie_is_stopped_by_the_fenced_rows_step() {
        use WriteStep::*;
        let mut w = EpochWrite::new(epoch(3, 0), 4, RetryPolicy::default());
        assert_eq!(run(&mut w, 5), vec![Intent, Rows]);
        assert_eq!(w.poll(), None);
    }

    #[test]
    fn failures_retry_the_same_step_with_growing_capped_backoff() {
        let policy = RetryPolicy {
            initial_backoff_ms: 100,
            max_backoff_ms: 1_000,
        };
        let mut w = EpochWrite::new(epoch(1, 0), 1, policy);
        let delays: Vec<Progress> = (0..6).map(|_| w.handle(StepOutcome::Failed)).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1000, 1000].map(Progress::RetryAfterMs)
        );
        assert_eq!(w.poll(), Some(WriteStep::Intent));
        assert_eq!(w.handle(StepOutcome::Ok), Progress::Continue);
        assert_eq!(w.failures(), 0);
    }

    #[test]
    fn tokens_name_the_range_not_the_writer() {
        let a = EpochWrite::new(epoch(1, 0), 1, RetryPolicy::default());
        let b = EpochWrite::new(epoch(1, 0), 9, RetryPolicy::default());
        assert_eq!(a.token("t"), b.token("t"));
        assert_eq!(a.token("t"), "usage/2/10-20/t");
    }
}
