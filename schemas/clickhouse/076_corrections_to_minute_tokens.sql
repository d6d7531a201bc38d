-- Corrections into the minute rollup (006) with their event, token and cache-savings deltas (075).
-- Token and event deltas are Int64; the rollup's counters are UInt64, so a negative delta is
-- written as its two's complement (toUInt64 wraps) and sums stay exact modulo 2^64: every
-- key's true total is >= 0 (the row taken out sits at the estimate's own key), so sum()
-- reads the exact count. Repricing rows have zero deltas, as before.
ALTER TABLE {db}.usage_cost_corrections_to_minute MODIFY QUERY
SELECT
    tenant_id,
    department,
    model,
    toStartOfMinute(event_time) AS minute,
    currency,
    billing_currency,
    toUInt64(events_delta) AS events,
    unpriced_delta AS unpriced_events,
    toUInt64(input_tokens_delta) AS input_tokens,
    toUInt64(output_tokens_delta) AS output_tokens,
    toUInt64(cached_input_tokens_delta) AS cached_input_tokens,
    toUInt64(cache_write_tokens_delta) AS cache_write_tokens,
    toUInt64(reasoning_tokens_delta) AS reasoning_tokens,
    toUInt64(cache_write_1h_tokens_delta) AS cache_write_1h_tokens,
    cost_delta AS cost,
    billing_cost_delta AS billing_cost,
    cache_savings_delta AS cache_savings,
    billing_cache_savings_delta AS billing_cache_savings
FROM {db}.usage_cost_corrections
