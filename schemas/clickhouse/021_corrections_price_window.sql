-- A repricing correction carries the window of the price it brings the event to, so the
-- audit trail says which window the new price is from ('' when that price has no windows).
ALTER TABLE {db}.usage_cost_corrections
    ADD COLUMN IF NOT EXISTS price_window LowCardinality(String) DEFAULT ''
