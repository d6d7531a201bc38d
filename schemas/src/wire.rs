//! The Confluent wire format: magic byte 0, a 4-byte big-endian schema id, then the Avro
//! binary datum. Framing only; the Avro part is the codec's job.

use crate::error::DecodeError;

/// The Confluent magic byte.
pub const MAGIC: u8 = 0;
/// Length of the header before the Avro datum.
pub const HEADER_LEN: usize = 5;

/// Splits a framed record into its schema id and Avro body.
pub fn split(record: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    if record.len() < HEADER_LEN {
        return Err(DecodeError::TooShort { len: record.len() });
    }
    if record[0] != MAGIC {
        return Err(DecodeError::BadMagic { found: record[0] });
    }
    let id = u32::from_be_bytes([record[1], record[2], record[3], record[4]]);
    Ok((id, &record[HEADER_LEN..]))
}

/// Writes the header for `schema_id` into `out`; the caller appends the Avro datum.
pub fn write_header(schema_id: u32, out: &mut Vec<u8>) {
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_short_and_bad_magic() {
        assert!(matches!(
            split(&[0, 0, 0]),
            Err(DecodeError::TooShort { len: 3 })
        ));
        assert!(matches!(
            split(&[1, 0, 0, 0, 7, 9]),
            Err(DecodeError::BadMagic { found: 1 })
        ));
    }

    proptest! {
        #[test]
        fn header_round_trips(id in any::<u32>(), body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut framed = Vec::new();
            write_header(id, &mut framed);
            framed.extend_from_slice(&body);
            let (got_id, got_body) = split(&framed).unwrap();
            prop_assert_eq!(got_id, id);
            prop_assert_eq!(got_body, &body[..]);
        }
    }
}
