-- Corrections of estimated events (the aggregator's `estimate_corrected` rows): a real count
-- replacing an event counted with estimated tokens. Like repricing, two rows per correction:
-- the estimate taken out (sign -1, negative deltas, at the estimate's time and dimensions) and
-- the real count put in (sign +1). They also carry event and token deltas (rollup counts
-- follow the event to the real count's minute), cache savings, the dimensions budgets need,
-- and the epoch that wrote them (source_topic / partition / offset, epoch_start / epoch_end,
-- generation): written once per epoch under the token `topic/partition/start-end/
-- usage_cost_corrections` (= run_id), fenced and verified like the epoch's rows. Readers that
-- rebuild the aggregator's state take only rows whose epoch has its marker in
-- ingest_epochs_done. Repricing rows leave every new column at its default.
ALTER TABLE {db}.usage_cost_corrections
    ADD COLUMN IF NOT EXISTS events_delta Int64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS input_tokens_delta Int64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS output_tokens_delta Int64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS cached_input_tokens_delta Int64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS cache_write_tokens_delta Int64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS reasoning_tokens_delta Int64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS cache_write_1h_tokens_delta Int64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS cache_savings_delta Decimal(38, 12) DEFAULT 0,
    ADD COLUMN IF NOT EXISTS billing_cache_savings_delta Decimal(38, 12) DEFAULT 0,
    ADD COLUMN IF NOT EXISTS user_id String DEFAULT '',
    ADD COLUMN IF NOT EXISTS project_id String DEFAULT '',
    ADD COLUMN IF NOT EXISTS feature String DEFAULT '',
    ADD COLUMN IF NOT EXISTS api_key String DEFAULT '',
    ADD COLUMN IF NOT EXISTS source_topic LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS source_partition Int32 DEFAULT -1,
    ADD COLUMN IF NOT EXISTS source_offset Int64 DEFAULT -1,
    ADD COLUMN IF NOT EXISTS epoch_start Int64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS epoch_end Int64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS generation UInt64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS sign Int8 DEFAULT 0
