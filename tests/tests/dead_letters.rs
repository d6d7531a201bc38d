//! Bad input on the usage topic: garbage bytes, a truncated record, an unknown schema id, a
//! wrong magic byte, an invalid event and a tombstone. None stops the aggregator; each is
//! counted in the metrics, logged, and forwarded whole to the dead-letter topic with its reason.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use uuid::Uuid;

use costpipe_e2e::*;
use costpipe_schemas::{UsageCodec, UsageEvent};

fn valid_event(tenant: &str, i: i64) -> UsageEvent {
    let mut e = UsageEvent::new(
        Uuid::new_v4(),
        chrono::Utc::now().timestamp_millis() - i,
        tenant,
        "openai",
        "gpt-4o-mini",
    );
    e.input_tokens = 1000 + i;
    e.output_tokens = 10;
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn bad_records_are_dead_lettered_with_reasons_and_counted() {
    let stack = Stack::from_env();
    let names = Names::new("e2e_dlq");
    names.create_usage_topic(&stack).await;
    let aggregator = Service::aggregator(&stack, &names, "", &[]);

    let codec = UsageCodec::usage_v1();
    let good = codec.encode(&valid_event("acme", 0)).expect("encode");
    let mut unknown_schema = good.clone();
    unknown_schema[1..5].copy_from_slice(&999u32.to_be_bytes());
    let mut wrong_magic = good.clone();
    wrong_magic[0] = 0x7b;
    let mut negative = valid_event("acme", 1);
    negative.output_tokens = -5;
    let bad: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("bad_magic_byte", Some(b"\xde\xad\xbe\xef garbage".to_vec())),
        ("truncated_header", Some(vec![0, 0, 1])),
        ("undecodable_avro", Some(good[..good.len() / 2].to_vec())),
        ("unknown_schema_id", Some(unknown_schema)),
        ("bad_magic_byte", Some(wrong_magic)),
        (
            "negative_tokens",
            Some(codec.encode(&negative).expect("encode")),
        ),
        ("empty_payload", None),
    ];

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .create()
        .expect("producer");
    let valid: Vec<UsageEvent> = (0..100).map(|i| valid_event("acme", i)).collect();
    // Bad records interleaved with good ones: each must not stop what follows.
    for (i, e) in valid.iter().enumerate() {
        if let Some((_, payload)) = bad.get(i) {
            let mut rec = FutureRecord::<str, [u8]>::to(&names.usage).key("acme");
            if let Some(p) = payload {
                rec = rec.payload(&p[..]);
            }
            producer
                .send(rec, Duration::from_secs(10))
                .await
                .expect("bad record sent");
        }
        let bytes = codec.encode(e).expect("encode");
        producer
            .send(
                FutureRecord::to(&names.usage).key("acme").payload(&bytes),
                Duration::from_secs(10),
            )
            .await
            .expect("sent");
    }

    let db = names.database.clone();
    wait_scalar(
        &stack,
        &format!("SELECT count() FROM {db}.usage_events_priced"),
        100,
    )
    .await;

    let letters = wait_records(&stack, &names.dead_letters, bad.len()).await;
    assert_eq!(
        letters.len(),
        bad.len(),
        "each bad record is dead-lettered once"
    );
    for (m, (code, payload)) in letters.iter().zip(&bad) {
        assert_eq!(header(m, "costpipe.reason_code").as_deref(), Some(*code));
        assert!(header(m, "costpipe.reason").is_some_and(|r| !r.is_empty()));
        assert_eq!(
            header(m, "costpipe.source_topic").as_deref(),
            Some(names.usage.as_str())
        );
        assert!(header(m, "costpipe.source_offset").is_some());
        assert_eq!(
            m.payload().unwrap_or_default(),
            payload.as_deref().unwrap_or_default(),
            "original bytes kept"
        );
        assert_eq!(m.key(), Some(&b"acme"[..]));
    }

    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", aggregator.port))
        .await
        .expect("metrics endpoint")
        .text()
        .await
        .expect("metrics text");
    let mut expected_counts: BTreeMap<&str, u32> = BTreeMap::new();
    for (code, _) in &bad {
        *expected_counts.entry(code).or_default() += 1;
    }
    for (code, n) in expected_counts {
        let line = format!("costpipe_aggregator_dead_letters_total{{reason=\"{code}\"}} {n}");
        assert!(metrics.contains(&line), "metrics lack `{line}`:\n{metrics}");
    }
    let log = aggregator.log_text();
    assert!(
        log.contains("dead letter") && log.contains("unknown_schema_id"),
        "dead letters are logged"
    );

    drop(aggregator);
    stack.query(&format!("DROP DATABASE {db}")).await;
}
