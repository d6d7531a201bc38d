CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_events_to_window_minute
TO {db}.usage_window_minute
AS SELECT
    source_topic,
    source_partition,
    tenant_id,
    department,
    model,
    toStartOfMinute(event_time) AS minute,
    count() AS events,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_input_tokens) AS cached_input_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(cache_write_1h_tokens) AS cache_write_1h_tokens,
    sum(billing_cost) AS billing_cost
FROM {db}.usage_events_priced
GROUP BY source_topic, source_partition, tenant_id, department, model, minute
