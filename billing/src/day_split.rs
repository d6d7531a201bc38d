//! Splitting a time range between a daily (UTC) rollup and raw events, exactly: the rollup
//! answers the whole UTC days inside the range that it covers (`rollup_coverage`, migration
//! 065) and that no bucket boundary cuts; raw events answer the rest. The two conditions are
//! complements within the range, so every event is read once. Pure SQL building.

use crate::plan::{Param, Sql};

const DAY_MS: i64 = 86_400_000;

/// The days of `[start_ms, end_ms)` a day rollup answers, as SQL.
#[derive(Debug, Clone)]
pub struct DaySplit {
    /// First rollup day (a `Date` expression): the first whole day, or the coverage start.
    lo: String,
    /// End of the rollup days (exclusive `Date` expression): the last whole day's end.
    hi: String,
    /// UTC days (ms of their start) inside `[lo, hi)` that a bucket boundary cuts.
    cut_days: Vec<i64>,
}

impl DaySplit {
    /// The split of `[start_ms, end_ms)` for `rollup`. `boundaries` (ms) are the bucket
    /// starts inside the range (e.g. local month starts); a UTC day containing one that is
    /// not a UTC midnight is read raw, so that each event lands in its own bucket.
    pub fn new(
        sql: &mut Sql,
        rollup: &str,
        start_ms: i64,
        end_ms: i64,
        boundaries: &[i64],
    ) -> Self {
        let first_day = start_ms.div_euclid(DAY_MS) + i64::from(start_ms.rem_euclid(DAY_MS) != 0);
        let end_day = end_ms.div_euclid(DAY_MS);
        let first = sql.bind(Param::Int(first_day.saturating_mul(86_400)));
        let last = sql.bind(Param::Int(end_day.saturating_mul(86_400)));
        let rollup = sql.bind(Param::Str(rollup.to_string()));
        let mut cut_days: Vec<i64> = boundaries
            .iter()
            .filter(|b| b.rem_euclid(DAY_MS) != 0)
            .map(|b| b.div_euclid(DAY_MS).saturating_mul(DAY_MS))
            .collect();
        cut_days.sort_unstable();
        cut_days.dedup();
        DaySplit {
            lo: format!(
                "greatest(toDate(toDateTime({first}, 'UTC')), ifNull((SELECT toDate(minOrNull(complete_from)) \
                 FROM rollup_coverage WHERE rollup = {rollup}), toDate('2149-06-01')))"
            ),
            hi: format!("toDate(toDateTime({last}, 'UTC'))"),
            cut_days,
        }
    }

    /// The rollup's rows: `day_col` within the answered days.
    pub fn rollup_cond(&self, sql: &mut Sql, day_col: &str) -> String {
        let mut c = format!("{day_col} >= {} AND {day_col} < {}", self.lo, self.hi);
        for d in &self.cut_days {
            let p = sql.bind(Param::Int(d / 1000));
            c.push_str(&format!(" AND {day_col} != toDate(toDateTime({p}, 'UTC'))"));
        }
        c
    }

    /// Raw rows (`time_col`, already limited to the range by the caller) outside the days
    /// the rollup answers.
    pub fn raw_cond(&self, sql: &mut Sql, time_col: &str) -> String {
        let mut parts = vec![
            format!("{time_col} < toDateTime64({}, 3, 'UTC')", self.lo),
            format!("{time_col} >= toDateTime64({}, 3, 'UTC')", self.hi),
        ];
        for d in &self.cut_days {
            let a = sql.bind(Param::Int(*d));
            let b = sql.bind(Param::Int(d.saturating_add(DAY_MS)));
            parts.push(format!(
                "({time_col} >= fromUnixTimestamp64Milli({a}, 'UTC') AND {time_col} < fromUnixTimestamp64Milli({b}, 'UTC'))"
            ));
        }
        format!("({})", parts.join(" OR "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_days_and_cut_days() {
        let mut sql = Sql::default();
        // 2026-03-01T05:00Z .. 2026-04-01T05:00Z (a UTC-5 month), boundary at its start.
        let start = 1_772_341_200_000;
        let end = start + 31 * DAY_MS;
        let s = DaySplit::new(&mut sql, "r", start, end, &[start]);
        // The first whole UTC day is March 2nd; the last ends at April 1st, 00:00Z.
        assert!(sql
            .params
            .contains(&("p0".into(), Param::Int(1_772_409_600))));
        assert!(sql
            .params
            .contains(&("p1".into(), Param::Int(1_775_001_600))));
        // March 1st holds the boundary: it is outside [lo, hi) already, and still listed.
        assert_eq!(s.cut_days, vec![1_772_323_200_000]);
        let raw = s.raw_cond(&mut sql, "t");
        assert!(raw.starts_with("(t < toDateTime64(greatest("));
        assert_eq!(raw.matches(" OR ").count(), 2);
    }

    #[test]
    fn utc_midnights_cut_nothing() {
        let mut sql = Sql::default();
        let start = 1_772_323_200_000; // 2026-03-01T00:00Z
        let s = DaySplit::new(&mut sql, "r", start, start + 2 * DAY_MS, &[start + DAY_MS]);
        assert!(s.cut_days.is_empty());
        assert_eq!(s.rollup_cond(&mut sql, "day").matches(" AND ").count(), 1);
    }
}
