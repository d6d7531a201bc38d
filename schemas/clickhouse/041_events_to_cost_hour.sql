-- Priced events into the hourly rollup (040), in the same insert as the events, like 010.
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_events_to_cost_hour
TO {db}.usage_cost_hour
AS SELECT
    tenant_id,
    toStartOfHour(event_time) AS hour,
    department,
    if(price_model = '', usage_events_priced.model, price_model) AS model,
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
    sum(billing_cost) AS billing_cost
FROM {db}.usage_events_priced
GROUP BY tenant_id, hour, department, model, currency, billing_currency
