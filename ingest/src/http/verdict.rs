//! The decision on each event of a request, as a pure function of the body, the
//! authenticated tenant, the limits and the time: no socket, no broker.

use uuid::Uuid;

use costpipe_schemas::{UsageEvent, ValidationLimits};

use super::body::{split_body, BodyError, Format};
use super::event_json::parse_event;
use super::reason::{Reason, Rejection};

/// What the request's settings allow.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The event rules shared with the emitter and the aggregator.
    pub limits: ValidationLimits,
    /// Most events in one request.
    pub max_batch_events: usize,
    /// Reject fields the event type does not have.
    pub reject_unknown_fields: bool,
}

/// The decision on one event.
// Nearly every event is accepted: boxing the large variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Valid and the caller's own: to be produced.
    Accept(UsageEvent),
    /// Refused; `event_id` when the event got far enough to have one.
    Reject {
        event_id: Option<Uuid>,
        rejection: Rejection,
    },
}

/// One event of a request: its bytes as sent and the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged<'a> {
    pub raw: &'a [u8],
    pub verdict: Verdict,
}

/// Decides on one event's bytes for a sender authenticated as `tenant`. Shape first, then
/// the shared rules, then ownership: an event that breaks a rule is rejected with that
/// rule's code whoever sent it.
pub fn judge(raw: &[u8], tenant: &str, rules: &Rules, now_ms: i64) -> Verdict {
    let event = match parse_event(raw, rules.reject_unknown_fields) {
        Ok(e) => e,
        Err(rejection) => {
            return Verdict::Reject {
                event_id: None,
                rejection,
            }
        }
    };
    let refuse = |rejection: Rejection| Verdict::Reject {
        event_id: Some(event.event_id),
        rejection,
    };
    if let Err(e) = rules.limits.check(&event, now_ms) {
        return refuse(e.into());
    }
    if event.tenant_id != tenant {
        return refuse(Rejection::new(
            Reason::TenantMismatch,
            format!(
                "the API key is tenant {tenant:?}'s and may not emit events of tenant {:?}",
                event.tenant_id
            ),
        ));
    }
    Verdict::Accept(event)
}

/// A whole-request refusal: the HTTP status and the rejection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyRejection {
    pub status: u16,
    pub rejection: Rejection,
}

/// Decides on every event of `body`, in order; or refuses the whole body.
pub fn judge_body<'a>(
    body: &'a [u8],
    content_type: Option<&str>,
    tenant: &str,
    rules: &Rules,
    now_ms: i64,
) -> Result<(Format, Vec<Judged<'a>>), BodyRejection> {
    let split = split_body(body, content_type, rules.max_batch_events).map_err(|e| match e {
        BodyError::Empty => BodyRejection {
            status: 400,
            rejection: Rejection::new(Reason::EmptyBody, "the body holds no event"),
        },
        BodyError::BrokenArray(msg) => BodyRejection {
            status: 400,
            rejection: Rejection::new(Reason::InvalidJson, msg),
        },
        BodyError::TooManyEvents { max } => BodyRejection {
            status: 413,
            rejection: Rejection::new(
                Reason::BatchTooLarge,
                format!("more than {max} events in one request; split the batch"),
            ),
        },
    })?;
    let judged = split
        .events
        .into_iter()
        .map(|raw| Judged {
            raw,
            verdict: judge(raw, tenant, rules, now_ms),
        })
        .collect();
    Ok((split.format, judged))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::reason::RULES;
    use costpipe_schemas::RejectCode;
    use serde_json::{json, Value};

    const NOW: i64 = 1_764_000_000_000;
    const DAY_MS: i64 = 86_400_000;

    fn rules() -> Rules {
        Rules {
            limits: ValidationLimits::default(),
            max_batch_events: 10,
            reject_unknown_fields: true,
        }
    }

    fn event_json() -> Value {
        let mut e = UsageEvent::new(Uuid::new_v4(), NOW - 1000, "acme", "openai", "gpt-4o");
        e.input_tokens = 100;
        e.output_tokens = 10;
        serde_json::to_value(e).unwrap()
    }

    fn with(field: &str, value: Value) -> Vec<u8> {
        let mut v = event_json();
        v[field] = value;
        v.to_string().into_bytes()
    }

    fn code_of(raw: &[u8]) -> &'static str {
        match judge(raw, "acme", &rules(), NOW) {
            Verdict::Reject { rejection, .. } => rejection.reason.as_str(),
            Verdict::Accept(_) => "accepted",
        }
    }

    /// Every code an event can be rejected with, each from one event that breaks only it.
    #[test]
    fn every_event_rejection_code() {
        let long = "x".repeat(300);
        let labels = |n: usize, len: usize| {
            Value::Object(
                (0..n)
                    .map(|i| (format!("k{i}"), Value::from("v".repeat(len))))
                    .collect(),
            )
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("accepted", event_json().to_string().into_bytes()),
            ("invalid_utf8", b"{\"tenant_id\": \"\xc3\x28\"}".to_vec()),
            ("invalid_json", b"{\"tenant_id\": ".to_vec()),
            ("invalid_event", with("output_tokens", json!("ten"))),
            ("unknown_field", with("cache_input_tokens", json!(5))),
            ("invalid_event_id", with("event_id", json!("42"))),
            (
                "invalid_event_time",
                with("event_time", json!("last tuesday")),
            ),
            ("tenant_mismatch", with("tenant_id", json!("globex"))),
            (
                "duplicate_label_key",
                String::from_utf8(with("labels", json!({"team": "a"})))
                    .unwrap()
                    .replace(r#""team":"a""#, r#""team":"a","team":"b""#)
                    .into_bytes(),
            ),
            ("empty_tenant", with("tenant_id", json!(""))),
            ("empty_provider", with("provider", json!(" "))),
            ("empty_model", with("model", json!(""))),
            (
                "nil_event_id",
                with("event_id", json!(Uuid::nil().to_string())),
            ),
            ("negative_tokens", with("input_tokens", json!(-1))),
            ("tokens_too_large", with("input_tokens", json!(i64::MAX))),
            (
                "reasoning_exceeds_output",
                with("reasoning_tokens", json!(11)),
            ),
            ("field_too_long", with("department", json!(long))),
            ("too_many_labels", with("labels", labels(33, 1))),
            ("label_too_long", with("labels", labels(1, 257))),
            (
                "event_time_out_of_range",
                with("event_time", json!(NOW - 3650 * DAY_MS)),
            ),
        ];
        for (expected, raw) in &cases {
            assert_eq!(code_of(raw), *expected, "{}", String::from_utf8_lossy(raw));
        }
        // Every code of the shared rules and of HTTP ingest is covered above.
        let covered: Vec<&str> = cases.iter().map(|(c, _)| *c).collect();
        for code in Reason::all_event_codes() {
            assert!(covered.contains(&code), "no case for {code}");
        }
        assert_eq!(RULES.len(), 11);
    }

    #[test]
    fn rule_codes_are_the_shared_ones() {
        let raw = with("input_tokens", json!(-5));
        let Verdict::Reject {
            rejection,
            event_id,
        } = judge(&raw, "acme", &rules(), NOW)
        else {
            panic!("accepted")
        };
        assert_eq!(rejection.reason, Reason::Rule(RejectCode::NegativeTokens));
        assert!(rejection.message.contains("input_tokens is -5"));
        assert!(event_id.is_some(), "a parsed event's id is reported");
    }

    #[test]
    fn configured_limits_apply() {
        let tight = Rules {
            limits: ValidationLimits {
                max_labels: 0,
                max_past_ms: 500,
                ..ValidationLimits::default()
            },
            ..rules()
        };
        let labelled = with("labels", json!({"a": "b"}));
        assert_eq!(
            match judge(&labelled, "acme", &tight, NOW) {
                Verdict::Reject { rejection, .. } => rejection.reason.as_str(),
                Verdict::Accept(_) => "accepted",
            },
            "too_many_labels"
        );
        // event_time is NOW - 1000: too old for a 500 ms window.
        let plain = event_json().to_string();
        assert!(matches!(
            judge(plain.as_bytes(), "acme", &tight, NOW),
            Verdict::Reject { rejection, .. } if rejection.reason == Reason::Rule(RejectCode::EventTimeOutOfRange)
        ));
    }

    #[test]
    fn body_verdicts_keep_order_and_raw_bytes() {
        let good = event_json().to_string();
        let bad = String::from_utf8(with("input_tokens", json!(-1))).unwrap();
        let body = format!("{good}\nnot json\n\n{bad}\n");
        let (format, judged) = judge_body(body.as_bytes(), None, "acme", &rules(), NOW).unwrap();
        assert_eq!(format, Format::Ndjson);
        let codes: Vec<&str> = judged
            .iter()
            .map(|j| match &j.verdict {
                Verdict::Accept(_) => "accepted",
                Verdict::Reject { rejection, .. } => rejection.reason.as_str(),
            })
            .collect();
        assert_eq!(codes, ["accepted", "invalid_json", "negative_tokens"]);
        assert_eq!(judged[1].raw, b"not json");
        assert_eq!(judged[2].raw, bad.as_bytes());
    }

    #[test]
    fn whole_body_refusals() {
        let r = |body: &str| {
            judge_body(body.as_bytes(), None, "acme", &rules(), NOW)
                .map(|_| ())
                .unwrap_err()
        };
        let e = r("");
        assert_eq!((e.status, e.rejection.reason), (400, Reason::EmptyBody));
        let e = r("[{}, {}");
        assert_eq!((e.status, e.rejection.reason), (400, Reason::InvalidJson));
        let many = format!("[{}]", ["{}"; 11].join(","));
        let e = r(&many);
        assert_eq!((e.status, e.rejection.reason), (413, Reason::BatchTooLarge));
    }
}
