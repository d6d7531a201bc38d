//! Per-minute rollup rows: cost and tokens summed by tenant, department, model and minute.

use rust_decimal::Decimal;

/// The rollup's key. `department` is empty when the event had none.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RollupKey {
    pub tenant_id: String,
    pub department: String,
    pub model: String,
    /// Currency of `cost` (the price's).
    pub currency: String,
    /// Currency of `billing_cost` (the tenant's).
    pub billing_currency: String,
    /// Start of the minute, UTC seconds since the epoch.
    pub minute: i64,
}

/// Sums for one key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollupTotals {
    pub events: u64,
    pub unpriced_events: i64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    pub cache_write_1h_tokens: u64,
    pub cost: Decimal,
    pub billing_cost: Decimal,
}

/// Start of the minute containing `millis`, in seconds.
pub fn minute_of(millis: i64) -> i64 {
    millis.div_euclid(60_000) * 60
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_floor_even_before_the_epoch() {
        assert_eq!(minute_of(59_999), 0);
        assert_eq!(minute_of(60_000), 60);
        assert_eq!(minute_of(-1), -60);
    }
}
