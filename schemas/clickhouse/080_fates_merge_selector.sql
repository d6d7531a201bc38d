-- The fates table is append-only too, and every priced event adds a row: merged in the same
-- wider steps as the events table (079).
ALTER TABLE {db}.usage_event_fates MODIFY SETTING merge_selector_base = 20
