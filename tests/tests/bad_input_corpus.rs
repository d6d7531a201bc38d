//! The bad-input corpus (`tests/corpus/`, see its README): every file ends on the
//! dead-letter topic with the reason its name gives, and nothing crashes.
//!
//! - `kafka/*` files are record values produced as they are to the usage topic; the running
//!   aggregator dead-letters them.
//! - `http/*` files are request bodies posted to the running `costpipe-ingest-http`, which
//!   answers with the reason and dead-letters them.
//!
//! Afterwards both services are still running and a good event through each path is priced.
//! `corpus_files_are_what_their_names_say` checks the files without a stack;
//! `COSTPIPE_WRITE_CORPUS=1 cargo test -p costpipe-e2e --test bad_input_corpus write_corpus`
//! writes them again (deterministically).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use uuid::Uuid;

use costpipe_e2e::*;
use costpipe_ingest::http::auth::hash_key;
use costpipe_ingest::http::verdict::{judge_body, Verdict};
use costpipe_ingest::http::HttpIngestConfig;
use costpipe_ingest::{Emitter, EmitterConfig};
use costpipe_schemas::{UsageCodec, UsageEvent, ValidationLimits};

/// The tenant every corpus event claims, and its API key in the test.
const TENANT: &str = "corpus";
const KEY: &str = "corpus-key";
/// 2026-11-24T00:00:00Z: the time written into the corpus events.
const WRITTEN_AT_MS: i64 = 1_795_478_400_000;
const DAY_MS: i64 = 86_400_000;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// One corpus file: where it goes and the reason code its name promises.
#[derive(Debug, Clone)]
struct Item {
    path: PathBuf,
    name: String,
    kafka: bool,
    code: String,
    bytes: Vec<u8>,
}

/// Every file of `kafka/` and `http/`; the code is the name up to `--`.
fn corpus() -> Vec<Item> {
    let mut items = Vec::new();
    for (dir, kafka) in [("kafka", true), ("http", false)] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir().join(dir))
            .unwrap_or_else(|e| panic!("tests/corpus/{dir}: {e}"))
            .map(|e| e.expect("dir entry").path())
            .collect();
        files.sort();
        for path in files {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let (code, _) = name
                .split_once("--")
                .unwrap_or_else(|| panic!("{name}: not `<reason_code>--<what>.<ext>`"));
            items.push(Item {
                bytes: std::fs::read(&path).expect("corpus file"),
                code: code.to_string(),
                name: format!("{dir}/{name}"),
                path,
                kafka,
            });
        }
    }
    items
}

fn base_event(id: u128) -> UsageEvent {
    let mut e = UsageEvent::new(
        Uuid::from_u128(id),
        WRITTEN_AT_MS,
        TENANT,
        "openai",
        "gpt-4o-mini",
    );
    e.input_tokens = 1200;
    e.output_tokens = 80;
    e.department = Some("research".into());
    e.labels.insert("region".into(), "eu-west-1".into());
    e
}

/// What `write_corpus` writes: (relative path, bytes).
fn corpus_contents() -> Vec<(String, Vec<u8>)> {
    let codec = UsageCodec::usage_v1();
    let avro = |e: &UsageEvent| codec.encode(e).expect("encode");
    // Through `Value`, whose keys are sorted: the same bytes on every run. (Events carry
    // one label at most, for the same reason in Avro.)
    let json = |e: &UsageEvent| {
        let mut b = serde_json::to_vec_pretty(&serde_json::to_value(e).unwrap()).expect("json");
        b.push(b'\n');
        b
    };
    let good = base_event(0xc0_0001);
    let good_avro = avro(&good);
    let mut out = Vec::new();

    // Avro records, produced raw to the usage topic.
    out.push((
        "kafka/undecodable_avro--truncated-record.avro".into(),
        good_avro[..good_avro.len() / 2].to_vec(),
    ));
    out.push((
        "kafka/truncated_header--three-bytes.avro".into(),
        good_avro[..3].to_vec(),
    ));
    let mut wrong_magic = good_avro.clone();
    wrong_magic[0] = 0x01;
    out.push(("kafka/bad_magic_byte--magic-0x01.avro".into(), wrong_magic));
    out.push((
        "kafka/bad_magic_byte--json-instead-of-avro.bin".into(),
        serde_json::to_vec(&serde_json::to_value(&good).unwrap()).unwrap(),
    ));
    let mut unknown = good_avro.clone();
    unknown[1..5].copy_from_slice(&999u32.to_be_bytes());
    out.push(("kafka/unknown_schema_id--id-999.avro".into(), unknown));
    let mut negative = base_event(0xc0_0002);
    negative.output_tokens = -5;
    out.push((
        "kafka/negative_tokens--output-minus-5.avro".into(),
        avro(&negative),
    ));
    let mut empty_tenant = base_event(0xc0_0003);
    empty_tenant.tenant_id = String::new();
    out.push((
        "kafka/empty_tenant--blank-tenant.avro".into(),
        avro(&empty_tenant),
    ));
    let mut long_label = base_event(0xc0_0004);
    long_label.labels = [("note".to_string(), "x".repeat(300))].into();
    out.push((
        "kafka/label_too_long--300-byte-label.avro".into(),
        avro(&long_label),
    ));
    // Invalid UTF-8 inside an Avro string: the model name is 11 bytes, one of them 0xff.
    let mut utf8 = base_event(0xc0_0005);
    utf8.model = "gpt-4o-mini".into();
    let mut bad_utf8 = avro(&utf8);
    let at = bad_utf8
        .windows(11)
        .position(|w| w == b"gpt-4o-mini")
        .expect("model bytes");
    bad_utf8[at + 3] = 0xff;
    out.push((
        "kafka/undecodable_avro--invalid-utf8-model.avro".into(),
        bad_utf8,
    ));
    let mut old = base_event(0xc0_0006);
    old.event_time = WRITTEN_AT_MS - 3650 * DAY_MS;
    out.push((
        "kafka/event_time_out_of_range--ten-years-ago.avro".into(),
        avro(&old),
    ));

    // JSON request bodies, posted to HTTP ingest.
    out.push((
        "http/negative_tokens--output-minus-5.json".into(),
        json(&negative),
    ));
    out.push((
        "http/empty_tenant--blank-tenant.json".into(),
        json(&empty_tenant),
    ));
    out.push((
        "http/label_too_long--300-byte-label.json".into(),
        json(&long_label),
    ));
    let mut huge = base_event(0xc0_0007);
    huge.labels = [("note".to_string(), "x".repeat(10 << 20))].into();
    out.push((
        "http/body_too_large--10mb-label.json".into(),
        serde_json::to_vec(&serde_json::to_value(&huge).unwrap()).unwrap(),
    ));
    let mut latin1 = json(&base_event(0xc0_0008));
    let at = latin1
        .windows(8)
        .position(|w| w == b"research")
        .expect("department bytes");
    latin1[at + 1] = 0xe9; // "r\xe9search": Latin-1 é, not UTF-8
    out.push((
        "http/invalid_utf8--latin1-byte-in-department.json".into(),
        latin1,
    ));
    out.push((
        "http/event_time_out_of_range--ten-years-ago.json".into(),
        json(&old),
    ));
    let full = json(&base_event(0xc0_0009));
    out.push((
        "http/invalid_json--truncated-event.json".into(),
        full[..full.len() / 2].to_vec(),
    ));
    let mut not_uuid: Value = serde_json::to_value(base_event(0xc0_000a)).unwrap();
    not_uuid["event_id"] = "order-1234".into();
    out.push((
        "http/invalid_event_id--not-a-uuid.json".into(),
        serde_json::to_vec_pretty(&not_uuid).unwrap(),
    ));
    let mut other = base_event(0xc0_000b);
    other.tenant_id = "someone-else".into();
    out.push((
        "http/tenant_mismatch--other-tenant.json".into(),
        json(&other),
    ));
    out.push((
        "http/invalid_json--broken-array.json".into(),
        format!("[{}", String::from_utf8(json(&good)).unwrap()).into_bytes(),
    ));
    out
}

/// Writes the corpus files (only with `COSTPIPE_WRITE_CORPUS=1`).
#[test]
fn write_corpus() {
    if std::env::var("COSTPIPE_WRITE_CORPUS").as_deref() != Ok("1") {
        return;
    }
    for (rel, bytes) in corpus_contents() {
        let path = corpus_dir().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
    }
}

/// Without a stack: the files are those `write_corpus` writes, and each one, judged by the
/// same code the services run, gets the reason its name gives.
#[test]
fn corpus_files_are_what_their_names_say() {
    let items = corpus();
    let expected = corpus_contents();
    assert_eq!(
        items.len(),
        expected.len(),
        "tests/corpus matches write_corpus"
    );
    for (rel, bytes) in &expected {
        let item = items
            .iter()
            .find(|i| &i.name == rel)
            .unwrap_or_else(|| panic!("{rel} missing: run write_corpus"));
        assert!(item.bytes == *bytes, "{rel} differs from write_corpus");
    }
    let codec = UsageCodec::usage_v1();
    let now = chrono::Utc::now().timestamp_millis();
    let aggregator_limits = ValidationLimits::default();
    let http = HttpIngestConfig::new("", "", "", "");
    for item in &items {
        let got = if item.kafka {
            match codec.decode(&item.bytes) {
                Err(e) => e.code().to_string(),
                Ok(event) => match aggregator_limits.check(&event, now) {
                    Err(e) => e.code.as_str().to_string(),
                    Ok(()) => "valid".into(),
                },
            }
        } else if item.bytes.len() > http.max_body_bytes {
            "body_too_large".into()
        } else {
            match judge_body(
                &item.bytes,
                Some("application/json"),
                TENANT,
                &http.rules(),
                now,
            ) {
                Err(body) => body.rejection.reason.as_str().to_string(),
                Ok((_, judged)) => {
                    assert_eq!(judged.len(), 1, "{}: one event", item.name);
                    match &judged[0].verdict {
                        Verdict::Reject { rejection, .. } => rejection.reason.as_str().to_string(),
                        Verdict::Accept(_) => "valid".into(),
                    }
                }
            }
        };
        assert_eq!(got, item.code, "{}", item.path.display());
    }
    // The 10 MB label is 10 MB.
    let huge = items.iter().find(|i| i.name.contains("10mb")).unwrap();
    assert!(huge.bytes.len() > 10 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn the_whole_corpus_is_dead_lettered_with_its_reason_and_nothing_crashes() {
    let stack = Stack::from_env();
    let names = Names::new("e2e_corpus");
    names.create_usage_topic(&stack).await;
    let items = corpus();
    assert!(items.iter().any(|i| i.kafka) && items.iter().any(|i| !i.kafka));

    // Both services, writing to one dead-letter topic.
    let mut aggregator = Service::aggregator(&stack, &names, "", &[]);
    let port = free_port();
    let log = std::env::temp_dir().join(format!("{}-ingest-http-{port}.log", names.database));
    let out = std::fs::File::create(&log).expect("log");
    let child = Command::new(binary("costpipe-ingest-http"))
        .env("COSTPIPE_INGEST_ADDR", format!("127.0.0.1:{port}"))
        .env("COSTPIPE_KAFKA_BROKERS", &stack.brokers)
        .env("COSTPIPE_USAGE_TOPIC", &names.usage)
        .env("COSTPIPE_DEAD_LETTER_TOPIC", &names.dead_letters)
        .env(
            "COSTPIPE_INGEST_API_KEYS",
            format!("{TENANT}:{}", hash_key(KEY)),
        )
        .env("RUST_LOG", "info,rdkafka=warn")
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .expect("spawn costpipe-ingest-http");
    let mut http = Service { child, log, port };
    let base = format!("http://127.0.0.1:{port}");
    wait_for(
        "costpipe-ingest-http ready",
        Duration::from_secs(30),
        || {
            let url = format!("{base}/readyz");
            async move {
                reqwest::get(&url)
                    .await
                    .ok()?
                    .status()
                    .is_success()
                    .then_some(())
            }
        },
    )
    .await;

    // Kafka-level items, raw to the usage topic.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .create()
        .expect("producer");
    for item in items.iter().filter(|i| i.kafka) {
        producer
            .send(
                FutureRecord::to(&names.usage)
                    .key(TENANT)
                    .payload(&item.bytes),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("{}: not produced: {e}", item.name));
    }
    // HTTP-level items, posted with the corpus tenant's key.
    let client = reqwest::Client::new();
    for item in items.iter().filter(|i| !i.kafka) {
        let resp = client
            .post(format!("{base}/v1/events"))
            .header("authorization", format!("Bearer {KEY}"))
            .header("content-type", "application/json")
            .body(item.bytes.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: no answer: {e}", item.name));
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.expect("JSON answer");
        let code = if status == 202 {
            assert_eq!(body["rejected"], 1, "{}: {body}", item.name);
            body["results"][0]["code"].clone()
        } else {
            assert!(matches!(status, 400 | 413), "{}: {status}", item.name);
            body["error"].clone()
        };
        assert_eq!(code, item.code.as_str(), "{}: {body}", item.name);
    }

    let letters = wait_for("every dead letter", Duration::from_secs(90), || {
        let (stack, names, n) = (&stack, &names, items.len());
        async move {
            let got = read_topic(&stack.brokers, &names.dead_letters, 1);
            (got.len() >= n).then_some(got)
        }
    })
    .await;
    assert_eq!(letters.len(), items.len(), "each item dead-lettered once");
    let mut unmatched: Vec<&OwnedMessage> = letters.iter().collect();
    for item in &items {
        let source = if item.kafka {
            "aggregator"
        } else {
            "http-ingest"
        };
        let pos = unmatched
            .iter()
            .position(|m| {
                let payload = m.payload().unwrap_or_default();
                let same_bytes = match header(m, "costpipe.truncated").as_deref() {
                    Some("true") => {
                        item.bytes.starts_with(payload)
                            && header(m, "costpipe.original_size")
                                == Some(item.bytes.len().to_string())
                    }
                    // A refused body is kept whole; a rejected event without the
                    // whitespace around it.
                    _ => payload == &item.bytes[..] || payload == item.bytes.trim_ascii(),
                };
                same_bytes
                    && header(m, "costpipe.source").as_deref() == Some(source)
                    && header(m, "costpipe.reason_code").as_deref() == Some(item.code.as_str())
            })
            .unwrap_or_else(|| {
                panic!(
                    "{}: no dead letter from {source} with reason {} and its bytes",
                    item.name, item.code
                )
            });
        let m = unmatched.remove(pos);
        assert!(header(m, "costpipe.reason").is_some_and(|r| !r.is_empty()));
        assert!(header(m, "costpipe.failed_at").is_some());
    }

    // Nothing crashed: both still run and still take a good event.
    aggregator.assert_running();
    http.assert_running();
    let now = chrono::Utc::now().timestamp_millis();
    let good = |id: u128| {
        let mut e = base_event(id);
        e.event_id = Uuid::new_v4();
        e.event_time = now - 1000;
        e
    };
    let via_http = good(1);
    let resp = client
        .post(format!("{base}/v1/events"))
        .header("authorization", format!("Bearer {KEY}"))
        .json(&via_http)
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status().as_u16(), 202);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["accepted"], 1, "{body}");
    let emitter = Emitter::new(EmitterConfig::new(&stack.brokers, &names.usage)).expect("emitter");
    emitter.emit(&good(2)).await.expect("emitted");
    let db = names.database.clone();
    wait_for("both good events priced", Duration::from_secs(90), || {
        let (stack, db) = (&stack, &db);
        async move {
            let n = scalar(
                stack,
                &format!("SELECT count() FROM {db}.usage_events_priced"),
            )
            .await?;
            (n == 2).then_some(())
        }
    })
    .await;
    aggregator.assert_running();
    http.assert_running();

    // Counted by reason on both sides.
    let mut by_source: BTreeMap<(bool, &str), u32> = BTreeMap::new();
    for i in &items {
        *by_source.entry((i.kafka, i.code.as_str())).or_default() += 1;
    }
    let agg_metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", aggregator.port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let http_metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for ((kafka, code), n) in by_source {
        let (text, line) = if kafka {
            (
                &agg_metrics,
                format!("costpipe_aggregator_dead_letters_total{{reason=\"{code}\"}} {n}"),
            )
        } else {
            (
                &http_metrics,
                format!("costpipe_ingest_http_dead_letters_total{{reason=\"{code}\"}} {n}"),
            )
        };
        assert!(text.contains(&line), "metrics lack `{line}`");
    }
    drop(aggregator);
    drop(http);
    stack.query(&format!("DROP DATABASE {db}")).await;
}
