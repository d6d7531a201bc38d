//! The month-to-date bill: pure assembly of cost lines into totals by currency, model and
//! department. No I/O; tested without ClickHouse.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate, TimeZone, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::store::CostLine;

/// A UTC calendar month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Month {
    pub year: i32,
    pub month: u32,
}

impl Month {
    /// The month of `now`.
    pub fn current() -> Month {
        let now = Utc::now();
        Month {
            year: now.year(),
            month: now.month(),
        }
    }

    /// Parses `YYYY-MM`.
    pub fn parse(s: &str) -> Option<Month> {
        let (y, m) = s.split_once('-')?;
        let m = Month {
            year: y.parse().ok()?,
            month: m.parse().ok()?,
        };
        (1..=12).contains(&m.month).then_some(m)
    }

    /// `[start, end)` in UTC seconds.
    pub fn bounds_s(self) -> Option<(i64, i64)> {
        let start = NaiveDate::from_ymd_opt(self.year, self.month, 1)?;
        let end = if self.month == 12 {
            NaiveDate::from_ymd_opt(self.year + 1, 1, 1)?
        } else {
            NaiveDate::from_ymd_opt(self.year, self.month + 1, 1)?
        };
        let ts = |d: NaiveDate| {
            d.and_hms_opt(0, 0, 0)
                .map(|dt| Utc.from_utc_datetime(&dt).timestamp())
        };
        Some((ts(start)?, ts(end)?))
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// A total in one currency.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Total {
    pub currency: String,
    pub events: u64,
    pub cost: Decimal,
}

/// A tenant's bill for a month so far.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MonthToDate {
    pub tenant_id: String,
    pub period: String,
    pub totals: Vec<Total>,
    pub by_model: BTreeMap<String, Vec<Total>>,
    pub by_department: BTreeMap<String, Vec<Total>>,
    pub unpriced_events: i64,
    pub lines: Vec<CostLine>,
}

fn add(into: &mut Vec<Total>, line: &CostLine) {
    match into.iter_mut().find(|t| t.currency == line.currency) {
        Some(t) => {
            t.events += line.events;
            t.cost += line.cost;
        }
        None => into.push(Total {
            currency: line.currency.clone(),
            events: line.events,
            cost: line.cost,
        }),
    }
}

/// Assembles the bill from its lines.
pub fn month_to_date(tenant: &str, month: Month, lines: Vec<CostLine>) -> MonthToDate {
    let mut totals = Vec::new();
    let mut by_model: BTreeMap<String, Vec<Total>> = BTreeMap::new();
    let mut by_department: BTreeMap<String, Vec<Total>> = BTreeMap::new();
    let mut unpriced_events = 0;
    for line in &lines {
        add(&mut totals, line);
        add(by_model.entry(line.model.clone()).or_default(), line);
        add(
            by_department.entry(line.department.clone()).or_default(),
            line,
        );
        unpriced_events += line.unpriced_events;
    }
    MonthToDate {
        tenant_id: tenant.to_string(),
        period: month.to_string(),
        totals,
        by_model,
        by_department,
        unpriced_events,
        lines,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn line(model: &str, dept: &str, cost: Decimal) -> CostLine {
        CostLine {
            model: model.into(),
            department: dept.into(),
            currency: "USD".into(),
            events: 2,
            unpriced_events: i64::from(cost.is_zero()),
            input_tokens: 0,
            output_tokens: 0,
            cached_input_tokens: 0,
            cache_write_tokens: 0,
            reasoning_tokens: 0,
            cost,
        }
    }

    #[test]
    fn totals_add_up_exactly() {
        let bill = month_to_date(
            "acme",
            Month {
                year: 2026,
                month: 11,
            },
            vec![
                line("gpt-4o", "eng", dec!(0.000000525)),
                line("gpt-4o", "ops", dec!(1.1)),
                line("x", "eng", dec!(0)),
            ],
        );
        assert_eq!(
            bill.totals,
            vec![Total {
                currency: "USD".into(),
                events: 6,
                cost: dec!(1.100000525)
            }]
        );
        assert_eq!(bill.by_model["gpt-4o"][0].cost, dec!(1.100000525));
        assert_eq!(bill.by_department["eng"][0].events, 4);
        assert_eq!(bill.unpriced_events, 1);
        assert_eq!(bill.period, "2026-11");
    }

    #[test]
    fn month_bounds() {
        assert_eq!(
            Month::parse("2026-12").unwrap().bounds_s(),
            Some((1_796_083_200, 1_798_761_600))
        );
        assert_eq!(Month::parse("2026-00"), None);
    }
}
