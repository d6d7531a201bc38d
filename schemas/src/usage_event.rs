//! The usage event: one model call, as services and gateways emit it. The Rust type is the
//! newest schema version (v2); older records decode into it through Avro schema resolution.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One LLM model call. Field meanings are documented in `avro/usage_event_v1.avsc`;
/// token fields are disjoint except `reasoning_tokens`, which is part of `output_tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEvent {
    #[serde(with = "uuid_as_string")]
    pub event_id: Uuid,
    /// UTC milliseconds since the Unix epoch.
    pub event_time: i64,
    pub tenant_id: String,
    pub department: Option<String>,
    pub user_id: Option<String>,
    pub project_id: Option<String>,
    pub feature: Option<String>,
    pub environment: Option<String>,
    pub provider: String,
    pub model: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    #[serde(default)]
    pub cached_input_tokens: i64,
    #[serde(default)]
    pub cache_write_tokens: i64,
    #[serde(default)]
    pub reasoning_tokens: i64,
    /// Since v2: 1-hour-TTL cache writes (`cache_write_tokens` holds the 5-minute ones).
    #[serde(default)]
    pub cache_write_1h_tokens: Option<i64>,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    pub span_name: Option<String>,
    #[serde(default)]
    /// Sorted, so that an event always encodes to the same bytes.
    pub labels: BTreeMap<String, String>,
}

impl UsageEvent {
    /// A minimal event with every optional field unset; for builders and tests.
    pub fn new(
        event_id: Uuid,
        event_time: i64,
        tenant_id: impl Into<String>,
        provider: impl Into<String>,
        model: impl Into<String>,
    ) -> Self {
        UsageEvent {
            event_id,
            event_time,
            tenant_id: tenant_id.into(),
            department: None,
            user_id: None,
            project_id: None,
            feature: None,
            environment: None,
            provider: provider.into(),
            model: model.into(),
            input_tokens: 0,
            output_tokens: 0,
            cached_input_tokens: 0,
            cache_write_tokens: 0,
            reasoning_tokens: 0,
            cache_write_1h_tokens: None,
            request_id: None,
            trace_id: None,
            span_name: None,
            labels: BTreeMap::new(),
        }
    }
}

/// The Avro serializer is not human-readable, so `Uuid` would serialize as 16 bytes; the
/// schema's `uuid` logical type is a string.
mod uuid_as_string {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};
    use uuid::Uuid;

    pub fn serialize<S: Serializer>(id: &Uuid, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Uuid, D::Error> {
        let text = String::deserialize(d)?;
        Uuid::parse_str(&text)
            .map_err(|e| D::Error::custom(format!("event_id {text:?} is not a UUID: {e}")))
    }
}
