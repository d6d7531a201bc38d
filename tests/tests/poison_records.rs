//! Poison records from an outside client, produced raw (not through the emitter, which would
//! refuse them) between good events on a one-partition usage topic:
//! 1. the 116-byte v2 record whose `labels` map claims 2^29 entries (kept in the decoder's
//!    corpus; apache-avro alone would reserve ~87 GB for it and abort the process);
//! 2. a ~1 MB v2 record with one label value of 1,000,000 bytes, bigger than a dead letter may
//!    be: its dead letter holds its first bytes, its size and its sha256;
//! 3. an event with `input_tokens = cached_input_tokens = 2^62`;
//! 4. three events with `input_tokens = i64::MAX` for the same tenant, department, model and
//!    minute as a good event (their sum would overflow any 64-bit total).
//!
//! None may stop the aggregator: every good event is stored once, with per-minute totals equal
//! to an independent recomputation, and each poison is on the dead-letter topic once, with
//! its reason code. A restarted aggregator then adds nothing to what is stored.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

use costpipe_e2e::*;
use costpipe_ingest::synthetic::{SyntheticConfig, SyntheticStream};
use costpipe_schemas::dead_letter::{
    ORIGINAL_SHA256, ORIGINAL_SIZE, REASON, REASON_CODE, SOURCE_OFFSET, SOURCE_TOPIC, TRUNCATED,
};
use costpipe_schemas::{UsageCodec, UsageEvent};

/// A file of the decoder's corpus, `<what>.<expected_code>.bin`, with its expected code.
macro_rules! corpus {
    ($name:literal) => {
        (
            $name,
            &include_bytes!(concat!("../../schemas/tests/corpus/", $name))[..],
        )
    };
}

const GOOD: usize = 400;
/// The dead-letter value cap the aggregator runs with (its default, 512 KiB).
const MAX_LETTER_BYTES: usize = 512 * 1024;

struct Poison {
    what: &'static str,
    /// Produced just before the good event of this index.
    before: usize,
    key: String,
    bytes: Vec<u8>,
    code: String,
}

/// Hex SHA-256 of `bytes`, by coreutils' `sha256sum` (not the code under test).
fn sha256_hex(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(bytes)
        .expect("write to sha256sum");
    let out = child.wait_with_output().expect("sha256sum output");
    assert!(out.status.success());
    String::from_utf8(out.stdout).expect("utf-8")[..64].to_string()
}

/// Produces one record and notes its end offset; returns its offset.
async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    bytes: &[u8],
    ends: &mut BTreeMap<i32, i64>,
) -> i64 {
    let d = producer
        .send(
            FutureRecord::to(topic).key(key).payload(bytes),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("record of {} bytes not produced: {e}", bytes.len()));
    let end = ends.entry(d.partition).or_default();
    *end = (*end).max(d.offset + 1);
    d.offset
}

/// Asserts that `good` is stored exactly: the same event ids, each once, and per-minute
/// totals equal to the independent recomputation.
async fn check_stored(stack: &Stack, db: &str, good: &[UsageEvent], seed: u64) {
    let ids: BTreeSet<String> = stack
        .query(&format!(
            "SELECT toString(event_id) FROM {db}.usage_events_priced FORMAT TSV"
        ))
        .await
        .lines()
        .map(str::to_string)
        .collect();
    let expected_ids: BTreeSet<String> = good.iter().map(|e| e.event_id.to_string()).collect();
    assert_eq!(ids, expected_ids, "exactly the good events are stored");
    assert_eq!(
        stack
            .query(&format!("SELECT count() FROM {db}.usage_events_priced"))
            .await,
        good.len().to_string(),
        "each good event stored once"
    );
    assert_eq!(
        rollup_by_minute(stack, db).await,
        expected_by_minute(good),
        "per-minute totals (seed {seed})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn poison_records_are_dead_lettered_and_good_events_all_land() {
    let seed = test_seed("poison_records");
    let stack = Stack::from_env();
    let names = Names::new("e2e_poison");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut new_id = || uuid::Builder::from_random_bytes(rng.random()).into_uuid();

    // Event times in the last two hours: validation accepts them whatever the date of the run,
    // and every assertion is per event or per minute.
    let now = chrono::Utc::now().timestamp_millis();
    let good: Vec<UsageEvent> = SyntheticStream::new(
        seed,
        SyntheticConfig {
            tenants: 3,
            start_ms: now - 2 * 3_600_000,
            end_ms: now - 60_000,
            include_unpriced: true,
        },
    )
    .take(GOOD)
    .collect();

    // 1. The corpus record: its expected code is in its file name.
    let (file, labels_2pow29) = corpus!("labels_2pow29_v2.avro_bounds_exceeded.bin");
    assert_eq!(labels_2pow29.len(), 116);
    assert_eq!(labels_2pow29[0], 0, "Confluent magic byte");
    assert_eq!(
        &labels_2pow29[1..5],
        &3u32.to_be_bytes(),
        "usage v2 schema id"
    );
    let corpus_code = file
        .split('.')
        .nth(1)
        .expect("<what>.<code>.bin")
        .to_string();

    let codec = UsageCodec::usage_v2();
    let mut poisons = vec![Poison {
        what: "labels map claiming 2^29 entries",
        before: 50,
        key: "acme".into(),
        bytes: labels_2pow29.to_vec(),
        code: corpus_code,
    }];
    // 2. A valid event but for one label value of 1,000,000 bytes: the bounded decoder refuses
    // any string over 64 KiB before validation sees the event.
    let mut big = good[10].clone();
    big.event_id = new_id();
    big.labels.insert("note".into(), "x".repeat(1_000_000));
    poisons.push(Poison {
        what: "1 MB label value",
        before: 120,
        key: big.tenant_id.clone(),
        bytes: codec.encode(&big).expect("encode"),
        code: "avro_bounds_exceeded".into(),
    });
    // 3. 2^62 input and cached input tokens.
    let mut huge = good[20].clone();
    huge.event_id = new_id();
    huge.input_tokens = 1 << 62;
    huge.cached_input_tokens = 1 << 62;
    poisons.push(Poison {
        what: "2^62 tokens",
        before: 200,
        key: huge.tenant_id.clone(),
        bytes: codec.encode(&huge).expect("encode"),
        code: "tokens_too_large".into(),
    });
    // 4. Three i64::MAX events in the minute (and tenant, department, model) of good event 30,
    // two of them back to back.
    let minute_ms = good[30].event_time.div_euclid(60_000) * 60_000;
    for (i, before) in [250, 250, 300].into_iter().enumerate() {
        let mut max = good[30].clone();
        max.event_id = new_id();
        max.event_time = minute_ms + 1_000 * (i as i64 + 1);
        max.input_tokens = i64::MAX;
        poisons.push(Poison {
            what: "i64::MAX input tokens",
            before,
            key: max.tenant_id.clone(),
            bytes: codec.encode(&max).expect("encode"),
            code: "tokens_too_large".into(),
        });
    }
    let big_record = &poisons[1].bytes;
    assert!(
        big_record.len() > 1_000_000 && big_record.len() < 1_100_000,
        "the oversized record is ~1 MB ({} bytes)",
        big_record.len()
    );

    names.create_usage_topic(&stack).await;
    let mut aggregator = Service::aggregator(&stack, &names, "", &[]);
    wait_taken_up(&aggregator).await;

    // Room for the ~1 MB record (librdkafka's default limit is 1,000,000 bytes).
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .set("message.max.bytes", "2000000")
        .set("linger.ms", "1")
        .create()
        .expect("producer");
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    // Offset of each poison, in `poisons` order.
    let mut poison_offsets: Vec<i64> = Vec::new();
    for (i, e) in good.iter().enumerate() {
        for p in poisons.iter().filter(|p| p.before == i) {
            poison_offsets.push(send(&producer, &names.usage, &p.key, &p.bytes, &mut ends).await);
        }
        let bytes = codec.encode(e).expect("encode");
        send(&producer, &names.usage, &e.tenant_id, &bytes, &mut ends).await;
    }
    assert_eq!(poison_offsets.len(), poisons.len());
    assert_eq!(
        ends.values().sum::<i64>(),
        (GOOD + poisons.len()) as i64,
        "every record produced once"
    );

    let db = names.database.clone();
    wait_complete(&stack, &db, &names.usage, &ends, Duration::from_secs(120)).await;
    aggregator.assert_running();

    // Every good event once, and nothing else.
    check_stored(&stack, &db, &good, seed).await;

    // Each poison is dead-lettered once, with its reason.
    let letters = wait_records(&stack, &names.dead_letters, poisons.len()).await;
    let by_offset: BTreeMap<i64, _> = letters
        .iter()
        .map(|m| {
            let offset = header(m, SOURCE_OFFSET).expect("source offset header");
            (offset.parse::<i64>().expect("offset"), m)
        })
        .collect();
    assert_eq!(
        letters.len(),
        poisons.len(),
        "one dead letter per poison, at offsets {:?}",
        by_offset.keys().collect::<Vec<_>>()
    );
    for (p, offset) in poisons.iter().zip(&poison_offsets) {
        let m = by_offset
            .get(offset)
            .unwrap_or_else(|| panic!("no dead letter for the {} at offset {offset}", p.what));
        assert_eq!(
            header(m, REASON_CODE).as_deref(),
            Some(p.code.as_str()),
            "reason code of the {} ({:?})",
            p.what,
            header(m, REASON)
        );
        assert!(header(m, REASON).is_some_and(|r| !r.is_empty()));
        assert_eq!(
            header(m, SOURCE_TOPIC).as_deref(),
            Some(names.usage.as_str())
        );
        assert_eq!(m.key(), Some(p.key.as_bytes()));
        let value = m.payload().unwrap_or_default();
        if p.bytes.len() <= MAX_LETTER_BYTES {
            assert_eq!(value, &p.bytes[..], "the {} is kept whole", p.what);
            assert_eq!(header(m, TRUNCATED), None, "the {} is not cut", p.what);
        } else {
            assert_eq!(header(m, TRUNCATED).as_deref(), Some("true"));
            assert_eq!(
                header(m, ORIGINAL_SIZE),
                Some(p.bytes.len().to_string()),
                "original size of the {}",
                p.what
            );
            assert_eq!(
                header(m, ORIGINAL_SHA256),
                Some(sha256_hex(&p.bytes)),
                "sha256 of the whole {}",
                p.what
            );
            assert!(
                value.len() <= MAX_LETTER_BYTES,
                "dead letter of {} bytes",
                value.len()
            );
            assert_eq!(value, &p.bytes[..value.len()], "the record's first bytes");
        }
    }
    aggregator.assert_running();

    // A restart over the same topic and database adds nothing: one more good event, produced
    // after the restart, is the only thing added once the new instance is through the topic.
    drop(aggregator);
    let mut aggregator = Service::aggregator(&stack, &names, "", &[]);
    wait_taken_up(&aggregator).await;
    let mut last = good[GOOD - 1].clone();
    last.event_id = new_id();
    let bytes = codec.encode(&last).expect("encode");
    let before = ends[&0];
    let offset = send(&producer, &names.usage, &last.tenant_id, &bytes, &mut ends).await;
    assert_eq!(
        (offset, ends.len()),
        (before, 1),
        "the record after the others"
    );
    wait_complete(&stack, &db, &names.usage, &ends, Duration::from_secs(120)).await;
    aggregator.assert_running();
    let mut all = good.clone();
    all.push(last);
    check_stored(&stack, &db, &all, seed).await;
    assert_eq!(
        read_topic(&stack.brokers, &names.dead_letters, 1).len(),
        letters.len(),
        "no dead letter re-sent by the restart"
    );

    drop(aggregator);
    stack.query(&format!("DROP DATABASE {db}")).await;
}
