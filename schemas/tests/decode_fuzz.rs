//! Decoding untrusted bytes: the direct reader against apache-avro on random events, a fuzz
//! proptest over arbitrary and mutated records, and the corpus of records that once killed
//! the aggregator (`tests/corpus/`, one file per record, named `<what>.<expected code>.bin`).
//!
//! Every decode here runs under a counting allocator: decoding must never panic, and must
//! never allocate more than a small multiple of the record's size, whatever the record
//! claims.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::Path;

use costpipe_schemas::registry::{SchemaRegistry, USAGE_V1_ID, USAGE_V2_ID};
use costpipe_schemas::usage_wire::write_usage_v2;
use costpipe_schemas::{DecodeError, UsageCodec, UsageEvent};
use proptest::prelude::*;
use uuid::Uuid;

// ---- Allocation accounting, per thread (the test harness runs tests on several threads).

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    // `try_with`: the allocator also runs while a thread's locals are torn down.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f`, returning its result and the most bytes it had allocated at once (its result
/// included, as it is still alive when `f` returns).
fn peak_bytes<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    let peak = PEAK.with(Cell::get) - base;
    (out, peak.max(0) as usize)
}

/// The allocation bound of the direct reader: the strings it copies (at most the record's
/// bytes), map nodes for at most one entry per two bytes (~100 bytes of `BTreeMap` node per
/// entry), and a constant for the event and error messages.
fn direct_bound(len: usize) -> usize {
    64 * len + 16 * 1024
}

/// The bound of the pre-scan + apache-avro path: its `Value` tree, schema resolution and
/// name tables cost more per byte, but still in proportion to the record.
fn apache_bound(len: usize) -> usize {
    512 * len + 1024 * 1024
}

/// Every code a usage decode may answer.
const CODES: [&str; 7] = [
    "truncated_header",
    "bad_magic_byte",
    "unknown_schema_id",
    "wrong_subject",
    "undecodable_avro",
    "trailing_bytes",
    "avro_bounds_exceeded",
];

// ---- Codecs under test.

/// Schema ids an external registry gave to v2 (same fields: the direct reader) and to "v3",
/// which adds two fields after `labels` (the pre-scan and apache-avro).
const REGISTRY_V2_ID: u32 = 4711;
const REGISTRY_V3_ID: u32 = 4712;

fn v3_text() -> String {
    let v2 = SchemaRegistry::source(USAGE_V2_ID).unwrap();
    v2.replacen(
        r#""default": {}}"#,
        r#""default": {}},
    {"name": "region", "type": ["null", "string"], "default": null},
    {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []}"#,
        1,
    )
}

/// The v2 reader, knowing v1, v2 and both registry schemas.
fn reader() -> UsageCodec {
    let mut codec = UsageCodec::current();
    let v2 = SchemaRegistry::source(USAGE_V2_ID).unwrap();
    codec.learn(REGISTRY_V2_ID, "t-value", 1, v2).unwrap();
    codec
        .learn(REGISTRY_V3_ID, "t-value", 2, &v3_text())
        .unwrap();
    codec
}

/// A reader whose schema is v1, knowing the same ids.
fn v1_reader() -> UsageCodec {
    let mut codec = UsageCodec::usage_v1();
    let v2 = SchemaRegistry::source(USAGE_V2_ID).unwrap();
    codec.learn(REGISTRY_V2_ID, "t-value", 1, v2).unwrap();
    codec
        .learn(REGISTRY_V3_ID, "t-value", 2, &v3_text())
        .unwrap();
    codec
}

fn long(out: &mut Vec<u8>, v: i64) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// `e` framed with schema `id`; v1 and v3 are derived from the v2 bytes.
fn encode(e: &UsageEvent, id: u32) -> Vec<u8> {
    match id {
        USAGE_V1_ID => {
            let mut v1 = e.clone();
            v1.cache_write_1h_tokens = None;
            let bytes = UsageCodec::usage_v1().encode(&v1).unwrap();
            assert_eq!(bytes[4], USAGE_V1_ID as u8);
            bytes
        }
        REGISTRY_V3_ID => {
            let mut out = Vec::new();
            write_usage_v2(e, REGISTRY_V3_ID, &mut out);
            // region: "eu"; tags: ["a", "b"].
            out.extend_from_slice(&[2, 4, b'e', b'u']);
            long(&mut out, 2);
            out.extend_from_slice(&[2, b'a', 2, b'b', 0]);
            out
        }
        id => {
            let mut out = Vec::new();
            write_usage_v2(e, id, &mut out);
            out
        }
    }
}

// ---- Strategies.

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9é🙂 _./-]{0,24}"
}

prop_compose! {
    fn events()(
        id in any::<u128>(), time in any::<i64>(), tenant in text(), provider in text(), model in text(),
        opts in proptest::collection::vec(proptest::option::of(text()), 8),
        tokens in proptest::array::uniform5(any::<i64>()), w1h in proptest::option::of(any::<i64>()),
        labels in proptest::collection::btree_map(text(), text(), 0..8),
    ) -> UsageEvent {
        let mut e = UsageEvent::new(Uuid::from_u128(id), time, tenant, provider, model);
        let [department, user_id, project_id, feature, environment, request_id, trace_id, span_name]: [Option<String>; 8] =
            opts.try_into().unwrap();
        e.department = department;
        e.user_id = user_id;
        e.project_id = project_id;
        e.feature = feature;
        e.environment = environment;
        e.request_id = request_id;
        e.trace_id = trace_id;
        e.span_name = span_name;
        [e.input_tokens, e.output_tokens, e.cached_input_tokens, e.cache_write_tokens, e.reasoning_tokens] = tokens;
        e.cache_write_1h_tokens = w1h;
        e.labels = labels;
        e
    }
}

fn writer_ids() -> impl Strategy<Value = u32> {
    prop::sample::select(vec![
        USAGE_V1_ID,
        USAGE_V2_ID,
        REGISTRY_V2_ID,
        REGISTRY_V3_ID,
    ])
}

/// Varints a hostile sender would use as lengths and counts.
fn nasty_long() -> impl Strategy<Value = i64> {
    prop_oneof![
        prop::sample::select(vec![
            1i64 << 29,
            -(1 << 29),
            1 << 62,
            i64::MAX,
            i64::MIN,
            -1,
            1024,
            1025,
            65_536,
            65_537,
            u32::MAX as i64,
        ]),
        any::<i64>(),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Truncate { at: usize },
    InsertVarint { at: usize, value: i64 },
    OverwriteVarint { at: usize, value: i64 },
    DuplicateTail { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), nasty_long()).prop_map(|(at, value)| Mutation::InsertVarint { at, value }),
        (any::<usize>(), nasty_long())
            .prop_map(|(at, value)| Mutation::OverwriteVarint { at, value }),
        any::<usize>().prop_map(|at| Mutation::DuplicateTail { at }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    // Positions are taken modulo the length; mutations after the header mostly, where the
    // interesting bytes are, but the header too.
    let pos = |at: usize, len: usize| if len == 0 { 0 } else { at % len };
    match *m {
        Mutation::Flip { at, mask } => {
            if !bytes.is_empty() {
                let i = pos(at, bytes.len());
                bytes[i] ^= mask;
            }
        }
        Mutation::Truncate { at } => bytes.truncate(pos(at, bytes.len() + 1)),
        Mutation::InsertVarint { at, value } => {
            let mut v = Vec::new();
            long(&mut v, value);
            let i = pos(at, bytes.len() + 1);
            bytes.splice(i..i, v);
        }
        Mutation::OverwriteVarint { at, value } => {
            let mut v = Vec::new();
            long(&mut v, value);
            let i = pos(at, bytes.len() + 1);
            let end = (i + v.len()).min(bytes.len());
            bytes.splice(i..end, v);
        }
        Mutation::DuplicateTail { at } => {
            let i = pos(at, bytes.len() + 1);
            let tail = bytes[i..].to_vec();
            bytes.extend_from_slice(&tail);
        }
    }
}

// ---- The checks every input goes through.

fn check_error(e: &DecodeError) {
    assert!(
        CODES.contains(&e.code()),
        "unexpected code {}: {e}",
        e.code()
    );
}

/// Decodes `record` with both paths of both readers: no panic, allocations within the
/// bounds, and the direct reader and apache-avro agree (unless a decode limit, which only
/// the bounded paths have, refused it).
fn check_record(record: &[u8]) -> Result<UsageEvent, DecodeError> {
    let mut first = None;
    for codec in [reader(), v1_reader()] {
        let (direct, direct_peak) = peak_bytes(|| codec.decode(record));
        let (apache, apache_peak) = peak_bytes(|| codec.decode_with_apache_avro(record));
        assert!(
            direct_peak <= direct_bound(record.len()),
            "decode of {} bytes allocated {direct_peak} bytes",
            record.len()
        );
        assert!(
            apache_peak <= apache_bound(record.len()),
            "apache-avro decode of {} bytes allocated {apache_peak} bytes",
            record.len()
        );
        match (&direct, &apache) {
            (Ok(d), Ok(a)) => assert_eq!(d, a),
            (Err(d), Err(a)) => {
                check_error(d);
                check_error(a);
            }
            (d, a) => {
                panic!("the paths disagree on {record:02x?}: direct {d:?}, apache-avro {a:?}")
            }
        }
        first.get_or_insert(direct);
    }
    first.expect("two readers")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The direct reader and apache-avro decode the same bytes to the same event, for every
    /// writer version and both reader versions.
    #[test]
    fn direct_reader_and_apache_avro_agree_on_random_events(e in events(), id in writer_ids()) {
        let bytes = encode(&e, id);
        let expected = UsageEvent {
            cache_write_1h_tokens: if id == USAGE_V1_ID { None } else { e.cache_write_1h_tokens },
            ..e.clone()
        };
        prop_assert_eq!(reader().decode(&bytes).unwrap(), expected.clone());
        prop_assert_eq!(reader().decode_with_apache_avro(&bytes).unwrap(), expected.clone());
        let v1_view = UsageEvent { cache_write_1h_tokens: None, ..expected };
        prop_assert_eq!(v1_reader().decode(&bytes).unwrap(), v1_view.clone());
        prop_assert_eq!(v1_reader().decode_with_apache_avro(&bytes).unwrap(), v1_view);
        check_record(&bytes).unwrap();
    }

    /// Valid events with flipped bytes, truncations, hostile varints inserted or written
    /// over, and repeated tails.
    #[test]
    fn mutated_events_never_panic_nor_overallocate(
        e in events(), id in writer_ids(), mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let mut bytes = encode(&e, id);
        for m in &mutations {
            apply(&mut bytes, m);
        }
        let _ = check_record(&bytes);
    }

    /// Arbitrary bytes, behind a valid header (so they reach the Avro readers) or not.
    #[test]
    fn arbitrary_bytes_never_panic_nor_overallocate(
        id in writer_ids(), framed in any::<bool>(), body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut record = Vec::new();
        if framed {
            record.push(0);
            record.extend_from_slice(&id.to_be_bytes());
        }
        record.extend_from_slice(&body);
        let _ = check_record(&record);
    }
}

#[test]
fn every_corpus_record_is_refused_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut seen = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "bin") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let expected = name
            .trim_end_matches(".bin")
            .rsplit('.')
            .next()
            .unwrap()
            .to_string();
        let record = std::fs::read(&path).unwrap();
        let err = check_record(&record).expect_err(&name);
        assert_eq!(err.code(), expected, "{name}: {err}");
        // The same bytes under the registry-learnt ids: v2's (the direct reader) is refused
        // the same way; "v3" (pre-scan and apache-avro) reads them with other fields, so
        // some may even decode, but within the same bounds.
        if record.len() > 5 && expected != "wrong_subject" && expected != "unknown_schema_id" {
            let mut other = record.clone();
            other[1..5].copy_from_slice(&REGISTRY_V2_ID.to_be_bytes());
            if record[4] == USAGE_V2_ID as u8 {
                let err = check_record(&other).expect_err(&name);
                assert_eq!(err.code(), expected, "{name} as {REGISTRY_V2_ID}: {err}");
            }
            other[1..5].copy_from_slice(&REGISTRY_V3_ID.to_be_bytes());
            let _ = check_record(&other);
        }
        seen.insert(name, err.to_string());
    }
    assert!(
        seen.contains_key("labels_2pow29_v2.avro_bounds_exceeded.bin"),
        "corpus found: {seen:#?}"
    );
    assert!(seen.len() >= 20, "corpus found: {seen:#?}");
}

/// The outside client's record, byte for byte as described: header, schema id 3, the v2
/// fields, and a labels block count of 2^29. apache-avro alone reserved ~87 GB for it.
#[test]
fn the_2pow29_labels_record_is_refused_before_allocating() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let record = std::fs::read(dir.join("labels_2pow29_v2.avro_bounds_exceeded.bin")).unwrap();
    assert_eq!(record.len(), 116);
    assert_eq!(&record[..5], &[0, 0, 0, 0, 3]);
    let codec = reader();
    let (result, peak) = peak_bytes(|| codec.decode(&record));
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::BoundsExceeded { what: "labels", claimed, limit: 1024 } if claimed == 1 << 29
        ),
        "{err:?}"
    );
    assert!(peak < 64 * 1024, "allocated {peak} bytes");
}
