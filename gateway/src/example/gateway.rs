//! The example gateway: an OpenAI-compatible `POST /v1/chat/completions` that asks the
//! budget client before forwarding to the provider. Per decision: BLOCK answers 429 with
//! `Retry-After` and a JSON reason; THROTTLE forwards at most the budget's rate per minute
//! (429 beyond it); DOWNGRADE rewrites the model; every admitted call first reserves its
//! worst case (unless `--reservations false`), and after it the gateway settles the actual
//! cost, puts it in `x-costpipe-response-cost`, and emits one usage event with the emitter,
//! counting tokens itself (event label `costpipe_usage=estimated`) when the provider
//! reported none. The caller is named by `x-costpipe-*` headers (authentication is out of
//! scope for an example). `GET /v1/decision` answers what `decide()` says for a context.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{json, Value};

use costpipe_ingest::builder::UsageEventBuilder;
use costpipe_ingest::Emitter;
use costpipe_pricing::Catalog;
use costpipe_schemas::ValidationLimits;

use crate::core::decision::Action;
use crate::core::estimate::{self, Caller, Usage};
use crate::core::reserve::{Ledger, LedgerConfig, Reservation};
use crate::core::staleness::StalePolicy;
use crate::core::state::RequestContext;
use crate::core::throttle::Throttle;
use crate::core::tokens::Counter;
use crate::example::openai;
use crate::example::telemetry::Metrics;
use crate::follower::Follower;

/// Example gateway settings (the Kafka brokers and the catalog are flattened in by the
/// binary).
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayConfig {
    /// Listen address.
    #[arg(long, env = "COSTPIPE_GATEWAY_ADDR", default_value = "127.0.0.1:8095")]
    pub addr: SocketAddr,
    /// Provider base URL (`/v1/chat/completions` is appended).
    #[arg(
        long,
        env = "COSTPIPE_GATEWAY_UPSTREAM_URL",
        default_value = "http://127.0.0.1:8096"
    )]
    pub upstream_url: String,
    /// Whole-call timeout towards the provider, in milliseconds.
    #[arg(
        long,
        env = "COSTPIPE_GATEWAY_UPSTREAM_TIMEOUT_MS",
        default_value_t = 120_000
    )]
    pub upstream_timeout_ms: u64,
    /// Connect timeout towards the provider, in milliseconds.
    #[arg(
        long,
        env = "COSTPIPE_GATEWAY_UPSTREAM_CONNECT_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub upstream_connect_timeout_ms: u64,
    /// Control topic to follow.
    #[arg(
        long,
        env = "COSTPIPE_CONTROL_TOPIC",
        default_value = "costpipe.control.v1"
    )]
    pub control_topic: String,
    /// Longest wait the broker may hold the control follower's fetch when there is no new
    /// record (librdkafka's `fetch.wait.max.ms`), in milliseconds. Kafka answers as soon as
    /// a record arrives; tansu only at points of a polling loop that follows this wait.
    #[arg(
        long,
        env = "COSTPIPE_GATEWAY_CONTROL_FETCH_WAIT_MS",
        default_value_t = crate::follower::DEFAULT_FETCH_WAIT_MAX_MS
    )]
    pub control_fetch_wait_ms: u32,
    /// Usage topic the usage events go to.
    #[arg(
        long,
        env = "COSTPIPE_USAGE_TOPIC",
        default_value = "costpipe.usage.v1"
    )]
    pub usage_topic: String,
    /// Hold each call's worst case before forwarding it (`false`: decide() only).
    #[arg(long, env = "COSTPIPE_GATEWAY_RESERVATIONS", default_value_t = true, action = clap::ArgAction::Set)]
    pub reservations: bool,
    /// This instance's share of each budget's headroom, e.g. 0.25 for four instances.
    #[arg(long, env = "COSTPIPE_GATEWAY_SHARE", default_value = "1")]
    pub share: Decimal,
    /// How long after a call settles the aggregator's records are assumed to include it, ms.
    #[arg(
        long,
        env = "COSTPIPE_GATEWAY_SETTLED_LAG_MS",
        default_value_t = 10_000
    )]
    pub settled_lag_ms: i64,
    /// max_tokens set on requests that give none (the worst case needs a bound).
    #[arg(
        long,
        env = "COSTPIPE_GATEWAY_DEFAULT_MAX_TOKENS",
        default_value_t = 4_096
    )]
    pub default_max_tokens: u64,
    /// The control view is stale when not caught up for this long, in milliseconds.
    #[arg(long, env = "COSTPIPE_GATEWAY_MAX_STALE_MS", default_value_t = 30_000)]
    pub max_stale_ms: i64,
    /// What to do with requests while the view is stale: open (decide from it) or closed
    /// (answer 503).
    #[arg(long, env = "COSTPIPE_GATEWAY_STALE_POLICY", value_enum, default_value_t = StalePolicy::Open)]
    pub stale_policy: StalePolicy,
    /// Largest request body, in bytes.
    #[arg(long, env = "COSTPIPE_GATEWAY_MAX_BODY_BYTES", default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
}

/// Everything a request handler shares.
pub struct App {
    pub cfg: GatewayConfig,
    pub follower: Follower,
    pub catalog: Arc<Catalog>,
    pub ledger: Mutex<Ledger>,
    pub throttle: Mutex<Throttle>,
    pub emitter: Emitter,
    pub http: reqwest::Client,
    pub metrics: Metrics,
}

impl App {
    /// The shared state; `cfg.share` must lie in (0, 1].
    pub fn new(
        cfg: GatewayConfig,
        follower: Follower,
        catalog: Catalog,
        emitter: Emitter,
    ) -> anyhow::Result<App> {
        anyhow::ensure!(
            cfg.share > Decimal::ZERO && cfg.share <= Decimal::ONE,
            "COSTPIPE_GATEWAY_SHARE must lie in (0, 1], got {}",
            cfg.share
        );
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.upstream_timeout_ms))
            .connect_timeout(Duration::from_millis(cfg.upstream_connect_timeout_ms))
            .build()?;
        let ledger = Ledger::new(LedgerConfig {
            share: cfg.share,
            settled_lag_ms: cfg.settled_lag_ms,
        });
        Ok(App {
            cfg,
            follower,
            catalog: Arc::new(catalog),
            ledger: Mutex::new(ledger),
            throttle: Mutex::new(Throttle::default()),
            emitter,
            http,
            metrics: Metrics::new(),
        })
    }

    /// An error answer, counted by its error code.
    fn refuse(&self, status: StatusCode, retry_after_ms: Option<u64>, body: Value) -> Response {
        self.metrics
            .refused(body["error"].as_str().unwrap_or("unknown"));
        refuse(status, retry_after_ms, body)
    }
}

/// The gateway's router.
pub fn router(app: Arc<App>) -> Router {
    let limit = app.cfg.max_body_bytes;
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/decision", get(decision))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|State(app): State<Arc<App>>| async move { app.metrics.encode() }),
        )
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            count_requests,
        ))
        .with_state(app)
}

/// Counts every answer by route template (not the path: bounded labels) and status, with
/// its latency to the response head.
async fn count_requests(
    State(app): State<Arc<App>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    app.metrics.answered(
        &route,
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    resp
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    let fresh = app.follower.freshness.lock().map(|f| f.at(now_ms())).ok();
    let body = json!({
        "ready": app.follower.is_ready(),
        "budgets": app.follower.table.read().map(|t| t.len()).unwrap_or(0),
        "since_caught_up_ms": fresh.and_then(|f| f.since_caught_up_ms),
        "since_last_record_ms": fresh.and_then(|f| f.since_last_record_ms),
    });
    let status = if app.follower.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Owned request context (the core borrows from it).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Who {
    pub tenant: String,
    pub department: Option<String>,
    pub user: Option<String>,
    pub project: Option<String>,
    pub feature: Option<String>,
    pub api_key: Option<String>,
    /// The caller's model name (resolved through the catalog).
    pub model: Option<String>,
}

impl Who {
    fn from_headers(h: &HeaderMap) -> Option<Who> {
        let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Some(Who {
            tenant: get("x-costpipe-tenant").filter(|t| !t.is_empty())?,
            department: get("x-costpipe-department"),
            user: get("x-costpipe-user"),
            project: get("x-costpipe-project"),
            feature: get("x-costpipe-feature"),
            api_key: get("x-costpipe-api-key-id"),
            model: None,
        })
    }

    fn ctx<'a>(&'a self, catalog_model: Option<&'a str>) -> RequestContext<'a> {
        RequestContext {
            tenant: &self.tenant,
            department: self.department.as_deref(),
            user: self.user.as_deref(),
            project: self.project.as_deref(),
            model: catalog_model,
            feature: self.feature.as_deref(),
            api_key: self.api_key.as_deref(),
        }
    }
}

fn refuse(status: StatusCode, retry_after_ms: Option<u64>, body: Value) -> Response {
    let mut r = (status, Json(body)).into_response();
    if let Some(ms) = retry_after_ms {
        let secs = ms.div_ceil(1000).max(1);
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert("retry-after", v);
        }
    }
    r
}

/// Whether the view is too stale to use, under the configured policy.
fn stale_refusal(app: &App) -> Option<Response> {
    let stale = app
        .follower
        .freshness
        .lock()
        .map(|f| f.is_stale(now_ms(), app.cfg.max_stale_ms))
        .unwrap_or(true);
    (stale && app.cfg.stale_policy == StalePolicy::Closed).then(|| {
        app.refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(1000),
            json!({"error": "control_view_stale", "message": "the budget view is older than COSTPIPE_GATEWAY_MAX_STALE_MS and the policy is closed"}),
        )
    })
}

async fn decision(State(app): State<Arc<App>>, Query(who): Query<Who>) -> Response {
    let model = who
        .model
        .as_deref()
        .and_then(|m| estimate::catalog_model(&app.catalog, m))
        .cloned();
    let ctx = who.ctx(model.as_deref());
    let d = match app.follower.table.read() {
        Ok(t) => t.decide(&ctx, now_ms()),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let mut body = json!({
        "action": d.action.as_str(),
        "budget_id": d.budget_id.as_deref(),
        "reason": d.reason.as_deref(),
    });
    match d.action {
        Action::Throttle {
            requests_per_minute,
        } => body["requests_per_minute"] = json!(requests_per_minute),
        Action::Downgrade { model } => body["model"] = json!(&*model),
        Action::Block { retry_after_ms } => body["retry_after_ms"] = json!(retry_after_ms),
        Action::Allow => {}
    }
    Json(body).into_response()
}

/// What the call settles and emits once it ends.
struct Pending {
    app: Arc<App>,
    who: Who,
    /// The model actually called (after a downgrade).
    model: String,
    provider: String,
    request_id: String,
    prompt_tokens: u64,
    reservation: Option<Reservation>,
}

impl Pending {
    /// Settles the reservation and emits the usage event; the call's cost, if it could be
    /// priced. `usage` is the provider's; without it the tokens are counted from `text`.
    fn finish(mut self, usage: Option<Usage>, text: &str) -> Option<estimate::Cost> {
        let estimated = usage.is_none();
        let usage = usage.unwrap_or_else(|| Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: Counter::for_model(&self.model).count(text),
            ..Usage::default()
        });
        let at = now_ms();
        let caller = Caller {
            tenant: &self.who.tenant,
            department: self.who.department.as_deref(),
        };
        let cost = estimate::actual(&self.app.catalog, caller, &self.model, usage, at).ok();
        if let Some(r) = self.reservation.take() {
            if let Ok(mut ledger) = self.app.ledger.lock() {
                match &cost {
                    Some(c) => ledger.settle(r, c, &self.app.catalog, at),
                    // Unpriced after the fact: keep the worst case counted (never less).
                    None => {
                        tracing::warn!(
                            model = self.model,
                            "call could not be priced; settled at its worst case"
                        );
                        ledger.settle_as_held(r, at);
                    }
                }
            }
        }
        self.emit(usage, estimated, at);
        cost
    }

    fn emit(&self, usage: Usage, estimated: bool, at: i64) {
        let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let cached = usage.cached_prompt_tokens.min(usage.prompt_tokens);
        let mut b = UsageEventBuilder::new(&self.who.tenant, &self.provider, &self.model)
            .event_time_ms(at)
            .input_tokens(to_i64(usage.prompt_tokens - cached))
            .cached_input_tokens(to_i64(cached))
            .output_tokens(to_i64(usage.completion_tokens))
            .reasoning_tokens(to_i64(usage.reasoning_tokens.min(usage.completion_tokens)))
            .request_id(self.request_id.clone())
            .event_id(estimate::usage_event_id(&self.who.tenant, &self.request_id));
        if let Some(v) = &self.who.department {
            b = b.department(v.clone());
        }
        if let Some(v) = &self.who.user {
            b = b.user_id(v.clone());
        }
        if let Some(v) = &self.who.project {
            b = b.project_id(v.clone());
        }
        if let Some(v) = &self.who.feature {
            b = b.feature(v.clone());
        }
        if estimated {
            b = b.label("costpipe_usage", "estimated");
        }
        let event = match b.build(&ValidationLimits::default()) {
            Ok(e) => e,
            Err(error) => {
                tracing::warn!(error = %error, "usage event invalid; not emitted");
                self.app.metrics.usage_event_failures.inc();
                return;
            }
        };
        self.app.metrics.emitted(estimated);
        let app = self.app.clone();
        tokio::spawn(async move {
            let result = match app.emitter.enqueue(&event).await {
                Ok(pending) => pending.wait().await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(error) = result {
                app.metrics.usage_event_failures.inc();
                tracing::warn!(error = %error, event_id = %event.event_id, "usage event not delivered");
            }
        });
    }
}

impl Drop for Pending {
    /// A call dropped before it finished (the client went away while the provider was being
    /// called) may have reached the provider: its worst case stays counted, never released.
    fn drop(&mut self) {
        if let Some(r) = self.reservation.take() {
            if let Ok(mut ledger) = self.app.ledger.lock() {
                ledger.settle_as_held(r, now_ms());
            }
        }
    }
}

/// Finishes a call whose stream was dropped (client gone) before it ended.
struct StreamGuard {
    pending: Option<Pending>,
    reader: openai::StreamReader,
}

impl StreamGuard {
    /// The call, with the provider's response id once the stream showed it.
    fn take(&mut self) -> Option<Pending> {
        let mut p = self.pending.take()?;
        if let Some(id) = self.reader.id.clone() {
            p.request_id = id;
        }
        Some(p)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Some(p) = self.take() {
            p.finish(self.reader.usage, &self.reader.text);
        }
    }
}

fn cost_headers(r: &mut Response, cost: Option<&estimate::Cost>) {
    if let Some(c) = cost {
        if let (Ok(a), Ok(cur)) = (
            HeaderValue::from_str(&c.amount.normalize().to_string()),
            HeaderValue::from_str(&c.currency),
        ) {
            r.headers_mut().insert("x-costpipe-response-cost", a);
            r.headers_mut()
                .insert("x-costpipe-response-cost-currency", cur);
        }
    }
}

async fn chat(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(who) = Who::from_headers(&headers) else {
        return app.refuse(
            StatusCode::BAD_REQUEST,
            None,
            json!({"error": "missing_tenant", "message": "x-costpipe-tenant is required"}),
        );
    };
    let Ok(mut body) = serde_json::from_slice::<Value>(&body) else {
        return app.refuse(
            StatusCode::BAD_REQUEST,
            None,
            json!({"error": "invalid_json"}),
        );
    };
    let Some(asked) = body.get("model").and_then(Value::as_str).map(str::to_owned) else {
        return app.refuse(
            StatusCode::BAD_REQUEST,
            None,
            json!({"error": "missing_model"}),
        );
    };
    if let Some(r) = stale_refusal(&app) {
        return r;
    }
    let Some(catalog_model) = estimate::catalog_model(&app.catalog, &asked).cloned() else {
        return app.refuse(
            StatusCode::BAD_REQUEST,
            None,
            json!({"error": "unknown_model", "message": format!("{asked:?} is not in the price catalog")}),
        );
    };
    let now = now_ms();
    let decision = match app.follower.table.read() {
        Ok(t) => t.decide(&who.ctx(Some(&catalog_model)), now),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    app.metrics.decided(decision.action.as_str());
    let budget = decision.budget_id.as_deref().unwrap_or("").to_owned();
    let reason = decision.reason.as_deref().unwrap_or("").to_owned();
    let mut model = catalog_model.clone();
    match &decision.action {
        Action::Block { retry_after_ms } => {
            return app.refuse(
                StatusCode::TOO_MANY_REQUESTS,
                Some(*retry_after_ms),
                json!({
                    "error": "budget_exceeded", "budget_id": budget, "reason": reason, "retry_after_ms": retry_after_ms,
                }),
            );
        }
        Action::Throttle {
            requests_per_minute,
        } => {
            let id = decision.budget_id.clone().unwrap_or_else(|| "".into());
            let admitted = app
                .throttle
                .lock()
                .map(|mut t| t.admit(&id, *requests_per_minute, now));
            if let Ok(Err(wait)) = admitted {
                return app.refuse(
                    StatusCode::TOO_MANY_REQUESTS,
                    Some(wait),
                    json!({
                        "error": "budget_throttled", "budget_id": budget, "reason": reason,
                        "requests_per_minute": requests_per_minute, "retry_after_ms": wait,
                    }),
                );
            }
        }
        Action::Downgrade { model: to } => {
            model = to.clone();
            body["model"] = json!(&**to);
        }
        Action::Allow => {}
    }
    let max_tokens = match openai::max_tokens(&body) {
        Some(n) => n,
        None => {
            body["max_tokens"] = json!(app.cfg.default_max_tokens);
            app.cfg.default_max_tokens
        }
    };
    let msgs = openai::messages(&body);
    let prompt_tokens =
        Counter::for_model(&model).count_chat(msgs.iter().map(|(r, c)| (r.as_str(), c.as_str())));
    let caller = Caller {
        tenant: &who.tenant,
        department: who.department.as_deref(),
    };
    let reservation = if app.cfg.reservations {
        let worst = match estimate::worst_case(
            &app.catalog,
            caller,
            &model,
            prompt_tokens,
            max_tokens,
            now,
        ) {
            Ok(w) => w,
            Err(e) => {
                return app.refuse(
                    StatusCode::BAD_REQUEST,
                    None,
                    json!({"error": "cannot_estimate", "message": e.to_string()}),
                )
            }
        };
        let reserved = match (app.follower.table.read(), app.ledger.lock()) {
            (Ok(t), Ok(mut l)) => l.reserve(&t, &who.ctx(Some(&model)), &worst, &app.catalog, now),
            _ => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        };
        match reserved {
            Ok(r) => Some(r),
            Err(denied) => {
                return app.refuse(
                    StatusCode::TOO_MANY_REQUESTS,
                    Some(1000),
                    json!({
                        "error": "budget_reservation_denied", "message": denied.to_string(),
                    }),
                );
            }
        }
    } else {
        None
    };
    let provider = app
        .catalog
        .lookup(&model)
        .map_or_else(|| "unknown".to_owned(), |m| m.provider.clone());
    let pending = Pending {
        app: app.clone(),
        who,
        model: model.to_string(),
        provider,
        // The provider's response id replaces it once known.
        request_id: uuid::Uuid::new_v4().to_string(),
        prompt_tokens,
        reservation,
    };
    let url = format!(
        "{}/v1/chat/completions",
        app.cfg.upstream_url.trim_end_matches('/')
    );
    let sent = app.http.post(url).json(&body).send().await;
    let upstream = match sent {
        Ok(r) if r.status().is_success() => r,
        failed => {
            let mut pending = pending;
            if let (Some(r), Ok(mut l)) = (pending.reservation.take(), app.ledger.lock()) {
                l.release(r);
            }
            let status = failed.as_ref().map(|r| r.status().as_u16()).ok();
            return app.refuse(
                StatusCode::BAD_GATEWAY,
                None,
                json!({"error": "upstream_failed", "upstream_status": status}),
            );
        }
    };
    let mut resp = if openai::is_stream(&body) {
        stream_response(upstream, pending)
    } else {
        let answer: Value = match upstream.json().await {
            Ok(v) => v,
            Err(_) => {
                // The call happened; its cost is unknown: count the prompt and nothing else.
                pending.finish(None, "");
                return app.refuse(
                    StatusCode::BAD_GATEWAY,
                    None,
                    json!({"error": "upstream_invalid_response"}),
                );
            }
        };
        let mut pending = pending;
        if let Some(id) = openai::response_id(&answer) {
            pending.request_id = id;
        }
        let cost = pending.finish(openai::usage(&answer), &openai::message_text(&answer));
        let mut r = Json(answer).into_response();
        cost_headers(&mut r, cost.as_ref());
        r
    };
    let h = resp.headers_mut();
    h.insert(
        "x-costpipe-decision",
        HeaderValue::from_static(decision.action.as_str()),
    );
    if let Ok(v) = HeaderValue::from_str(&model) {
        h.insert("x-costpipe-model", v);
    }
    if let Ok(v) = HeaderValue::from_str(&budget) {
        if !budget.is_empty() {
            h.insert("x-costpipe-budget-id", v);
        }
    }
    resp
}

/// Passes the provider's SSE stream through, reading it as it goes; at its end the call is
/// settled and emitted and an SSE comment `: x-costpipe-response-cost <amount> <currency>`
/// is appended (headers are sent before the cost is known). A client that disconnects
/// drops the stream, and the guard settles what was streamed so far (estimated).
fn stream_response(upstream: reqwest::Response, pending: Pending) -> Response {
    let guard = StreamGuard {
        pending: Some(pending),
        reader: openai::StreamReader::default(),
    };
    let body = futures::stream::unfold(
        (upstream.bytes_stream(), Some(guard)),
        |(mut inner, guard)| async move {
            let mut guard = guard?;
            match inner.next().await {
                Some(Ok(bytes)) => {
                    guard.reader.feed(&bytes);
                    Some((Ok::<Bytes, std::io::Error>(bytes), (inner, Some(guard))))
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "upstream stream failed");
                    None
                }
                None => {
                    let p = guard.take()?;
                    let cost = p.finish(guard.reader.usage, &guard.reader.text);
                    let tail = cost.map_or_else(String::new, |c| {
                        format!(
                            ": x-costpipe-response-cost {} {}\n\n",
                            c.amount.normalize(),
                            c.currency
                        )
                    });
                    Some((Ok(Bytes::from(tail)), (inner, None)))
                }
            }
        },
    );
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
