//! A request body → the bytes of each event in it, in order, without parsing the events.
//!
//! Three formats:
//! - **NDJSON**: one event per line. Chosen by `Content-Type: application/x-ndjson`
//!   (also `application/ndjson`, `application/jsonl`, `application/x-jsonlines`), or detected
//!   when the body is not one JSON value but several lines, the first of them a complete
//!   JSON value. Blank lines are skipped;
//!   a trailing `\r` is dropped. A malformed line rejects that line only.
//! - **JSON array**: the body starts with `[`. The array is split at its top-level commas
//!   by a scanner that tracks strings and nesting; each element is then parsed on its own,
//!   so a malformed or non-UTF-8 element rejects that element only. A body whose array
//!   structure itself is broken (unterminated, trailing data) is rejected whole (400).
//! - **One JSON object**: anything else.

/// How the body was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Single,
    Array,
    Ndjson,
}

impl Format {
    /// Name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Single => "single",
            Format::Array => "array",
            Format::Ndjson => "ndjson",
        }
    }
}

/// Why a whole body is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Nothing but whitespace.
    Empty,
    /// A JSON array whose structure is broken; the message says where.
    BrokenArray(String),
    /// More events than allowed.
    TooManyEvents { max: usize },
}

/// The events of a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split<'a> {
    pub format: Format,
    /// Each event's bytes, exactly as sent (without surrounding whitespace or separators).
    pub events: Vec<&'a [u8]>,
}

const NDJSON_TYPES: &[&str] = &[
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/x-jsonlines",
    "application/jsonlines",
    "application/json-lines",
];

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| !is_ws(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| !is_ws(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Whether `content_type` (a header value, parameters allowed) declares NDJSON.
pub fn is_ndjson_type(content_type: &str) -> bool {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    NDJSON_TYPES.contains(&media.as_str())
}

/// Splits `body` into events; at most `max_events`.
pub fn split_body<'a>(
    body: &'a [u8],
    content_type: Option<&str>,
    max_events: usize,
) -> Result<Split<'a>, BodyError> {
    let trimmed = trim(body);
    if trimmed.is_empty() {
        return Err(BodyError::Empty);
    }
    let format = if content_type.is_some_and(is_ndjson_type) {
        Format::Ndjson
    } else if trimmed[0] == b'[' {
        Format::Array
    } else if is_json(trimmed) {
        Format::Single
    } else if trimmed
        .iter()
        .position(|&b| b == b'\n')
        .is_some_and(|end| is_json(trim(&trimmed[..end])))
    {
        // Several lines, the first a complete JSON value: undeclared NDJSON.
        Format::Ndjson
    } else {
        // Not JSON, and not lines of JSON (say, a pretty-printed event cut short): one
        // event, rejected as such.
        Format::Single
    };
    let events = match format {
        Format::Single => vec![trimmed],
        Format::Ndjson => split_lines(trimmed, max_events)?,
        Format::Array => split_array(trimmed, max_events)?,
    };
    if events.is_empty() {
        return Err(BodyError::Empty);
    }
    Ok(Split { format, events })
}

fn is_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
}

fn split_lines(body: &[u8], max_events: usize) -> Result<Vec<&[u8]>, BodyError> {
    let mut events = Vec::new();
    for line in body.split(|&b| b == b'\n') {
        let line = trim(line);
        if line.is_empty() {
            continue;
        }
        if events.len() == max_events {
            return Err(BodyError::TooManyEvents { max: max_events });
        }
        events.push(line);
    }
    Ok(events)
}

/// Splits a JSON array at its top-level commas. `body` is trimmed and starts with `[`.
fn split_array(body: &[u8], max_events: usize) -> Result<Vec<&[u8]>, BodyError> {
    let broken = |at: usize, what: &str| {
        BodyError::BrokenArray(format!("the JSON array is broken at byte {at}: {what}"))
    };
    let mut events = Vec::new();
    let mut i = 1; // after '['
    let len = body.len();
    while i < len && is_ws(body[i]) {
        i += 1;
    }
    if i < len && body[i] == b']' {
        i += 1;
        return if i == len {
            Ok(events)
        } else {
            Err(broken(i, "data after the closing `]`"))
        };
    }
    loop {
        let start = i;
        let mut depth = 0usize;
        let mut in_string = false;
        // Scan one element: up to a ',' or ']' outside strings and nesting.
        while i < len {
            let b = body[i];
            if in_string {
                match b {
                    b'\\' => i += 1,
                    b'"' => in_string = false,
                    _ => {}
                }
            } else {
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' if depth > 0 => depth -= 1,
                    b']' | b',' if depth == 0 => break,
                    b'}' => return Err(broken(i, "unbalanced `}`")),
                    _ => {}
                }
            }
            i += 1;
        }
        if i >= len {
            return Err(broken(
                len,
                if in_string {
                    "unterminated string"
                } else {
                    "no closing `]`"
                },
            ));
        }
        let element = trim(&body[start..i]);
        if element.is_empty() {
            return Err(broken(start, "empty element"));
        }
        if events.len() == max_events {
            return Err(BodyError::TooManyEvents { max: max_events });
        }
        events.push(element);
        let sep = body[i];
        i += 1;
        if sep == b']' {
            break;
        }
    }
    if i != len {
        return Err(broken(i, "data after the closing `]`"));
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split(body: &str, ct: Option<&str>) -> Result<(Format, Vec<String>), BodyError> {
        split_body(body.as_bytes(), ct, 100).map(|s| {
            (
                s.format,
                s.events
                    .iter()
                    .map(|e| String::from_utf8(e.to_vec()).unwrap())
                    .collect(),
            )
        })
    }

    #[test]
    fn single_object() {
        assert_eq!(
            split("  {\"a\": 1}\n", Some("application/json")),
            Ok((Format::Single, vec!["{\"a\": 1}".into()]))
        );
        // Pretty-printed over several lines is still one value.
        assert_eq!(
            split("{\n  \"a\": [1,\n 2]\n}\n", None).unwrap().0,
            Format::Single
        );
        // One malformed line is one (rejected) event.
        assert_eq!(
            split("{\"a\": ", None),
            Ok((Format::Single, vec!["{\"a\":".into()]))
        );
        // So is a pretty-printed event cut short, whatever its content type.
        for ct in [None, Some("application/json")] {
            assert_eq!(
                split("{\n  \"a\": 1,\n  \"b\": [\n", ct),
                Ok((Format::Single, vec!["{\n  \"a\": 1,\n  \"b\": [".into()]))
            );
        }
    }

    #[test]
    fn ndjson_declared_or_detected() {
        let body = "{\"a\":1}\r\n\n  {\"b\":\"x\\ny\"}\n{broken\n";
        let expected = vec![
            "{\"a\":1}".to_string(),
            "{\"b\":\"x\\ny\"}".into(),
            "{broken".into(),
        ];
        assert_eq!(
            split(body, Some("application/x-ndjson; charset=utf-8")),
            Ok((Format::Ndjson, expected.clone()))
        );
        assert_eq!(split(body, None), Ok((Format::Ndjson, expected.clone())));
        assert_eq!(
            split(body, Some("application/json")),
            Ok((Format::Ndjson, expected))
        );
        // Declared NDJSON: even a one-line array is one event.
        assert_eq!(
            split("[1,2]", Some("Application/X-NDJSON")),
            Ok((Format::Ndjson, vec!["[1,2]".into()]))
        );
    }

    #[test]
    fn array_elements_keep_their_bytes() {
        let body = r#" [ {"a": "x,]}\"y"} , {"b": [1, {"c": 2}]},{"d":{}} ] "#;
        assert_eq!(
            split(body, Some("application/json")),
            Ok((
                Format::Array,
                vec![
                    r#"{"a": "x,]}\"y"}"#.to_string(),
                    r#"{"b": [1, {"c": 2}]}"#.into(),
                    r#"{"d":{}}"#.into()
                ]
            ))
        );
        assert_eq!(split("[]", None), Err(BodyError::Empty));
        // A malformed element is that element's problem, not the body's.
        assert_eq!(
            split("[{\"a\": }, 7, nul]", None).unwrap().1,
            vec!["{\"a\": }".to_string(), "7".into(), "nul".into()]
        );
    }

    #[test]
    fn broken_arrays_are_refused_whole() {
        for body in [
            "[{\"a\": 1}",
            "[{\"a\": \"1}]",
            "[{\"a\": 1}] x",
            "[{\"a\": 1},]",
            "[,{\"a\": 1}]",
            "[{\"a\": 1}}]",
            "[] []",
        ] {
            assert!(
                matches!(split(body, None), Err(BodyError::BrokenArray(_))),
                "{body}"
            );
        }
    }

    #[test]
    fn empty_and_too_many() {
        assert_eq!(split(" \n\t", None), Err(BodyError::Empty));
        assert_eq!(
            split("\n\n", Some("application/x-ndjson")),
            Err(BodyError::Empty)
        );
        let three = "{}\n{}\n{}";
        assert!(split_body(three.as_bytes(), None, 3).is_ok());
        assert_eq!(
            split_body(three.as_bytes(), None, 2),
            Err(BodyError::TooManyEvents { max: 2 })
        );
        assert_eq!(
            split_body(b"[{},{},{}]", None, 2),
            Err(BodyError::TooManyEvents { max: 2 })
        );
    }

    proptest! {
        /// Any array of JSON values, however formatted, splits into exactly its elements.
        #[test]
        fn arrays_split_into_their_elements(
            values in proptest::collection::vec(
                prop_oneof![
                    any::<i64>().prop_map(serde_json::Value::from),
                    ".*".prop_map(serde_json::Value::from),
                    proptest::collection::hash_map("[a-z\",\\]\\[{}]{0,5}", ".{0,8}", 0..4)
                        .prop_map(|m| serde_json::to_value(m).unwrap()),
                ],
                1..20,
            ),
            pretty in any::<bool>(),
        ) {
            let body = if pretty {
                serde_json::to_string_pretty(&values).unwrap()
            } else {
                serde_json::to_string(&values).unwrap()
            };
            let split = split_body(body.as_bytes(), None, 100).unwrap();
            prop_assert_eq!(split.format, Format::Array);
            prop_assert_eq!(split.events.len(), values.len());
            for (raw, v) in split.events.iter().zip(&values) {
                let parsed: serde_json::Value = serde_json::from_slice(raw).unwrap();
                prop_assert_eq!(&parsed, v);
            }
        }
    }
}
