-- Every budget control record the aggregator published (scope and the whole record as JSON) (state transitions; later forecasts
-- and spikes), for audit and for the billing API's budget status. A record re-published after
-- a crash keeps its control_id, so the ReplacingMergeTree (and `FINAL` / `DISTINCT control_id`
-- readers) keep one row per logical transition.
CREATE TABLE IF NOT EXISTS {db}.budget_control_history
(
    control_id          String,
    budget_id           String,
    kind                LowCardinality(String),
    tenant_id           String,
    scope               String,
    level               LowCardinality(String),
    previous_level      LowCardinality(String),
    threshold           Decimal(38, 12),
    spend               Decimal(38, 12),
    limit               Decimal(38, 12),
    currency            LowCardinality(String),
    period_kind         LowCardinality(String),
    period              String,
    shadow              Bool,
    reason              String,
    trigger_event_id    String,
    record              String,
    decided_at          DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(decided_at)
ORDER BY (budget_id, control_id)
