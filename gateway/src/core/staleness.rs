//! How old the gateway's view of the control topic is, and what to do when it is too old.
//!
//! Two ages: since the last record was applied (a quiet topic is normal: levels change
//! rarely), and since the follower last confirmed it had read everything there was (the
//! meaningful one: a follower that cannot reach the broker stops confirming). Beyond
//! `max_age_ms` the caller's [`StalePolicy`] decides: fail open (decide from the stale view,
//! as if budgets had not moved) or fail closed (refuse every request of a budgeted scope).

/// What to do when the view is older than the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StalePolicy {
    /// Keep deciding from the stale view (availability over budget precision).
    Open,
    /// Refuse requests (budget precision over availability).
    Closed,
}

/// The follower's progress, fed by the shell with times it reads; pure otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Freshness {
    /// When a record was last applied, UTC ms.
    pub last_record_ms: Option<i64>,
    /// When the follower last found itself at the end of every partition, UTC ms.
    pub caught_up_ms: Option<i64>,
}

/// Ages at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Staleness {
    /// Since the last applied record; `None` if none ever was.
    pub since_last_record_ms: Option<i64>,
    /// Since the follower was last caught up; `None` before the initial load finished.
    pub since_caught_up_ms: Option<i64>,
}

impl Freshness {
    /// The ages at `now_ms`.
    pub fn at(&self, now_ms: i64) -> Staleness {
        let age = |t: Option<i64>| t.map(|t| now_ms.saturating_sub(t).max(0));
        Staleness {
            since_last_record_ms: age(self.last_record_ms),
            since_caught_up_ms: age(self.caught_up_ms),
        }
    }

    /// Whether the view is too old to trust at `now_ms`: never caught up, or not since
    /// `max_age_ms`.
    pub fn is_stale(&self, now_ms: i64, max_age_ms: i64) -> bool {
        self.at(now_ms)
            .since_caught_up_ms
            .is_none_or(|age| age > max_age_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_until_caught_up_and_again_after_the_bound() {
        let mut f = Freshness::default();
        assert!(f.is_stale(1_000, 5_000));
        f.caught_up_ms = Some(1_000);
        f.last_record_ms = Some(500);
        assert!(!f.is_stale(6_000, 5_000));
        assert!(f.is_stale(6_001, 5_000));
        assert_eq!(
            f.at(2_000),
            Staleness {
                since_last_record_ms: Some(1_500),
                since_caught_up_ms: Some(1_000)
            }
        );
    }
}
