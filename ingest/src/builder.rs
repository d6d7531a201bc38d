//! A typed builder for usage events: the required fields go into the constructor, the rest
//! have setters, and `build` checks the result against the same [`ValidationLimits`] the
//! emitter, HTTP ingest and the aggregator apply, so an invalid event never leaves the
//! caller's process.
//!
//! ```
//! use costpipe_ingest::builder::UsageEventBuilder;
//! use costpipe_schemas::ValidationLimits;
//!
//! let event = UsageEventBuilder::new("acme", "openai", "gpt-4o")
//!     .input_tokens(1200)
//!     .output_tokens(300)
//!     .department("research")
//!     .label("region", "eu-west-1")
//!     .build(&ValidationLimits::default())
//!     .expect("a valid event");
//! assert_eq!(event.tenant_id, "acme");
//! ```

use chrono::{DateTime, Utc};
use uuid::Uuid;

use costpipe_schemas::{UsageEvent, ValidationError, ValidationLimits};

/// Builds a [`UsageEvent`]. `event_id` defaults to a new random (v4) UUID and `event_time`
/// to the time of [`build`](UsageEventBuilder::build); token counts default to 0.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct UsageEventBuilder {
    event: UsageEvent,
    event_time_set: bool,
}

macro_rules! optional_string_setters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: impl Into<String>) -> Self {
                self.event.$name = Some(value.into());
                self
            }
        )*
    };
}

macro_rules! token_setters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: i64) -> Self {
                self.event.$name = value;
                self
            }
        )*
    };
}

impl UsageEventBuilder {
    /// An event of `tenant` for one call of `model` at `provider`.
    pub fn new(
        tenant: impl Into<String>,
        provider: impl Into<String>,
        model: impl Into<String>,
    ) -> Self {
        UsageEventBuilder {
            event: UsageEvent::new(Uuid::new_v4(), 0, tenant, provider, model),
            event_time_set: false,
        }
    }

    /// The event's id; set it to the caller's own idempotency key so that a retry of the
    /// same call is recognised as the same event.
    pub fn event_id(mut self, id: Uuid) -> Self {
        self.event.event_id = id;
        self
    }

    /// When the call happened, UTC milliseconds since the Unix epoch.
    pub fn event_time_ms(mut self, ms: i64) -> Self {
        self.event.event_time = ms;
        self.event_time_set = true;
        self
    }

    /// When the call happened.
    pub fn event_time(self, at: DateTime<Utc>) -> Self {
        self.event_time_ms(at.timestamp_millis())
    }

    optional_string_setters!(
        /// Department (cost centre) of the caller.
        department,
        /// End user on whose behalf the call was made.
        user_id,
        /// Project the call belongs to.
        project_id,
        /// Product feature that made the call.
        feature,
        /// Deployment environment, e.g. `prod`.
        environment,
        /// The provider's request id.
        request_id,
        /// Distributed trace id.
        trace_id,
        /// Name of the span that made the call.
        span_name,
    );

    token_setters!(
        /// Uncached input (prompt) tokens.
        input_tokens,
        /// Output tokens, reasoning tokens included.
        output_tokens,
        /// Input tokens read from the provider's prompt cache.
        cached_input_tokens,
        /// Input tokens written to the provider's prompt cache.
        cache_write_tokens,
        /// Reasoning tokens; a part of `output_tokens`, never more.
        reasoning_tokens,
    );

    /// Adds one label (replacing a label of the same key).
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.event.labels.insert(key.into(), value.into());
        self
    }

    /// Adds several labels.
    pub fn labels<K: Into<String>, V: Into<String>>(
        mut self,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.event
            .labels
            .extend(labels.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Replaces every label.
    pub fn set_labels(mut self, labels: impl IntoIterator<Item = (String, String)>) -> Self {
        self.event.labels = labels.into_iter().collect();
        self
    }

    /// The event, if it meets `limits` now.
    pub fn build(self, limits: &ValidationLimits) -> Result<UsageEvent, ValidationError> {
        self.build_at(limits, Utc::now().timestamp_millis())
    }

    /// The event, if it meets `limits` at wall-clock time `now_ms` (which is also the
    /// event time when none was set).
    pub fn build_at(
        self,
        limits: &ValidationLimits,
        now_ms: i64,
    ) -> Result<UsageEvent, ValidationError> {
        let mut event = self.event;
        if !self.event_time_set {
            event.event_time = now_ms;
        }
        limits.check(&event, now_ms)?;
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use costpipe_schemas::RejectCode;

    const NOW: i64 = 1_764_000_000_000;
    const DAY_MS: i64 = 86_400_000;

    fn base() -> UsageEventBuilder {
        UsageEventBuilder::new("acme", "openai", "gpt-4o")
            .input_tokens(100)
            .output_tokens(50)
    }

    fn code(b: UsageEventBuilder) -> RejectCode {
        b.build_at(&ValidationLimits::default(), NOW)
            .expect_err("rejected")
            .code
    }

    #[test]
    fn defaults_are_a_fresh_id_and_now() {
        let a = base().build_at(&ValidationLimits::default(), NOW).unwrap();
        let b = base().build_at(&ValidationLimits::default(), NOW).unwrap();
        assert_ne!(a.event_id, b.event_id, "every event gets its own id");
        assert_eq!(a.event_id.get_version_num(), 4);
        assert_eq!(a.event_time, NOW);
        assert_eq!(a.cached_input_tokens, 0);
        assert!(a.labels.is_empty() && a.department.is_none());
        let now = Utc::now().timestamp_millis();
        let c = base().build(&ValidationLimits::default()).unwrap();
        assert!((c.event_time - now).abs() < 60_000);
    }

    #[test]
    fn every_setter_lands_in_its_field() {
        let id = Uuid::new_v4();
        let at = Utc.timestamp_millis_opt(NOW - 5_000).unwrap();
        let e = UsageEventBuilder::new("acme", "anthropic", "claude-sonnet-4-5")
            .event_id(id)
            .event_time(at)
            .department("research")
            .user_id("u1")
            .project_id("p1")
            .feature("chat")
            .environment("prod")
            .request_id("req-1")
            .trace_id("trace-1")
            .span_name("llm.call")
            .input_tokens(1)
            .output_tokens(5)
            .cached_input_tokens(2)
            .cache_write_tokens(3)
            .reasoning_tokens(4)
            .label("region", "eu")
            .labels([("team", "a"), ("region", "us")])
            .build_at(&ValidationLimits::default(), NOW)
            .unwrap();
        let mut expected =
            UsageEvent::new(id, NOW - 5_000, "acme", "anthropic", "claude-sonnet-4-5");
        expected.department = Some("research".into());
        expected.user_id = Some("u1".into());
        expected.project_id = Some("p1".into());
        expected.feature = Some("chat".into());
        expected.environment = Some("prod".into());
        expected.request_id = Some("req-1".into());
        expected.trace_id = Some("trace-1".into());
        expected.span_name = Some("llm.call".into());
        expected.input_tokens = 1;
        expected.output_tokens = 5;
        expected.cached_input_tokens = 2;
        expected.cache_write_tokens = 3;
        expected.reasoning_tokens = 4;
        expected.labels = [("region", "us"), ("team", "a")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(e, expected);
        let replaced = base()
            .label("a", "1")
            .set_labels([("b".to_string(), "2".to_string())])
            .build_at(&ValidationLimits::default(), NOW)
            .unwrap();
        assert_eq!(replaced.labels.len(), 1);
    }

    #[test]
    fn build_applies_the_shared_rules() {
        assert_eq!(
            code(UsageEventBuilder::new(" ", "openai", "gpt-4o")),
            RejectCode::EmptyTenant
        );
        assert_eq!(
            code(UsageEventBuilder::new("acme", "", "gpt-4o")),
            RejectCode::EmptyProvider
        );
        assert_eq!(
            code(UsageEventBuilder::new("acme", "openai", "")),
            RejectCode::EmptyModel
        );
        assert_eq!(code(base().event_id(Uuid::nil())), RejectCode::NilEventId);
        assert_eq!(code(base().input_tokens(-1)), RejectCode::NegativeTokens);
        assert_eq!(
            code(base().reasoning_tokens(51)),
            RejectCode::ReasoningExceedsOutput
        );
        assert_eq!(
            code(base().feature("f".repeat(257))),
            RejectCode::FieldTooLong
        );
        assert_eq!(
            code(base().labels((0..33).map(|i| (i.to_string(), "v")))),
            RejectCode::TooManyLabels
        );
        assert_eq!(
            code(base().label("k", "v".repeat(257))),
            RejectCode::LabelTooLong
        );
        assert_eq!(
            code(base().event_time_ms(NOW - 3650 * DAY_MS)),
            RejectCode::EventTimeOutOfRange
        );
        assert_eq!(
            code(base().event_time_ms(NOW + 2 * DAY_MS)),
            RejectCode::EventTimeOutOfRange
        );
    }

    #[test]
    fn limits_are_the_callers() {
        let tight = ValidationLimits {
            max_labels: 1,
            ..ValidationLimits::default()
        };
        let two = base().label("a", "1").label("b", "2");
        assert!(two
            .clone()
            .build_at(&ValidationLimits::default(), NOW)
            .is_ok());
        assert_eq!(
            two.build_at(&tight, NOW).unwrap_err().code,
            RejectCode::TooManyLabels
        );
    }
}
