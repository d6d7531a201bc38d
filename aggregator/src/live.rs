//! `GET /v1/live/tenants/{tenant}`: a tenant's live sliding windows, served by the instance
//! that holds the tenant's partition. The HTTP handler asks the run loop over a channel (the
//! windows live in the loop's core and are never shared); an instance that does not hold the
//! tenant answers 404 and names the instance that claimed its partition last, if known.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use costpipe_aggregator_core::windows::{LiveRow, Window};
use costpipe_aggregator_core::{Amounts, WindowKey};

/// A question from the HTTP side.
pub struct LiveRequest {
    pub tenant: String,
    pub reply: oneshot::Sender<LiveReply>,
}

/// The run loop's answer.
pub enum LiveReply {
    /// This instance holds the tenant.
    Held {
        instance: String,
        watermark_ms: i64,
        rows: Vec<LiveRow<WindowKey>>,
    },
    /// It does not; `owner` is the instance that claimed the tenant's partition last.
    NotHeld {
        instance: String,
        owner: Option<String>,
    },
}

/// How long the handler waits for the run loop (busy during a long restore).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

fn amounts_json(a: &Amounts) -> Value {
    json!({
        "cost": a.cost_decimal().map(|d| d.normalize().to_string()).unwrap_or_default(),
        "events": a.events,
        "tokens": {
            "input": a.tokens[0],
            "output": a.tokens[1],
            "cached_input": a.tokens[2],
            "cache_write": a.tokens[3],
            "reasoning": a.tokens[4],
            "cache_write_1h": a.tokens[5],
        },
    })
}

fn window_name(w: Window) -> &'static str {
    match w {
        Window::M1 => "1m",
        Window::M5 => "5m",
        Window::H1 => "1h",
        Window::H24 => "24h",
    }
}

/// The handler.
pub async fn live_tenant(
    State(ask): State<mpsc::Sender<LiveRequest>>,
    Path(tenant): Path<String>,
) -> Response {
    let (tx, rx) = oneshot::channel();
    let request = LiveRequest {
        tenant: tenant.clone(),
        reply: tx,
    };
    if ask.send(request).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "aggregator stopping").into_response();
    }
    match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
        Ok(Ok(LiveReply::Held {
            instance,
            watermark_ms,
            mut rows,
        })) => {
            rows.sort_by(|a, b| {
                (a.key.department(), a.key.model()).cmp(&(b.key.department(), b.key.model()))
            });
            let keys: Vec<Value> = rows
                .iter()
                .map(|r| {
                    let mut windows = serde_json::Map::new();
                    for w in Window::ALL {
                        windows.insert(window_name(w).into(), amounts_json(&r.rolling[w.index()]));
                    }
                    windows.insert("day".into(), amounts_json(&r.day));
                    windows.insert("month".into(), amounts_json(&r.month));
                    json!({
                        "department": r.key.department(),
                        "model": r.key.model(),
                        "windows": windows,
                    })
                })
                .collect();
            Json(json!({
                "tenant": tenant,
                "instance": instance,
                "watermark_ms": watermark_ms,
                "keys": keys,
            }))
            .into_response()
        }
        Ok(Ok(LiveReply::NotHeld { instance, owner })) => (
            StatusCode::NOT_FOUND,
            Json(json!({
                "tenant": tenant,
                "held": false,
                "instance": instance,
                "owner": owner,
            })),
        )
            .into_response(),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the run loop did not answer in time",
        )
            .into_response(),
    }
}
