-- Priced events into the daily user rollup (066), in the same insert as the events.
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_events_to_cost_day_user
TO {db}.usage_cost_day_user
AS SELECT
    tenant_id,
    toDate(event_time) AS day,
    user_id,
    currency,
    billing_currency,
    count() AS events,
    toInt64(countIf(unpriced)) AS unpriced_events,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_input_tokens) AS cached_input_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(cache_write_1h_tokens) AS cache_write_1h_tokens,
    sum(cost) AS cost,
    sum(billing_cost) AS billing_cost,
    sum(cache_savings) AS cache_savings,
    sum(billing_cache_savings) AS billing_cache_savings
FROM {db}.usage_events_priced
GROUP BY tenant_id, day, user_id, currency, billing_currency
