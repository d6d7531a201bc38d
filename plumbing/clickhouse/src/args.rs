//! `ClickHouseArgs`: the ClickHouse connection flags every binary that talks to ClickHouse
//! flattens into its config (`#[command(flatten)] clickhouse: ClickHouseArgs`).

use std::time::Duration;

use clap::Args;

use crate::client::{build_client, ClientSettings};
use crate::Error;

/// Default ClickHouse HTTP URL: the local stack (`scripts/stack`).
pub const DEFAULT_URL: &str = "http://127.0.0.1:18123";
/// Default database.
pub const DEFAULT_DATABASE: &str = "costpipe";
/// Default request timeout, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Default connect timeout, in milliseconds.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;

/// ClickHouse connection flags.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ClickHouseArgs {
    /// ClickHouse HTTP URL.
    #[arg(
        id = "clickhouse_url",
        value_name = "CLICKHOUSE_URL",
        long = "clickhouse-url",
        env = "COSTPIPE_CLICKHOUSE_URL",
        default_value = DEFAULT_URL
    )]
    pub url: String,
    /// ClickHouse database (created by the migrations).
    #[arg(
        id = "clickhouse_database",
        value_name = "CLICKHOUSE_DATABASE",
        long = "clickhouse-database",
        env = "COSTPIPE_CLICKHOUSE_DATABASE",
        default_value = DEFAULT_DATABASE
    )]
    pub database: String,
    /// ClickHouse user.
    #[arg(
        id = "clickhouse_user",
        value_name = "CLICKHOUSE_USER",
        long = "clickhouse-user",
        env = "COSTPIPE_CLICKHOUSE_USER",
        default_value = "default"
    )]
    pub user: String,
    /// ClickHouse password.
    #[arg(
        id = "clickhouse_password",
        value_name = "CLICKHOUSE_PASSWORD",
        long = "clickhouse-password",
        env = "COSTPIPE_CLICKHOUSE_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub password: String,
    /// Longest wait for ClickHouse on an open connection, in milliseconds: a request fails
    /// when no byte could be read or written for this long.
    #[arg(
        id = "clickhouse_timeout_ms",
        value_name = "CLICKHOUSE_TIMEOUT_MS",
        long = "clickhouse-timeout-ms",
        env = "COSTPIPE_CLICKHOUSE_TIMEOUT_MS",
        default_value_t = DEFAULT_TIMEOUT_MS
    )]
    pub timeout_ms: u64,
    /// Longest wait for a connection to ClickHouse, in milliseconds.
    #[arg(
        id = "clickhouse_connect_timeout_ms",
        value_name = "CLICKHOUSE_CONNECT_TIMEOUT_MS",
        long = "clickhouse-connect-timeout-ms",
        env = "COSTPIPE_CLICKHOUSE_CONNECT_TIMEOUT_MS",
        default_value_t = DEFAULT_CONNECT_TIMEOUT_MS
    )]
    pub connect_timeout_ms: u64,
}

impl Default for ClickHouseArgs {
    fn default() -> Self {
        ClickHouseArgs {
            url: DEFAULT_URL.into(),
            database: DEFAULT_DATABASE.into(),
            user: "default".into(),
            password: String::new(),
            timeout_ms: DEFAULT_TIMEOUT_MS,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
        }
    }
}

impl ClickHouseArgs {
    /// The request timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// The client settings these flags describe.
    pub fn settings(&self) -> ClientSettings {
        ClientSettings {
            url: self.url.clone(),
            database: self.database.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
            timeout: self.timeout(),
            connect_timeout: self.connect_timeout(),
        }
    }

    /// A client bound to the database, with the connect and request timeouts. Fails when
    /// the database name is not a plain identifier or a timeout is 0. Does not connect.
    pub fn client(&self) -> Result<clickhouse::Client, Error> {
        build_client(&self.settings())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        clickhouse: ClickHouseArgs,
    }

    #[test]
    fn flags_keep_their_names() {
        let c = Cli::parse_from([
            "x",
            "--clickhouse-url",
            "http://ch:8123",
            "--clickhouse-database",
            "db1",
            "--clickhouse-user",
            "u",
            "--clickhouse-password",
            "p",
            "--clickhouse-timeout-ms",
            "1500",
            "--clickhouse-connect-timeout-ms",
            "700",
        ])
        .clickhouse;
        assert_eq!(
            c,
            ClickHouseArgs {
                url: "http://ch:8123".into(),
                database: "db1".into(),
                user: "u".into(),
                password: "p".into(),
                timeout_ms: 1500,
                connect_timeout_ms: 700,
            }
        );
        assert_eq!(c.timeout(), Duration::from_millis(1500));
        assert!(c.client().is_ok());
    }

    #[test]
    fn defaults_without_environment() {
        if std::env::vars().any(|(k, _)| k.starts_with("COSTPIPE_CLICKHOUSE_")) {
            return;
        }
        assert_eq!(Cli::parse_from(["x"]).clickhouse, ClickHouseArgs::default());
    }

    #[test]
    fn bad_settings_are_refused() {
        let mut a = ClickHouseArgs {
            database: "bad-name; DROP".into(),
            ..ClickHouseArgs::default()
        };
        assert!(matches!(a.client(), Err(Error::InvalidDatabaseName(_))));
        a.database = "ok".into();
        a.timeout_ms = 0;
        assert!(matches!(a.client(), Err(Error::Config(_))));
    }
}
