//! HTTP ingest against the real broker, with the real `costpipe-ingest-http` binary:
//! - one JSON event, JSON arrays and NDJSON (declared and detected) end up on the usage
//!   topic byte-identical to what the emitter library produces for the same events, keyed
//!   the same, each tenant's events in sending order;
//! - rejected events and refused bodies land on the dead-letter topic with their original
//!   bytes and reason, and are counted in `/metrics`;
//! - a key may only emit for its own tenant, and a request without a known key is refused
//!   and never reaches Kafka;
//! - `costpipe-deadletters` lists the letters and replays them after a fix.
//!
//! Every rejection code also has a unit test without a socket
//! (`costpipe_ingest::http::verdict::tests::every_event_rejection_code`).

use std::collections::{BTreeMap, HashMap};
use std::process::Command;

use futures::future::join_all;
use rdkafka::message::{Message, OwnedMessage};
use serde_json::Value;
use uuid::Uuid;

use costpipe_e2e::*;
use costpipe_ingest::synthetic::{SyntheticConfig, SyntheticStream};
use costpipe_ingest::{Emitter, EmitterConfig};
use costpipe_kafka::{ensure_topics, TopicSpec};
use costpipe_schemas::{UsageCodec, UsageEvent};

const PARTITIONS: i32 = 4;

struct Answer {
    status: u16,
    body: Value,
}

async fn post(
    port: u16,
    key: Option<&str>,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Answer {
    let mut req = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/events"))
        .body(body);
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = req.send().await.expect("HTTP ingest answers");
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    Answer { status, body }
}

fn recent_events(seed: u64, n: usize, tenants: usize) -> Vec<UsageEvent> {
    let now = chrono::Utc::now().timestamp_millis();
    SyntheticStream::new(
        seed,
        SyntheticConfig {
            tenants,
            start_ms: now - 3_600_000,
            end_ms: now,
            include_unpriced: true,
        },
    )
    .take(n)
    .enumerate()
    .map(|(i, mut e)| {
        // Exercise the schema's newest optional field too, and several labels.
        if i % 7 == 0 {
            e.cache_write_1h_tokens = Some(i as i64);
        }
        if i % 5 == 0 {
            e.labels.insert("team".into(), format!("team-{}", i % 3));
            e.labels.insert("route".into(), "/v1/chat".into());
        }
        e
    })
    .collect()
}

/// event_id → (partition, offset, key, payload) of every record of `topic`.
fn records_by_event(stack: &Stack, topic: &str) -> HashMap<Uuid, (i32, i64, Vec<u8>, Vec<u8>)> {
    let codec = UsageCodec::usage_v1();
    read_topic(&stack.brokers, topic, PARTITIONS)
        .into_iter()
        .map(|m| {
            let payload = m.payload().expect("payload").to_vec();
            let event = codec.decode(&payload).expect("a usage event");
            (
                event.event_id,
                (
                    m.partition(),
                    m.offset(),
                    m.key().expect("key").to_vec(),
                    payload,
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn json_arrays_and_ndjson_are_byte_identical_to_the_emitter() {
    let stack = Stack::from_env();
    let names = Names::new("e2e_http_bytes");
    let (emitter_topic, http_topic) = (
        format!("{}.emitter", names.usage),
        format!("{}.http", names.usage),
    );
    ensure_topics(
        &stack.brokers,
        &[emitter_topic.clone(), http_topic.clone()].map(|name| TopicSpec {
            name,
            partitions: PARTITIONS,
            compacted: false,
        }),
    )
    .await
    .expect("topics");
    let events = recent_events(11, 900, 3);
    let tenants: Vec<&str> = {
        let mut t: Vec<&str> = events.iter().map(|e| e.tenant_id.as_str()).collect();
        t.sort();
        t.dedup();
        t
    };
    assert_eq!(tenants.len(), 3);

    // Once through the emitter library.
    let emitter =
        Emitter::new(EmitterConfig::new(&stack.brokers, &emitter_topic)).expect("emitter");
    let mut pending = Vec::new();
    for e in &events {
        pending.push(emitter.enqueue(e).await.expect("enqueued").wait());
    }
    for r in join_all(pending).await {
        r.expect("delivered");
    }

    // Once over HTTP, each tenant with its own key, in every body format.
    let http = Service::ingest_http(
        &stack,
        &http_topic,
        &names.dead_letters,
        &tenants,
        PARTITIONS,
        &[],
    )
    .await;
    let mut sent_order: BTreeMap<&str, Vec<Uuid>> = BTreeMap::new();
    let mut formats_used = BTreeMap::new();
    for tenant in &tenants {
        let mine: Vec<&UsageEvent> = events.iter().filter(|e| e.tenant_id == *tenant).collect();
        let key = key_of(tenant);
        let mut rest = &mine[..];
        let mut round = 0;
        while !rest.is_empty() {
            // single, array, ndjson (declared), ndjson (detected), pretty array, …
            let kind = round % 5;
            let take = if kind == 0 { 1 } else { rest.len().min(40) };
            let (chunk, tail) = rest.split_at(take);
            rest = tail;
            round += 1;
            let (ct, body): (Option<&str>, Vec<u8>) = match kind {
                0 => (
                    Some("application/json"),
                    serde_json::to_vec(chunk[0]).unwrap(),
                ),
                1 => (Some("application/json"), serde_json::to_vec(chunk).unwrap()),
                2 | 3 => {
                    let mut b = Vec::new();
                    for e in chunk {
                        b.extend(serde_json::to_vec(e).unwrap());
                        b.extend(if kind == 2 {
                            &b"\n"[..]
                        } else {
                            &b"\r\n\n"[..]
                        });
                    }
                    (
                        if kind == 2 {
                            Some("application/x-ndjson")
                        } else {
                            None
                        },
                        b,
                    )
                }
                _ => (None, serde_json::to_vec_pretty(chunk).unwrap()),
            };
            *formats_used.entry(kind).or_insert(0) += chunk.len();
            let a = post(http.port, Some(key.as_str()), ct, body).await;
            assert_eq!(a.status, 202, "{}", a.body);
            assert_eq!(a.body["accepted"], chunk.len(), "{}", a.body);
            assert_eq!(a.body["rejected"], 0);
            for (i, (r, e)) in a.body["results"]
                .as_array()
                .unwrap()
                .iter()
                .zip(chunk)
                .enumerate()
            {
                assert_eq!(r["index"], i);
                assert_eq!(r["status"], "accepted");
                assert_eq!(r["event_id"], e.event_id.to_string());
            }
            sent_order
                .entry(tenant)
                .or_default()
                .extend(chunk.iter().map(|e| e.event_id));
        }
    }
    assert_eq!(formats_used.len(), 5, "every body format was used");

    let from_emitter = records_by_event(&stack, &emitter_topic);
    let from_http = records_by_event(&stack, &http_topic);
    assert_eq!(from_emitter.len(), events.len());
    assert_eq!(from_http.len(), events.len(), "each event exactly once");
    let codec = UsageCodec::current();
    for e in &events {
        let (_, _, ek, ep) = &from_emitter[&e.event_id];
        let (_, _, hk, hp) = &from_http[&e.event_id];
        // Byte-identical for every event, several labels included (they are written sorted).
        assert_eq!(hp, ep, "payload of {} differs", e.event_id);
        assert_eq!(codec.decode(hp).unwrap(), *e);
        assert_eq!(hk, ek, "key of {} differs", e.event_id);
        assert_eq!(hk, e.tenant_id.as_bytes());
    }
    assert!(
        events.iter().any(|e| e.labels.len() > 1),
        "events with several labels are compared too"
    );
    // A tenant's events keep the order they were sent in.
    for (tenant, order) in sent_order {
        let mut placed: Vec<(i32, i64, Uuid)> = order
            .iter()
            .map(|id| (from_http[id].0, from_http[id].1, *id))
            .collect();
        placed.sort();
        assert!(
            placed.windows(2).all(|w| w[0].0 == w[1].0),
            "{tenant}: one partition"
        );
        assert_eq!(
            placed.iter().map(|p| p.2).collect::<Vec<_>>(),
            order,
            "{tenant}: sending order kept"
        );
    }
    // Nothing was dead-lettered.
    assert!(read_topic(&stack.brokers, &names.dead_letters, 1).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn rejected_events_and_bodies_are_dead_lettered_with_reasons_and_counted() {
    let stack = Stack::from_env();
    let names = Names::new("e2e_http_dlq");
    let http = Service::ingest_http(
        &stack,
        &names.usage,
        &names.dead_letters,
        &["acme", "globex"],
        PARTITIONS,
        &[
            ("COSTPIPE_INGEST_MAX_BATCH_EVENTS", "50"),
            ("COSTPIPE_INGEST_MAX_BODY_BYTES", "65536"),
            ("COSTPIPE_INGEST_DEAD_LETTER_MAX_BYTES", "4096"),
        ],
    )
    .await;
    let now = chrono::Utc::now().timestamp_millis();
    let event = |tenant: &str| {
        let mut e = UsageEvent::new(Uuid::new_v4(), now - 1000, tenant, "openai", "gpt-4o");
        e.input_tokens = 100;
        e.output_tokens = 10;
        e
    };
    let json = |e: &UsageEvent| serde_json::to_vec(e).unwrap();
    let good = event("acme");
    let mut negative = event("acme");
    negative.output_tokens = -5;
    let mut old = event("acme");
    old.event_time = now - 3650 * 86_400_000;
    let mut unknown = serde_json::to_value(event("acme")).unwrap();
    let mut good_with_label = event("acme");
    good_with_label.labels.insert("team".into(), "a".into());
    unknown["cache_input_tokens"] = 5.into();
    let lines: Vec<(&str, Vec<u8>)> = vec![
        ("accepted", json(&good)),
        ("invalid_json", b"{\"event_id\": \"truncated".to_vec()),
        ("negative_tokens", json(&negative)),
        ("tenant_mismatch", json(&event("globex"))),
        ("invalid_utf8", b"{\"tenant_id\": \"ac\xffme\"}".to_vec()),
        ("unknown_field", unknown.to_string().into_bytes()),
        ("event_time_out_of_range", json(&old)),
        // `labels` with a key given twice (a map would silently keep the last).
        (
            "duplicate_label_key",
            String::from_utf8(json(&good_with_label))
                .unwrap()
                .replace(r#""team":"a""#, r#""team":"a","team":"b""#)
                .into_bytes(),
        ),
    ];
    let mut body = Vec::new();
    for (_, l) in &lines {
        body.extend_from_slice(l);
        body.push(b'\n');
    }
    let a = post(
        http.port,
        Some(key_of("acme").as_str()),
        Some("application/x-ndjson"),
        body,
    )
    .await;
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(
        (a.body["accepted"].as_u64(), a.body["rejected"].as_u64()),
        (Some(1), Some(7))
    );
    for (i, (code, _)) in lines.iter().enumerate() {
        let r = &a.body["results"][i];
        assert_eq!(r["index"], i);
        if *code == "accepted" {
            assert_eq!(r["status"], "accepted");
        } else {
            assert_eq!(r["status"], "rejected", "{r}");
            assert_eq!(r["code"], *code, "{r}");
            assert!(r["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }
    assert_eq!(
        a.body["results"][2]["event_id"],
        negative.event_id.to_string()
    );

    // Whole bodies refused: too many events, too large, a broken array.
    let many: Vec<Value> = (0..51)
        .map(|_| serde_json::to_value(event("acme")).unwrap())
        .collect();
    let many = serde_json::to_vec(&many).unwrap();
    let a = post(
        http.port,
        Some(key_of("acme").as_str()),
        Some("application/json"),
        many.clone(),
    )
    .await;
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (413, Some("batch_too_large"))
    );
    let mut huge = event("acme");
    huge.labels.insert("blob".into(), "x".repeat(100_000));
    let huge = json(&huge);
    let a = post(http.port, Some(key_of("acme").as_str()), None, huge.clone()).await;
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (413, Some("body_too_large"))
    );
    let a = post(
        http.port,
        Some(key_of("acme").as_str()),
        None,
        b"[{\"a\": 1}".to_vec(),
    )
    .await;
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (400, Some("invalid_json"))
    );

    let usage = read_topic(&stack.brokers, &names.usage, PARTITIONS);
    assert_eq!(usage.len(), 1, "only the valid event is on the usage topic");
    let letters = read_topic(&stack.brokers, &names.dead_letters, 1);
    let mut expected: Vec<(&str, Vec<u8>)> = lines
        .iter()
        .filter(|(c, _)| *c != "accepted")
        .cloned()
        .collect();
    expected.push(("batch_too_large", many[..4096].to_vec()));
    expected.push(("body_too_large", huge[..4096].to_vec()));
    expected.push(("invalid_json", b"[{\"a\": 1}".to_vec()));
    assert_eq!(letters.len(), expected.len());
    for (m, (code, bytes)) in letters.iter().zip(&expected) {
        assert_eq!(header(m, "costpipe.reason_code").as_deref(), Some(*code));
        assert!(header(m, "costpipe.reason").is_some_and(|r| !r.is_empty()));
        assert_eq!(header(m, "costpipe.source").as_deref(), Some("http-ingest"));
        assert_eq!(header(m, "costpipe.tenant").as_deref(), Some("acme"));
        let failed_at: i64 = header(m, "costpipe.failed_at").unwrap().parse().unwrap();
        assert!((failed_at - now).abs() < 120_000);
        assert_eq!(m.key(), Some(&b"acme"[..]));
        assert_eq!(
            m.payload().unwrap_or_default(),
            &bytes[..],
            "original bytes of {code}"
        );
    }
    // Cut to the cap, with the size of what was received.
    assert_eq!(
        header(&letters[7], "costpipe.truncated").as_deref(),
        Some("true")
    );
    assert_eq!(
        header(&letters[8], "costpipe.original_size"),
        Some(huge.len().to_string())
    );
    assert_eq!(header(&letters[0], "costpipe.truncated"), None);

    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", http.port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
    for (code, _) in &expected {
        *counts.entry(code).or_default() += 1;
    }
    for (code, n) in counts {
        for family in ["rejections", "dead_letters"] {
            let line = format!("costpipe_ingest_http_{family}_total{{reason=\"{code}\"}} {n}");
            assert!(metrics.contains(&line), "metrics lack `{line}`:\n{metrics}");
        }
    }
    assert!(metrics.contains("costpipe_ingest_http_events_accepted_total 1"));

    // The list command shows each letter with its reason.
    let out = Command::new(binary("costpipe-deadletters"))
        .env("COSTPIPE_KAFKA_BROKERS", &stack.brokers)
        .env("COSTPIPE_DEAD_LETTER_TOPIC", &names.dead_letters)
        .arg("list")
        .output()
        .expect("costpipe-deadletters list");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listed.lines().count(), expected.len(), "{listed}");
    for (line, (code, _)) in listed.lines().zip(&expected) {
        assert!(
            line.contains(code) && line.contains("http-ingest"),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn a_key_emits_only_for_its_tenant_and_unknown_keys_are_refused() {
    let stack = Stack::from_env();
    let names = Names::new("e2e_http_auth");
    let http = Service::ingest_http(
        &stack,
        &names.usage,
        &names.dead_letters,
        &["acme", "globex"],
        PARTITIONS,
        &[],
    )
    .await;
    let now = chrono::Utc::now().timestamp_millis();
    let mut acme = UsageEvent::new(Uuid::new_v4(), now, "acme", "openai", "gpt-4o");
    acme.input_tokens = 1;
    let body = serde_json::to_vec(&acme).unwrap();

    for key in [None, Some("not-a-key"), Some("")] {
        let a = post(http.port, key, None, body.clone()).await;
        assert_eq!(a.status, 401, "{key:?}");
        assert_eq!(a.body["error"], "unauthorized");
    }
    // globex's key, acme's event.
    let a = post(
        http.port,
        Some(key_of("globex").as_str()),
        None,
        body.clone(),
    )
    .await;
    assert_eq!(a.status, 202);
    assert_eq!(a.body["results"][0]["status"], "rejected");
    assert_eq!(a.body["results"][0]["code"], "tenant_mismatch");
    // acme's own key.
    let a = post(http.port, Some(key_of("acme").as_str()), None, body.clone()).await;
    assert_eq!(a.body["results"][0]["status"], "accepted", "{}", a.body);

    let usage = read_topic(&stack.brokers, &names.usage, PARTITIONS);
    assert_eq!(usage.len(), 1);
    let letters = read_topic(&stack.brokers, &names.dead_letters, 1);
    assert_eq!(
        letters.len(),
        1,
        "unauthenticated requests never reach Kafka"
    );
    assert_eq!(
        header(&letters[0], "costpipe.reason_code").as_deref(),
        Some("tenant_mismatch")
    );
    assert_eq!(
        header(&letters[0], "costpipe.tenant").as_deref(),
        Some("globex")
    );
    assert_eq!(letters[0].payload(), Some(&body[..]));

    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", http.port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("costpipe_ingest_http_unauthorized_total 3"),
        "{metrics}"
    );
    // The service documents itself.
    let doc: Value = reqwest::get(format!("http://127.0.0.1:{}/openapi.json", http.port))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/v1/events"]["post"]["security"].is_array());
    let health = reqwest::get(format!("http://127.0.0.1:{}/healthz", http.port))
        .await
        .unwrap();
    assert!(health.status().is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn dead_letters_replay_after_a_fix() {
    let stack = Stack::from_env();
    let names = Names::new("e2e_http_replay");
    // A deployment with too tight a label limit rejects events the pipeline accepts.
    let http = Service::ingest_http(
        &stack,
        &names.usage,
        &names.dead_letters,
        &["acme"],
        PARTITIONS,
        &[("COSTPIPE_INGEST_MAX_LABELS", "1")],
    )
    .await;
    let events: Vec<UsageEvent> = recent_events(5, 30, 1)
        .into_iter()
        .map(|mut e| {
            e.labels.insert("team".into(), "search".into());
            e
        })
        .collect();
    let a = post(
        http.port,
        Some(key_of("acme").as_str()),
        None,
        serde_json::to_vec(&events).unwrap(),
    )
    .await;
    assert_eq!(a.body["rejected"], events.len(), "{}", a.body);
    assert!(read_topic(&stack.brokers, &names.usage, PARTITIONS).is_empty());

    // The fix: the shared limits (32 labels). Replay what was rejected for it.
    let replay = |extra: &[&str]| {
        let out = Command::new(binary("costpipe-deadletters"))
            .env("COSTPIPE_KAFKA_BROKERS", &stack.brokers)
            .env("COSTPIPE_DEAD_LETTER_TOPIC", &names.dead_letters)
            .env("COSTPIPE_USAGE_TOPIC", &names.usage)
            .args(["replay", "--reason", "too_many_labels"])
            .args(extra)
            .output()
            .expect("costpipe-deadletters replay");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dry = replay(&["--dry-run"]);
    assert!(
        dry.contains(&format!("{} dead letters to replay", events.len())),
        "{dry}"
    );
    assert!(read_topic(&stack.brokers, &names.usage, PARTITIONS).is_empty());
    let done = replay(&[]);
    assert!(
        done.contains(&format!(
            "{n} dead letters replayed ({n} events)",
            n = events.len()
        )),
        "{done}"
    );
    // The replayed events are what the emitter would have produced.
    let codec = UsageCodec::current();
    let replayed = read_topic(&stack.brokers, &names.usage, PARTITIONS);
    assert_eq!(replayed.len(), events.len());
    let by_id: HashMap<Uuid, &OwnedMessage> = replayed
        .iter()
        .map(|m| (codec.decode(m.payload().unwrap()).unwrap().event_id, m))
        .collect();
    for e in &events {
        let m = by_id[&e.event_id];
        assert_eq!(codec.decode(m.payload().unwrap()).unwrap(), *e);
        assert_eq!(m.key(), Some(e.tenant_id.as_bytes()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn with_a_schema_registry_records_carry_the_registry_id() {
    let stack = Stack::from_env();
    let names = Names::new("e2e_http_registry");
    let registry = format!("http://{}", registry_double::start(2001).await);
    let http = Service::ingest_http(
        &stack,
        &names.usage,
        &names.dead_letters,
        &["acme"],
        PARTITIONS,
        &[("COSTPIPE_SCHEMA_REGISTRY_URL", registry.as_str())],
    )
    .await;
    let events: Vec<UsageEvent> = recent_events(9, 20, 1);
    let a = post(
        http.port,
        Some(key_of("acme").as_str()),
        None,
        serde_json::to_vec(&events).unwrap(),
    )
    .await;
    assert_eq!(a.body["accepted"], events.len(), "{}", a.body);
    let records = read_topic(&stack.brokers, &names.usage, PARTITIONS);
    assert_eq!(records.len(), events.len());
    let codec = UsageCodec::current();
    let expected: HashMap<Vec<u8>, &UsageEvent> = events
        .iter()
        .map(|e| (codec.encode(e).unwrap()[5..].to_vec(), e))
        .collect();
    for m in &records {
        let payload = m.payload().unwrap();
        assert_eq!(
            &payload[..5],
            &[0, 0, 0, 0x07, 0xd1],
            "magic byte + id 2001"
        );
        assert!(
            expected.contains_key(&payload[5..]),
            "the body is the emitter's"
        );
    }
}
