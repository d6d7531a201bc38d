-- Cache savings in the minute rollup (062 adds them to the hourly one), so that a cost
-- question with savings is still answered from the coarsest rollup. SummingMergeTree sums
-- them like every other value column; they are filled by their own views (063, 064), so the
-- older views (010, 041) stay as they are.
ALTER TABLE {db}.usage_cost_minute
    ADD COLUMN IF NOT EXISTS cache_savings Decimal(38, 12) DEFAULT 0,
    ADD COLUMN IF NOT EXISTS billing_cache_savings Decimal(38, 12) DEFAULT 0
