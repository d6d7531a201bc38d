-- The per-minute rollup is derived from the priced rows in the same insert, so the two can
-- never disagree (a crash between two separate inserts used to leave them apart).
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_events_to_minute
TO {db}.usage_cost_minute
AS SELECT
    tenant_id,
    department,
    model,
    currency,
    billing_currency,
    toStartOfMinute(event_time) AS minute,
    count() AS events,
    toInt64(countIf(unpriced)) AS unpriced_events,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_input_tokens) AS cached_input_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(cache_write_1h_tokens) AS cache_write_1h_tokens,
    sum(cost) AS cost,
    sum(billing_cost) AS billing_cost
FROM {db}.usage_events_priced
GROUP BY tenant_id, department, model, currency, billing_currency, minute
