-- Cache savings in the hourly rollup, like 061 for the minute rollup.
ALTER TABLE {db}.usage_cost_hour
    ADD COLUMN IF NOT EXISTS cache_savings Decimal(38, 12) DEFAULT 0,
    ADD COLUMN IF NOT EXISTS billing_cache_savings Decimal(38, 12) DEFAULT 0
