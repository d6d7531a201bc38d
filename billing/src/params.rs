//! Request parameters of the cost questions, parsed and checked before any SQL exists:
//! dimensions (a closed set, so no caller text ever becomes an identifier), grains, filters,
//! and the time range, given in the tenant's time zone and turned into UTC instants here.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;

/// Longest accepted string value of any parameter, in bytes. Longer values are refused with
/// 400 before reaching ClickHouse (they travel in the request URL).
pub const MAX_VALUE_BYTES: usize = 512;

/// What costs can be grouped and filtered by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    /// The tenant (admin questions over all tenants only).
    Tenant,
    Department,
    /// The catalog's model: `price_model`, or the reported name when the catalog had none.
    Model,
    /// The model name the caller reported (drill-down under `model`).
    ReportedModel,
    Provider,
    User,
    Project,
    Feature,
    Environment,
    /// The value of one label key.
    Label(String),
}

impl Dimension {
    /// Parses `department`, `model`, …, `label:<key>`.
    pub fn parse(s: &str) -> Result<Dimension, ApiError> {
        Ok(match s {
            "tenant" => Dimension::Tenant,
            "department" => Dimension::Department,
            "model" => Dimension::Model,
            "reported_model" => Dimension::ReportedModel,
            "provider" => Dimension::Provider,
            "user" => Dimension::User,
            "project" => Dimension::Project,
            "feature" => Dimension::Feature,
            "environment" => Dimension::Environment,
            other => match other.strip_prefix("label:") {
                Some(key) if !key.is_empty() => Dimension::Label(checked_value("label", key)?),
                _ => {
                    return Err(ApiError::bad_request(
                        "invalid_dimension",
                        "unknown dimension; use tenant, department, model, reported_model, provider, user, project, feature, environment or label:<key>",
                    ))
                }
            },
        })
    }

    /// The name used in answers.
    pub fn name(&self) -> String {
        match self {
            Dimension::Tenant => "tenant".into(),
            Dimension::Department => "department".into(),
            Dimension::Model => "model".into(),
            Dimension::ReportedModel => "reported_model".into(),
            Dimension::Provider => "provider".into(),
            Dimension::User => "user".into(),
            Dimension::Project => "project".into(),
            Dimension::Feature => "feature".into(),
            Dimension::Environment => "environment".into(),
            Dimension::Label(k) => format!("label:{k}"),
        }
    }
}

/// Time buckets of a cost series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Grain {
    Minute,
    Hour,
    Day,
    Week,
    Month,
    /// One bucket: the whole range.
    Total,
}

impl Grain {
    pub fn parse(s: &str) -> Result<Grain, ApiError> {
        Ok(match s {
            "minute" => Grain::Minute,
            "hour" => Grain::Hour,
            "day" => Grain::Day,
            "week" => Grain::Week,
            "month" => Grain::Month,
            "total" => Grain::Total,
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_grain",
                    "grain must be minute, hour, day, week, month or total",
                ))
            }
        })
    }
}

/// A string value from a caller: bounded in length, otherwise passed on verbatim (it is only
/// ever bound as a query parameter).
pub fn checked_value(what: &str, v: &str) -> Result<String, ApiError> {
    if v.len() > MAX_VALUE_BYTES {
        return Err(ApiError::bad_request(
            "value_too_long",
            &format!("{what} is longer than {MAX_VALUE_BYTES} bytes"),
        ));
    }
    Ok(v.to_string())
}

/// A time zone by IANA name.
pub fn parse_zone(s: &str) -> Result<Tz, ApiError> {
    s.parse::<Tz>()
        .map_err(|_| ApiError::bad_request("invalid_time_zone", "unknown IANA time zone"))
}

/// `[start, end)` in UTC, from local bounds in `tz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub tz: Tz,
}

/// Parses a local date (`2026-03-01`, midnight) or date-time (`2026-03-01T10:00`, with or
/// without seconds) in `tz`. A local time skipped by a clock change is refused; one that
/// happens twice means its first occurrence.
pub fn parse_local(s: &str, tz: Tz) -> Result<DateTime<Utc>, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_time",
            "times are YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS] in the tenant's time zone",
        )
    };
    let naive = if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        d.and_hms_opt(0, 0, 0).ok_or_else(bad)?
    } else if let Ok(dt) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S") {
        dt
    } else {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M").map_err(|_| bad())?
    };
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_time",
                "that local time does not exist (clock change)",
            )
        })
}

impl TimeRange {
    /// A checked range: non-empty, at most `max_days` long, within years 2000–2199.
    pub fn new(
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        tz: Tz,
        max_days: i64,
    ) -> Result<TimeRange, ApiError> {
        if end <= start {
            return Err(ApiError::bad_request(
                "invalid_range",
                "`to` must be after `from`",
            ));
        }
        if end - start > Duration::days(max_days) {
            return Err(ApiError::bad_request(
                "range_too_long",
                &format!("a range may span at most {max_days} days"),
            ));
        }
        let lo = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single();
        let hi = Utc.with_ymd_and_hms(2200, 1, 1, 0, 0, 0).single();
        if lo.is_some_and(|lo| start < lo) || hi.is_some_and(|hi| end > hi) {
            return Err(ApiError::bad_request(
                "invalid_range",
                "ranges must lie within 2000-2199",
            ));
        }
        Ok(TimeRange { start, end, tz })
    }

    /// Whether both bounds and every UTC offset of the zone within the range are whole
    /// multiples of `step_s` seconds: then buckets of the zone's hours, days, weeks and
    /// months are unions of UTC buckets of `step_s`, and a rollup at that step is exact.
    pub fn aligned_to(&self, step_s: i64) -> bool {
        if self.start.timestamp() % step_s != 0 || self.end.timestamp() % step_s != 0 {
            return false;
        }
        // Offsets change at most a few times a year; checking every hour of the range
        // (at most a few thousand steps under the range limit) catches each change.
        let mut t = self.start;
        loop {
            let offset = self.tz.offset_from_utc_datetime(&t.naive_utc()).fix();
            if i64::from(offset.local_minus_utc()) % step_s != 0 {
                return false;
            }
            if t >= self.end {
                return true;
            }
            t = (t + Duration::hours(1)).min(self.end);
        }
    }
}

/// The month `YYYY-MM` in `tz` as a range.
pub fn month_range(period: &str, tz: Tz) -> Result<TimeRange, ApiError> {
    let bad = || ApiError::bad_request("invalid_period", "period must be YYYY-MM");
    let (y, m) = period.split_once('-').ok_or_else(bad)?;
    if y.len() != 4 || m.len() != 2 {
        return Err(bad());
    }
    let (y, m): (i32, u32) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    let first = NaiveDate::from_ymd_opt(y, m, 1).ok_or_else(bad)?;
    let next = if m == 12 {
        NaiveDate::from_ymd_opt(y + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(y, m + 1, 1)
    }
    .ok_or_else(bad)?;
    let start = parse_local(&first.format("%Y-%m-%d").to_string(), tz)?;
    let end = parse_local(&next.format("%Y-%m-%d").to_string(), tz)?;
    TimeRange::new(start, end, tz, 40)
}

/// The month before `YYYY-MM`.
pub fn previous_period(period: &str) -> Option<String> {
    let (y, m) = period.split_once('-')?;
    let (y, m): (i32, u32) = (y.parse().ok()?, m.parse().ok()?);
    Some(if m == 1 {
        format!("{:04}-12", y - 1)
    } else {
        format!("{y:04}-{:02}", m - 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimensions_are_a_closed_set() {
        assert_eq!(Dimension::parse("model").unwrap(), Dimension::Model);
        assert_eq!(
            Dimension::parse("label:team").unwrap(),
            Dimension::Label("team".into())
        );
        assert!(Dimension::parse("model; DROP TABLE x").is_err());
        assert!(Dimension::parse("label:").is_err());
        assert!(Dimension::parse(&format!("label:{}", "k".repeat(600))).is_err());
    }

    #[test]
    fn local_bounds_follow_the_zone() {
        let tz = parse_zone("Europe/Paris").unwrap();
        let r = month_range("2026-03", tz).unwrap();
        // March 2026 in Paris: starts at +01:00, ends at +02:00 (DST from March 29).
        assert_eq!(r.start.to_rfc3339(), "2026-02-28T23:00:00+00:00");
        assert_eq!(r.end.to_rfc3339(), "2026-03-31T22:00:00+00:00");
        assert!(r.aligned_to(3600));
        let india = month_range("2026-03", parse_zone("Asia/Kolkata").unwrap()).unwrap();
        assert!(!india.aligned_to(3600));
        assert!(india.aligned_to(60));
        // Lord Howe moves its clocks by 30 minutes (to +10:30 on 2026-04-05).
        let lh = month_range("2026-04", parse_zone("Australia/Lord_Howe").unwrap()).unwrap();
        assert!(!lh.aligned_to(3600));
    }

    #[test]
    fn ranges_are_limited() {
        let tz = Tz::UTC;
        let a = parse_local("2026-01-01", tz).unwrap();
        let b = parse_local("2027-06-01", tz).unwrap();
        assert!(TimeRange::new(a, b, tz, 400).is_err());
        assert!(TimeRange::new(b, a, tz, 400).is_err());
        assert!(parse_local("2026-13-01", tz).is_err());
        assert!(month_range("2026-3", tz).is_err());
        assert_eq!(previous_period("2026-01").as_deref(), Some("2025-12"));
    }
}
