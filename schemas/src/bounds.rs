//! Decode bounds: the documented limits on what one Avro body may claim, the bounded byte
//! reader both decode paths share, and a pre-scan that enforces the limits before apache-avro
//! sees a body.
//!
//! Why: apache-avro sizes allocations from counts it has not checked against the input (a
//! 116-byte record whose map claims 2^29 entries makes it reserve ~87 GB and abort the
//! process). Here every length and count is checked, before anything is allocated for it,
//! against two things:
//! - the bytes that remain: a string needs its length in bytes, a map entry at least two
//!   bytes (two length prefixes); a claim beyond them is a truncated or corrupt body
//!   (`undecodable_avro`);
//! - the limits below, whatever the record size: a claim beyond them is
//!   [`DecodeError::BoundsExceeded`] (`avro_bounds_exceeded`).
//!
//! So decoding allocates at most a small multiple of the record's size, and never more than
//! the limits allow. This module reads bytes only; it never builds values.

use std::collections::HashMap;

use apache_avro::schema::{Name, Namespace, RecordSchema, ResolvedSchema};
use apache_avro::Schema;

use crate::error::DecodeError;

/// Longest string, bytes or fixed value one record may carry, in bytes. The validation
/// limits are 256 bytes by default; 256x that leaves room for deployments that raise them,
/// while a bigger value is an abuse, not a usage event.
pub const MAX_DECODE_STRING_BYTES: usize = 64 * 1024;

/// Most label entries one usage event may carry, summed over the map's blocks. Validation
/// allows 32 by default; 32x that for the same reason as above. The generic pre-scan applies
/// the same number to every map and array.
pub const MAX_DECODE_LABELS: usize = 1024;

/// Most items of all maps and arrays of one record together (pre-scan of schemas learnt from
/// a registry, whose items may take no bytes at all, e.g. an array of nulls).
pub const MAX_DECODE_ITEMS: usize = 8 * 1024;

/// Deepest nesting of records, unions, maps and arrays (pre-scan). A recursive schema could
/// otherwise nest one level per input byte and overflow apache-avro's recursive reader.
pub const MAX_DECODE_DEPTH: usize = 32;

/// A cursor over one Avro body that never reads past its end.
#[derive(Debug)]
pub(crate) struct Input<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn truncated(what: &str, needed: u64, remaining: usize) -> DecodeError {
    DecodeError::Avro(format!(
        "{what}: needs {needed} more bytes, only {remaining} remain"
    ))
}

impl<'a> Input<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Input { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        let rest = &self.buf[self.pos..];
        if n > rest.len() {
            return Err(truncated(what, n as u64, rest.len()));
        }
        self.pos += n;
        Ok(&rest[..n])
    }

    /// An Avro `int`/`long`: zig-zag over a base-128 varint of at most 10 bytes. Like
    /// apache-avro, bits beyond 64 in the tenth byte are dropped, so that both decode paths
    /// accept exactly the same bytes.
    #[inline]
    pub(crate) fn long(&mut self, what: &str) -> Result<i64, DecodeError> {
        let mut z = 0u64;
        for j in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(truncated(what, 1, 0));
            };
            self.pos += 1;
            z |= u64::from(b & 0x7f) << (j * 7);
            if b & 0x80 == 0 {
                return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
            }
        }
        Err(DecodeError::Avro(format!(
            "{what}: varint longer than 10 bytes"
        )))
    }

    /// A length prefix, checked against [`MAX_DECODE_STRING_BYTES`] and then the remaining
    /// bytes, followed by that many bytes.
    #[inline]
    pub(crate) fn len_prefixed(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.long(what)?;
        let n = u64::try_from(n)
            .map_err(|_| DecodeError::Avro(format!("{what}: negative length {n}")))?;
        check_limit(what, n, MAX_DECODE_STRING_BYTES)?;
        // Within the limit, so it fits a usize on every platform.
        self.take(n as usize, what)
    }

    /// The count of the next block of a map or array: 0 ends it. A negative count is followed
    /// by the block's size in bytes, which only serves to skip it; like apache-avro, it is
    /// read and not trusted.
    pub(crate) fn block_count(&mut self, what: &str) -> Result<u64, DecodeError> {
        let raw = self.long(what)?;
        if raw < 0 {
            self.long(what)?;
        }
        Ok(raw.unsigned_abs())
    }
}

/// `BoundsExceeded` when `claimed` is over `limit`.
#[inline]
pub(crate) fn check_limit(
    what: &'static str,
    claimed: u64,
    limit: usize,
) -> Result<(), DecodeError> {
    if claimed > limit as u64 {
        return Err(DecodeError::BoundsExceeded {
            what,
            claimed,
            limit: limit as u64,
        });
    }
    Ok(())
}

/// Checks that `body` is one datum of `schema` within every decode limit, with no bytes left
/// over, without building anything. apache-avro may then decode it: each length and count it
/// will allocate for has been checked here.
///
/// It checks framing only: UTF-8, UUID syntax, union and enum values beyond their index are
/// apache-avro's to check.
pub fn prescan(schema: &Schema, body: &[u8]) -> Result<(), DecodeError> {
    let resolved = ResolvedSchema::try_from(schema)
        .map_err(|e| DecodeError::Avro(format!("writer schema does not resolve: {e}")))?;
    let mut scan = Scan {
        input: Input::new(body),
        names: resolved.get_names(),
        items: 0,
    };
    scan.skip(schema, &None, 0)?;
    match scan.input.remaining() {
        0 => Ok(()),
        extra => Err(DecodeError::TrailingBytes { extra }),
    }
}

struct Scan<'a, 's> {
    input: Input<'a>,
    names: &'a HashMap<Name, &'s Schema>,
    /// Items of all maps and arrays so far.
    items: u64,
}

impl<'s> Scan<'_, 's> {
    fn resolve(&self, name: &Name, ns: &Namespace) -> Result<(&'s Schema, Namespace), DecodeError> {
        let full = name.fully_qualified_name(ns);
        match self.names.get(&full) {
            Some(s) => Ok((*s, full.namespace)),
            None => Err(DecodeError::Avro(format!(
                "writer schema refers to unknown type {}",
                full.fullname(None)
            ))),
        }
    }

    /// Fewest bytes one value of `schema` takes; 0 for values that may take none (null, an
    /// empty fixed, records of those). Used to check a block count against the bytes left.
    fn min_len(&self, schema: &Schema, ns: &Namespace, depth: usize) -> u64 {
        if depth > MAX_DECODE_DEPTH {
            // Only a schema that recurses without a union or collection gets here, and it
            // has no finite value; any answer is safe, the scan itself stops at the depth.
            return 0;
        }
        match schema {
            Schema::Null => 0,
            Schema::Float => 4,
            Schema::Double => 8,
            Schema::Duration => 12,
            Schema::Fixed(f) => f.size as u64,
            Schema::Decimal(d) => self.min_len(&d.inner, ns, depth + 1),
            Schema::Record(RecordSchema { name, fields, .. }) => {
                let inner = name.fully_qualified_name(ns).namespace;
                fields.iter().fold(0u64, |sum, f| {
                    sum.saturating_add(self.min_len(&f.schema, &inner, depth + 1))
                })
            }
            Schema::Ref { name } => match self.resolve(name, ns) {
                Ok((s, inner)) => self.min_len(s, &inner, depth + 1),
                Err(_) => 0,
            },
            // A varint, a length prefix, a union index or a block terminator: one byte at least.
            _ => 1,
        }
    }

    fn skip(&mut self, schema: &Schema, ns: &Namespace, depth: usize) -> Result<(), DecodeError> {
        check_limit("nesting depth", depth as u64, MAX_DECODE_DEPTH)?;
        match schema {
            Schema::Null => Ok(()),
            Schema::Boolean => self.input.take(1, "boolean").map(drop),
            Schema::Int
            | Schema::Long
            | Schema::Enum(_)
            | Schema::Date
            | Schema::TimeMillis
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => self.input.long("long").map(drop),
            Schema::Float => self.input.take(4, "float").map(drop),
            Schema::Double => self.input.take(8, "double").map(drop),
            Schema::Duration => self.input.take(12, "duration").map(drop),
            Schema::Bytes | Schema::BigDecimal => self.input.len_prefixed("bytes").map(drop),
            Schema::String | Schema::Uuid => self.input.len_prefixed("string").map(drop),
            Schema::Fixed(f) => {
                check_limit("fixed", f.size as u64, MAX_DECODE_STRING_BYTES)?;
                self.input.take(f.size, "fixed").map(drop)
            }
            Schema::Decimal(d) => self.skip(&d.inner, ns, depth + 1),
            Schema::Union(u) => {
                let index = self.input.long("union index")?;
                let variant = usize::try_from(index)
                    .ok()
                    .and_then(|i| u.variants().get(i))
                    .ok_or_else(|| {
                        DecodeError::Avro(format!(
                            "union index {index} out of {} variants",
                            u.variants().len()
                        ))
                    })?;
                self.skip(variant, ns, depth + 1)
            }
            Schema::Record(RecordSchema { name, fields, .. }) => {
                let inner = name.fully_qualified_name(ns).namespace;
                for f in fields {
                    self.skip(&f.schema, &inner, depth + 1)?;
                }
                Ok(())
            }
            Schema::Ref { name } => {
                let (s, inner) = self.resolve(name, ns)?;
                self.skip(s, &inner, depth + 1)
            }
            Schema::Array(a) => {
                let min = self.min_len(&a.items, ns, depth + 1);
                self.blocks("array", min, depth, |scan| {
                    scan.skip(&a.items, ns, depth + 1)
                })
            }
            Schema::Map(m) => {
                // A key is a string: at least its length prefix.
                let min = 1 + self.min_len(&m.types, ns, depth + 1);
                self.blocks("map", min, depth, |scan| {
                    scan.input.len_prefixed("map key")?;
                    scan.skip(&m.types, ns, depth + 1)
                })
            }
        }
    }

    /// The blocks of one map or array, each item `min_item_len` bytes at least.
    fn blocks(
        &mut self,
        what: &'static str,
        min_item_len: u64,
        depth: usize,
        mut item: impl FnMut(&mut Self) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        check_limit("nesting depth", depth as u64 + 1, MAX_DECODE_DEPTH)?;
        let mut total = 0u64;
        loop {
            let count = self.input.block_count(what)?;
            if count == 0 {
                return Ok(());
            }
            total = total.saturating_add(count);
            check_limit(what, total, MAX_DECODE_LABELS)?;
            self.items = self.items.saturating_add(count);
            check_limit("items of all maps and arrays", self.items, MAX_DECODE_ITEMS)?;
            let needed = count.saturating_mul(min_item_len);
            if needed > self.input.remaining() as u64 {
                return Err(truncated(what, needed, self.input.remaining()));
            }
            for _ in 0..count {
                item(self)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long_bytes(v: i64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut n = ((v << 1) ^ (v >> 63)) as u64;
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
        out
    }

    #[test]
    fn longs_round_trip_the_writers_encoding() {
        for v in [0, 1, -1, 63, -64, 64, 1 << 29, i64::MAX, i64::MIN] {
            let bytes = long_bytes(v);
            let mut input = Input::new(&bytes);
            assert_eq!(input.long("x").unwrap(), v);
            assert_eq!(input.remaining(), 0);
        }
        assert_eq!(
            Input::new(&[0xff; 11]).long("x").unwrap_err().code(),
            "undecodable_avro"
        );
        assert_eq!(
            Input::new(&[0x80]).long("x").unwrap_err().code(),
            "undecodable_avro"
        );
    }

    #[test]
    fn lengths_are_checked_before_anything_is_read() {
        let mut huge = long_bytes(1 << 62);
        huge.extend_from_slice(b"abc");
        assert_eq!(
            Input::new(&huge).len_prefixed("s").unwrap_err().code(),
            "avro_bounds_exceeded"
        );
        let mut short = long_bytes(10);
        short.extend_from_slice(b"abc");
        assert_eq!(
            Input::new(&short).len_prefixed("s").unwrap_err().code(),
            "undecodable_avro"
        );
        assert_eq!(
            Input::new(&long_bytes(-5))
                .len_prefixed("s")
                .unwrap_err()
                .code(),
            "undecodable_avro"
        );
    }

    fn schema(text: &str) -> Schema {
        Schema::parse_str(text).unwrap()
    }

    #[test]
    fn prescan_bounds_collections_of_zero_width_items() {
        let nulls = schema(r#"{"type":"array","items":"null"}"#);
        // Five nulls take no bytes; a legitimate array.
        let mut ok = long_bytes(5);
        ok.push(0);
        prescan(&nulls, &ok).unwrap();
        let mut many = long_bytes(1 << 40);
        many.push(0);
        assert_eq!(
            prescan(&nulls, &many).unwrap_err().code(),
            "avro_bounds_exceeded"
        );
    }

    #[test]
    fn prescan_stops_deep_recursion() {
        let list = schema(
            r#"{"type":"record","name":"Node","fields":[{"name":"next","type":["null","Node"]}]}"#,
        );
        let mut deep = vec![2u8; 1000];
        deep.push(0);
        assert_eq!(
            prescan(&list, &deep).unwrap_err().code(),
            "avro_bounds_exceeded"
        );
        let mut shallow = vec![2u8; 5];
        shallow.push(0);
        prescan(&list, &shallow).unwrap();
    }

    #[test]
    fn prescan_refuses_maps_claiming_more_than_the_bytes() {
        let map = schema(r#"{"type":"map","values":"string"}"#);
        let mut body = long_bytes(100);
        body.extend_from_slice(&[2, b'k', 2, b'v', 0]);
        assert_eq!(prescan(&map, &body).unwrap_err().code(), "undecodable_avro");
        let mut body = long_bytes(1 << 29);
        body.extend_from_slice(&[2, b'k', 2, b'v', 0]);
        assert_eq!(
            prescan(&map, &body).unwrap_err().code(),
            "avro_bounds_exceeded"
        );
        let mut negative = long_bytes(i64::MIN);
        negative.extend_from_slice(&long_bytes(4));
        assert_eq!(
            prescan(&map, &negative).unwrap_err().code(),
            "avro_bounds_exceeded"
        );
    }
}
