//! Optional Confluent-compatible schema registry client (Confluent Schema Registry, Karapace,
//! Apicurio in Confluent mode). Without one, costpipe's compiled-in registry is used: ids 1–3.
//!
//! With one, emitters register the usage schema under `<topic>-value` and write the id the
//! registry assigns; the aggregator fetches schemas of ids it does not know.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Registry errors.
#[derive(Debug, Error)]
pub enum RegistryError {
    /// The registry could not be reached or answered with a server error; worth retrying.
    #[error("schema registry at {url} unavailable: {detail}")]
    Unavailable { url: String, detail: String },
    /// The registry refused the request (e.g. an incompatible schema).
    #[error("schema registry refused {what}: HTTP {status}: {body}")]
    Refused {
        what: String,
        status: u16,
        body: String,
    },
}

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
    /// A client of the registry at `url` (e.g. `http://registry:8081`).
    pub fn new(url: &str) -> RegistryClient {
        RegistryClient {
            base: url.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
        }
    }

    fn unavailable(&self, e: impl std::fmt::Display) -> RegistryError {
        RegistryError::Unavailable {
            url: self.base.clone(),
            detail: e.to_string(),
        }
    }

    /// Registers `schema` (Avro JSON) under `subject` and returns its id. Registering an
    /// existing schema again returns the existing id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
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
            return Err(RegistryError::Refused {
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
    pub async fn schema(&self, id: u32) -> Result<Option<String>, RegistryError> {
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
