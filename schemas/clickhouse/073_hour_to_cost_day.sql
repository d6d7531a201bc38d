-- Rows inserted into the hourly rollup (by 041, 042 and 063) into the daily one (072).
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_cost_hour_to_day
TO {db}.usage_cost_day
AS SELECT
    tenant_id,
    toDate(hour) AS day,
    department,
    model,
    currency,
    billing_currency,
    sum(events) AS events,
    sum(unpriced_events) AS unpriced_events,
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
FROM {db}.usage_cost_hour
GROUP BY tenant_id, day, department, model, currency, billing_currency
