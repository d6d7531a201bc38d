//! The rules a usage event must meet before it is priced, shared by the emitter, HTTP ingest
//! and the aggregator so that every path rejects the same events with the same code.
//!
//! **Token counts are bounded**: each of the six token fields must lie in
//! `0..=`[`MAX_TOKENS_PER_FIELD`] (10^12), else `negative_tokens` or `tokens_too_large`.
//! The bound is a constant, not a [`ValidationLimits`] field, because arithmetic downstream
//! relies on it:
//! - 10^12 < 2^40, so the sum of one event's six fields is below 6 * 10^12 < 2^43: no sum of
//!   an event's tokens can overflow an `i64` (or a `u64`), and a million such events still sum
//!   below 2^63;
//! - pricing multiplies each count by a price in 10^-12 units, in `i128`: for any price under
//!   2^84 units (about 1.9 * 10^19 per million tokens) each product is below 2^124, so the
//!   seven terms of a cost sum below 2^127 (pricing still checks every operation, because
//!   catalog prices are not bounded).
//!
//! No real call comes near it: the largest context windows are around 10^7 tokens, and 10^12
//! tokens at the cheapest list prices would cost tens of thousands of dollars in one call.

use thiserror::Error;

use crate::usage_event::UsageEvent;

/// Largest accepted value of each token field (see the module documentation for why 10^12).
pub const MAX_TOKENS_PER_FIELD: i64 = 1_000_000_000_000;

/// Machine-readable rejection codes. Stable: clients and dashboards match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectCode {
    EmptyTenant,
    EmptyProvider,
    EmptyModel,
    NilEventId,
    NegativeTokens,
    ReasoningExceedsOutput,
    FieldTooLong,
    TooManyLabels,
    LabelTooLong,
    EventTimeOutOfRange,
    /// A token field is above [`MAX_TOKENS_PER_FIELD`].
    TokensTooLarge,
}

impl RejectCode {
    /// Snake-case code as it appears in API answers, dead-letter headers and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::EmptyTenant => "empty_tenant",
            RejectCode::EmptyProvider => "empty_provider",
            RejectCode::EmptyModel => "empty_model",
            RejectCode::NilEventId => "nil_event_id",
            RejectCode::NegativeTokens => "negative_tokens",
            RejectCode::ReasoningExceedsOutput => "reasoning_exceeds_output",
            RejectCode::FieldTooLong => "field_too_long",
            RejectCode::TooManyLabels => "too_many_labels",
            RejectCode::LabelTooLong => "label_too_long",
            RejectCode::EventTimeOutOfRange => "event_time_out_of_range",
            RejectCode::TokensTooLarge => "tokens_too_large",
        }
    }
}

/// A rule the event broke, with a message the sender can act on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct ValidationError {
    pub code: RejectCode,
    pub message: String,
}

fn reject(code: RejectCode, message: String) -> ValidationError {
    ValidationError { code, message }
}

/// Limits on an event's size and time. Ingest uses tight defaults; the aggregator accepts
/// older events so that replays of past months still price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationLimits {
    /// Longest string field (ids, names), in bytes.
    pub max_field_bytes: usize,
    /// Most labels on one event.
    pub max_labels: usize,
    /// Longest label key or value, in bytes.
    pub max_label_bytes: usize,
    /// How far before `now` an event time may lie, in milliseconds.
    pub max_past_ms: i64,
    /// How far after `now` an event time may lie, in milliseconds.
    pub max_future_ms: i64,
}

const DAY_MS: i64 = 86_400_000;

impl Default for ValidationLimits {
    fn default() -> Self {
        ValidationLimits {
            max_field_bytes: 256,
            max_labels: 32,
            max_label_bytes: 256,
            max_past_ms: 400 * DAY_MS,
            max_future_ms: DAY_MS,
        }
    }
}

impl ValidationLimits {
    /// Checks `event` against these limits at wall-clock time `now_ms`; returns the first broken rule.
    pub fn check(&self, event: &UsageEvent, now_ms: i64) -> Result<(), ValidationError> {
        if event.event_id.is_nil() {
            return Err(reject(
                RejectCode::NilEventId,
                "event_id must not be the nil UUID".into(),
            ));
        }
        for (name, value, code) in [
            ("tenant_id", &event.tenant_id, RejectCode::EmptyTenant),
            ("provider", &event.provider, RejectCode::EmptyProvider),
            ("model", &event.model, RejectCode::EmptyModel),
        ] {
            if value.trim().is_empty() {
                return Err(reject(code, format!("{name} must not be empty")));
            }
        }
        let strings = [
            ("tenant_id", Some(&event.tenant_id)),
            ("provider", Some(&event.provider)),
            ("model", Some(&event.model)),
            ("department", event.department.as_ref()),
            ("user_id", event.user_id.as_ref()),
            ("project_id", event.project_id.as_ref()),
            ("feature", event.feature.as_ref()),
            ("environment", event.environment.as_ref()),
            ("request_id", event.request_id.as_ref()),
            ("trace_id", event.trace_id.as_ref()),
            ("span_name", event.span_name.as_ref()),
        ];
        for (name, value) in strings {
            if let Some(v) = value {
                if v.len() > self.max_field_bytes {
                    return Err(reject(
                        RejectCode::FieldTooLong,
                        format!(
                            "{name} is {} bytes, the limit is {}",
                            v.len(),
                            self.max_field_bytes
                        ),
                    ));
                }
            }
        }
        for (name, value) in [
            ("input_tokens", event.input_tokens),
            ("output_tokens", event.output_tokens),
            ("cached_input_tokens", event.cached_input_tokens),
            ("cache_write_tokens", event.cache_write_tokens),
            ("reasoning_tokens", event.reasoning_tokens),
            (
                "cache_write_1h_tokens",
                event.cache_write_1h_tokens.unwrap_or(0),
            ),
        ] {
            if value < 0 {
                return Err(reject(
                    RejectCode::NegativeTokens,
                    format!("{name} is {value}, must be >= 0"),
                ));
            }
            if value > MAX_TOKENS_PER_FIELD {
                return Err(reject(
                    RejectCode::TokensTooLarge,
                    format!("{name} is {value}, the limit is {MAX_TOKENS_PER_FIELD}"),
                ));
            }
        }
        if event.reasoning_tokens > event.output_tokens {
            return Err(reject(
                RejectCode::ReasoningExceedsOutput,
                format!(
                    "reasoning_tokens ({}) exceeds output_tokens ({}); reasoning is part of output",
                    event.reasoning_tokens, event.output_tokens
                ),
            ));
        }
        if event.labels.len() > self.max_labels {
            return Err(reject(
                RejectCode::TooManyLabels,
                format!(
                    "{} labels, the limit is {}",
                    event.labels.len(),
                    self.max_labels
                ),
            ));
        }
        if let Some((k, v)) = event
            .labels
            .iter()
            .find(|(k, v)| k.len() > self.max_label_bytes || v.len() > self.max_label_bytes)
        {
            let shown: String = k.chars().take(32).collect();
            return Err(reject(
                RejectCode::LabelTooLong,
                format!(
                    "label {shown:?} has a {}-byte key and a {}-byte value, the limit is {} each",
                    k.len(),
                    v.len(),
                    self.max_label_bytes
                ),
            ));
        }
        let earliest = now_ms.saturating_sub(self.max_past_ms);
        let latest = now_ms.saturating_add(self.max_future_ms);
        if event.event_time < earliest || event.event_time > latest {
            return Err(reject(
                RejectCode::EventTimeOutOfRange,
                format!(
                    "event_time {} is outside the accepted range [{earliest}, {latest}] around now {now_ms}",
                    event.event_time
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    const NOW: i64 = 1_764_000_000_000;

    fn ok_event() -> UsageEvent {
        let mut e = UsageEvent::new(Uuid::new_v4(), NOW, "acme", "openai", "gpt-4o");
        e.input_tokens = 10;
        e.output_tokens = 5;
        e
    }

    fn code_of(mutate: impl FnOnce(&mut UsageEvent)) -> Option<RejectCode> {
        let mut e = ok_event();
        mutate(&mut e);
        ValidationLimits::default()
            .check(&e, NOW)
            .err()
            .map(|err| err.code)
    }

    #[test]
    fn valid_event_passes() {
        assert_eq!(code_of(|_| {}), None);
    }

    #[test]
    fn each_rule_has_its_code() {
        assert_eq!(
            code_of(|e| e.tenant_id = " ".into()),
            Some(RejectCode::EmptyTenant)
        );
        assert_eq!(
            code_of(|e| e.provider.clear()),
            Some(RejectCode::EmptyProvider)
        );
        assert_eq!(code_of(|e| e.model.clear()), Some(RejectCode::EmptyModel));
        assert_eq!(
            code_of(|e| e.event_id = Uuid::nil()),
            Some(RejectCode::NilEventId)
        );
        assert_eq!(
            code_of(|e| e.cached_input_tokens = -1),
            Some(RejectCode::NegativeTokens)
        );
        assert_eq!(
            code_of(|e| e.reasoning_tokens = 6),
            Some(RejectCode::ReasoningExceedsOutput)
        );
        assert_eq!(
            code_of(|e| e.user_id = Some("u".repeat(257))),
            Some(RejectCode::FieldTooLong)
        );
        assert_eq!(
            code_of(|e| e.labels = (0..33).map(|i| (i.to_string(), String::new())).collect()),
            Some(RejectCode::TooManyLabels)
        );
        assert_eq!(
            code_of(|e| {
                e.labels.insert("k".into(), "v".repeat(10 << 20));
            }),
            Some(RejectCode::LabelTooLong)
        );
        assert_eq!(
            code_of(|e| e.event_time = NOW - 3650 * DAY_MS),
            Some(RejectCode::EventTimeOutOfRange)
        );
        assert_eq!(
            code_of(|e| e.event_time = NOW + DAY_MS + 1),
            Some(RejectCode::EventTimeOutOfRange)
        );
        assert_eq!(
            code_of(|e| e.input_tokens = MAX_TOKENS_PER_FIELD + 1),
            Some(RejectCode::TokensTooLarge)
        );
    }

    #[test]
    fn token_counts_are_bounded() {
        let huge = |set: fn(&mut UsageEvent, i64)| {
            [1i64 << 62, i64::MAX, MAX_TOKENS_PER_FIELD + 1].map(|v| code_of(|e| set(e, v)))
        };
        let too_large = [Some(RejectCode::TokensTooLarge); 3];
        assert_eq!(huge(|e, v| e.input_tokens = v), too_large);
        assert_eq!(huge(|e, v| e.cached_input_tokens = v), too_large);
        assert_eq!(huge(|e, v| e.cache_write_tokens = v), too_large);
        assert_eq!(huge(|e, v| e.cache_write_1h_tokens = Some(v)), too_large);
        assert_eq!(
            huge(|e, v| {
                e.output_tokens = v;
                e.reasoning_tokens = v;
            }),
            too_large
        );
        // The outside client's event: each 2^62, so their sum wrapped in pricing.
        assert_eq!(
            code_of(|e| {
                e.input_tokens = 1 << 62;
                e.cached_input_tokens = 1 << 62;
            }),
            Some(RejectCode::TokensTooLarge)
        );
        // The bound itself is accepted, on every field at once.
        assert_eq!(
            code_of(|e| {
                e.input_tokens = MAX_TOKENS_PER_FIELD;
                e.output_tokens = MAX_TOKENS_PER_FIELD;
                e.cached_input_tokens = MAX_TOKENS_PER_FIELD;
                e.cache_write_tokens = MAX_TOKENS_PER_FIELD;
                e.reasoning_tokens = MAX_TOKENS_PER_FIELD;
                e.cache_write_1h_tokens = Some(MAX_TOKENS_PER_FIELD);
            }),
            None
        );
        assert_eq!(
            code_of(|e| e.reasoning_tokens = i64::MIN),
            Some(RejectCode::NegativeTokens)
        );
        assert_eq!(RejectCode::TokensTooLarge.as_str(), "tokens_too_large");
    }
}
