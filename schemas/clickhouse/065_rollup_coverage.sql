-- From when each day rollup holds every event: a view only sees inserts made after it was
-- created, so billing reads a day rollup for whole UTC days from `complete_from` on, and raw
-- events before (068, 071). Readers take min(complete_from) per rollup.
CREATE TABLE IF NOT EXISTS {db}.rollup_coverage
(
    rollup              LowCardinality(String),
    complete_from       DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY rollup
