//! Reading a cost question out of a request's query string: repeated keys allowed, every
//! key known, every value bounded. Dimension names used as keys are filters
//! (`department=eng&label:team=ml`).

use std::collections::BTreeMap;

use chrono_tz::Tz;

use crate::error::ApiError;
use crate::params::{
    checked_value, month_range, parse_local, parse_zone, Dimension, Grain, TimeRange,
};

/// The query string, split into its pairs.
pub struct QueryPairs(pub Vec<(String, String)>);

impl QueryPairs {
    pub fn parse(raw: Option<&str>) -> Result<QueryPairs, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
            .map_err(|_| ApiError::bad_request("invalid_query", "malformed query string"))?;
        if pairs.len() > 200 {
            return Err(ApiError::bad_request(
                "invalid_query",
                "too many query parameters",
            ));
        }
        Ok(QueryPairs(pairs))
    }

    /// The single value of `key`, if present.
    pub fn one(&self, key: &str) -> Result<Option<String>, ApiError> {
        let mut it = self.0.iter().filter(|(k, _)| k == key);
        let first = it.next();
        if it.next().is_some() {
            return Err(ApiError::bad_request(
                "invalid_query",
                &format!("`{key}` may be given once"),
            ));
        }
        first.map(|(_, v)| checked_value(key, v)).transpose()
    }

    /// Every key is one of `allowed` or (when `filters`) a dimension.
    pub fn check_keys(&self, allowed: &[&str], filters: bool) -> Result<(), ApiError> {
        for (k, _) in &self.0 {
            if allowed.contains(&k.as_str()) {
                continue;
            }
            if filters && Dimension::parse(k).is_ok() {
                continue;
            }
            return Err(ApiError::bad_request(
                "unknown_parameter",
                "unknown query parameter",
            ));
        }
        Ok(())
    }

    /// Filters: each dimension key with its accepted values.
    pub fn filters(&self, max_values: usize) -> Result<Vec<(Dimension, Vec<String>)>, ApiError> {
        let mut by: BTreeMap<Dimension, Vec<String>> = BTreeMap::new();
        for (k, v) in &self.0 {
            if let Ok(d) = Dimension::parse(k) {
                by.entry(d).or_default().push(checked_value(k, v)?);
            }
        }
        if by.values().any(|v| v.len() > max_values) {
            return Err(ApiError::bad_request(
                "too_many_values",
                &format!("a filter takes at most {max_values} values"),
            ));
        }
        Ok(by.into_iter().collect())
    }

    /// `group_by`: comma-separated and/or repeated, in order, no duplicates.
    pub fn group_by(&self, max: usize) -> Result<Vec<Dimension>, ApiError> {
        let mut dims = Vec::new();
        for (_, v) in self.0.iter().filter(|(k, _)| k == "group_by") {
            for part in v.split(',').filter(|p| !p.is_empty()) {
                let d = Dimension::parse(part)?;
                if !dims.contains(&d) {
                    dims.push(d);
                }
            }
        }
        if dims.len() > max {
            return Err(ApiError::bad_request(
                "too_many_dimensions",
                &format!("group_by takes at most {max} dimensions"),
            ));
        }
        Ok(dims)
    }

    pub fn grain(&self, default: Grain) -> Result<Grain, ApiError> {
        self.one("grain")?
            .map(|g| Grain::parse(&g))
            .transpose()
            .map(|g| g.unwrap_or(default))
    }

    /// The time range: `period=YYYY-MM`, or `from` and `to`, in `tz` (`tz` overrides the
    /// tenant's zone).
    pub fn range(&self, zone: Tz, max_days: i64) -> Result<TimeRange, ApiError> {
        let tz = match self.one("tz")? {
            Some(z) => parse_zone(&z)?,
            None => zone,
        };
        match (self.one("period")?, self.one("from")?, self.one("to")?) {
            (Some(p), None, None) => month_range(&p, tz),
            (None, Some(f), Some(t)) => {
                TimeRange::new(parse_local(&f, tz)?, parse_local(&t, tz)?, tz, max_days)
            }
            _ => Err(ApiError::bad_request(
                "invalid_range",
                "give either `period=YYYY-MM` or both `from` and `to`",
            )),
        }
    }

    /// A positive integer parameter, at most `max`.
    pub fn count(&self, key: &str, default: u64, max: u64) -> Result<u64, ApiError> {
        let n = match self.one(key)? {
            Some(v) => v.parse::<u64>().map_err(|_| {
                ApiError::bad_request("invalid_number", &format!("`{key}` is a positive integer"))
            })?,
            None => default,
        };
        if n == 0 || n > max {
            return Err(ApiError::bad_request(
                "invalid_number",
                &format!("`{key}` must be between 1 and {max}"),
            ));
        }
        Ok(n)
    }
}
