-- Cache savings of priced events into the minute rollup (061), like 063.
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_events_savings_to_minute
TO {db}.usage_cost_minute
AS SELECT
    tenant_id,
    department,
    model,
    currency,
    billing_currency,
    toStartOfMinute(event_time) AS minute,
    sum(cache_savings) AS cache_savings,
    sum(billing_cache_savings) AS billing_cache_savings
FROM {db}.usage_events_priced
WHERE cached_input_tokens > 0
GROUP BY tenant_id, department, model, currency, billing_currency, minute
