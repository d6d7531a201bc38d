//! Budget periods: UTC calendar months of event time.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};

/// A UTC calendar month, e.g. 2026-11.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    pub year: i32,
    pub month: u32,
}

impl Period {
    /// The month containing `millis` (UTC ms since the epoch). Times chrono cannot represent
    /// clamp to the epoch; validation rejects such events long before they get here.
    pub fn of_millis(millis: i64) -> Period {
        let t = DateTime::<Utc>::from_timestamp_millis(millis).unwrap_or_default();
        Period {
            year: t.year(),
            month: t.month(),
        }
    }

    /// First millisecond of the month.
    pub fn start_millis(self) -> i64 {
        NaiveDate::from_ymd_opt(self.year, self.month, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|dt| Utc.from_utc_datetime(&dt).timestamp_millis())
            .unwrap_or_default()
    }

    /// The following month.
    pub fn next(self) -> Period {
        if self.month == 12 {
            Period {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Period {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// Parses `YYYY-MM`.
    pub fn parse(s: &str) -> Option<Period> {
        let (y, m) = s.split_once('-')?;
        let (year, month) = (y.parse().ok()?, m.parse().ok()?);
        (1..=12).contains(&month).then_some(Period { year, month })
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_boundaries_are_exact_to_the_millisecond() {
        let nov = Period {
            year: 2026,
            month: 11,
        };
        let start = nov.start_millis();
        assert_eq!(Period::of_millis(start), nov);
        assert_eq!(
            Period::of_millis(start - 1),
            Period {
                year: 2026,
                month: 10
            }
        );
        assert_eq!(Period::of_millis(nov.next().start_millis() - 1), nov);
        assert_eq!(
            Period {
                year: 2026,
                month: 12
            }
            .next(),
            Period {
                year: 2027,
                month: 1
            }
        );
        assert_eq!(nov.to_string(), "2026-11");
        assert_eq!(Period::parse("2026-11"), Some(nov));
        assert_eq!(Period::parse("2026-13"), None);
    }
}
