//! One tenant's billing spend over a time span as a subquery: each event's billing cost
//! and each repricing correction's delta, as rows `(billing_currency, t, c)`. Summing `c`
//! gives what invoices bill. Every value is bound as a query parameter.

use crate::plan::{Param, Sql};

/// The subquery text for `tenant`'s spend with event times in `[from_ms, to_ms)` (UTC).
pub fn spend_rows(sql: &mut Sql, tenant: &str, from_ms: i64, to_ms: i64) -> String {
    let t = sql.bind(Param::Str(tenant.to_string()));
    let a = sql.bind(Param::Int(from_ms));
    let b = sql.bind(Param::Int(to_ms));
    let cond = format!(
        "tenant_id = {t} AND event_time >= fromUnixTimestamp64Milli({a}, 'UTC') \
         AND event_time < fromUnixTimestamp64Milli({b}, 'UTC')"
    );
    format!(
        "SELECT toString(billing_currency) AS billing_currency, event_time AS t, billing_cost AS c \
         FROM usage_events_priced WHERE {cond} \
         UNION ALL SELECT toString(billing_currency) AS billing_currency, event_time AS t, billing_cost_delta AS c \
         FROM usage_cost_corrections WHERE {cond}"
    )
}
