-- Cache savings of priced events into the hourly rollup (061, 062), in the same insert as the
-- events; rows with zero counts and costs, summed into the group's row on merge.
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_events_savings_to_cost_hour
TO {db}.usage_cost_hour
AS SELECT
    tenant_id,
    toStartOfHour(event_time) AS hour,
    department,
    if(price_model = '', usage_events_priced.model, price_model) AS model,
    currency,
    billing_currency,
    sum(cache_savings) AS cache_savings,
    sum(billing_cache_savings) AS billing_cache_savings
FROM {db}.usage_events_priced
WHERE cached_input_tokens > 0
GROUP BY tenant_id, hour, department, model, currency, billing_currency
