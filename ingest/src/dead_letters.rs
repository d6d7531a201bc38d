//! Dead letters: reading them back and deciding how each can be replayed
//! (`costpipe-deadletters`). Writing them is `costpipe_kafka::dead_letters`'s
//! [`DeadLetterProducer`], shared with the aggregator, re-exported here.
//!
//! A dead letter's value is the original bytes as received, its key the tenant (HTTP
//! ingest) or the original key (aggregator), and its reason and origin travel in the
//! headers named in [`costpipe_schemas::dead_letter`]. A value longer than the producer's
//! cap is cut to its first bytes and flagged with [`TRUNCATED`] and [`ORIGINAL_SIZE`]; a
//! truncated letter can be listed, not replayed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use uuid::Uuid;

use costpipe_schemas::dead_letter as h;
use costpipe_schemas::{UsageCodec, UsageEvent, ValidationLimits};

use crate::http::verdict::{judge_body, Rules, Verdict};

pub use costpipe_kafka::dead_letters::{
    DeadLetterOrigin, DeadLetterProducer, NewDeadLetter, CONTENT_TYPE, DEFAULT_MAX_VALUE_BYTES,
    ORIGINAL_SHA256, ORIGINAL_SIZE, SOURCE_AGGREGATOR, SOURCE_HTTP_INGEST, TRUNCATED,
};

/// A dead letter read back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetterRecord {
    pub partition: i32,
    pub offset: i64,
    #[serde(skip)]
    pub key: Option<Vec<u8>>,
    #[serde(skip)]
    pub payload: Vec<u8>,
    pub size: usize,
    pub source: Option<String>,
    pub reason_code: Option<String>,
    pub reason: Option<String>,
    pub failed_at_ms: Option<i64>,
    pub tenant: Option<String>,
    pub source_topic: Option<String>,
    pub source_partition: Option<i32>,
    pub source_offset: Option<i64>,
    pub content_type: Option<String>,
    /// Size of what was received, when the value is only its first bytes.
    pub truncated_from: Option<usize>,
}

impl DeadLetterRecord {
    /// From a consumed record.
    pub fn from_message<M: Message>(m: &M) -> Self {
        let mut headers: HashMap<&str, String> = HashMap::new();
        if let Some(hs) = m.headers() {
            for hd in hs.iter() {
                if let Some(v) = hd.value {
                    headers.insert(hd.key, String::from_utf8_lossy(v).into_owned());
                }
            }
        }
        let payload = m.payload().unwrap_or_default().to_vec();
        let get = |k: &str| headers.get(k).cloned();
        let truncated = get(TRUNCATED).as_deref() == Some("true");
        DeadLetterRecord {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            size: payload.len(),
            payload,
            source: get(h::SOURCE),
            reason_code: get(h::REASON_CODE),
            reason: get(h::REASON),
            failed_at_ms: get(h::FAILED_AT).and_then(|v| v.parse().ok()),
            tenant: get(h::TENANT),
            source_topic: get(h::SOURCE_TOPIC),
            source_partition: get(h::SOURCE_PARTITION).and_then(|v| v.parse().ok()),
            source_offset: get(h::SOURCE_OFFSET).and_then(|v| v.parse().ok()),
            content_type: get(CONTENT_TYPE),
            truncated_from: truncated
                .then(|| get(ORIGINAL_SIZE).and_then(|v| v.parse().ok()))
                .flatten()
                .or(truncated.then_some(0)),
        }
    }

    /// The first `n` bytes, as escaped text when they are mostly printable, else as hex.
    pub fn preview(&self, n: usize) -> String {
        preview(&self.payload, n)
    }
}

/// The first `n` bytes of `bytes`, shown as escaped text when printable enough, else hex.
pub fn preview(bytes: &[u8], n: usize) -> String {
    let head = &bytes[..bytes.len().min(n)];
    let more = if bytes.len() > n { "…" } else { "" };
    let printable = head
        .iter()
        .filter(|b| b.is_ascii_graphic() || **b == b' ')
        .count();
    if !head.is_empty() && printable * 10 >= head.len() * 9 {
        format!("{:?}{more}", String::from_utf8_lossy(head))
    } else {
        let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
        format!("[{}]{more}", hex.join(" "))
    }
}

/// Every record of `topic`, all partitions, from the beginning until no record arrives for
/// `idle`. (The local broker's high watermarks are not reliable enough to stop on.)
/// Blocking.
pub fn read_dead_letters(
    brokers: &str,
    topic: &str,
    idle: Duration,
) -> anyhow::Result<Vec<DeadLetterRecord>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("costpipe-deadletters-{}", Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .set("fetch.queue.backoff.ms", "10")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    anyhow::ensure!(
        !partitions.is_empty(),
        "topic {topic} does not exist or has no partitions"
    );
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut out = Vec::new();
    let mut last = Instant::now();
    while last.elapsed() < idle {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                out.push(DeadLetterRecord::from_message(&m));
                last = Instant::now();
            }
            Some(Err(e)) => tracing::warn!(error = %e, "reading dead letters"),
            None => {}
        }
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    Ok(out)
}

/// What replay does with one dead letter.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplayPlan {
    /// Avro from the aggregator's input: produce these original bytes again, keyed by tenant.
    Raw {
        event_id: Uuid,
        tenant: String,
        payload: Vec<u8>,
    },
    /// JSON from HTTP ingest: these events, valid now, go through the emitter. Events of
    /// the letter that are still invalid are in `still_rejected`.
    Events {
        events: Vec<UsageEvent>,
        still_rejected: Vec<String>,
    },
    /// Not replayable as it is; the reason.
    Skip(String),
}

/// Decides how to replay `letter` at `now_ms`. Avro letters must decode with this build's
/// schemas and pass `limits` (the aggregator's rules), else they would only come back as
/// dead letters; `force` produces their bytes anyway (for a fix this build does not know,
/// such as a schema registered elsewhere). JSON letters are judged again like a request
/// of their tenant.
pub fn plan_replay(
    letter: &DeadLetterRecord,
    limits: &ValidationLimits,
    force: bool,
    now_ms: i64,
) -> ReplayPlan {
    if let Some(size) = letter.truncated_from {
        return ReplayPlan::Skip(format!(
            "only the first {} of {size} bytes were kept",
            letter.size
        ));
    }
    match letter.source.as_deref() {
        Some(SOURCE_HTTP_INGEST) => {
            let Some(tenant) = letter.tenant.as_deref() else {
                return ReplayPlan::Skip("an HTTP dead letter without a tenant header".into());
            };
            let rules = Rules {
                limits: limits.clone(),
                max_batch_events: usize::MAX,
                reject_unknown_fields: true,
            };
            match judge_body(
                &letter.payload,
                letter.content_type.as_deref(),
                tenant,
                &rules,
                now_ms,
            ) {
                Err(e) => {
                    ReplayPlan::Skip(format!("{}: {}", e.rejection.reason, e.rejection.message))
                }
                Ok((_, judged)) => {
                    let mut events = Vec::new();
                    let mut still_rejected = Vec::new();
                    for j in judged {
                        match j.verdict {
                            Verdict::Accept(e) => events.push(e),
                            Verdict::Reject { rejection, .. } => still_rejected
                                .push(format!("{}: {}", rejection.reason, rejection.message)),
                        }
                    }
                    if events.is_empty() {
                        ReplayPlan::Skip(format!("still rejected: {}", still_rejected.join("; ")))
                    } else {
                        ReplayPlan::Events {
                            events,
                            still_rejected,
                        }
                    }
                }
            }
        }
        _ => {
            let key_tenant = letter
                .key
                .as_deref()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default();
            let raw = |event_id: Uuid, tenant: String| ReplayPlan::Raw {
                event_id,
                tenant,
                payload: letter.payload.clone(),
            };
            if letter.payload.is_empty() {
                return ReplayPlan::Skip("empty value (a tombstone)".into());
            }
            let codec = UsageCodec::usage_v1();
            match codec.decode(&letter.payload) {
                Ok(event) => match limits.check(&event, now_ms) {
                    Ok(()) => raw(event.event_id, event.tenant_id),
                    Err(_) if force => raw(event.event_id, event.tenant_id),
                    Err(e) => ReplayPlan::Skip(format!(
                        "still invalid ({}): {}",
                        e.code.as_str(),
                        e.message
                    )),
                },
                Err(_) if force => raw(Uuid::nil(), key_tenant),
                Err(e) => ReplayPlan::Skip(format!("still undecodable ({}): {e}", e.code())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_000_000;

    fn letter(source: &str, payload: Vec<u8>) -> DeadLetterRecord {
        DeadLetterRecord {
            partition: 0,
            offset: 7,
            key: Some(b"acme".to_vec()),
            size: payload.len(),
            payload,
            source: Some(source.into()),
            reason_code: Some("x".into()),
            reason: Some("x".into()),
            failed_at_ms: Some(NOW),
            tenant: Some("acme".into()),
            source_topic: None,
            source_partition: None,
            source_offset: None,
            content_type: None,
            truncated_from: None,
        }
    }

    fn event() -> UsageEvent {
        let mut e = UsageEvent::new(Uuid::new_v4(), NOW - 1000, "acme", "openai", "gpt-4o");
        e.input_tokens = 10;
        e.output_tokens = 1;
        e
    }

    #[test]
    fn avro_letters_replay_only_when_they_would_pass_now() {
        let codec = UsageCodec::usage_v1();
        let good = event();
        let bytes = codec.encode(&good).unwrap();
        let limits = ValidationLimits::default();
        assert_eq!(
            plan_replay(
                &letter(SOURCE_AGGREGATOR, bytes.clone()),
                &limits,
                false,
                NOW
            ),
            ReplayPlan::Raw {
                event_id: good.event_id,
                tenant: "acme".into(),
                payload: bytes.clone()
            }
        );
        let mut unknown = bytes.clone();
        unknown[1..5].copy_from_slice(&999u32.to_be_bytes());
        let l = letter(SOURCE_AGGREGATOR, unknown.clone());
        assert!(
            matches!(plan_replay(&l, &limits, false, NOW), ReplayPlan::Skip(s) if s.contains("unknown_schema_id"))
        );
        assert!(
            matches!(plan_replay(&l, &limits, true, NOW), ReplayPlan::Raw { payload, .. } if payload == unknown)
        );
        let mut neg = event();
        neg.input_tokens = -1;
        let l = letter(SOURCE_AGGREGATOR, codec.encode(&neg).unwrap());
        assert!(
            matches!(plan_replay(&l, &limits, false, NOW), ReplayPlan::Skip(s) if s.contains("negative_tokens"))
        );
        assert!(matches!(
            plan_replay(&letter(SOURCE_AGGREGATOR, vec![]), &limits, true, NOW),
            ReplayPlan::Skip(_)
        ));
    }

    #[test]
    fn json_letters_are_judged_again() {
        let limits = ValidationLimits::default();
        let good = event();
        let json = serde_json::to_vec(&good).unwrap();
        assert_eq!(
            plan_replay(
                &letter(SOURCE_HTTP_INGEST, json.clone()),
                &limits,
                false,
                NOW
            ),
            ReplayPlan::Events {
                events: vec![good.clone()],
                still_rejected: vec![]
            }
        );
        // A whole NDJSON body (e.g. refused as too large a batch) replays event by event.
        let mut body = json.clone();
        body.extend_from_slice(b"\nnot json\n");
        body.extend_from_slice(&json);
        let mut l = letter(SOURCE_HTTP_INGEST, body);
        l.content_type = Some("application/x-ndjson".into());
        match plan_replay(&l, &limits, false, NOW) {
            ReplayPlan::Events {
                events,
                still_rejected,
            } => {
                assert_eq!(events.len(), 2);
                assert_eq!(still_rejected.len(), 1);
                assert!(still_rejected[0].starts_with("invalid_json"));
            }
            other => panic!("{other:?}"),
        }
        let mut other_tenant = letter(SOURCE_HTTP_INGEST, json);
        other_tenant.tenant = Some("globex".into());
        assert!(matches!(
            plan_replay(&other_tenant, &limits, false, NOW),
            ReplayPlan::Skip(s) if s.contains("tenant_mismatch")
        ));
        let mut truncated = letter(SOURCE_HTTP_INGEST, b"{\"a\":".to_vec());
        truncated.truncated_from = Some(10 << 20);
        assert!(
            matches!(plan_replay(&truncated, &limits, false, NOW), ReplayPlan::Skip(s) if s.contains("first"))
        );
    }

    #[test]
    fn previews() {
        assert_eq!(preview(b"{\"a\":1}", 4), "\"{\\\"a\\\"\"…");
        assert_eq!(preview(&[0, 0, 0, 0, 1, 2], 32), "[00 00 00 00 01 02]");
        assert_eq!(preview(b"", 8), "[]");
    }
}
