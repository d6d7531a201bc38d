//! ClickHouse DDL for costpipe's tables, as ordered, idempotent migrations. `{db}` in each
//! statement is replaced by the configured database name. Every statement must be safe to run
//! again (`IF NOT EXISTS`), because migrations are applied at every start.

/// One DDL statement with a stable name.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub name: &'static str,
    sql: &'static str,
}

impl Migration {
    /// The statement for database `db`.
    pub fn render(&self, db: &str) -> String {
        self.sql.replace("{db}", db)
    }
}

/// All migrations, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        name: "001_database",
        sql: include_str!("../clickhouse/001_database.sql"),
    },
    Migration {
        name: "002_usage_events_priced",
        sql: include_str!("../clickhouse/002_usage_events_priced.sql"),
    },
    Migration {
        name: "003_usage_cost_minute",
        sql: include_str!("../clickhouse/003_usage_cost_minute.sql"),
    },
    Migration {
        name: "004_ingest_positions",
        sql: include_str!("../clickhouse/004_ingest_positions.sql"),
    },
    Migration {
        name: "005_usage_cost_corrections",
        sql: include_str!("../clickhouse/005_usage_cost_corrections.sql"),
    },
    Migration {
        name: "006_corrections_to_minute",
        sql: include_str!("../clickhouse/006_corrections_to_minute.sql"),
    },
    Migration {
        name: "007_usage_events_epoch",
        sql: include_str!("../clickhouse/007_usage_events_epoch.sql"),
    },
    Migration {
        name: "008_ingest_epochs_done",
        sql: include_str!("../clickhouse/008_ingest_epochs_done.sql"),
    },
    Migration {
        name: "009_events_to_epochs_done",
        sql: include_str!("../clickhouse/009_events_to_epochs_done.sql"),
    },
    Migration {
        name: "010_events_to_minute",
        sql: include_str!("../clickhouse/010_events_to_minute.sql"),
    },
    Migration {
        name: "011_window_minute",
        sql: include_str!("../clickhouse/011_window_minute.sql"),
    },
    Migration {
        name: "012_events_to_window_minute",
        sql: include_str!("../clickhouse/012_events_to_window_minute.sql"),
    },
    Migration {
        name: "013_ingest_positions_generation",
        sql: include_str!("../clickhouse/013_ingest_positions_generation.sql"),
    },
    Migration {
        name: "014_events_ingested_index",
        sql: include_str!("../clickhouse/014_events_ingested_index.sql"),
    },
    Migration {
        name: "015_drop_event_id_bloom",
        sql: include_str!("../clickhouse/015_drop_event_id_bloom.sql"),
    },
    // Numbers only order the list (the runner applies it in order); gaps are fine.
    Migration {
        name: "020_price_window",
        sql: include_str!("../clickhouse/020_price_window.sql"),
    },
    Migration {
        name: "021_corrections_price_window",
        sql: include_str!("../clickhouse/021_corrections_price_window.sql"),
    },
    Migration {
        name: "030_usage_event_fates",
        sql: include_str!("../clickhouse/030_usage_event_fates.sql"),
    },
    Migration {
        name: "031_events_to_fates",
        sql: include_str!("../clickhouse/031_events_to_fates.sql"),
    },
    Migration {
        name: "040_usage_cost_hour",
        sql: include_str!("../clickhouse/040_usage_cost_hour.sql"),
    },
    Migration {
        name: "041_events_to_cost_hour",
        sql: include_str!("../clickhouse/041_events_to_cost_hour.sql"),
    },
    Migration {
        name: "042_corrections_to_cost_hour",
        sql: include_str!("../clickhouse/042_corrections_to_cost_hour.sql"),
    },
    Migration {
        name: "043_billing_invoices",
        sql: include_str!("../clickhouse/043_billing_invoices.sql"),
    },
    Migration {
        name: "050_budget_control_history",
        sql: include_str!("../clickhouse/050_budget_control_history.sql"),
    },
    Migration {
        name: "060_unit_prices_and_cache_savings",
        sql: include_str!("../clickhouse/060_unit_prices_and_cache_savings.sql"),
    },
    Migration {
        name: "061_rollup_cache_savings",
        sql: include_str!("../clickhouse/061_rollup_cache_savings.sql"),
    },
    Migration {
        name: "062_cost_hour_cache_savings",
        sql: include_str!("../clickhouse/062_cost_hour_cache_savings.sql"),
    },
    Migration {
        name: "063_savings_to_cost_hour",
        sql: include_str!("../clickhouse/063_savings_to_cost_hour.sql"),
    },
    Migration {
        name: "064_savings_to_minute",
        sql: include_str!("../clickhouse/064_savings_to_minute.sql"),
    },
    Migration {
        name: "065_rollup_coverage",
        sql: include_str!("../clickhouse/065_rollup_coverage.sql"),
    },
    Migration {
        name: "066_usage_cost_day_user",
        sql: include_str!("../clickhouse/066_usage_cost_day_user.sql"),
    },
    Migration {
        name: "067_events_to_cost_day_user",
        sql: include_str!("../clickhouse/067_events_to_cost_day_user.sql"),
    },
    Migration {
        name: "068_cover_cost_day_user",
        sql: include_str!("../clickhouse/068_cover_cost_day_user.sql"),
    },
    Migration {
        name: "069_usage_invoice_day",
        sql: include_str!("../clickhouse/069_usage_invoice_day.sql"),
    },
    Migration {
        name: "070_events_to_invoice_day",
        sql: include_str!("../clickhouse/070_events_to_invoice_day.sql"),
    },
    Migration {
        name: "071_cover_invoice_day",
        sql: include_str!("../clickhouse/071_cover_invoice_day.sql"),
    },
    Migration {
        name: "072_usage_cost_day",
        sql: include_str!("../clickhouse/072_usage_cost_day.sql"),
    },
    Migration {
        name: "073_hour_to_cost_day",
        sql: include_str!("../clickhouse/073_hour_to_cost_day.sql"),
    },
    Migration {
        name: "074_cover_cost_day",
        sql: include_str!("../clickhouse/074_cover_cost_day.sql"),
    },
    Migration {
        name: "075_estimate_corrections",
        sql: include_str!("../clickhouse/075_estimate_corrections.sql"),
    },
    Migration {
        name: "076_corrections_to_minute_tokens",
        sql: include_str!("../clickhouse/076_corrections_to_minute_tokens.sql"),
    },
    Migration {
        name: "077_corrections_to_hour_tokens",
        sql: include_str!("../clickhouse/077_corrections_to_hour_tokens.sql"),
    },
    Migration {
        name: "078_events_estimated_flag",
        sql: include_str!("../clickhouse/078_events_estimated_flag.sql"),
    },
    Migration {
        name: "079_events_merge_selector",
        sql: include_str!("../clickhouse/079_events_merge_selector.sql"),
    },
    Migration {
        name: "080_fates_merge_selector",
        sql: include_str!("../clickhouse/080_fates_merge_selector.sql"),
    },
];

/// Whether `db` is a safe database identifier (it is spliced into DDL).
pub fn is_valid_database_name(db: &str) -> bool {
    !db.is_empty()
        && db.len() <= 64
        && db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !db.starts_with(|c: char| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_statement_is_idempotent_and_templated() {
        for m in MIGRATIONS {
            let sql = m.render("costpipe");
            assert!(
                sql.contains("IF NOT EXISTS")
                    || sql.contains("DROP INDEX IF EXISTS")
                    // Setting a view's query again to the same query changes nothing.
                    || sql.contains(" MODIFY QUERY\n")
                    // Setting a table setting again to the same value changes nothing.
                    || sql.contains(" MODIFY SETTING ")
                    // Coverage marks: readers take the earliest, so another row changes
                    // nothing.
                    || sql.contains("\nINSERT INTO costpipe.rollup_coverage\nSELECT"),
                "{} must be idempotent",
                m.name
            );
            assert!(!sql.contains("{db}"));
        }
    }

    #[test]
    fn names_are_unique_and_ascending_gaps_allowed() {
        // The runner applies the list in order and never looks at the numbers, so a gap
        // (numbers reserved for other work) is fine; a repeat or a step back is not.
        let numbers: Vec<u32> = MIGRATIONS
            .iter()
            .map(|m| m.name[..3].parse().expect("NNN_ prefix"))
            .collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    }

    #[test]
    fn database_names_are_checked() {
        assert!(is_valid_database_name("costpipe_test_1"));
        assert!(!is_valid_database_name("x; DROP TABLE y"));
        assert!(!is_valid_database_name("1abc"));
    }
}
