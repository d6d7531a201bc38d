//! The stub provider: answers `POST /v1/chat/completions` in OpenAI's shape on 127.0.0.1,
//! streamed (SSE) or not, with a deterministic reply of `min(max_tokens, reply_tokens)`
//! pieces that it reports as that many completion tokens; prompt tokens are counted with the
//! same counter the gateway uses. Streams carry a usage chunk only when the request asks
//! (`stream_options.include_usage`) and `--stream-usage requested` is set.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::core::tokens::Counter;
use crate::example::openai;

/// When a stream carries usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StreamUsage {
    /// When the request sets `stream_options.include_usage`, as OpenAI does.
    Requested,
    /// Never (as providers that report no usage in streams).
    Never,
}

/// Stub provider settings.
#[derive(Debug, Clone, clap::Args)]
pub struct StubConfig {
    /// Listen address.
    #[arg(long, env = "COSTPIPE_STUB_ADDR", default_value = "127.0.0.1:8096")]
    pub addr: SocketAddr,
    /// Reply length in completion tokens (capped at the request's max_tokens).
    #[arg(long, env = "COSTPIPE_STUB_REPLY_TOKENS", default_value_t = 16)]
    pub reply_tokens: u64,
    /// When streams carry a usage chunk.
    #[arg(long, env = "COSTPIPE_STUB_STREAM_USAGE", value_enum, default_value_t = StreamUsage::Requested)]
    pub stream_usage: StreamUsage,
    /// Delay before answering, in milliseconds (so that concurrent calls overlap).
    #[arg(long, env = "COSTPIPE_STUB_DELAY_MS", default_value_t = 0)]
    pub delay_ms: u64,
    /// Delay before each streamed chunk, in milliseconds (so that a client can cancel
    /// mid-stream).
    #[arg(long, env = "COSTPIPE_STUB_CHUNK_DELAY_MS", default_value_t = 0)]
    pub chunk_delay_ms: u64,
}

/// The stub's router.
pub fn router(cfg: StubConfig) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(complete))
        .with_state(cfg)
}

async fn complete(State(cfg): State<StubConfig>, Json(body): Json<Value>) -> Response {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if model.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"message": "model is required"}})),
        )
            .into_response();
    }
    if cfg.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(cfg.delay_ms)).await;
    }
    let counter = Counter::for_model(&model);
    let msgs = openai::messages(&body);
    let prompt = counter.count_chat(msgs.iter().map(|(r, c)| (r.as_str(), c.as_str())));
    let n = openai::max_tokens(&body)
        .unwrap_or(cfg.reply_tokens)
        .min(cfg.reply_tokens);
    let pieces: Vec<String> = (0..n)
        .map(|i| if i == 0 { "tok".into() } else { " tok".into() })
        .collect();
    let usage =
        json!({"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n});
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    if !openai::is_stream(&body) {
        return Json(json!({
            "id": id, "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": pieces.concat()}, "finish_reason": "stop"}],
            "usage": usage,
        }))
        .into_response();
    }
    let include_usage = cfg.stream_usage == StreamUsage::Requested
        && body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
    let mut out = String::new();
    let chunk = |delta: Value, finish: Value| {
        json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    out.push_str(&format!(
        "data: {}\n\n",
        chunk(json!({"role": "assistant", "content": ""}), Value::Null)
    ));
    for p in &pieces {
        out.push_str(&format!(
            "data: {}\n\n",
            chunk(json!({"content": p}), Value::Null)
        ));
    }
    out.push_str(&format!("data: {}\n\n", chunk(json!({}), json!("stop"))));
    if include_usage {
        let u = json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [], "usage": usage});
        out.push_str(&format!("data: {u}\n\n"));
    }
    out.push_str("data: [DONE]\n\n");
    // One piece per chunk on the wire, so that readers see a real multi-chunk stream.
    let parts: Vec<bytes::Bytes> = out
        .split_inclusive("\n\n")
        .map(|s| bytes::Bytes::from(s.to_owned()))
        .collect();
    let pause = Duration::from_millis(cfg.chunk_delay_ms);
    let chunks = futures::StreamExt::then(futures::stream::iter(parts), move |p| async move {
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        Ok::<_, std::io::Error>(p)
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(chunks))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
