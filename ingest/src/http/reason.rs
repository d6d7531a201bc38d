//! Why HTTP ingest rejects an event or a whole request: one machine-readable code per
//! reason, shared by API answers, dead-letter headers and metrics. The validation rules'
//! codes are [`RejectCode`]'s, so every path names a broken rule the same way.

use costpipe_schemas::RejectCode;

/// A reason for a rejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The event's bytes (one NDJSON line, one array element, or the body) are not UTF-8.
    InvalidUtf8,
    /// The event is not well-formed JSON; for a JSON array body, the array itself is broken.
    InvalidJson,
    /// Well-formed JSON, but not a usage event (not an object, a field missing or of the
    /// wrong type, a field given twice).
    InvalidEvent,
    /// A field the usage event does not have (a misspelt `cached_input_tokens` would
    /// otherwise be silently counted as zero).
    UnknownField,
    /// `event_id` is missing or not a UUID.
    InvalidEventId,
    /// `event_time` is missing, or neither integer milliseconds nor an RFC 3339 string.
    InvalidEventTime,
    /// The event's tenant is not the tenant of the API key.
    TenantMismatch,
    /// A key appears twice inside `labels` (JSON would silently keep the last).
    DuplicateLabelKey,
    /// A validation rule shared with the emitter and the aggregator.
    Rule(RejectCode),
    /// Whole request: the body is over the configured size.
    BodyTooLarge,
    /// Whole request: more events than the configured batch size.
    BatchTooLarge,
    /// Whole request: no event in the body.
    EmptyBody,
}

/// Every rule code of [`RejectCode`], in its declaration order.
pub const RULES: [RejectCode; 11] = [
    RejectCode::EmptyTenant,
    RejectCode::EmptyProvider,
    RejectCode::EmptyModel,
    RejectCode::NilEventId,
    RejectCode::NegativeTokens,
    RejectCode::TokensTooLarge,
    RejectCode::ReasoningExceedsOutput,
    RejectCode::FieldTooLong,
    RejectCode::TooManyLabels,
    RejectCode::LabelTooLong,
    RejectCode::EventTimeOutOfRange,
];

impl Reason {
    /// Reasons that reject one event (the request goes on with the others).
    pub const PER_EVENT: [Reason; 8] = [
        Reason::InvalidUtf8,
        Reason::InvalidJson,
        Reason::InvalidEvent,
        Reason::UnknownField,
        Reason::InvalidEventId,
        Reason::InvalidEventTime,
        Reason::TenantMismatch,
        Reason::DuplicateLabelKey,
    ];

    /// Reasons that reject a whole request.
    pub const WHOLE_BODY: [Reason; 4] = [
        Reason::BodyTooLarge,
        Reason::BatchTooLarge,
        Reason::EmptyBody,
        Reason::InvalidJson,
    ];

    /// The snake-case code.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::InvalidJson => "invalid_json",
            Reason::InvalidEvent => "invalid_event",
            Reason::UnknownField => "unknown_field",
            Reason::InvalidEventId => "invalid_event_id",
            Reason::InvalidEventTime => "invalid_event_time",
            Reason::TenantMismatch => "tenant_mismatch",
            Reason::DuplicateLabelKey => "duplicate_label_key",
            Reason::Rule(code) => code.as_str(),
            Reason::BodyTooLarge => "body_too_large",
            Reason::BatchTooLarge => "batch_too_large",
            Reason::EmptyBody => "empty_body",
        }
    }

    /// Every code an event can be rejected with, for documentation.
    pub fn all_event_codes() -> Vec<&'static str> {
        Reason::PER_EVENT
            .iter()
            .map(|r| r.as_str())
            .chain(RULES.iter().map(|c| c.as_str()))
            .collect()
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejection: the reason and a message the sender can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub message: String,
}

impl Rejection {
    /// A rejection for `reason`.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Rejection {
            reason,
            message: message.into(),
        }
    }
}

impl From<costpipe_schemas::ValidationError> for Rejection {
    fn from(e: costpipe_schemas::ValidationError) -> Self {
        Rejection {
            reason: Reason::Rule(e.code),
            message: e.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_snake_case() {
        let mut all = Reason::all_event_codes();
        all.extend(Reason::WHOLE_BODY.iter().map(|r| r.as_str()));
        let unique: HashSet<_> = all.iter().collect();
        // invalid_json is both a per-event and a whole-body code.
        assert_eq!(unique.len(), all.len() - 1);
        for c in all {
            assert!(
                c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_'),
                "{c}"
            );
        }
    }
}
