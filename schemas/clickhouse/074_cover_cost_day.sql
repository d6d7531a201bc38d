-- The daily rollup (usage_cost_day) holds every hourly row inserted since its view (073) was
-- created: all of them when the hourly rollup was still empty then (a new database), else
-- those of the days after today. Every migration run appends a row; readers take the earliest.
INSERT INTO {db}.rollup_coverage
SELECT 'usage_cost_day', if((SELECT count() FROM {db}.usage_cost_hour) = 0,
    toDateTime64(0, 3, 'UTC'), toDateTime64(toDate(now64(3, 'UTC')) + 1, 3, 'UTC'))
