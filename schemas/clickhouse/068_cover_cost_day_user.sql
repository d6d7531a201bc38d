-- The rollup (usage_cost_day_user) holds every event inserted since its view (067) was created: all of
-- them when the events table was still empty then (a new database), else those of the
-- days after today. Every migration run appends a row; readers take the earliest.
INSERT INTO {db}.rollup_coverage
SELECT 'usage_cost_day_user', if((SELECT count() FROM {db}.usage_events_priced) = 0,
    toDateTime64(0, 3, 'UTC'), toDateTime64(toDate(now64(3, 'UTC')) + 1, 3, 'UTC'))
