-- Priced events into the daily invoice lines (069), in the same insert as the events.
-- `plain_output_tokens` are output tokens that are not reasoning tokens (billed at the
-- output price; reasoning tokens at the reasoning price).
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_events_to_invoice_day
TO {db}.usage_invoice_day
AS SELECT
    tenant_id,
    toDate(event_time) AS day,
    if(price_model = '', usage_events_priced.model, price_model) AS model,
    department,
    project_id,
    currency,
    billing_currency,
    unpriced,
    exchange_rate,
    unit_price_input,
    unit_price_cached_input,
    unit_price_cache_write_5m,
    unit_price_cache_write_1h,
    unit_price_output,
    unit_price_reasoning,
    unit_price_request,
    count() AS events,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_input_tokens) AS cached_input_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(cache_write_1h_tokens) AS cache_write_1h_tokens,
    sum(toUInt64(greatest(usage_events_priced.output_tokens, usage_events_priced.reasoning_tokens)
        - usage_events_priced.reasoning_tokens)) AS plain_output_tokens,
    sum(cost) AS cost,
    sum(billing_cost) AS billing_cost,
    min(event_time) AS first_event,
    max(event_time) AS last_event
FROM {db}.usage_events_priced
GROUP BY tenant_id, day, model, department, project_id, currency, billing_currency, unpriced,
         exchange_rate, unit_price_input, unit_price_cached_input, unit_price_cache_write_5m,
         unit_price_cache_write_1h, unit_price_output, unit_price_reasoning, unit_price_request
