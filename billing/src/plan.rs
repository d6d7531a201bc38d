//! Planning a cost question: which table answers it exactly (the coarsest rollup that
//! holds every dimension asked for at a fine enough step, else the raw events plus their
//! repricing corrections), and the SQL for it. Pure: no I/O, tested without ClickHouse.
//!
//! Every identifier in the SQL comes from this file; every caller value travels as a
//! ClickHouse query parameter (`{name:Type}`), so no caller text is ever parsed as SQL.

use serde::Serialize;
use utoipa::ToSchema;

use crate::day_split::DaySplit;
use crate::params::{Dimension, Grain, TimeRange};

/// A table a question can be answered from, coarsest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `usage_cost_day`: tenant × department × catalog model × currencies × UTC day, for the
    /// whole UTC days of the range it covers; `usage_cost_hour` for the rest.
    Day,
    /// `usage_cost_hour`: tenant × department × catalog model × currencies × UTC hour.
    Hour,
    /// `usage_cost_minute`: tenant × department × reported model × currencies × minute.
    Minute,
    /// `usage_cost_day_user`: tenant × user × currencies × UTC day, for the whole UTC days
    /// of the range it covers (`rollup_coverage`); raw events for the rest of the range, and
    /// repricing corrections, as [`Source::Raw`].
    DayUser,
    /// `usage_events_priced` with `usage_cost_corrections`.
    Raw,
}

impl Source {
    /// Whether this table answers the question exactly.
    pub fn answers(self, q: &CostQuery) -> bool {
        let dims = q.group_by.iter().chain(q.filters.iter().map(|(d, _)| d));
        match self {
            Source::Raw => true,
            Source::Day => {
                // The partial days at the range's ends come from the hourly rollup; buckets
                // must be unions of UTC days.
                let buckets_of_days = match q.grain {
                    Grain::Total => true,
                    Grain::Day | Grain::Week | Grain::Month => q.range.aligned_to(86_400),
                    Grain::Minute | Grain::Hour => false,
                };
                buckets_of_days && Source::Hour.answers(q)
            }
            Source::Hour => {
                q.grain != Grain::Minute
                    && dims.into_iter().all(|d| {
                        matches!(
                            d,
                            Dimension::Tenant | Dimension::Department | Dimension::Model
                        )
                    })
                    && q.range.aligned_to(3600)
            }
            Source::DayUser => {
                // Totals are exact for any range (the partial days come from raw events);
                // day, week and month buckets only where they are unions of UTC days.
                let buckets_of_days = match q.grain {
                    Grain::Total => true,
                    Grain::Day | Grain::Week | Grain::Month => q.range.aligned_to(86_400),
                    Grain::Minute | Grain::Hour => false,
                };
                buckets_of_days
                    && dims
                        .into_iter()
                        .all(|d| matches!(d, Dimension::Tenant | Dimension::User))
            }
            Source::Minute => {
                dims.into_iter().all(|d| {
                    matches!(
                        d,
                        Dimension::Tenant | Dimension::Department | Dimension::ReportedModel
                    )
                }) && q.range.aligned_to(60)
            }
        }
    }

    /// The coarsest table that answers `q`.
    pub fn choose(q: &CostQuery) -> Source {
        [Source::Day, Source::Hour, Source::Minute, Source::DayUser]
            .into_iter()
            .find(|s| s.answers(q))
            .unwrap_or(Source::Raw)
    }
}

/// How the answer rows are ordered and cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// A series: by bucket, then group; at most `max_rows` (one more is fetched to tell
    /// the caller the answer was cut).
    Series { max_rows: u64 },
    /// The `n` groups of highest billing cost in each billing currency.
    Top { n: u64 },
}

/// A cost question, checked.
#[derive(Debug, Clone)]
pub struct CostQuery {
    /// `None`: every tenant (admin only).
    pub tenant: Option<String>,
    pub range: TimeRange,
    pub grain: Grain,
    pub group_by: Vec<Dimension>,
    /// Each dimension's accepted values (a row matches when its value is one of them).
    pub filters: Vec<(Dimension, Vec<String>)>,
    pub order: Order,
}

/// A value bound to a `{name:Type}` placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    Str(String),
    Strs(Vec<String>),
    Int(i64),
    UInt(u64),
}

/// SQL text with its parameters.
#[derive(Debug, Clone, Default)]
pub struct Sql {
    pub text: String,
    pub params: Vec<(String, Param)>,
}

impl Sql {
    /// Binds `p` under a fresh name and returns its placeholder.
    pub fn bind(&mut self, p: Param) -> String {
        let name = format!("p{}", self.params.len());
        let ty = match &p {
            Param::Str(_) => "String",
            Param::Strs(_) => "Array(String)",
            Param::Int(_) => "Int64",
            Param::UInt(_) => "UInt64",
        };
        self.params.push((name.clone(), p));
        format!("{{{name}:{ty}}}")
    }
}

/// The expression of `d` in a table of `source`; `c` for corrections (`e` is the joined
/// event row, for dimensions the corrections table does not carry).
fn dim_expr(sql: &mut Sql, d: &Dimension, table: Table) -> String {
    use Dimension as D;
    let plain = |col: &str| match table {
        Table::Corrections => format!("c.{col}"),
        _ => col.to_string(),
    };
    let joined = |col: &str| match table {
        Table::Corrections => format!("e.{col}"),
        _ => col.to_string(),
    };
    match d {
        D::Tenant => plain("tenant_id"),
        D::Department => plain("department"),
        D::Model => match table {
            // The rollups' `model` already is the catalog's model (040, 072).
            Table::Hour | Table::Day | Table::HourOutsideDays => "model".into(),
            Table::Minute | Table::DayUser => unreachable_dim(),
            Table::Events | Table::EventsOutsideDays => {
                "if(price_model = '', model, price_model)".into()
            }
            Table::Corrections => "if(c.price_model = '', c.model, c.price_model)".into(),
        },
        D::ReportedModel => plain("model"),
        D::Provider => joined("provider"),
        D::User => joined("user_id"),
        D::Project => joined("project_id"),
        D::Feature => joined("feature"),
        D::Environment => joined("environment"),
        D::Label(k) => {
            let key = sql.bind(Param::Str(k.clone()));
            format!("{}[{key}]", joined("labels"))
        }
    }
}

/// Never reached: `Source::answers` keeps the catalog model away from the minute rollup.
fn unreachable_dim() -> String {
    "''".into()
}

fn needs_event_join(d: &Dimension) -> bool {
    !matches!(
        d,
        Dimension::Tenant | Dimension::Department | Dimension::Model | Dimension::ReportedModel
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    /// The daily rollup, over the whole UTC days it covers.
    Day,
    /// The hourly rollup outside the days [`Table::Day`] answers.
    HourOutsideDays,
    Hour,
    Minute,
    /// The daily user rollup, over the whole UTC days it covers.
    DayUser,
    Events,
    /// Raw events outside the days [`Table::DayUser`] answers.
    EventsOutsideDays,
    Corrections,
}

const TOKEN_COLUMNS: [&str; 6] = [
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cache_write_1h_tokens",
];

/// The days of `q`'s range the daily user rollup answers. No bucket boundary cuts a UTC day:
/// `Source::DayUser` answers only totals and buckets that are unions of UTC days.
fn user_days(sql: &mut Sql, q: &CostQuery) -> DaySplit {
    DaySplit::new(
        sql,
        "usage_cost_day_user",
        q.range.start.timestamp_millis(),
        q.range.end.timestamp_millis(),
        &[],
    )
}

/// The days of `q`'s range the daily rollup answers (no bucket boundary cuts a UTC day:
/// `Source::Day` answers only totals and buckets that are unions of UTC days).
fn cost_days(sql: &mut Sql, q: &CostQuery) -> DaySplit {
    DaySplit::new(
        sql,
        "usage_cost_day",
        q.range.start.timestamp_millis(),
        q.range.end.timestamp_millis(),
        &[],
    )
}

/// `WHERE` of one table: tenant, time range, filters.
fn where_clause(sql: &mut Sql, q: &CostQuery, table: Table) -> String {
    let mut conds = Vec::new();
    let (time_col, tenant_col) = match table {
        Table::Hour | Table::HourOutsideDays => ("hour", "tenant_id"),
        Table::Day => ("day", "tenant_id"),
        Table::Minute => ("minute", "tenant_id"),
        Table::DayUser => ("day", "tenant_id"),
        Table::Events | Table::EventsOutsideDays => ("event_time", "tenant_id"),
        Table::Corrections => ("c.event_time", "c.tenant_id"),
    };
    if let Some(t) = &q.tenant {
        let p = sql.bind(Param::Str(t.clone()));
        conds.push(format!("{tenant_col} = {p}"));
    }
    match table {
        Table::DayUser => {
            let days = user_days(sql, q);
            conds.push(days.rollup_cond(sql, "day"));
        }
        Table::Day => {
            let days = cost_days(sql, q);
            conds.push(days.rollup_cond(sql, "day"));
        }
        _ => {
            let start = sql.bind(Param::Int(q.range.start.timestamp_millis()));
            let end = sql.bind(Param::Int(q.range.end.timestamp_millis()));
            conds.push(format!(
                "{time_col} >= fromUnixTimestamp64Milli({start}, 'UTC') AND {time_col} < fromUnixTimestamp64Milli({end}, 'UTC')"
            ));
        }
    }
    if table == Table::EventsOutsideDays {
        let days = user_days(sql, q);
        conds.push(days.raw_cond(sql, "event_time"));
    }
    if table == Table::HourOutsideDays {
        let days = cost_days(sql, q);
        conds.push(days.raw_cond(sql, "hour"));
    }
    for (d, values) in &q.filters {
        let e = dim_expr(sql, d, table);
        let p = sql.bind(Param::Strs(values.clone()));
        conds.push(format!("{e} IN {p}"));
    }
    conds.join(" AND ")
}

/// The rows of one table, in the common shape the outer aggregation reads.
fn rows_of(sql: &mut Sql, q: &CostQuery, table: Table) -> String {
    let keys: Vec<String> = q
        .group_by
        .iter()
        .enumerate()
        .map(|(i, d)| format!("toString({}) AS k{i}", dim_expr(sql, d, table)))
        .collect();
    let mut cols = keys;
    match table {
        Table::Hour | Table::HourOutsideDays | Table::Minute | Table::Day | Table::DayUser => {
            let t = match table {
                Table::Hour | Table::HourOutsideDays => "hour",
                Table::Minute => "minute",
                _ => "toDateTime(day, 'UTC')",
            };
            cols.push(format!("{t} AS t"));
            cols.push("currency, billing_currency, events, unpriced_events".into());
            cols.extend(TOKEN_COLUMNS.iter().map(|c| c.to_string()));
            cols.push("cost, billing_cost, cache_savings, billing_cache_savings".into());
        }
        Table::Events | Table::EventsOutsideDays => {
            cols.push("event_time AS t".into());
            cols.push("currency, billing_currency, toUInt64(1) AS events, toInt64(unpriced) AS unpriced_events".into());
            cols.extend(TOKEN_COLUMNS.iter().map(|c| c.to_string()));
            cols.push("cost, billing_cost, cache_savings, billing_cache_savings".into());
        }
        Table::Corrections => {
            cols.push("c.event_time AS t".into());
            // Event and token deltas are non-zero only for estimates replaced by their real
            // count (migration 075): negative ones wrap as UInt64 and the sums stay exact
            // (every group's true total is >= 0). Repricing restates costs, not savings, so
            // its rows have zero deltas there (documented in billing/README.md).
            cols.push("c.currency AS currency, c.billing_currency AS billing_currency, toUInt64(c.events_delta) AS events, c.unpriced_delta AS unpriced_events".into());
            cols.extend(
                TOKEN_COLUMNS
                    .iter()
                    .map(|c| format!("toUInt64(c.{c}_delta) AS {c}")),
            );
            cols.push("c.cost_delta AS cost, c.billing_cost_delta AS billing_cost, \
                 c.cache_savings_delta AS cache_savings, c.billing_cache_savings_delta AS billing_cache_savings".into());
        }
    }
    let from = match table {
        Table::Hour | Table::HourOutsideDays => "usage_cost_hour".to_string(),
        Table::Day => "usage_cost_day".to_string(),
        Table::Minute => "usage_cost_minute".to_string(),
        Table::DayUser => "usage_cost_day_user".to_string(),
        Table::Events | Table::EventsOutsideDays => "usage_events_priced".to_string(),
        Table::Corrections => {
            let join = q
                .group_by
                .iter()
                .chain(q.filters.iter().map(|(d, _)| d))
                .any(needs_event_join);
            if join {
                // Corrections carry tenant, department and models only; the other
                // dimensions come from the corrected event, read within the same range.
                let unfiltered = CostQuery {
                    filters: Vec::new(),
                    ..q.clone()
                };
                let w = where_clause(sql, &unfiltered, Table::Events);
                let cw = where_clause(sql, &unfiltered, Table::Corrections);
                // Only the corrected events: an empty set prunes every granule, where the
                // whole range would otherwise be read into the join's hash table.
                format!(
                    "usage_cost_corrections AS c LEFT ANY JOIN (SELECT event_id, provider, user_id, project_id, feature, environment, labels FROM usage_events_priced WHERE {w} \
                     AND event_id IN (SELECT c.event_id FROM usage_cost_corrections AS c WHERE {cw})) AS e ON c.event_id = e.event_id"
                )
            } else {
                "usage_cost_corrections AS c".to_string()
            }
        }
    };
    let w = where_clause(sql, q, table);
    format!("SELECT {} FROM {from} WHERE {w}", cols.join(", "))
}

/// The bucket expression (UTC seconds of the bucket's start) for `t`.
fn bucket_expr(sql: &mut Sql, q: &CostQuery) -> String {
    if q.grain == Grain::Total {
        let s = sql.bind(Param::Int(q.range.start.timestamp()));
        return s;
    }
    let tz = sql.bind(Param::Str(q.range.tz.name().to_string()));
    let e = match q.grain {
        Grain::Minute => "toStartOfMinute(t)".to_string(),
        Grain::Hour => format!("toStartOfHour(t, {tz})"),
        Grain::Day => format!("toStartOfDay(t, {tz})"),
        Grain::Week => format!("toDateTime(toMonday(t, {tz}), {tz})"),
        Grain::Month => format!("toDateTime(toStartOfMonth(t, {tz}), {tz})"),
        Grain::Total => unreachable_dim(),
    };
    format!("toInt64(toUnixTimestamp({e}))")
}

/// The SQL answering `q` from `source`. Columns: `keys` (one string per `group_by`
/// dimension), `bucket` (UTC seconds), `currency`, `billing_currency`, `events`,
/// `unpriced_events`, the six token columns, `cost_text`, `billing_cost_text`,
/// `cache_savings_text` and `billing_cache_savings_text` (exact decimals as text).
pub fn cost_sql(q: &CostQuery, source: Source) -> Sql {
    let mut sql = Sql::default();
    let inner = match source {
        Source::Day => {
            let days = rows_of(&mut sql, q, Table::Day);
            let hours = rows_of(&mut sql, q, Table::HourOutsideDays);
            format!("{days} UNION ALL {hours}")
        }
        Source::Hour => rows_of(&mut sql, q, Table::Hour),
        Source::Minute => rows_of(&mut sql, q, Table::Minute),
        Source::DayUser => {
            let days = rows_of(&mut sql, q, Table::DayUser);
            let events = rows_of(&mut sql, q, Table::EventsOutsideDays);
            let corrections = rows_of(&mut sql, q, Table::Corrections);
            format!("{days} UNION ALL {events} UNION ALL {corrections}")
        }
        Source::Raw => {
            let events = rows_of(&mut sql, q, Table::Events);
            let corrections = rows_of(&mut sql, q, Table::Corrections);
            format!("{events} UNION ALL {corrections}")
        }
    };
    let keys: Vec<String> = (0..q.group_by.len()).map(|i| format!("k{i}")).collect();
    let bucket = bucket_expr(&mut sql, q);
    let sums = TOKEN_COLUMNS
        .iter()
        .map(|c| format!("sum({c}) AS {c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let tail = match q.order {
        Order::Series { max_rows } => {
            let limit = sql.bind(Param::UInt(max_rows.saturating_add(1)));
            format!("ORDER BY bucket, keys, currency, billing_currency LIMIT {limit}")
        }
        Order::Top { n } => {
            let n = sql.bind(Param::UInt(n));
            format!(
                "ORDER BY billing_currency, sum(billing_cost) DESC, keys, currency LIMIT {n} BY billing_currency"
            )
        }
    };
    sql.text = format!(
        "SELECT [{}]::Array(String) AS keys, {bucket} AS bucket, toString(currency) AS currency, \
         toString(billing_currency) AS billing_currency, sum(events) AS events, \
         sum(unpriced_events) AS unpriced_events, {sums}, toString(sum(cost)) AS cost_text, \
         toString(sum(billing_cost)) AS billing_cost_text, \
         toString(sum(cache_savings)) AS cache_savings_text, \
         toString(sum(billing_cache_savings)) AS billing_cache_savings_text \
         FROM ({inner}) GROUP BY keys, bucket, currency, billing_currency {tail}",
        keys.join(", ")
    );
    sql
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{month_range, parse_zone};

    fn q(group_by: Vec<Dimension>, grain: Grain, zone: &str) -> CostQuery {
        CostQuery {
            tenant: Some("acme'); DROP TABLE x; --".into()),
            range: month_range("2026-03", parse_zone(zone).unwrap()).unwrap(),
            grain,
            group_by,
            filters: vec![(Dimension::Department, vec!["o'neil \\ {x}".into()])],
            order: Order::Series { max_rows: 10 },
        }
    }

    #[test]
    fn the_coarsest_exact_table_is_chosen() {
        use Dimension as D;
        assert_eq!(
            Source::choose(&q(vec![D::Model], Grain::Day, "Europe/Paris")),
            Source::Hour
        );
        // Whole UTC days: the daily rollup (the month's partial days from the hourly one).
        assert_eq!(
            Source::choose(&q(vec![D::Model], Grain::Day, "UTC")),
            Source::Day
        );
        assert_eq!(
            Source::choose(&q(vec![D::Model], Grain::Total, "Asia/Tokyo")),
            Source::Day
        );
        // Users: the daily user rollup, unless another dimension is filtered on.
        let mut by_user = q(vec![D::User], Grain::Total, "Asia/Tokyo");
        assert_eq!(Source::choose(&by_user), Source::Raw);
        by_user.filters.clear();
        assert_eq!(Source::choose(&by_user), Source::DayUser);
        // Minutes are finer than the hour rollup.
        assert_eq!(
            Source::choose(&q(vec![D::Department], Grain::Minute, "UTC")),
            Source::Minute
        );
        // Reported names live in the minute rollup only.
        assert_eq!(
            Source::choose(&q(vec![D::ReportedModel], Grain::Day, "UTC")),
            Source::Minute
        );
        // A half-hour zone's days do not start on UTC hours.
        assert_eq!(
            Source::choose(&q(vec![D::Model], Grain::Day, "Asia/Kolkata")),
            Source::Raw
        );
        assert_eq!(
            Source::choose(&q(vec![D::User], Grain::Day, "UTC")),
            Source::Raw
        );
    }

    #[test]
    fn caller_values_are_parameters_only() {
        let q = q(
            vec![Dimension::Label("te'am".into()), Dimension::User],
            Grain::Week,
            "UTC",
        );
        let sql = cost_sql(&q, Source::Raw);
        assert!(!sql.text.contains("acme"));
        assert!(!sql.text.contains("neil"));
        assert!(!sql.text.contains("te'am"));
        assert!(sql.text.contains("LEFT ANY JOIN"));
        assert!(sql
            .params
            .iter()
            .any(|(_, p)| *p == Param::Str("te'am".into())));
    }
}
