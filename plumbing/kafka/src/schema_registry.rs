//! Optional Confluent-compatible schema registry client (Confluent Schema Registry, Karapace,
//! Apicurio in Confluent mode). Without one, costpipe's compiled-in registry is used: ids 1–3.
//!
//! With one, emitters register the usage schema under `<topic>-value` and write the id the
//! registry assigns; the aggregator fetches schemas of ids it does not know. Every request
//! has a connect timeout and an overall timeout, so a registry that stopped answering
//! fails the request ([`Error::RegistryUnavailable`]) instead of stalling its caller.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Registry errors (the crate's [`Error`], `Registry*` variants).
pub type RegistryError = Error;

/// Default time to establish a connection to the registry.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time for a whole request, answer included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

#[derive(Serialize)]
struct SchemaBody<'a> {
    schema: &'a str,
}

#[derive(Deserialize)]
struct IdAnswer {
    id: u32,
}

#[derive(Deserialize)]
struct SchemaAnswer {
    schema: String,
}

/// A client of one registry.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    base: String,
    http: reqwest::Client,
}

impl RegistryClient {
    /// A client of the registry at `url` (e.g. `http://registry:8081`), with the default
    /// timeouts.
    pub fn new(url: &str) -> RegistryClient {
        RegistryClient::with_timeouts(url, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT)
    }

    /// A client of the registry at `url` with these timeouts.
    pub fn with_timeouts(url: &str, connect: Duration, request: Duration) -> RegistryClient {
        let http = reqwest::Client::builder()
            .connect_timeout(connect)
            .timeout(request)
            .build()
            // Building fails only when the platform's HTTP stack cannot start at all; the
            // plain client fails the same way at its first request, with the reason.
            .unwrap_or_else(|_| reqwest::Client::new());
        RegistryClient {
            base: url.trim_end_matches('/').to_string(),
            http,
        }
    }

    fn unavailable(&self, e: impl std::fmt::Display) -> Error {
        Error::RegistryUnavailable {
            url: self.base.clone(),
            detail: e.to_string(),
        }
    }

    /// Registers `schema` (Avro JSON) under `subject` and returns its id. Registering an
    /// existing schema again returns the existing id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, Error> {
        let resp = self
            .http
            .post(format!("{}/subjects/{subject}/versions", self.base))
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .json(&SchemaBody { schema })
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        let status = resp.status();
        if status.is_server_error() {
            return Err(self.unavailable(format!("HTTP {status}")));
        }
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(Error::RegistryRefused {
                what: format!("schema for {subject}"),
                status: status.as_u16(),
                body,
            });
        }
        Ok(resp
            .json::<IdAnswer>()
            .await
            .map_err(|e| self.unavailable(e))?
            .id)
    }

    /// The schema (Avro JSON) with `id`, or `None` if the registry has no such id.
    pub async fn schema(&self, id: u32) -> Result<Option<String>, Error> {
        let resp = self
            .http
            .get(format!("{}/schemas/ids/{id}", self.base))
            .header(reqwest::header::ACCEPT, CONTENT_TYPE)
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(self.unavailable(format!("HTTP {status} for schema {id}")));
        }
        Ok(Some(
            resp.json::<SchemaAnswer>()
                .await
                .map_err(|e| self.unavailable(e))?
                .schema,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_silent_registry_times_out() {
        // Accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                open.push(s);
            }
        });
        let client = RegistryClient::with_timeouts(
            &format!("http://{addr}/"),
            Duration::from_millis(200),
            Duration::from_millis(300),
        );
        let started = std::time::Instant::now();
        let err = client.schema(1).await.unwrap_err();
        assert!(matches!(err, Error::RegistryUnavailable { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        hold.abort();
    }
}
