//! The axum service: authentication, reading the body within its limit, then the pure
//! verdicts of [`judge_body`], then the emitter for accepted events and the dead-letter
//! producer for the rest. A request is answered once the broker acknowledged every
//! accepted event and every dead letter, so `accepted` means durably in Kafka.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::{Bytes, BytesMut};
use futures::future::join_all;
use futures::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use rdkafka::producer::Producer;
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tower_http::timeout::TimeoutLayer;
use uuid::Uuid;

use crate::dead_letters::{DeadLetterProducer, NewDeadLetter, SOURCE_HTTP_INGEST};
use crate::topics::{ensure_topics, TopicSpec};
use crate::{EmitError, Emitter, EmitterConfig};

use super::auth::ApiKeys;
use super::config::HttpIngestConfig;
use super::connections::{descriptor_limit, Waiting, Watched, RESERVED_DESCRIPTORS};
use super::event_status::{EventFate, EventStatusStore};
use super::openapi::{document, ErrorBody, EventResult, EventStatus, IngestResponse, ReadyBody};
use super::rate_limit::{parse_overrides, retry_after_seconds, Limit, RateLimits, Refusal};
use super::reason::{Reason, Rejection};
use super::telemetry::{FormatLabel, Metrics, StatusLabel};
use super::verdict::{judge_body, Rules, Verdict};

/// How long a new connection waits for the place of an evicted one before it is refused.
const EVICTION_WAIT: Duration = Duration::from_millis(200);

/// The running service's state.
pub struct IngestHttp {
    emitter: Emitter,
    dead_letters: DeadLetterProducer,
    keys: ApiKeys,
    rates: RateLimits,
    rules: Rules,
    max_body_bytes: usize,
    usage_topic: String,
    metrics: Metrics,
    connections: ConnectionLimits,
    statuses: EventStatusStore,
    status_slots: Arc<Semaphore>,
}

/// How connections and requests are bounded (see [`HttpIngestConfig`]).
#[derive(Debug, Clone)]
struct ConnectionLimits {
    header_read_timeout: Duration,
    request_timeout: Duration,
    idle_timeout: Duration,
    max_connections: usize,
    max_requests_per_connection: u32,
}

impl IngestHttp {
    /// Creates the producers (no broker round trip yet) and, when configured, registers the
    /// usage schema with the schema registry.
    pub async fn new(config: &HttpIngestConfig) -> anyhow::Result<Arc<IngestHttp>> {
        let keys = ApiKeys::parse(&config.api_keys)?;
        anyhow::ensure!(
            !keys.is_empty(),
            "no API key configured: set COSTPIPE_INGEST_API_KEYS to tenant:sha256hex pairs"
        );
        anyhow::ensure!(config.max_batch_events > 0, "max_batch_events must be > 0");
        anyhow::ensure!(
            config.max_connections > 0 && config.max_connections <= u32::MAX as usize,
            "max_connections must be between 1 and {}",
            u32::MAX
        );
        anyhow::ensure!(
            config.max_requests_per_connection > 0,
            "max_requests_per_connection must be > 0"
        );
        anyhow::ensure!(
            config.header_read_timeout_ms > 0 && config.request_timeout_ms > 0,
            "header_read_timeout_ms and request_timeout_ms must be > 0"
        );
        let rates = RateLimits::new(
            keys.tenants(),
            (config.rate_events_per_s, config.rate_bytes_per_s),
            &parse_overrides(&config.tenant_rates)?,
        );
        let rules = config.rules();
        let mut emitter_config = EmitterConfig::new(&config.kafka.brokers, &config.usage_topic);
        emitter_config.limits = rules.limits.clone();
        emitter_config.delivery_timeout_ms = config.delivery_timeout_ms;
        emitter_config.linger_ms = config.linger_ms;
        let mut emitter = Emitter::new(emitter_config)?;
        if let Some(url) = &config.schema_registry_url {
            emitter = emitter.use_schema_registry(url).await?;
            tracing::info!(
                schema_id = emitter.schema_id(),
                "usage schema registered with the schema registry"
            );
        }
        let dead_letters = DeadLetterProducer::new(
            &config.kafka.brokers,
            &config.dead_letter_topic,
            SOURCE_HTTP_INGEST,
            config.dead_letter_max_bytes,
            config.delivery_timeout_ms,
        )?;
        anyhow::ensure!(
            config.status_max_in_flight > 0,
            "status_max_in_flight must be > 0"
        );
        // Builds the client only; ClickHouse is first asked at the first lookup.
        let statuses =
            EventStatusStore::new(config.clickhouse.client()?, config.clickhouse.timeout());
        Ok(Arc::new(IngestHttp {
            statuses,
            status_slots: Arc::new(Semaphore::new(config.status_max_in_flight)),
            emitter,
            dead_letters,
            keys,
            rates,
            rules,
            max_body_bytes: config.max_body_bytes,
            usage_topic: config.usage_topic.clone(),
            metrics: Metrics::new(),
            connections: ConnectionLimits {
                header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
                request_timeout: Duration::from_millis(config.request_timeout_ms),
                idle_timeout: Duration::from_millis(config.idle_timeout_ms),
                max_connections: config.max_connections,
                max_requests_per_connection: config.max_requests_per_connection,
            },
        }))
    }

    /// The routes.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1/events", post(post_events))
            .route("/v1/events/{event_id}", get(get_event))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .route("/openapi.json", get(openapi_json))
            .layer(DefaultBodyLimit::disable())
            // The whole-request deadline: the handler (reading the body included) is
            // dropped and the client answered 408, counted and explained below.
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                self.connections.request_timeout,
            ))
            .layer(axum::middleware::map_response_with_state(
                self.clone(),
                count_timeouts,
            ))
            .with_state(self.clone())
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Waits for everything in flight (at shutdown).
    pub fn flush(&self, timeout: Duration) -> anyhow::Result<()> {
        self.emitter.flush(timeout)?;
        Ok(self.dead_letters.flush(timeout)?)
    }

    async fn ingest(&self, headers: &HeaderMap, body: Body) -> Response {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let Some(tenant) = self.keys.authenticate(authorization) else {
            self.metrics.unauthorized.inc();
            let mut resp = error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or unknown API key: send `Authorization: Bearer <key>`",
            );
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return resp;
        };
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let content_length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let now_ms = chrono::Utc::now().timestamp_millis();
        let encoding = match headers
            .get(header::CONTENT_ENCODING)
            .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("") | Some("identity") => None,
            Some("gzip") | Some("x-gzip") => Some(Encoding::Gzip),
            Some("zstd") => Some(Encoding::Zstd),
            Some(other) => {
                return error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_encoding",
                    &format!(
                    "Content-Encoding {other:?} is not supported: send gzip, zstd or no encoding"
                ),
                )
            }
        };
        let body = match read_limited(body, self.max_body_bytes, content_length).await {
            Ok(b) => b,
            Err(ReadError::TooLarge { prefix, received }) => {
                let message = format!(
                    "the body is {received} bytes or more; the limit is {} bytes",
                    self.max_body_bytes
                );
                return self
                    .body_too_large(&prefix, received, message, tenant, content_type, now_ms)
                    .await;
            }
            Err(ReadError::Io(e)) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "unreadable_body",
                    &format!("the body could not be read: {e}"),
                )
            }
        };
        let body = match encoding {
            None => body,
            Some(encoding) => match decompress_limited(encoding, &body, self.max_body_bytes) {
                Ok(b) => b,
                Err(DecompressError::TooLarge) => {
                    let message = format!(
                        "the {} body decompresses to more than {} bytes, the limit",
                        encoding.as_str(),
                        self.max_body_bytes
                    );
                    return self
                        .body_too_large(&body, body.len(), message, tenant, content_type, now_ms)
                        .await;
                }
                Err(DecompressError::Invalid(e)) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "unreadable_body",
                        &format!(
                            "the {} body could not be decompressed: {e}",
                            encoding.as_str()
                        ),
                    )
                }
            },
        };
        // Rate limits: bytes before the parse (it costs CPU), events once they are counted.
        // A refused request produces and dead-letters nothing.
        if let Err(refusal) = self.rates.take(tenant, Limit::Bytes, body.len()) {
            return self.rate_limited(tenant, refusal);
        }
        let judged = match judge_body(&body, content_type, tenant, &self.rules, now_ms) {
            Ok((format, judged)) => {
                if let Err(refusal) = self.rates.take(tenant, Limit::Events, judged.len()) {
                    return self.rate_limited(tenant, refusal);
                }
                self.metrics
                    .events_received
                    .get_or_create(&FormatLabel {
                        format: format.as_str().to_string(),
                    })
                    .inc_by(judged.len() as u64);
                judged
            }
            Err(refused) => {
                self.dead_letter_body(
                    &body,
                    None,
                    &refused.rejection,
                    tenant,
                    content_type,
                    now_ms,
                )
                .await;
                let status =
                    StatusCode::from_u16(refused.status).unwrap_or(StatusCode::BAD_REQUEST);
                return error(
                    status,
                    refused.rejection.reason.as_str(),
                    &refused.rejection.message,
                );
            }
        };

        let mut results: Vec<EventResult> = Vec::with_capacity(judged.len());
        let mut deliveries = Vec::new();
        let mut letters = Vec::new();
        for (index, j) in judged.into_iter().enumerate() {
            let (event_id, rejection) = match j.verdict {
                Verdict::Accept(event) => match self.emitter.enqueue(&event).await {
                    Ok(pending) => {
                        deliveries.push((index, pending.wait()));
                        results.push(result(
                            index,
                            EventStatus::Accepted,
                            Some(event.event_id),
                            None,
                        ));
                        continue;
                    }
                    // The emitter checks again; at a limit's edge the clock may have moved.
                    Err(EmitError::Invalid(e)) => (Some(event.event_id), Rejection::from(e)),
                    Err(e) => {
                        self.metrics.delivery_failures.inc();
                        tracing::warn!(error = %e, "event not produced");
                        results.push(result(
                            index,
                            EventStatus::Failed,
                            Some(event.event_id),
                            Some(("delivery_failed", e.to_string())),
                        ));
                        continue;
                    }
                },
                Verdict::Reject {
                    event_id,
                    rejection,
                } => (event_id, rejection),
            };
            let code = rejection.reason.as_str();
            self.metrics.rejected(code);
            letters.push((
                code,
                self.dead_letters.send(&NewDeadLetter {
                    payload: j.raw,
                    received_bytes: None,
                    reason_code: code,
                    reason: &rejection.message,
                    tenant: Some(tenant),
                    content_type: None,
                    failed_at_ms: now_ms,
                    ..NewDeadLetter::default()
                }),
            ));
            results.push(result(
                index,
                EventStatus::Rejected,
                event_id,
                Some((code, rejection.message)),
            ));
        }

        let (codes, letter_futures): (Vec<_>, Vec<_>) = letters.into_iter().unzip();
        let (indexes, delivery_futures): (Vec<_>, Vec<_>) = deliveries.into_iter().unzip();
        let (delivered, lettered) =
            futures::join!(join_all(delivery_futures), join_all(letter_futures));
        for (code, outcome) in codes.into_iter().zip(lettered) {
            match outcome {
                Ok(()) => self.metrics.dead_lettered(code),
                Err(e) => {
                    self.metrics.dead_letter_failures.inc();
                    tracing::error!(error = %e, reason = code, "dead letter lost");
                }
            }
        }
        let mut accepted = 0;
        for (index, outcome) in indexes.into_iter().zip(delivered) {
            match outcome {
                Ok(_) => accepted += 1,
                Err(e) => {
                    self.metrics.delivery_failures.inc();
                    tracing::warn!(error = %e, "event not acknowledged");
                    let r = &mut results[index];
                    r.status = EventStatus::Failed;
                    r.code = Some("delivery_failed".into());
                    r.message = Some(e.to_string());
                }
            }
        }
        self.metrics.events_accepted.inc_by(accepted as u64);
        let rejected = results
            .iter()
            .filter(|r| r.status == EventStatus::Rejected)
            .count();
        let failed = results.len() - accepted - rejected;
        // 503 tells generic clients to retry; a retry is safe because event ids dedupe.
        let status = if failed == 0 {
            StatusCode::ACCEPTED
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (
            status,
            Json(IngestResponse {
                results,
                accepted,
                rejected,
                failed,
            }),
        )
            .into_response()
    }

    /// Answers a request over its tenant's rate (429 with `Retry-After`), or larger than the
    /// rate allows in one request (413), and counts it. Nothing is dead-lettered: the client
    /// still holds the events and can send them again.
    fn rate_limited(&self, tenant: &str, refusal: Refusal) -> Response {
        let (limit, per_s, retry_after) = match refusal {
            Refusal::Later {
                limit,
                retry_after,
                per_s,
            } => (limit, per_s, Some(retry_after_seconds(retry_after))),
            Refusal::TooLarge { limit, per_s } => (limit, per_s, None),
        };
        self.metrics.rate_limited(tenant, limit.as_str());
        let unit = limit.as_str();
        match retry_after {
            Some(secs) => {
                let mut resp = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    &format!(
                        "tenant {tenant} is over its rate of {per_s} {unit}/s; retry after {secs} s \
                         with the same event ids"
                    ),
                );
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                resp
            }
            None => error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "over_rate_limit",
                &format!(
                    "the request holds more {unit} than tenant {tenant}'s rate of {per_s} {unit}/s \
                     allows at once: split it"
                ),
            ),
        }
    }

    /// Refuses a body over the limit (as sent, or once decompressed) with 413, dead-lettering
    /// what was read of it.
    async fn body_too_large(
        &self,
        body: &[u8],
        received: usize,
        message: String,
        tenant: &str,
        content_type: Option<&str>,
        now_ms: i64,
    ) -> Response {
        let rejection = Rejection::new(Reason::BodyTooLarge, message);
        self.dead_letter_body(
            body,
            Some(received),
            &rejection,
            tenant,
            content_type,
            now_ms,
        )
        .await;
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            rejection.reason.as_str(),
            &rejection.message,
        )
    }

    async fn dead_letter_body(
        &self,
        body: &[u8],
        received: Option<usize>,
        rejection: &Rejection,
        tenant: &str,
        content_type: Option<&str>,
        now_ms: i64,
    ) {
        let code = rejection.reason.as_str();
        self.metrics.rejected(code);
        let sent = self
            .dead_letters
            .send(&NewDeadLetter {
                payload: body,
                received_bytes: received,
                reason_code: code,
                reason: &rejection.message,
                tenant: Some(tenant),
                content_type,
                failed_at_ms: now_ms,
                ..NewDeadLetter::default()
            })
            .await;
        match sent {
            Ok(()) => self.metrics.dead_lettered(code),
            Err(e) => {
                self.metrics.dead_letter_failures.inc();
                tracing::error!(error = %e, reason = code, "dead letter lost");
            }
        }
    }
}

/// Turns the deadline's bare 408 into an error body, and counts it.
async fn count_timeouts(State(service): State<Arc<IngestHttp>>, resp: Response) -> Response {
    if resp.status() != StatusCode::REQUEST_TIMEOUT {
        return resp;
    }
    service.metrics.requests_timed_out.inc();
    service
        .metrics
        .requests
        .get_or_create(&StatusLabel { status: 408 })
        .inc();
    let mut resp = error(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        &format!(
            "the request was not complete and answered within {} ms",
            service.connections.request_timeout.as_millis()
        ),
    );
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn result(
    index: usize,
    status: EventStatus,
    event_id: Option<Uuid>,
    problem: Option<(&str, String)>,
) -> EventResult {
    let (code, message) = match problem {
        Some((c, m)) => (Some(c.to_string()), Some(m)),
        None => (None, None),
    };
    EventResult {
        index,
        status,
        event_id: event_id.map(|id| id.hyphenated().to_string()),
        code,
        message,
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(ErrorBody {
            error: code.to_string(),
            message: message.to_string(),
        }),
    )
        .into_response()
}

enum ReadError {
    /// Over the limit: the first bytes (up to the limit) and how many bytes were seen.
    TooLarge {
        prefix: Bytes,
        received: usize,
    },
    Io(axum::Error),
}

/// A supported `Content-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Gzip,
    Zstd,
}

impl Encoding {
    fn as_str(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Zstd => "zstd",
        }
    }
}

#[derive(Debug)]
enum DecompressError {
    TooLarge,
    Invalid(std::io::Error),
}

/// Decompresses a gzip (one or more members) or zstd (one or more frames) body into at most
/// `limit` bytes: the decoder is read through `take(limit + 1)`, so a bomb costs at most
/// `limit + 1` bytes of memory whatever it claims to inflate to.
fn decompress_limited(
    encoding: Encoding,
    compressed: &[u8],
    limit: usize,
) -> Result<Bytes, DecompressError> {
    use std::io::Read;
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).min(limit));
    let bound = (limit as u64).saturating_add(1);
    match encoding {
        Encoding::Gzip => flate2::read::MultiGzDecoder::new(compressed)
            .take(bound)
            .read_to_end(&mut out),
        Encoding::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(compressed)
                .map_err(DecompressError::Invalid)?;
            // A frame names its window size, and the decoder allocates it: no larger window
            // than the body limit needs, and at least 8 MiB (2^23), what streaming encoders
            // ask for up to level 19 whatever the input's size (a frame that asks for more
            // is refused as unreadable).
            let window_log = usize::BITS - limit.max(1).saturating_sub(1).leading_zeros();
            decoder
                .window_log_max(window_log.clamp(23, 27))
                .map_err(DecompressError::Invalid)?;
            decoder.take(bound).read_to_end(&mut out)
        }
    }
    .map_err(DecompressError::Invalid)?;
    if out.len() > limit {
        return Err(DecompressError::TooLarge);
    }
    Ok(Bytes::from(out))
}

/// Reads the body up to `limit` bytes. Past it, the rest is read and dropped (up to a
/// bound) so that the client, still sending, gets to read the 413 answer.
async fn read_limited(
    body: Body,
    limit: usize,
    content_length: Option<usize>,
) -> Result<Bytes, ReadError> {
    let drain_bound = limit.saturating_mul(4).max(64 << 20);
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::with_capacity(content_length.unwrap_or(0).min(limit));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ReadError::Io)?;
        if buf.len() + chunk.len() > limit {
            let room = limit - buf.len();
            buf.extend_from_slice(&chunk[..room]);
            let mut received = buf.len() + chunk.len() - room;
            while received <= drain_bound {
                match stream.next().await {
                    Some(Ok(c)) => received += c.len(),
                    _ => break,
                }
            }
            return Err(ReadError::TooLarge {
                prefix: buf.freeze(),
                received: received.max(content_length.unwrap_or(0)),
            });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Ingest usage events.
///
/// The body is one JSON event, a JSON array of events, or NDJSON (one event per line;
/// `Content-Type: application/x-ndjson`, or detected), optionally `Content-Encoding: gzip`
/// or `zstd` (decompressed within the body limit). Each tenant has a rate in events and
/// bytes per second; over it the request is refused whole with 429 and `Retry-After`. Each event is validated with the
/// shared rules and must belong to the API key's tenant. The answer lists each event's
/// result in request order; it is sent once the broker acknowledged every accepted event,
/// and every rejected one is on the dead-letter topic with its reason.
#[utoipa::path(
    post,
    path = "/v1/events",
    request_body(
        description = "One event, an array of events, or NDJSON",
        content(
            (super::openapi::EventsBody = "application/json"),
            (String = "application/x-ndjson"),
        ),
    ),
    responses(
        (status = 202, description = "Per-event results: accepted or rejected with a code", body = IngestResponse),
        (status = 400, description = "No event in the body, a JSON array whose structure is broken, or a body that cannot be read or decompressed (`empty_body`, `invalid_json`, `unreadable_body`)", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key (`unauthorized`)", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 408, description = "The whole request (body included) was not received and answered within the request deadline, COSTPIPE_INGEST_REQUEST_TIMEOUT_MS, default 30 s (`request_timeout`); the connection is closed. Connections are also bounded: headers within COSTPIPE_INGEST_HEADER_READ_TIMEOUT_MS (default 5 s from accept or from a later request's first byte, then closed without an answer), keep-alive connections idle for COSTPIPE_INGEST_IDLE_TIMEOUT_MS (default 60 s) closed, at most COSTPIPE_INGEST_MAX_CONNECTIONS open (default 10,000; more are closed at accept), at most COSTPIPE_INGEST_MAX_REQUESTS_PER_CONNECTION HTTP/2 streams (default 100), HTTP/2 pings at the idle timeout", body = ErrorBody,
            headers(("Connection" = String, description = "`close`"))),
        (status = 413, description = "Body over the size limit, COSTPIPE_INGEST_MAX_BODY_BYTES, default 8 MiB, as sent or once a gzip or zstd body is decompressed (`body_too_large`; a zip bomb is refused here, decompression stops at the limit); more events than the batch limit (`batch_too_large`); or more events or bytes in one request than the tenant's rate allows in a second (`over_rate_limit`: split the request)", body = ErrorBody),
        (status = 415, description = "A `Content-Encoding` other than `gzip`, `zstd` or `identity` (`unsupported_encoding`)", body = ErrorBody),
        (status = 429, description = "The tenant is over its rate (`rate_limited`): events per second (COSTPIPE_INGEST_RATE_EVENTS_PER_S, default 50,000) or decompressed body bytes per second (COSTPIPE_INGEST_RATE_BYTES_PER_S, default 64 MiB), per tenant overrides in COSTPIPE_INGEST_TENANT_RATES. Nothing of the request was produced or dead-lettered; send it again, with the same event ids, after `Retry-After`", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before the request can pass (whole seconds, at least 1)"))),
        (status = 503, description = "Some valid events were not acknowledged by the broker (`failed`); retry them with the same event_id", body = IngestResponse),
    ),
    security(("api_key" = [])),
)]
pub async fn post_events(
    State(service): State<Arc<IngestHttp>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let resp = service.ingest(&headers, body).await;
    service
        .metrics
        .requests
        .get_or_create(&StatusLabel {
            status: resp.status().as_u16(),
        })
        .inc();
    service
        .metrics
        .request_seconds
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// What became of an event.
///
/// Answered from ClickHouse, where the aggregator stores what it did with each event id, for
/// the API key's tenant only: `priced` (with the cost), `duplicate` (an exact copy of a priced
/// event, dropped), `conflict` (the same id with other content, dead-lettered with the
/// reason), `dead_lettered` (for another reason). `status` is the fate of the latest copy;
/// `copies` lists them all. An id the aggregator has not stored anything about for this
/// tenant, yet (it answers within seconds of `accepted`) or at all, is 404 `not_seen`,
/// whether or not another tenant has it.
#[utoipa::path(
    get,
    path = "/v1/events/{event_id}",
    params(("event_id" = String, Path, description = "The event's id (UUID)")),
    responses(
        (status = 200, description = "The event's fate", body = EventFate),
        (status = 400, description = "The id is not a UUID (`invalid_event_id`)", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key (`unauthorized`)", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 404, description = "Not seen (yet) for this tenant: `status` is `not_seen`", body = EventFate),
        (status = 408, description = "Not answered within the request deadline (`request_timeout`)", body = ErrorBody),
        (status = 429, description = "Too many lookups in flight, COSTPIPE_INGEST_STATUS_MAX_IN_FLIGHT (`too_many_lookups`)", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "ClickHouse did not answer (`store_unavailable`)", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub async fn get_event(
    State(service): State<Arc<IngestHttp>>,
    Path(event_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(tenant) = service.keys.authenticate(authorization) else {
        service.metrics.unauthorized.inc();
        let mut resp = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or unknown API key: send `Authorization: Bearer <key>`",
        );
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    };
    let Ok(id) = Uuid::try_parse(&event_id) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_event_id",
            "the event id is not a UUID",
        );
    };
    // Each lookup costs ClickHouse two point reads; bound how many run at once.
    let Ok(_slot) = service.status_slots.clone().try_acquire_owned() else {
        let mut resp = error(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_lookups",
            "too many event lookups in flight; retry after 1 s",
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return resp;
    };
    match service.statuses.fate(tenant, id).await {
        Ok(fate) if fate.copies.is_empty() => (StatusCode::NOT_FOUND, Json(fate)).into_response(),
        Ok(fate) => Json(fate).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "event lookup failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                &format!("the event store did not answer: {e}"),
            )
        }
    }
}

/// Liveness: the process serves requests.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "Alive", body = String)))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the broker answers a metadata request and knows the usage topic.
#[utoipa::path(
    get,
    path = "/readyz",
    responses(
        (status = 200, description = "Ready", body = ReadyBody),
        (status = 503, description = "The broker is unreachable or the usage topic is missing", body = ReadyBody),
    ),
)]
pub async fn readyz(State(service): State<Arc<IngestHttp>>) -> Response {
    let producer = service.dead_letters.producer().clone();
    let topic = service.usage_topic.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let metadata = producer
            .client()
            .fetch_metadata(None, Duration::from_secs(2))
            .map_err(|e| format!("broker unreachable: {e}"))?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        if partitions == 0 {
            return Err(format!("usage topic {topic} does not exist"));
        }
        Ok(format!(
            "broker reachable, {topic} has {partitions} partitions"
        ))
    })
    .await
    .unwrap_or_else(|e| Err(format!("readiness check failed: {e}")));
    let (status, ready, message) = match checked {
        Ok(m) => (StatusCode::OK, true, m),
        Err(m) => (StatusCode::SERVICE_UNAVAILABLE, false, m),
    };
    (status, Json(ReadyBody { ready, message })).into_response()
}

/// Prometheus metrics (text exposition).
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Metrics", body = String, content_type = "text/plain")))]
pub async fn metrics(State(service): State<Arc<IngestHttp>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        service.metrics.encode(),
    )
        .into_response()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "The OpenAPI document", body = Object)))]
pub async fn openapi_json() -> Response {
    Json(document()).into_response()
}

/// Creates missing topics when configured to.
pub async fn prepare_topics(config: &HttpIngestConfig) -> anyhow::Result<()> {
    if config.create_topics_partitions > 0 {
        ensure_topics(
            &config.kafka.brokers,
            &[
                TopicSpec {
                    name: config.usage_topic.clone(),
                    partitions: config.create_topics_partitions,
                    compacted: false,
                },
                TopicSpec {
                    name: config.dead_letter_topic.clone(),
                    partitions: 1,
                    compacted: false,
                },
            ],
        )
        .await?;
    }
    Ok(())
}

/// Serves `service` on `listener` until `shutdown` resolves, then waits for what is in flight.
///
/// Connections are served by hyper directly (not `axum::serve`) so that they are bounded:
/// at most `max_connections` open (lowered to fit the descriptor limit; at the cap the
/// connection waiting longest for a request makes room, else the new one is closed at
/// accept), headers within the header-read timeout, idle keep-alive within the idle timeout
/// (both run per connection, see [`super::connections`]), at most
/// `max_requests_per_connection` HTTP/2 streams, and HTTP/2 pings at the idle timeout.
pub async fn serve(
    service: Arc<IngestHttp>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let limits = service.connections.clone();
    let router = service.router();
    let mut builder = Builder::new(TokioExecutor::new());
    // hyper's own header-read timer is off: it would also close idle keep-alive
    // connections at the header-read timeout. Each connection's task runs both timers
    // (`Connection::expired`).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(!limits.idle_timeout.is_zero());
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_requests_per_connection);
    if !limits.idle_timeout.is_zero() {
        builder
            .http2()
            .keep_alive_interval(limits.idle_timeout)
            .keep_alive_timeout(limits.idle_timeout);
    }
    let builder = Arc::new(builder);
    // Keep the cap below the descriptor limit, so that accept never fails for lack of
    // descriptors (it would leave new clients queued in the backlog behind stalled ones).
    let max_connections = match descriptor_limit() {
        Some(n) if n.saturating_sub(RESERVED_DESCRIPTORS) < limits.max_connections => {
            let capped = n.saturating_sub(RESERVED_DESCRIPTORS).max(1);
            tracing::warn!(
                descriptor_limit = n,
                max_connections = capped,
                configured = limits.max_connections,
                "connection cap lowered to fit the descriptor limit"
            );
            capped
        }
        _ => limits.max_connections,
    };
    let permits = Arc::new(Semaphore::new(max_connections));
    let waiting = Arc::new(Waiting::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors and the like: let some connections close.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            // At the cap: close the connection that has waited longest for a request
            // (stalled headers, idle keep-alive) and take its place once it is gone.
            Err(_) if waiting.evict_oldest() => {
                service.metrics.connection_refused("evicted_waiting");
                match tokio::time::timeout(EVICTION_WAIT, permits.clone().acquire_owned()).await {
                    Ok(Ok(permit)) => permit,
                    _ => {
                        service.metrics.connection_refused("max_connections");
                        drop(stream);
                        continue;
                    }
                }
            }
            Err(_) => {
                service.metrics.connection_refused("max_connections");
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let (header_read, idle) = (limits.header_read_timeout, limits.idle_timeout);
        let connection = waiting.open();
        let hyper_service = TowerToHyperService::new(tower::service_fn({
            let router = router.clone();
            let connection = connection.clone();
            move |req: axum::http::Request<hyper::body::Incoming>| {
                let busy = connection.request();
                let router = router.clone();
                async move {
                    let resp = router.oneshot(req).await;
                    drop(busy);
                    resp
                }
            }
        }));
        let mut stop = stop_rx.clone();
        let service = service.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let evict = connection.evict.clone();
            let watched = Watched::new(stream, connection.clone());
            let conn = builder
                .serve_connection(TokioIo::new(watched), hyper_service)
                .into_owned();
            tokio::pin!(conn);
            let outcome = tokio::select! {
                outcome = conn.as_mut() => outcome,
                // Dropping the connection closes the socket at once.
                _ = evict.notified() => return,
                timer = connection.expired(header_read, idle) => {
                    service.metrics.connection_refused(timer.as_str());
                    return;
                }
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = outcome {
                if e.downcast_ref::<hyper::Error>()
                    .is_some_and(|e| e.is_timeout())
                {
                    service.metrics.connection_refused("header_read_timeout");
                } else {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a permit until it is done.
    let _ = permits.acquire_many(max_connections as u32).await;
    let s = service.clone();
    tokio::task::spawn_blocking(move || s.flush(Duration::from_secs(30))).await??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::auth::hash_key;
    use axum::http::Request;
    use tower::ServiceExt;

    /// A service whose broker does not exist: enough for everything before production.
    async fn service() -> Arc<IngestHttp> {
        let mut c = HttpIngestConfig::new(
            "127.0.0.1:1",
            "u",
            "d",
            format!("acme:{}", hash_key("acme-key")),
        );
        c.delivery_timeout_ms = 1000;
        IngestHttp::new(&c).await.unwrap()
    }

    async fn call(req: Request<Body>) -> (StatusCode, serde_json::Value) {
        let resp = service().await.router().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn no_or_unknown_key_is_401() {
        for auth in [None, Some("Bearer nope"), Some("Basic acme-key")] {
            let mut req = Request::post("/v1/events");
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let (status, body) = call(req.body(Body::from("{}")).unwrap()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
            assert_eq!(body["error"], "unauthorized");
        }
    }

    #[tokio::test]
    async fn whole_body_refusals_carry_an_error_body() {
        let post = |body: Body| {
            Request::post("/v1/events")
                .header("authorization", "Bearer acme-key")
                .body(body)
                .unwrap()
        };
        let (status, body) = call(post(Body::from("[{}, {}"))).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_json"))
        );
        let (status, body) = call(post(Body::from(" "))).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("empty_body"))
        );
        let big = vec![b' '; (8 << 20) + 1];
        let (status, body) = call(post(Body::from(big))).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large"))
        );
        let many = format!("[{}]", vec!["{}"; 10_001].join(","));
        let (status, body) = call(post(Body::from(many))).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, Some("batch_too_large"))
        );
    }

    #[tokio::test]
    async fn health_and_openapi_are_served() {
        let (status, _) = call(Request::get("/healthz").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        let (status, doc) = call(Request::get("/openapi.json").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert!(doc["paths"]["/v1/events"]["post"].is_object());
        let (status, body) = call(Request::get("/readyz").body(Body::empty()).unwrap()).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "no broker at 127.0.0.1:1"
        );
        assert_eq!(body["ready"], false);
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[tokio::test]
    async fn gzip_is_decoded_within_the_limit_and_other_encodings_refused() {
        let post = |body: Vec<u8>, encoding: &str| {
            Request::post("/v1/events")
                .header("authorization", "Bearer acme-key")
                .header("content-encoding", encoding)
                .body(Body::from(body))
                .unwrap()
        };
        // Decoded: the broken array inside is seen as such.
        let (status, body) = call(post(gzip(b"[{}, {}"), "gzip")).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_json"))
        );
        // A bomb: 9 MB of spaces in a few KB.
        let bomb = gzip(&vec![b' '; 9 << 20]);
        assert!(bomb.len() < 100_000);
        let (status, body) = call(post(bomb, "gzip")).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large"))
        );
        assert!(body["message"].as_str().unwrap().contains("decompresses"));
        let (status, body) = call(post(b"not gzip".to_vec(), "gzip")).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("unreadable_body"))
        );
        for encoding in ["br", "deflate", "gzip, zstd"] {
            let (status, body) = call(post(b"{}".to_vec(), encoding)).await;
            assert_eq!(
                (status, body["error"].as_str()),
                (
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    Some("unsupported_encoding")
                ),
                "{encoding}"
            );
        }
        assert!(
            matches!(decompress_limited(Encoding::Gzip, &gzip(b"abc"), 3), Ok(b) if b == "abc")
        );
        assert!(matches!(
            decompress_limited(Encoding::Gzip, &gzip(b"abcd"), 3),
            Err(DecompressError::TooLarge)
        ));
    }

    #[tokio::test]
    async fn zstd_is_decoded_within_the_limit() {
        let post = |body: Vec<u8>| {
            Request::post("/v1/events")
                .header("authorization", "Bearer acme-key")
                .header("content-encoding", "zstd")
                .body(Body::from(body))
                .unwrap()
        };
        let (status, body) = call(post(zstd::encode_all(&b"[{}, {}"[..], 3).unwrap())).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_json"))
        );
        // A bomb: 9 MB of spaces in a few hundred bytes.
        let bomb = zstd::encode_all(&vec![b' '; 9 << 20][..], 19).unwrap();
        assert!(bomb.len() < 100_000);
        let (status, body) = call(post(bomb)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large"))
        );
        assert!(body["message"].as_str().unwrap().contains("zstd"));
        let (status, body) = call(post(b"not zstd".to_vec())).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("unreadable_body"))
        );
        let z = |data: &[u8]| zstd::encode_all(data, 3).unwrap();
        assert!(matches!(decompress_limited(Encoding::Zstd, &z(b"abc"), 3), Ok(b) if b == "abc"));
        assert!(matches!(
            decompress_limited(Encoding::Zstd, &z(b"abcd"), 3),
            Err(DecompressError::TooLarge)
        ));
        // Two frames back to back are one body, as with gzip members.
        let mut two = z(b"ab");
        two.extend(z(b"cd"));
        assert!(matches!(decompress_limited(Encoding::Zstd, &two, 10), Ok(b) if b == "abcd"));
    }

    #[tokio::test]
    async fn read_limited_keeps_the_prefix_and_counts_the_rest() {
        let body = Body::from(vec![b'x'; 100]);
        match read_limited(body, 10, None).await {
            Err(ReadError::TooLarge { prefix, received }) => {
                assert_eq!(prefix.len(), 10);
                assert_eq!(received, 100);
            }
            _ => panic!("over the limit"),
        }
        let ok = read_limited(Body::from("abc"), 3, Some(3)).await;
        assert!(matches!(ok, Ok(b) if b == "abc"));
    }
}
