-- What cached reads saved (060), summed into the hourly rollup by the view that already
-- aggregates each insert for it: a second view would aggregate every insert again.
ALTER TABLE {db}.usage_events_to_cost_hour MODIFY QUERY
SELECT
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
    sum(billing_cost) AS billing_cost,
    sum(cache_savings) AS cache_savings,
    sum(billing_cache_savings) AS billing_cache_savings
FROM {db}.usage_events_priced
GROUP BY tenant_id, hour, department, model, currency, billing_currency
