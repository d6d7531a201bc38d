//! One event's JSON → [`UsageEvent`], with a precise reason when it is not one.
//!
//! The JSON shape is the serde shape of [`UsageEvent`] itself (so a field added to the
//! event type in a new schema version is accepted here without a change): `event_id` a
//! UUID string, `event_time` integer UTC milliseconds, optional strings may be absent or
//! `null`, `labels` an object of strings. Two extras:
//! - `event_time` may also be an RFC 3339 string (`"2026-11-24T09:44:28.123Z"`);
//! - a field the event type does not have is rejected (`unknown_field`) unless
//!   configured otherwise: a misspelt optional field would otherwise be counted as zero.
//!
//! The fast path is a single serde pass; only a failing event is parsed again to name
//! the reason.

use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use uuid::Uuid;

use costpipe_schemas::UsageEvent;

use super::reason::{Reason, Rejection};

/// Parses one event. `raw` is the event's bytes exactly as sent.
pub fn parse_event(raw: &[u8], reject_unknown_fields: bool) -> Result<UsageEvent, Rejection> {
    let text = std::str::from_utf8(raw).map_err(|e| {
        Rejection::new(
            Reason::InvalidUtf8,
            format!(
                "the event is not valid UTF-8: invalid byte sequence at byte {}",
                e.valid_up_to()
            ),
        )
    })?;
    let parsed = match deserialize_checked(text, reject_unknown_fields) {
        Ok(event) => Ok(event),
        Err(Failure::Unknown(field)) => Err(unknown_field(&field)),
        Err(Failure::Json(e)) if e.is_syntax() || e.is_eof() => Err(Rejection::new(
            Reason::InvalidJson,
            format!("the event is not well-formed JSON: {e}"),
        )),
        Err(Failure::Json(e)) => diagnose(text, e, reject_unknown_fields),
    }?;
    // The labels map keeps the last of two equal keys: look at the text again, only
    // when there are labels at all.
    if !parsed.labels.is_empty() {
        if let Some(key) = duplicate_label_key(text) {
            return Err(Rejection::new(
                Reason::DuplicateLabelKey,
                format!("the label key {key:?} appears more than once in `labels`"),
            ));
        }
    }
    Ok(parsed)
}

/// The first key given twice inside the top-level `labels` object of `text` (a
/// well-formed JSON object), if any.
fn duplicate_label_key(text: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(default)]
        labels: Option<KeysOnce>,
    }
    struct KeysOnce(Option<String>);
    impl<'de> serde::Deserialize<'de> for KeysOnce {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = KeysOnce;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object of labels")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeysOnce, A::Error> {
                    let mut seen = std::collections::HashSet::new();
                    let mut duplicate = None;
                    while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                        map.next_value::<IgnoredAny>()?;
                        if duplicate.is_none() && !seen.insert(key.to_string()) {
                            duplicate = Some(key.into_owned());
                        }
                    }
                    Ok(KeysOnce(duplicate))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_str::<Probe>(text)
        .ok()
        .and_then(|p| p.labels)
        .and_then(|k| k.0)
}

enum Failure {
    Json(serde_json::Error),
    Unknown(String),
}

fn unknown_field(field: &str) -> Rejection {
    Rejection::new(
        Reason::UnknownField,
        format!(
            "unknown field `{field}`; a usage event has the fields {}",
            known_fields().join(", ")
        ),
    )
}

/// Deserializes `text` as exactly one event, noting the first field the type ignored.
fn deserialize_checked(text: &str, reject_unknown: bool) -> Result<UsageEvent, Failure> {
    let mut de = serde_json::Deserializer::from_str(text);
    let mut ignored: Option<String> = None;
    let event = serde_ignored::deserialize(&mut de, |path| {
        if ignored.is_none() {
            ignored = Some(path.to_string());
        }
    })
    .map_err(Failure::Json)?;
    de.end().map_err(Failure::Json)?;
    match ignored {
        Some(field) if reject_unknown => Err(Failure::Unknown(field)),
        _ => Ok(event),
    }
}

/// The fields of [`UsageEvent`]'s JSON shape, as the type serializes them.
pub fn known_fields() -> Vec<String> {
    match serde_json::to_value(UsageEvent::new(Uuid::nil(), 0, "", "", "")) {
        Ok(Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// The event failed the typed pass with a data error: find out which rule of the shape it
/// breaks. An RFC 3339 `event_time` is converted here and the event parsed again.
fn diagnose(
    text: &str,
    error: serde_json::Error,
    reject_unknown: bool,
) -> Result<UsageEvent, Rejection> {
    let invalid = |msg: String| Rejection::new(Reason::InvalidEvent, msg);
    let mut value: Value = serde_json::from_str(text).map_err(|e| {
        Rejection::new(
            Reason::InvalidJson,
            format!("the event is not well-formed JSON: {e}"),
        )
    })?;
    let Some(map) = value.as_object_mut() else {
        return Err(invalid(format!(
            "expected a JSON object with the event's fields, found {}",
            kind(&value)
        )));
    };
    match map.get("event_id") {
        None | Some(Value::Null) => {
            return Err(Rejection::new(
                Reason::InvalidEventId,
                "event_id is required: a UUID string, the same on every retry of the event",
            ))
        }
        Some(Value::String(s)) => {
            if let Err(e) = Uuid::parse_str(s) {
                return Err(Rejection::new(
                    Reason::InvalidEventId,
                    format!("event_id {s:?} is not a UUID: {e}"),
                ));
            }
        }
        Some(other) => {
            return Err(Rejection::new(
                Reason::InvalidEventId,
                format!("event_id must be a UUID string, found {}", kind(other)),
            ))
        }
    }
    let time_error = |found: String| {
        Rejection::new(
            Reason::InvalidEventTime,
            format!(
                "event_time must be integer UTC milliseconds since the epoch or an RFC 3339 string, found {found}"
            ),
        )
    };
    let mut converted = false;
    match map.get("event_time") {
        None | Some(Value::Null) => {
            return Err(Rejection::new(
                Reason::InvalidEventTime,
                "event_time is required: integer UTC milliseconds or an RFC 3339 string",
            ))
        }
        Some(Value::Number(n)) if n.is_i64() => {}
        Some(Value::String(s)) => match chrono::DateTime::parse_from_rfc3339(s) {
            Ok(t) => {
                map.insert("event_time".into(), Value::from(t.timestamp_millis()));
                converted = true;
            }
            Err(e) => return Err(time_error(format!("{s:?} ({e})"))),
        },
        Some(other) => return Err(time_error(kind(other))),
    }
    if !converted {
        return Err(invalid(format!("not a usage event: {error}")));
    }
    // The typed pass stopped at event_time; the rest of the event is still to be checked,
    // including what a `Value` hides: a field given twice.
    if let Some(dup) = duplicate_key(text) {
        return Err(invalid(format!("field `{dup}` is given twice")));
    }
    let mut ignored: Option<String> = None;
    let event = serde_ignored::deserialize(value, |path| {
        if ignored.is_none() {
            ignored = Some(path.to_string());
        }
    })
    .map_err(|e| invalid(format!("not a usage event: {e}")))?;
    match ignored {
        Some(field) if reject_unknown => Err(unknown_field(&field)),
        _ => Ok(event),
    }
}

fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// The first top-level key of the object `text` that occurs twice.
fn duplicate_key(text: &str) -> Option<String> {
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<String>, A::Error> {
            let mut seen = std::collections::HashSet::new();
            let mut duplicate = None;
            // Read to the end: the deserializer checks the object is closed.
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if !seen.insert(key.clone()) && duplicate.is_none() {
                    duplicate = Some(key);
                }
            }
            Ok(duplicate)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    serde::Deserializer::deserialize_map(&mut de, Keys)
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use costpipe_schemas::UsageEvent;

    fn full_event() -> UsageEvent {
        let mut e = UsageEvent::new(
            Uuid::new_v4(),
            1_764_000_000_123,
            "acme",
            "openai",
            "gpt-4o",
        );
        e.department = Some("research".into());
        e.user_id = Some("u\"1\u{e9}".into());
        e.project_id = Some("p".into());
        e.feature = Some("chat".into());
        e.environment = Some("prod".into());
        e.input_tokens = 1200;
        e.output_tokens = 300;
        e.cached_input_tokens = 50;
        e.cache_write_tokens = 7;
        e.reasoning_tokens = 20;
        e.request_id = Some("r".into());
        e.trace_id = Some("t".into());
        e.span_name = Some("s".into());
        e.labels.insert("region".into(), "eu".into());
        e
    }

    fn reason(json: &str) -> Reason {
        parse_event(json.as_bytes(), true)
            .expect_err("rejected")
            .reason
    }

    #[test]
    fn duplicate_label_keys_are_rejected() {
        let json = serde_json::to_string(&full_event()).unwrap();
        let dup = json.replace(
            r#""region":"eu""#,
            r#""region":"eu","team":"x","region":"us""#,
        );
        assert_ne!(dup, json);
        let r = parse_event(dup.as_bytes(), true).unwrap_err();
        assert_eq!(r.reason, Reason::DuplicateLabelKey);
        assert!(r.message.contains("region"), "{}", r.message);
        // Escapes naming the same key are the same key.
        let escaped = json.replace(r#""region":"eu""#, r#""region":"eu","regio\u006e":"us""#);
        assert_eq!(reason(&escaped), Reason::DuplicateLabelKey);
        // The same key in two events' own objects, or a `labels` field nested elsewhere: fine.
        let distinct = json.replace(r#""region":"eu""#, r#""region":"eu","zone":"eu""#);
        assert!(parse_event(distinct.as_bytes(), true).is_ok());
    }

    #[test]
    fn the_serde_shape_of_the_event_round_trips() {
        let e = full_event();
        let json = serde_json::to_vec(&e).unwrap();
        assert_eq!(parse_event(&json, true).unwrap(), e);
        let pretty = serde_json::to_vec_pretty(&e).unwrap();
        assert_eq!(parse_event(&pretty, true).unwrap(), e);
    }

    #[test]
    fn optional_fields_may_be_absent_or_null() {
        let id = Uuid::new_v4();
        let minimal = format!(
            r#"{{"event_id":"{id}","event_time":5,"tenant_id":"acme","provider":"openai","model":"gpt-4o","input_tokens":1,"output_tokens":2,"department":null}}"#
        );
        let e = parse_event(minimal.as_bytes(), true).unwrap();
        let mut expected = UsageEvent::new(id, 5, "acme", "openai", "gpt-4o");
        expected.input_tokens = 1;
        expected.output_tokens = 2;
        assert_eq!(e, expected);
    }

    #[test]
    fn event_time_may_be_rfc3339() {
        let mut e = full_event();
        e.event_time = 1_764_000_000_123;
        let mut v = serde_json::to_value(&e).unwrap();
        v["event_time"] = "2025-11-24T16:00:00.123Z".into();
        assert_eq!(
            parse_event(v.to_string().as_bytes(), true).unwrap(),
            e,
            "1764000000123 ms is 2025-11-24T16:00:00.123Z"
        );
        v["event_time"] = "2025-11-24T17:00:00.123+01:00".into();
        assert_eq!(parse_event(v.to_string().as_bytes(), true).unwrap(), e);
    }

    fn with(field: &str, value: Value) -> String {
        let mut v = serde_json::to_value(full_event()).unwrap();
        v[field] = value;
        v.to_string()
    }

    fn without(field: &str) -> String {
        let mut v = serde_json::to_value(full_event()).unwrap();
        v.as_object_mut().unwrap().remove(field);
        v.to_string()
    }

    #[test]
    fn each_shape_problem_has_its_reason() {
        assert_eq!(
            parse_event(b"{\"tenant_id\":\"ac\xffme\"}", true)
                .unwrap_err()
                .reason,
            Reason::InvalidUtf8
        );
        assert_eq!(reason("{\"event_id\": "), Reason::InvalidJson);
        assert_eq!(reason("{\"event_id\": tru}"), Reason::InvalidJson);
        assert_eq!(
            reason(&format!("{} x", with("model", "m".into()))),
            Reason::InvalidJson
        );
        assert_eq!(reason("[1,2]"), Reason::InvalidEvent);
        assert_eq!(reason("42"), Reason::InvalidEvent);
        assert_eq!(
            reason(&with("input_tokens", 1.5.into())),
            Reason::InvalidEvent
        );
        assert_eq!(
            reason(&with("input_tokens", "12".into())),
            Reason::InvalidEvent
        );
        assert_eq!(
            reason(&with("labels", serde_json::json!({"a": 1}))),
            Reason::InvalidEvent
        );
        assert_eq!(reason(&without("tenant_id")), Reason::InvalidEvent);
        assert_eq!(reason(&without("output_tokens")), Reason::InvalidEvent);
        assert_eq!(
            reason(&with("cache_input_tokens", 5.into())),
            Reason::UnknownField
        );
        assert_eq!(reason(&without("event_id")), Reason::InvalidEventId);
        assert_eq!(
            reason(&with("event_id", "not-a-uuid".into())),
            Reason::InvalidEventId
        );
        assert_eq!(reason(&with("event_id", 7.into())), Reason::InvalidEventId);
        assert_eq!(reason(&without("event_time")), Reason::InvalidEventTime);
        assert_eq!(
            reason(&with("event_time", "yesterday".into())),
            Reason::InvalidEventTime
        );
        assert_eq!(
            reason(&with("event_time", 1.5.into())),
            Reason::InvalidEventTime
        );
        assert_eq!(
            reason(&with("event_time", true.into())),
            Reason::InvalidEventTime
        );
    }

    #[test]
    fn a_field_given_twice_is_rejected_on_both_paths() {
        let e = serde_json::to_string(&full_event()).unwrap();
        let dup = format!("{{\"input_tokens\":1,{}", &e[1..]);
        assert_eq!(reason(&dup), Reason::InvalidEvent);
        let mut v = serde_json::to_value(full_event()).unwrap();
        v["event_time"] = "2025-11-24T16:00:00.123Z".into();
        let s = v.to_string();
        let dup = format!("{{\"input_tokens\":1,{}", &s[1..]);
        assert_eq!(reason(&dup), Reason::InvalidEvent);
    }

    #[test]
    fn unknown_fields_can_be_allowed() {
        let e = full_event();
        let mut v = serde_json::to_value(&e).unwrap();
        v["cache_input_tokens"] = 5.into();
        assert_eq!(parse_event(v.to_string().as_bytes(), false).unwrap(), e);
        let mut v = serde_json::to_value(full_event()).unwrap();
        v["event_time"] = "2025-11-24T16:00:00.123Z".into();
        v["extra"] = 1.into();
        assert_eq!(reason(&v.to_string()), Reason::UnknownField);
    }

    #[test]
    fn known_fields_are_the_event_types() {
        let fields = known_fields();
        for f in [
            "event_id",
            "event_time",
            "tenant_id",
            "labels",
            "cached_input_tokens",
        ] {
            assert!(fields.iter().any(|k| k == f), "{f}");
        }
    }
}
