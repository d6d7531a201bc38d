//! Building a [`clickhouse::Client`] with timeouts.
//!
//! The `clickhouse` crate (0.15) has no request timeout of its own, and its default HTTP
//! client waits for a connection and an answer forever. Its
//! [`Client::with_http_client`](clickhouse::Client::with_http_client) takes a hyper-util
//! client, so the client built here uses hyper-util's `HttpConnector` wrapped in
//! `hyper_timeout::TimeoutConnector`:
//! - **connect timeout**: establishing a TCP connection (DNS included) fails after it;
//! - **request timeout**: on an open connection, a read or a write that makes no progress
//!   for that long fails the request (the read timer restarts on every write, so sending a
//!   large insert does not count against the wait for its answer). Every call on the
//!   client gets it, queries and inserts alike, without wrapping call sites.
//!
//! A timeout surfaces as [`clickhouse::error::Error::Network`], which [`crate::retry`] classifies
//! as retryable. For a hard deadline on a whole call (e.g. a readiness probe) wrap it in
//! [`with_timeout`].

use std::future::Future;
use std::time::Duration;

use hyper_timeout::TimeoutConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;

use costpipe_schemas::clickhouse_ddl::is_valid_database_name;

use crate::Error;

/// TCP keepalive on ClickHouse connections (the `clickhouse` crate's default).
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// Idle pooled connections are closed after this long, before ClickHouse's own 3 s
/// keep-alive timeout closes them under us (the `clickhouse` crate's default).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// Everything needed to build a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// HTTP URL of the server.
    pub url: String,
    /// Database the client is bound to.
    pub database: String,
    /// User.
    pub user: String,
    /// Password.
    pub password: String,
    /// Longest stall of a read or write on an open connection.
    pub timeout: Duration,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
}

/// A client for `settings`, bound to its database. Does not connect.
pub fn build_client(settings: &ClientSettings) -> Result<clickhouse::Client, Error> {
    if !is_valid_database_name(&settings.database) {
        return Err(Error::InvalidDatabaseName(settings.database.clone()));
    }
    if settings.timeout.is_zero() || settings.connect_timeout.is_zero() {
        return Err(Error::Config(
            "the ClickHouse timeouts must be greater than 0 ms".into(),
        ));
    }
    let mut http = HttpConnector::new();
    http.set_keepalive(Some(TCP_KEEPALIVE));
    http.set_nodelay(true);
    http.set_connect_timeout(Some(settings.connect_timeout));
    let mut connector = TimeoutConnector::new(http);
    connector.set_connect_timeout(Some(settings.connect_timeout));
    connector.set_read_timeout(Some(settings.timeout));
    connector.set_write_timeout(Some(settings.timeout));
    connector.set_reset_reader_on_write(true);
    let hyper = HyperClient::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(connector);
    Ok(clickhouse::Client::with_http_client(hyper)
        .with_url(&settings.url)
        .with_user(&settings.user)
        .with_password(&settings.password)
        .with_database(&settings.database))
}

/// `call`, or [`Error::Timeout`] when it has not finished within `timeout`.
pub async fn with_timeout<T, E>(
    timeout: Duration,
    what: &str,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, Error>
where
    Error: From<E>,
{
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(Error::Timeout {
            what: what.to_string(),
            after_ms: timeout.as_millis().min(u64::MAX as u128) as u64,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::{Classify, ErrorClass};

    fn settings(url: String, timeout_ms: u64) -> ClientSettings {
        ClientSettings {
            url,
            database: "costpipe".into(),
            user: "default".into(),
            password: String::new(),
            timeout: Duration::from_millis(timeout_ms),
            connect_timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[tokio::test]
    async fn a_silent_server_times_out_as_retryable() {
        // Accepts connections, reads the request and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                open.push(s);
            }
        });
        let client = build_client(&settings(format!("http://{addr}"), 300)).unwrap();
        let started = std::time::Instant::now();
        let err = client.query("SELECT 1").execute().await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "{err}");
        assert_eq!(err.class(), ErrorClass::Retryable, "{err}");
        hold.abort();
    }

    #[tokio::test]
    async fn a_deadline_bounds_a_whole_call() {
        let err = with_timeout(
            Duration::from_millis(10),
            "sleeping",
            std::future::pending::<Result<(), Error>>(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::Timeout { after_ms: 10, .. }));
        assert_eq!(err.class(), ErrorClass::Retryable);
    }
}
