-- The time-of-day price window an event was priced in (e.g. 'peak', 'off-peak'; '' when its
-- price has no windows), so that bills can show it.
ALTER TABLE {db}.usage_events_priced
    ADD COLUMN IF NOT EXISTS price_window LowCardinality(String) DEFAULT ''
