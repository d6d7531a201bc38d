//! `GET /v1/tenants/{tenant}/live`: the aggregator's live sliding windows of a tenant (1 min,
//! 5 min, 1 h, 24 h, and the calendar day and month), proxied with billing's keys so the
//! dashboard needs one origin and one key. Billing asks the instance at
//! `COSTPIPE_BILLING_LIVE_URL`; an instance that does not hold the tenant answers 404 naming
//! the `owner`, and billing follows that once (a second redirect would mean the partition is
//! moving: the caller retries). Totals per window are added here, exactly (`Decimal`), so
//! the browser never adds money.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use reqwest::Url;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::params::checked_value;
use crate::AppState;

/// The windows the aggregator reports for each key, in display order.
pub const WINDOWS: [&str; 6] = ["1m", "5m", "1h", "24h", "day", "month"];

/// Where the live view comes from.
#[derive(Debug, Clone, clap::Args)]
pub struct LiveArgs {
    /// Base URL of an aggregator instance's HTTP port (its `COSTPIPE_AGGREGATOR_ADVERTISED_URL`,
    /// e.g. `http://127.0.0.1:9464`). Unset or empty: the live endpoint answers 503.
    #[arg(long, env = "COSTPIPE_BILLING_LIVE_URL")]
    pub live_url: Option<String>,
    /// Deadline of one request to the aggregator, in milliseconds.
    #[arg(
        long,
        env = "COSTPIPE_BILLING_LIVE_TIMEOUT_MS",
        default_value_t = 3_000
    )]
    pub live_timeout_ms: u64,
}

/// The aggregator client the handler shares.
#[derive(Debug, Clone)]
pub struct LiveProxy {
    base: Option<Url>,
    http: reqwest::Client,
}

impl LiveProxy {
    /// From the settings; a URL that does not parse as http(s) is a start-up error.
    pub fn new(args: &LiveArgs) -> anyhow::Result<LiveProxy> {
        let base = match args.live_url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => Some(http_url(s).ok_or_else(|| {
                anyhow::anyhow!("COSTPIPE_BILLING_LIVE_URL {s:?} is not an http(s) URL")
            })?),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(args.live_timeout_ms))
            // Only the one `owner` hop below is followed, and only on purpose.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(LiveProxy { base, http })
    }

    /// No aggregator configured.
    pub fn disabled() -> LiveProxy {
        LiveProxy {
            base: None,
            http: reqwest::Client::new(),
        }
    }
}

fn http_url(s: &str) -> Option<Url> {
    Url::parse(s)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// `<base>/v1/live/tenants/<tenant>`, the tenant percent-encoded as one path segment.
fn live_url(base: &Url, tenant: &str) -> Option<Url> {
    let mut u = base.clone();
    u.path_segments_mut()
        .ok()?
        .pop_if_empty()
        .extend(["v1", "live", "tenants", tenant]);
    Some(u)
}

/// A window's total over every department × model of the tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct WindowTotal {
    /// Exact decimal in the tenant's billing currency; `null` when a key's sum overflowed
    /// in the aggregator (it then reports no cost).
    #[schema(value_type = Option<String>)]
    pub cost: Option<Decimal>,
    pub events: u64,
}

/// The live view of a tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct LiveView {
    pub tenant: String,
    /// The aggregator instance that answered (its advertised URL).
    pub instance: String,
    /// The watermark of the tenant's partition (UTC ms): windows end there.
    pub watermark_ms: i64,
    /// Currency of every cost (billing's catalog).
    pub billing_currency: String,
    /// Per window (`1m`, `5m`, `1h`, `24h`, `day`, `month`), the sum over `keys`.
    pub totals: BTreeMap<String, WindowTotal>,
    /// As the aggregator sends them: `{department, model, windows: {1m: {cost, events,
    /// tokens}, …}}`.
    #[schema(value_type = Vec<Object>)]
    pub keys: Vec<Value>,
}

fn unavailable(message: &str) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "live_unavailable", message)
}

/// What one aggregator instance said.
enum Answer {
    Held(Value),
    Elsewhere(Option<String>),
}

async fn ask(proxy: &LiveProxy, url: Url) -> Result<Answer, ApiError> {
    let resp = proxy.http.get(url.clone()).send().await.map_err(|e| {
        tracing::warn!(url = %url, error = %e, "aggregator live view unreachable");
        unavailable("the aggregator's live view cannot be reached; try again later")
    })?;
    let status = resp.status();
    let body: Option<Value> = resp.json().await.ok();
    match (status, body) {
        (StatusCode::OK, Some(v)) => Ok(Answer::Held(v)),
        (StatusCode::NOT_FOUND, Some(v)) => Ok(Answer::Elsewhere(
            v.get("owner").and_then(Value::as_str).map(str::to_string),
        )),
        (s, _) => {
            tracing::warn!(url = %url, status = %s, "aggregator live view answered an error");
            Err(unavailable(
                "the aggregator did not answer the live view (it may be restoring); try again",
            ))
        }
    }
}

/// Sums each window over the keys; `None` cost when a key has no readable cost there.
pub fn totals(keys: &[Value]) -> BTreeMap<String, WindowTotal> {
    WINDOWS
        .iter()
        .map(|w| {
            let mut cost = Some(Decimal::ZERO);
            let mut events = 0u64;
            for k in keys {
                let win = &k["windows"][*w];
                events = events.saturating_add(win["events"].as_u64().unwrap_or(0));
                let c = win["cost"].as_str().and_then(|s| s.parse::<Decimal>().ok());
                cost = cost.zip(c).and_then(|(a, b)| a.checked_add(b));
            }
            (
                w.to_string(),
                WindowTotal {
                    cost: cost.map(|c| c.normalize()),
                    events,
                },
            )
        })
        .collect()
}

/// The tenant's live sliding windows from the aggregator instance that holds it.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/live",
    params(("tenant" = String, Path, description = "Tenant id")),
    responses((status = 200, body = LiveView), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn live(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<Json<LiveView>, ApiError> {
    let tenant = checked_value("tenant", &tenant)?;
    state.keys.authenticate(&headers)?.check_tenant(&tenant)?;
    let proxy = &state.live;
    let base = proxy.base.as_ref().ok_or_else(|| {
        unavailable(
            "the live view is not configured on this billing instance (COSTPIPE_BILLING_LIVE_URL)",
        )
    })?;
    let first = live_url(base, &tenant).ok_or_else(|| unavailable("bad aggregator URL"))?;
    let view =
        match ask(proxy, first).await? {
            Answer::Held(v) => v,
            Answer::Elsewhere(owner) => {
                let next = owner
                    .as_deref()
                    .and_then(http_url)
                    .and_then(|o| live_url(&o, &tenant))
                    .ok_or_else(|| {
                        unavailable("no aggregator instance holds this tenant's windows right now")
                    })?;
                match ask(proxy, next).await? {
                    Answer::Held(v) => v,
                    Answer::Elsewhere(_) => return Err(unavailable(
                        "the tenant's partition is moving between aggregator instances; try again",
                    )),
                }
            }
        };
    let keys = view["keys"].as_array().cloned().unwrap_or_default();
    Ok(Json(LiveView {
        instance: view["instance"].as_str().unwrap_or_default().to_string(),
        watermark_ms: view["watermark_ms"].as_i64().unwrap_or_default(),
        billing_currency: state.catalog.billing_currency(&tenant).to_string(),
        totals: totals(&keys),
        keys,
        tenant,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tenants_are_one_encoded_segment() {
        let base = Url::parse("http://127.0.0.1:9464/").unwrap();
        assert_eq!(
            live_url(&base, "a/b c?").unwrap().as_str(),
            "http://127.0.0.1:9464/v1/live/tenants/a%2Fb%20c%3F"
        );
        let prefixed = Url::parse("http://agg:9464/base").unwrap();
        assert_eq!(
            live_url(&prefixed, "acme").unwrap().as_str(),
            "http://agg:9464/base/v1/live/tenants/acme"
        );
        assert!(http_url("file:///etc/passwd").is_none());
        assert!(http_url("not a url").is_none());
    }

    #[test]
    fn totals_are_exact_sums() {
        let key = |c1: &str, e1: u64| {
            json!({"department": "d", "model": "m", "windows": {
                "1m": {"cost": c1, "events": e1}, "5m": {"cost": "0.1", "events": 1},
                "1h": {"cost": "0.2", "events": 1}, "24h": {"cost": "0.000000000001", "events": 1},
                "day": {"cost": "", "events": 1}, "month": {"cost": "3", "events": 2}}})
        };
        let t = totals(&[key("0.1", 1), key("0.2", 2)]);
        assert_eq!(t["1m"].cost, Some("0.3".parse().unwrap()));
        assert_eq!(t["1m"].events, 3);
        assert_eq!(t["24h"].cost, Some("0.000000000002".parse().unwrap()));
        assert_eq!(t["day"].cost, None, "an unreadable cost is not guessed");
        assert_eq!(t["month"].cost, Some(Decimal::from(6)));
        assert_eq!(totals(&[])["1h"].cost, Some(Decimal::ZERO));
    }
}
