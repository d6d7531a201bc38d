//! A direct, bounded Avro reader for usage events v1 and v2: the aggregator's hot path, and
//! the mirror of the direct writer in [`crate::usage_wire`].
//!
//! apache-avro builds a `Value` tree, resolves it against the reader schema and then
//! deserializes it, about 4 µs per event in the aggregator; reading the fields in schema order
//! straight into a [`UsageEvent`] takes a tenth of that (`benches/decode.rs`). It accepts
//! exactly the bytes apache-avro accepts and gives the same event (a proptest and a fuzz test
//! compare the two), within the limits of [`crate::bounds`], which apache-avro does not have.
//!
//! It handles any writer schema whose fields are those of v1 or v2, in order, with the same
//! names and types ([`layout_of`]); registry ids of the same schemas therefore take it too.
//! Other schemas go through the pre-scan and apache-avro (`codec.rs`).

use std::collections::BTreeMap;

use apache_avro::Schema;
use uuid::Uuid;

use crate::bounds::{check_limit, Input, MAX_DECODE_LABELS};
use crate::error::DecodeError;
use crate::usage_event::UsageEvent;

/// Which field list a usage schema has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UsageLayout {
    /// Usage event v1: no `cache_write_1h_tokens`.
    V1,
    /// Usage event v2.
    V2,
}

/// The shape a field's schema must have for the direct reader.
#[derive(Clone, Copy)]
enum Shape {
    Uuid,
    Time,
    Str,
    OptStr,
    Long,
    OptLong,
    Labels,
}

const V2_FIELDS: [(&str, Shape); 20] = [
    ("event_id", Shape::Uuid),
    ("event_time", Shape::Time),
    ("tenant_id", Shape::Str),
    ("department", Shape::OptStr),
    ("user_id", Shape::OptStr),
    ("project_id", Shape::OptStr),
    ("feature", Shape::OptStr),
    ("environment", Shape::OptStr),
    ("provider", Shape::Str),
    ("model", Shape::Str),
    ("input_tokens", Shape::Long),
    ("output_tokens", Shape::Long),
    ("cached_input_tokens", Shape::Long),
    ("cache_write_tokens", Shape::Long),
    ("reasoning_tokens", Shape::Long),
    ("cache_write_1h_tokens", Shape::OptLong),
    ("request_id", Shape::OptStr),
    ("trace_id", Shape::OptStr),
    ("span_name", Shape::OptStr),
    ("labels", Shape::Labels),
];

fn has_shape(schema: &Schema, shape: Shape) -> bool {
    let union_of = |s: &Schema, second: fn(&Schema) -> bool| match s {
        Schema::Union(u) => {
            let v = u.variants();
            v.len() == 2 && matches!(v[0], Schema::Null) && second(&v[1])
        }
        _ => false,
    };
    match shape {
        // apache-avro reads `event_id` through the uuid logical type (a 16-byte string is
        // taken as the raw UUID); a plain string would be read differently, so it does not
        // qualify.
        Shape::Uuid => matches!(schema, Schema::Uuid),
        Shape::Time => matches!(schema, Schema::Long | Schema::TimestampMillis),
        Shape::Str => matches!(schema, Schema::String),
        Shape::OptStr => union_of(schema, |s| matches!(s, Schema::String)),
        Shape::Long => matches!(schema, Schema::Long),
        Shape::OptLong => union_of(schema, |s| matches!(s, Schema::Long)),
        Shape::Labels => matches!(schema, Schema::Map(m) if matches!(*m.types, Schema::String)),
    }
}

/// The layout of `schema` if the direct reader can read records written with it: its fields
/// are exactly v1's or v2's, in order, names and types (defaults and docs do not matter to a
/// writer schema).
pub(crate) fn layout_of(schema: &Schema) -> Option<UsageLayout> {
    let Schema::Record(record) = schema else {
        return None;
    };
    let fields = &record.fields;
    let matches = |expected: &mut dyn Iterator<Item = &(&str, Shape)>| {
        let mut n = 0;
        for (name, shape) in expected {
            match fields.get(n) {
                Some(f) if f.name == *name && has_shape(&f.schema, *shape) => n += 1,
                _ => return false,
            }
        }
        n == fields.len()
    };
    if matches(&mut V2_FIELDS.iter()) {
        Some(UsageLayout::V2)
    } else if matches(
        &mut V2_FIELDS
            .iter()
            .filter(|(n, _)| *n != "cache_write_1h_tokens"),
    ) {
        Some(UsageLayout::V1)
    } else {
        None
    }
}

impl Input<'_> {
    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let bytes = self.len_prefixed(what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(DecodeError::Avro(format!("{what}: invalid UTF-8: {e}"))),
        }
    }

    /// The index of a `["null", X]` union: `false` for null, `true` for X.
    fn present(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.long(what)? {
            0 => Ok(false),
            1 => Ok(true),
            i => Err(DecodeError::Avro(format!(
                "{what}: union index {i} out of 2 variants"
            ))),
        }
    }

    fn opt_string(&mut self, what: &'static str) -> Result<Option<String>, DecodeError> {
        if self.present(what)? {
            self.string(what).map(Some)
        } else {
            Ok(None)
        }
    }

    fn uuid(&mut self, what: &'static str) -> Result<Uuid, DecodeError> {
        let bytes = self.len_prefixed(what)?;
        // As apache-avro's uuid logical type: 16 bytes are the raw UUID, anything else its
        // text in one of the forms `Uuid::parse_str` takes.
        let parsed = if bytes.len() == 16 {
            Uuid::from_slice(bytes)
        } else {
            Uuid::try_parse_ascii(bytes)
        };
        parsed.map_err(|e| DecodeError::Avro(format!("{what}: not a UUID: {e}")))
    }

    fn labels(&mut self) -> Result<BTreeMap<String, String>, DecodeError> {
        let mut labels = BTreeMap::new();
        let mut claimed = 0u64;
        loop {
            let count = self.block_count("labels")?;
            if count == 0 {
                return Ok(labels);
            }
            // The limit first, then the bytes: a count of 2^29 is refused as such however
            // long the record is, and nothing is ever reserved from a count.
            claimed = claimed.saturating_add(count);
            check_limit("labels", claimed, MAX_DECODE_LABELS)?;
            // An entry is two length-prefixed strings: two bytes at least.
            if count > (self.remaining() / 2) as u64 {
                return Err(DecodeError::Avro(format!(
                    "labels: a block of {count} entries needs {} bytes at least, only {} remain",
                    count.saturating_mul(2),
                    self.remaining()
                )));
            }
            for _ in 0..count {
                let k = self.string("labels key")?;
                let v = self.string("labels value")?;
                // A repeated key keeps its last value, as apache-avro's map does.
                labels.insert(k, v);
            }
        }
    }
}

/// Reads one usage event body (after the wire header) written with `writer`, as the reader
/// schema `reader` sees it: a v1 reader drops `cache_write_1h_tokens`, as Avro schema
/// resolution does.
pub(crate) fn read_usage(
    body: &[u8],
    writer: UsageLayout,
    reader: UsageLayout,
) -> Result<UsageEvent, DecodeError> {
    let mut r = Input::new(body);
    let event_id = r.uuid("event_id")?;
    let event_time = r.long("event_time")?;
    let tenant_id = r.string("tenant_id")?;
    let department = r.opt_string("department")?;
    let user_id = r.opt_string("user_id")?;
    let project_id = r.opt_string("project_id")?;
    let feature = r.opt_string("feature")?;
    let environment = r.opt_string("environment")?;
    let provider = r.string("provider")?;
    let model = r.string("model")?;
    let input_tokens = r.long("input_tokens")?;
    let output_tokens = r.long("output_tokens")?;
    let cached_input_tokens = r.long("cached_input_tokens")?;
    let cache_write_tokens = r.long("cache_write_tokens")?;
    let reasoning_tokens = r.long("reasoning_tokens")?;
    let cache_write_1h_tokens = match writer {
        UsageLayout::V2 if r.present("cache_write_1h_tokens")? => {
            Some(r.long("cache_write_1h_tokens")?)
        }
        _ => None,
    };
    let request_id = r.opt_string("request_id")?;
    let trace_id = r.opt_string("trace_id")?;
    let span_name = r.opt_string("span_name")?;
    let labels = r.labels()?;
    if r.remaining() != 0 {
        return Err(DecodeError::TrailingBytes {
            extra: r.remaining(),
        });
    }
    Ok(UsageEvent {
        event_id,
        event_time,
        tenant_id,
        department,
        user_id,
        project_id,
        feature,
        environment,
        provider,
        model,
        input_tokens,
        output_tokens,
        cached_input_tokens,
        cache_write_tokens,
        reasoning_tokens,
        cache_write_1h_tokens: match reader {
            UsageLayout::V2 => cache_write_1h_tokens,
            UsageLayout::V1 => None,
        },
        request_id,
        trace_id,
        span_name,
        labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{SchemaRegistry, CONTROL_V1_ID, USAGE_V1_ID, USAGE_V2_ID};

    #[test]
    fn builtin_schemas_have_their_layouts() {
        let reg = SchemaRegistry::builtin();
        let layout = |id| layout_of(&reg.get(id).unwrap().schema);
        assert_eq!(layout(USAGE_V1_ID), Some(UsageLayout::V1));
        assert_eq!(layout(USAGE_V2_ID), Some(UsageLayout::V2));
        assert_eq!(layout(CONTROL_V1_ID), None);
    }

    #[test]
    fn other_field_lists_do_not_qualify() {
        let v2 = SchemaRegistry::source(USAGE_V2_ID).unwrap();
        for (from, to) in [
            // A renamed field, a field of another type, an extra field.
            (r#""name": "trace_id""#, r#""name": "trace""#),
            (
                r#"{"name": "input_tokens", "type": "long""#,
                r#"{"name": "input_tokens", "type": "int""#,
            ),
            (
                r#"{"name": "labels""#,
                r#"{"name": "region", "type": "string"}, {"name": "labels""#,
            ),
            (
                r#"{"type": "string", "logicalType": "uuid"}"#,
                r#""string""#,
            ),
        ] {
            let text = v2.replacen(from, to, 1);
            assert_ne!(text, v2);
            let schema = Schema::parse_str(&text).unwrap();
            assert_eq!(layout_of(&schema), None, "{to}");
        }
    }
}
