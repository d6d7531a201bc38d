//! Typed encode/decode of framed records. Schemas are resolved once, when the codec is built,
//! never per record.
//!
//! Decoding is bounded (see [`crate::bounds`]): a body is never handed to apache-avro before
//! the pre-scan has checked every length and count in it, and usage events written with the
//! v1 or v2 field list skip apache-avro altogether through the direct reader
//! (`usage_read.rs`). Whatever the bytes, `decode` returns an event or a
//! [`DecodeError`]; it does not panic and does not allocate more than the limits allow.

use std::any::{Any, TypeId};
use std::io::Cursor;
use std::sync::Arc;

use apache_avro::{from_avro_datum, from_value, to_avro_datum, to_value, Schema};
use serde::{de::DeserializeOwned, Serialize};

use crate::error::{DecodeError, EncodeError};
use crate::registry::{RegisteredSchema, SchemaRegistry, USAGE_V1_ID, USAGE_V2_ID};
use crate::usage_event::UsageEvent;
use crate::usage_read::{layout_of, read_usage, UsageLayout};
use crate::wire;

/// Encodes `T` with one writer schema and decodes any registered schema of the same subject
/// into `T` through Avro schema resolution.
#[derive(Debug, Clone)]
pub struct Codec<T> {
    writer: Arc<RegisteredSchema>,
    registry: Arc<SchemaRegistry>,
    /// The writer schema is usage event v2, which `usage_wire` writes directly.
    direct_usage_v2: bool,
    /// The direct reader's layout of the writer schema, which is also the reader schema when
    /// decoding; `None` when it is not a usage schema.
    reader_layout: Option<UsageLayout>,
    /// Ids of the registered schemas of the writer's record name that the direct reader can
    /// read, with their layouts; a few entries, so a scan beats a hash.
    direct_layouts: Vec<(u32, UsageLayout)>,
    _type: std::marker::PhantomData<fn() -> T>,
}

/// Codec of usage events.
pub type UsageCodec = Codec<UsageEvent>;

impl UsageCodec {
    /// Writes usage event v1 (what emitters built before v2 write; `cache_write_1h_tokens`
    /// is not carried).
    pub fn usage_v1() -> Self {
        Codec::for_id(USAGE_V1_ID)
    }

    /// Writes usage event v2, the current version.
    pub fn usage_v2() -> Self {
        Codec::for_id(USAGE_V2_ID)
    }

    /// The version new records are written in.
    pub fn current() -> Self {
        Self::usage_v2()
    }
}

impl<T: Serialize + DeserializeOwned> Codec<T> {
    /// A codec writing the registered schema `id`; `None` if the id is unknown.
    pub fn try_for_id(id: u32) -> Option<Self> {
        let registry = Arc::new(SchemaRegistry::builtin().clone());
        let writer = registry.get(id)?.clone();
        // v2 first: it is what current emitters write. Only schemas of the writer's record
        // name, so that an id found here needs no subject check.
        let direct_layouts = [USAGE_V2_ID, USAGE_V1_ID]
            .into_iter()
            .filter_map(|id| {
                let schema = &registry.get(id)?.schema;
                let same_kind = schema.name() == writer.schema.name();
                Some((id, layout_of(schema).filter(|_| same_kind)?))
            })
            .collect();
        Some(Codec {
            reader_layout: layout_of(&writer.schema),
            writer,
            registry,
            direct_usage_v2: id == USAGE_V2_ID,
            direct_layouts,
            _type: std::marker::PhantomData,
        })
    }

    pub(crate) fn for_id(id: u32) -> Self {
        Self::try_for_id(id).expect("built-in schema id")
    }

    /// The writer schema's id.
    pub fn schema_id(&self) -> u32 {
        self.writer.id
    }

    /// The writer schema.
    pub fn schema(&self) -> &Schema {
        &self.writer.schema
    }

    /// Whether records written with schema `id` can be decoded.
    pub fn knows(&self, id: u32) -> bool {
        self.registry.get(id).is_some()
    }

    /// Learns schema `id` (Avro JSON `text`) from an external registry, so that records
    /// written with it decode. Refuses a schema of another record type.
    pub fn learn(
        &mut self,
        id: u32,
        subject: &str,
        version: u32,
        text: &str,
    ) -> Result<(), DecodeError> {
        let schema =
            Schema::parse_str(text).map_err(|e| DecodeError::Avro(format!("schema {id}: {e}")))?;
        if schema.name() != self.writer.schema.name() {
            return Err(DecodeError::WrongSubject {
                id,
                subject: subject.to_string(),
                expected: self.writer.subject.clone(),
            });
        }
        self.direct_layouts.retain(|&(known, _)| known != id);
        if let Some(layout) = layout_of(&schema) {
            self.direct_layouts.push((id, layout));
        }
        Arc::make_mut(&mut self.registry).insert(RegisteredSchema {
            id,
            subject: subject.to_string(),
            version,
            schema,
        });
        Ok(())
    }

    /// Writes with the same schema under the id an external registry assigned to it.
    pub fn with_writer_id(mut self, id: u32, subject: &str) -> Self {
        let registered = RegisteredSchema {
            id,
            subject: subject.to_string(),
            version: self.writer.version,
            schema: self.writer.schema.clone(),
        };
        Arc::make_mut(&mut self.registry).insert(registered);
        self.writer = self.registry.get(id).expect("just inserted").clone();
        self.direct_layouts.retain(|&(known, _)| known != id);
        if let Some(layout) = self.reader_layout {
            self.direct_layouts.push((id, layout));
        }
        self
    }

    /// Encodes `value` as a framed record. Usage events written as v2 take the direct writer
    /// (`usage_wire`), which produces the same bytes as apache-avro much faster.
    pub fn encode(&self, value: &T) -> Result<Vec<u8>, EncodeError>
    where
        T: 'static,
    {
        if self.direct_usage_v2 {
            if let Some(event) = (value as &dyn std::any::Any).downcast_ref::<UsageEvent>() {
                let mut out = Vec::with_capacity(256);
                crate::usage_wire::write_usage_v2(event, self.writer.id, &mut out);
                return Ok(out);
            }
        }
        self.encode_with_apache_avro(value)
    }

    /// Encodes `value` through apache-avro's generic writer (the reference the direct writer
    /// is tested against).
    pub fn encode_with_apache_avro(&self, value: &T) -> Result<Vec<u8>, EncodeError> {
        // `resolve` turns serde's generic shapes (a UUID as a string) into the schema's
        // logical types; the schema itself was parsed once, with the codec.
        let avro = to_value(value)
            .and_then(|v| v.resolve(&self.writer.schema))
            .map_err(|e| EncodeError::Avro(e.to_string()))?;
        let body = to_avro_datum(&self.writer.schema, avro)
            .map_err(|e| EncodeError::Avro(e.to_string()))?;
        let mut out = Vec::with_capacity(wire::HEADER_LEN + body.len());
        wire::write_header(self.writer.id, &mut out);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// The writer schema of `record` and its Avro body, refusing other record types.
    fn writer_of<'r>(
        &self,
        record: &'r [u8],
    ) -> Result<(&Arc<RegisteredSchema>, &'r [u8]), DecodeError> {
        let (id, body) = wire::split(record)?;
        let writer = self
            .registry
            .get(id)
            .ok_or(DecodeError::UnknownSchemaId { id })?;
        // Records of one kind share the Avro record name across versions and subjects.
        if writer.schema.name() != self.writer.schema.name() {
            return Err(DecodeError::WrongSubject {
                id,
                subject: writer.subject.clone(),
                expected: self.writer.subject.clone(),
            });
        }
        Ok((writer, body))
    }

    /// Decodes a framed record written with any schema of this codec's subject. Usage events
    /// written with the v1 or v2 field list take the direct reader, everything else the
    /// pre-scan and apache-avro; both give the same value for the same bytes.
    pub fn decode(&self, record: &[u8]) -> Result<T, DecodeError>
    where
        T: 'static,
    {
        if let Some(reader) = self.reader_layout {
            if TypeId::of::<T>() == TypeId::of::<UsageEvent>() {
                let (id, body) = wire::split(record)?;
                // Every id listed is of this subject's record (see `direct_layouts`), so the
                // registry lookup and the subject check are skipped.
                if let Some(&(_, layout)) =
                    self.direct_layouts.iter().find(|(known, _)| *known == id)
                {
                    let mut slot = Some(read_usage(body, layout, reader)?);
                    // `T` is `UsageEvent` (checked above), so this succeeds; it moves the
                    // event out without boxing it.
                    if let Some(event) = (&mut slot as &mut dyn Any)
                        .downcast_mut::<Option<T>>()
                        .and_then(Option::take)
                    {
                        return Ok(event);
                    }
                }
            }
        }
        let (writer, body) = self.writer_of(record)?;
        self.decode_body_with_apache_avro(writer, body)
    }

    /// Decodes a framed record through apache-avro, after the pre-scan: the reference the
    /// direct reader is tested against, and the path of every other schema.
    pub fn decode_with_apache_avro(&self, record: &[u8]) -> Result<T, DecodeError> {
        let (writer, body) = self.writer_of(record)?;
        self.decode_body_with_apache_avro(writer, body)
    }

    fn decode_body_with_apache_avro(
        &self,
        writer: &RegisteredSchema,
        body: &[u8],
    ) -> Result<T, DecodeError> {
        // apache-avro reserves memory from counts it reads; the pre-scan has checked them all
        // against the bytes and the decode limits first.
        crate::bounds::prescan(&writer.schema, body)?;
        let reader_schema = (writer.id != self.writer.id).then_some(&self.writer.schema);
        let mut cursor = Cursor::new(body);
        let value = from_avro_datum(&writer.schema, &mut cursor, reader_schema)
            .map_err(|e| DecodeError::Avro(e.to_string()))?;
        let consumed = cursor.position() as usize;
        if consumed != body.len() {
            return Err(DecodeError::TrailingBytes {
                extra: body.len() - consumed,
            });
        }
        from_value::<T>(&value).map_err(|e| DecodeError::Avro(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control_event::BudgetLevel;
    use crate::control_event_v1::BudgetControlV1;
    use crate::registry::CONTROL_V1_ID;
    use uuid::Uuid;

    fn sample() -> UsageEvent {
        let mut e = UsageEvent::new(
            Uuid::new_v4(),
            1_764_000_000_123,
            "acme",
            "openai",
            "gpt-4o",
        );
        e.department = Some("research".into());
        e.input_tokens = 1200;
        e.output_tokens = 300;
        e.cached_input_tokens = 50;
        e.reasoning_tokens = 20;
        e.labels.insert("region".into(), "eu".into());
        e
    }

    #[test]
    fn usage_round_trips_with_header() {
        let codec = UsageCodec::current();
        let mut event = sample();
        event.cache_write_1h_tokens = Some(7);
        let bytes = codec.encode(&event).unwrap();
        assert_eq!(&bytes[..5], &[0, 0, 0, 0, 3]);
        assert_eq!(codec.decode(&bytes).unwrap(), event);
    }

    /// Usage event v1 exactly as a v1 build of costpipe had it, without the v2 field.
    #[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    struct UsageEventV1 {
        event_id: String,
        event_time: i64,
        tenant_id: String,
        department: Option<String>,
        user_id: Option<String>,
        project_id: Option<String>,
        feature: Option<String>,
        environment: Option<String>,
        provider: String,
        model: String,
        input_tokens: i64,
        output_tokens: i64,
        cached_input_tokens: i64,
        cache_write_tokens: i64,
        reasoning_tokens: i64,
        request_id: Option<String>,
        trace_id: Option<String>,
        span_name: Option<String>,
        labels: std::collections::BTreeMap<String, String>,
    }

    #[test]
    fn v1_records_are_read_by_the_v2_reader() {
        let v1_writer: Codec<UsageEventV1> = Codec::try_for_id(USAGE_V1_ID).unwrap();
        let e = sample();
        let old = UsageEventV1 {
            event_id: e.event_id.to_string(),
            event_time: e.event_time,
            tenant_id: e.tenant_id.clone(),
            department: e.department.clone(),
            user_id: None,
            project_id: None,
            feature: None,
            environment: None,
            provider: e.provider.clone(),
            model: e.model.clone(),
            input_tokens: e.input_tokens,
            output_tokens: e.output_tokens,
            cached_input_tokens: e.cached_input_tokens,
            cache_write_tokens: e.cache_write_tokens,
            reasoning_tokens: e.reasoning_tokens,
            request_id: None,
            trace_id: None,
            span_name: None,
            labels: e.labels.clone(),
        };
        let bytes = v1_writer.encode(&old).unwrap();
        assert_eq!(&bytes[..5], &[0, 0, 0, 0, USAGE_V1_ID as u8]);
        let read = UsageCodec::current().decode(&bytes).unwrap();
        assert_eq!(
            read, e,
            "every v1 field survives; the v2 field takes its default"
        );
        assert_eq!(read.cache_write_1h_tokens, None);
    }

    #[test]
    fn v2_records_are_read_by_a_v1_reader() {
        let mut e = sample();
        e.cache_write_1h_tokens = Some(4000);
        let bytes = UsageCodec::current().encode(&e).unwrap();
        assert_eq!(&bytes[..5], &[0, 0, 0, 0, USAGE_V2_ID as u8]);
        let v1_reader: Codec<UsageEventV1> = Codec::try_for_id(USAGE_V1_ID).unwrap();
        let old = v1_reader.decode(&bytes).unwrap();
        assert_eq!(old.event_id, e.event_id.to_string());
        assert_eq!(
            (
                old.input_tokens,
                old.cached_input_tokens,
                old.reasoning_tokens
            ),
            (1200, 50, 20)
        );
        assert_eq!(old.labels, e.labels);
        // And the v2 reader keeps the new field.
        assert_eq!(UsageCodec::current().decode(&bytes).unwrap(), e);
    }

    #[test]
    fn schemas_learnt_from_a_registry_decode() {
        let v1_text = SchemaRegistry::source(USAGE_V1_ID).unwrap();
        let writer: Codec<UsageEvent> =
            UsageCodec::usage_v2().with_writer_id(4711, "my.usage-value");
        let event = sample();
        let bytes = writer.encode(&event).unwrap();
        assert_eq!(&bytes[1..5], &4711u32.to_be_bytes());
        let mut reader = UsageCodec::current();
        assert!(!reader.knows(4711));
        assert_eq!(
            reader.decode(&bytes).unwrap_err().code(),
            "unknown_schema_id"
        );
        let v2_text = SchemaRegistry::source(USAGE_V2_ID).unwrap();
        reader.learn(4711, "my.usage-value", 1, v2_text).unwrap();
        assert_eq!(reader.decode(&bytes).unwrap(), event);
        let control_text = SchemaRegistry::source(CONTROL_V1_ID).unwrap();
        assert_eq!(
            reader
                .learn(4712, "x-value", 1, control_text)
                .unwrap_err()
                .code(),
            "wrong_subject"
        );
        assert!(reader.learn(4713, "x-value", 1, v1_text).is_ok());
    }

    #[test]
    fn both_decode_paths_resolve_versions_alike() {
        let mut e = sample();
        e.cache_write_1h_tokens = Some(4000);
        let v2_bytes = UsageCodec::current().encode(&e).unwrap();
        let v1_bytes = UsageCodec::usage_v1().encode(&e).unwrap();
        for reader in [UsageCodec::current(), UsageCodec::usage_v1()] {
            for bytes in [&v2_bytes, &v1_bytes] {
                let direct = reader.decode(bytes).unwrap();
                assert_eq!(direct, reader.decode_with_apache_avro(bytes).unwrap());
                let keeps_1h = reader.schema_id() == USAGE_V2_ID && bytes[4] == USAGE_V2_ID as u8;
                assert_eq!(direct.cache_write_1h_tokens, keeps_1h.then_some(4000));
            }
        }
    }

    #[test]
    fn other_shapes_from_a_registry_decode_through_the_prescan() {
        // v2 plus a trailing field: not the direct reader's layout.
        let v3 = SchemaRegistry::source(USAGE_V2_ID).unwrap().replacen(
            r#""default": {}}"#,
            r#""default": {}}, {"name": "region", "type": "string", "default": ""}"#,
            1,
        );
        let mut reader = UsageCodec::current();
        reader.learn(4800, "t-value", 3, &v3).unwrap();
        let event = sample();
        let mut bytes = Vec::new();
        crate::usage_wire::write_usage_v2(&event, 4800, &mut bytes);
        bytes.extend_from_slice(&[4, b'e', b'u']);
        assert_eq!(reader.decode(&bytes).unwrap(), event);
        // A string length beyond the limit, in the new field: refused before apache-avro.
        let len = bytes.len();
        bytes.truncate(len - 3);
        bytes.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x04]);
        assert_eq!(
            reader.decode(&bytes).unwrap_err().code(),
            "avro_bounds_exceeded"
        );
    }

    #[test]
    fn control_round_trips() {
        let codec: Codec<BudgetControlV1> = Codec::for_id(CONTROL_V1_ID);
        let c = BudgetControlV1 {
            scope_key: "tenant:acme".into(),
            scope_kind: "tenant".into(),
            tenant_id: "acme".into(),
            period: "2026-11".into(),
            level: BudgetLevel::Block,
            previous_level: Some(BudgetLevel::Throttle),
            spend: "100.000123".into(),
            limit: "100".into(),
            currency: "USD".into(),
            decided_at: 1,
            reason: "spend reached 100% of limit".into(),
        };
        assert_eq!(codec.decode(&codec.encode(&c).unwrap()).unwrap(), c);
    }

    #[test]
    fn decode_errors_are_classified() {
        let codec = UsageCodec::usage_v1();
        let good = codec.encode(&sample()).unwrap();
        assert_eq!(
            codec.decode(&good[..good.len() - 3]).unwrap_err().code(),
            "undecodable_avro"
        );
        let mut bad_magic = good.clone();
        bad_magic[0] = 7;
        assert_eq!(
            codec.decode(&bad_magic).unwrap_err().code(),
            "bad_magic_byte"
        );
        let mut unknown = good.clone();
        unknown[4] = 77;
        assert_eq!(
            codec.decode(&unknown).unwrap_err().code(),
            "unknown_schema_id"
        );
        let mut control_id = good.clone();
        control_id[4] = CONTROL_V1_ID as u8;
        assert_eq!(
            codec.decode(&control_id).unwrap_err().code(),
            "wrong_subject"
        );
        let mut trailing = good;
        trailing.push(0);
        assert_eq!(
            codec.decode(&trailing).unwrap_err().code(),
            "trailing_bytes"
        );
        assert_eq!(
            codec.decode(b"garbage!").unwrap_err().code(),
            "bad_magic_byte"
        );
    }
}
