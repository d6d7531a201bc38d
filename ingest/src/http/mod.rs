//! HTTP ingest (`costpipe-ingest-http`), for services without a Kafka client.
//!
//! `POST /v1/events` takes one JSON event, a JSON array or NDJSON, authenticated by a
//! tenant's API key. The pure part, tested without a socket: [`body`] finds each event's
//! bytes, [`event_json`] reads one event, [`verdict`] decides on it with the shared
//! [`ValidationLimits`](costpipe_schemas::ValidationLimits) and the key's tenant. The
//! [`server`] only reads the body, produces accepted events through the
//! [`Emitter`](crate::Emitter) (so their bytes on the topic are the emitter's) and rejected
//! ones to the dead-letter topic, and answers after the broker acknowledged both.
//! Against hostile clients: [`connections`] (per-connection header-read and idle timers, room
//! made at the connection cap), [`rate_limit`] (a token bucket per tenant, 429), and the
//! capped decompression of gzip and zstd bodies in [`server`].
//! `GET /v1/events/{event_id}` answers an event's fate from ClickHouse ([`event_status`]).

pub mod auth;
pub mod body;
pub mod config;
pub mod connections;
pub mod event_json;
pub mod event_status;
pub mod openapi;
pub mod rate_limit;
pub mod reason;
pub mod server;
pub mod telemetry;
pub mod verdict;

pub use config::HttpIngestConfig;
pub use reason::{Reason, Rejection};
pub use server::IngestHttp;
