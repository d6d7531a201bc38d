//! Applying costpipe's ClickHouse migrations (`costpipe_schemas::clickhouse_ddl::MIGRATIONS`):
//! ordered, idempotent DDL, applied at every start by each service that needs the tables.
//! The statements themselves live in `schemas/`; this module only runs them.

use costpipe_schemas::clickhouse_ddl::{is_valid_database_name, MIGRATIONS};

use crate::Error;

/// Applies every migration to `database`, in order; each is idempotent, so running them
/// again changes nothing. `client`'s own database does not matter: the DDL runs without a
/// default database, because `database` may not exist yet. Not retried here: wrap it in
/// [`crate::retry()`] where a start-up may race the server.
pub async fn migrate(client: &clickhouse::Client, database: &str) -> Result<(), Error> {
    if !is_valid_database_name(database) {
        return Err(Error::InvalidDatabaseName(database.to_string()));
    }
    let bare = client.clone().with_database("default");
    for m in MIGRATIONS {
        bare.query(&m.render(database))
            .execute()
            .await
            .map_err(|source| Error::Migration {
                name: m.name,
                source,
            })?;
        tracing::debug!(migration = m.name, database, "migration applied");
    }
    Ok(())
}
