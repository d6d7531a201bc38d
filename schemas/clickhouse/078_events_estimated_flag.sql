-- Whether the event's tokens are an estimate (label `costpipe_usage` = 'estimated'), as a
-- column with a min-max index: taking a partition up reads the estimates still waiting for
-- their real count over the estimate horizon (35 days by default, not the ids' 24 h), and
-- the index skips every granule without one instead of reading a month of `labels`. Rows
-- stored before this migration compute it from `labels` when read.
ALTER TABLE {db}.usage_events_priced
    ADD COLUMN IF NOT EXISTS estimated Bool DEFAULT labels['costpipe_usage'] = 'estimated',
    ADD INDEX IF NOT EXISTS estimated_minmax estimated TYPE minmax GRANULARITY 1
