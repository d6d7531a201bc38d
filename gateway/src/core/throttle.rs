//! Per-budget request rate for THROTTLE decisions: at most `requests_per_minute` requests
//! per budget in each calendar minute (UTC). Fixed windows allow up to twice the rate across
//! a minute boundary; that is the documented precision of a throttle, not of a budget (the
//! reservations bound spend). Pure: time is passed in.

use std::collections::HashMap;
use std::sync::Arc;

use foldhash::fast::RandomState;

/// Requests counted per budget in the current minute.
#[derive(Debug, Default, Clone)]
pub struct Throttle {
    windows: HashMap<Arc<str>, (i64, u32), RandomState>,
}

impl Throttle {
    /// Counts one request of `budget_id` at `now_ms`; `Err(retry_after_ms)` when the minute's
    /// `requests_per_minute` are used up.
    pub fn admit(
        &mut self,
        budget_id: &Arc<str>,
        requests_per_minute: u32,
        now_ms: i64,
    ) -> Result<(), u64> {
        let minute = now_ms.div_euclid(60_000);
        let slot = self.windows.entry(budget_id.clone()).or_insert((minute, 0));
        if slot.0 != minute {
            *slot = (minute, 0);
        }
        if slot.1 >= requests_per_minute {
            let next = (minute + 1) * 60_000;
            return Err(u64::try_from(next - now_ms).unwrap_or(1).max(1));
        }
        slot.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_the_rate_per_minute() {
        let mut t = Throttle::default();
        let id: Arc<str> = "b".into();
        let base = 1_780_000_020_000 + 20_000; // 20 s into a minute
        assert!(t.admit(&id, 2, base).is_ok());
        assert!(t.admit(&id, 2, base + 1).is_ok());
        assert_eq!(t.admit(&id, 2, base + 2), Err(39_998));
        assert!(t.admit(&id, 2, base + 40_000).is_ok());
        assert_eq!(t.admit(&id, 0, base), Err(40_000));
    }
}
