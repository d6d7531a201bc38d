-- Synthetic priced events for the billing benchmark, generated inside ClickHouse:
-- `{db}` the scratch database, `{count}` rows of numbers() from `{from}`. March 2026, 50 tenants
-- skewed (t0 holds 27 %: index = floor(u^3 * 50)), 20 projects each owned by one of 8
-- departments, 10,000 users (200 per tenant: a user belongs to one tenant),
-- 10 catalog models (each with 3 reported names) with their unit prices, prompt caching,
-- costs exact from the unit prices (Decimal(38, 12)), billing in USD.
INSERT INTO {db}.usage_events_priced
  (event_id, event_time, tenant_id, department, user_id, project_id, feature, environment,
   provider, model, price_model, input_tokens, output_tokens, cached_input_tokens,
   cache_write_tokens, reasoning_tokens, cache_write_1h_tokens, cost, currency, billing_cost,
   billing_currency, exchange_rate, tier_above, contract_price, adjustment_percent, unpriced,
   unpriced_reason, catalog_version, request_id, trace_id, span_name, labels,
   source_partition, source_offset, ingested_at, unit_price_input, unit_price_cached_input,
   unit_price_output, unit_price_reasoning, cache_savings, billing_cache_savings)
SELECT
  generateUUIDv4(number) AS event_id,
  toDateTime64('2026-03-01 00:00:00', 3, 'UTC') + toIntervalMillisecond(intHash64(number) % 2678400000) AS event_time,
  concat('t', toString(ti)) AS tenant_id,
  concat('dept', toString(proj % 8)) AS department,
  concat('u', toString(ti * 200 + intHash64(number + 3) % 200)) AS user_id,
  concat('p', toString(proj)) AS project_id,
  'chat' AS feature, 'prod' AS environment,
  ['openai','openai','openai','anthropic','anthropic','google','google','deepseek','qwen','mistral'][m + 1] AS provider,
  concat(price_model, ['', '-latest', '-2026-01-01'][(intHash64(number + 5) % 3) + 1]) AS model,
  ['gpt-4o','gpt-4o-mini','o3','claude-sonnet-4-5','claude-haiku-4-5','gemini-2.5-pro','gemini-2.5-flash','deepseek-chat','qwen-plus','mistral-large'][m + 1] AS price_model,
  intHash64(number + 6) % 4000 AS input_tokens,
  intHash64(number + 7) % 1500 AS output_tokens,
  intHash64(number + 8) % 2000 AS cached_input_tokens,
  0 AS cache_write_tokens, 0 AS reasoning_tokens, 0 AS cache_write_1h_tokens,
  toDecimal128((input_tokens * pi + cached_input_tokens * pc + output_tokens * po) / 1000000, 12) AS cost,
  'USD' AS currency, cost AS billing_cost, 'USD' AS billing_currency, toDecimal128(1, 12) AS exchange_rate,
  NULL AS tier_above, false AS contract_price, toDecimal64(0, 6) AS adjustment_percent, false AS unpriced,
  '' AS unpriced_reason, 'bench' AS catalog_version, concat('r', toString(number)) AS request_id,
  concat('tr', toString(intHash64(number + 9) % 5000000)) AS trace_id, 'chat' AS span_name,
  map('team', concat('team', toString(intHash64(number + 10) % 5))) AS labels,
  0 AS source_partition, toInt64(number) AS source_offset, now64(3) AS ingested_at,
  pi AS unit_price_input, pc AS unit_price_cached_input, po AS unit_price_output, po AS unit_price_reasoning,
  toDecimal128(cached_input_tokens * (pi - pc) / 1000000, 12) AS cache_savings, cache_savings AS billing_cache_savings
FROM (
  SELECT number, intHash64(number + 11) % 10 AS m,
    toUInt32(pow((intHash64(number + 1) % 1000000) / 1000000, 3) * 50) AS ti,
    intHash64(number + 4) % 20 AS proj,
    toDecimal128([2.5, 0.15, 2, 3, 1, 1.25, 0.3, 0.27, 0.4, 2][m + 1], 12) AS pi,
    toDecimal128([1.25, 0.075, 0.5, 0.3, 0.1, 0.31, 0.075, 0.07, 0.08, 0.2][m + 1], 12) AS pc,
    toDecimal128([10, 0.6, 8, 15, 5, 10, 2.5, 1.1, 1.2, 6][m + 1], 12) AS po
  FROM numbers({from}, {count})
)
SETTINGS max_block_size = 1000000, min_insert_block_size_rows = 1000000, max_insert_threads = 1
