-- Duplicates are decided in the aggregator's memory now (recent ids per partition), so the
-- bloom index on event_id, which every insert and merge paid for, has no reader left.
ALTER TABLE {db}.usage_events_priced DROP INDEX IF EXISTS event_id_bloom
