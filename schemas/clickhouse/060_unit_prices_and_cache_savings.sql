-- What each event paid per token kind, and what its cached reads saved (pricing's
-- `UnitPrices` and `cache_savings`). Unit prices are per 1,000,000 tokens (per call for
-- `unit_price_request`) in `currency`, before the tenant's adjustment: an invoice line is
-- quantity × unit price exactly. `cache_savings` = cached-input tokens × (input price −
-- cached-input price), adjusted like `cost` (in `currency`); `billing_cache_savings` is it
-- converted like `billing_cost`. Events stored before this migration have zeros.
ALTER TABLE {db}.usage_events_priced
    ADD COLUMN IF NOT EXISTS unit_price_input Decimal(38, 12) DEFAULT 0,
    ADD COLUMN IF NOT EXISTS unit_price_cached_input Decimal(38, 12) DEFAULT 0,
    ADD COLUMN IF NOT EXISTS unit_price_cache_write_5m Decimal(38, 12) DEFAULT 0,
    ADD COLUMN IF NOT EXISTS unit_price_cache_write_1h Decimal(38, 12) DEFAULT 0,
    ADD COLUMN IF NOT EXISTS unit_price_output Decimal(38, 12) DEFAULT 0,
    ADD COLUMN IF NOT EXISTS unit_price_reasoning Decimal(38, 12) DEFAULT 0,
    ADD COLUMN IF NOT EXISTS unit_price_request Decimal(38, 12) DEFAULT 0,
    ADD COLUMN IF NOT EXISTS cache_savings Decimal(38, 12) DEFAULT 0,
    ADD COLUMN IF NOT EXISTS billing_cache_savings Decimal(38, 12) DEFAULT 0
