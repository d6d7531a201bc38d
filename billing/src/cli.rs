//! The `costpipe-billing` client subcommands: each turns its flags into one request of the
//! billing HTTP API (`request`, pure and unit-tested) and prints the answer (JSON pretty
//! printed, CSV as is). `run` sends it with a whole-request timeout. A non-2xx answer is
//! printed to stderr and is an error (exit status 1).

use std::time::Duration;

use clap::{Args, Subcommand};

/// Where the API is and how to call it.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Base URL of the billing API.
    #[arg(
        long,
        env = "COSTPIPE_BILLING_URL",
        default_value = "http://127.0.0.1:8088",
        global = true
    )]
    pub url: String,
    /// API key (admin or tenant), sent as `Authorization: Bearer`.
    #[arg(
        long,
        env = "COSTPIPE_BILLING_KEY",
        hide_env_values = true,
        global = true
    )]
    pub key: Option<String>,
    /// Whole-request timeout, in milliseconds.
    #[arg(
        long,
        env = "COSTPIPE_BILLING_CLIENT_TIMEOUT_MS",
        default_value_t = 30_000,
        global = true
    )]
    pub timeout_ms: u64,
}

/// A time range: a month, or local bounds.
#[derive(Debug, Clone, Default, Args)]
pub struct RangeArgs {
    /// `YYYY-MM`.
    #[arg(long)]
    pub period: Option<String>,
    /// Local `YYYY-MM-DD[THH:MM[:SS]]`.
    #[arg(long)]
    pub from: Option<String>,
    /// Local, exclusive.
    #[arg(long)]
    pub to: Option<String>,
    /// IANA zone overriding the tenant's.
    #[arg(long)]
    pub tz: Option<String>,
}

/// A client subcommand, or `serve`.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the billing API (the default without a subcommand).
    Serve,
    /// Costs by dimension and grain.
    Costs {
        /// Tenant (all tenants with an admin key when omitted).
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        range: RangeArgs,
        /// minute, hour, day, week, month or total.
        #[arg(long)]
        grain: Option<String>,
        /// Comma-separated dimensions.
        #[arg(long)]
        group_by: Option<String>,
        /// Filters `dimension=value` (repeatable).
        #[arg(long = "filter")]
        filters: Vec<String>,
        /// auto, hour, minute or raw.
        #[arg(long)]
        source: Option<String>,
    },
    /// Top values of a dimension, or the most expensive requests or traces.
    Top {
        #[arg(long)]
        tenant: Option<String>,
        /// A dimension, or `requests` / `traces`.
        #[arg(long)]
        dimension: String,
        #[arg(long)]
        n: Option<u64>,
        #[command(flatten)]
        range: RangeArgs,
    },
    /// A monthly invoice (draft or issued).
    Invoice {
        #[arg(long)]
        tenant: String,
        /// `YYYY-MM`.
        #[arg(long)]
        period: String,
        /// json or csv.
        #[arg(long, default_value = "json")]
        format: String,
        /// Issue it (admin key).
        #[arg(long)]
        issue: bool,
    },
    /// A daily, weekly or monthly report.
    Report {
        #[arg(long)]
        tenant: String,
        /// daily, weekly or monthly.
        #[arg(long)]
        period: String,
        /// `YYYY-MM-DD` in the period.
        #[arg(long)]
        date: String,
    },
    /// Projected period-end spend.
    Forecast {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        period: String,
        /// RFC 3339 instant to forecast from.
        #[arg(long)]
        as_of: Option<String>,
    },
    /// Unusual hours, requests and token jumps.
    Anomalies {
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        range: RangeArgs,
    },
    /// A trace's cost per span and its allocation.
    Traces {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        trace_id: String,
        /// direct, proportional or hybrid.
        #[arg(long)]
        strategy: Option<String>,
        #[command(flatten)]
        range: RangeArgs,
    },
}

/// One API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    pub post: bool,
    /// Path with every segment percent-encoded.
    pub path: String,
    pub query: Vec<(String, String)>,
}

/// Percent-encodes one path segment (everything but unreserved characters).
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn range_pairs(r: &RangeArgs, q: &mut Vec<(String, String)>) {
    for (k, v) in [
        ("period", &r.period),
        ("from", &r.from),
        ("to", &r.to),
        ("tz", &r.tz),
    ] {
        if let Some(v) = v {
            q.push((k.into(), v.clone()));
        }
    }
}

fn opt(q: &mut Vec<(String, String)>, k: &str, v: &Option<String>) {
    if let Some(v) = v {
        q.push((k.into(), v.clone()));
    }
}

/// The request of a client subcommand (`None` for `serve`).
pub fn request(cmd: &Command) -> anyhow::Result<Option<ApiRequest>> {
    let mut q = Vec::new();
    let tenant_path = |t: &Option<String>, rest: &str, all: &str| match t {
        Some(t) => format!("/v1/tenants/{}{rest}", segment(t)),
        None => all.to_string(),
    };
    let (post, path) = match cmd {
        Command::Serve => return Ok(None),
        Command::Costs {
            tenant,
            range,
            grain,
            group_by,
            filters,
            source,
        } => {
            range_pairs(range, &mut q);
            opt(&mut q, "grain", grain);
            opt(&mut q, "group_by", group_by);
            opt(&mut q, "source", source);
            for f in filters {
                let (k, v) = f
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--filter {f:?} is not dimension=value"))?;
                q.push((k.into(), v.into()));
            }
            (false, tenant_path(tenant, "/costs", "/v1/costs"))
        }
        Command::Top {
            tenant,
            dimension,
            n,
            range,
        } => {
            range_pairs(range, &mut q);
            opt(&mut q, "n", &n.map(|n| n.to_string()));
            let path = match dimension.as_str() {
                "requests" | "traces" => {
                    let t = tenant.as_ref().ok_or_else(|| {
                        anyhow::anyhow!("--tenant is required for top {dimension}")
                    })?;
                    format!("/v1/tenants/{}/top/{dimension}", segment(t))
                }
                d => {
                    q.push(("dimension".into(), d.into()));
                    tenant_path(tenant, "/top", "/v1/top")
                }
            };
            (false, path)
        }
        Command::Invoice {
            tenant,
            period,
            format,
            issue,
        } => {
            let base = format!(
                "/v1/tenants/{}/invoices/{}",
                segment(tenant),
                segment(period)
            );
            if *issue {
                (true, format!("{base}/issue"))
            } else {
                q.push(("format".into(), format.clone()));
                (false, base)
            }
        }
        Command::Report {
            tenant,
            period,
            date,
        } => {
            q.push(("period".into(), period.clone()));
            q.push(("date".into(), date.clone()));
            (false, format!("/v1/tenants/{}/reports", segment(tenant)))
        }
        Command::Forecast {
            tenant,
            period,
            as_of,
        } => {
            q.push(("period".into(), period.clone()));
            opt(&mut q, "as_of", as_of);
            (false, format!("/v1/tenants/{}/forecast", segment(tenant)))
        }
        Command::Anomalies { tenant, range } => {
            range_pairs(range, &mut q);
            (false, format!("/v1/tenants/{}/anomalies", segment(tenant)))
        }
        Command::Traces {
            tenant,
            trace_id,
            strategy,
            range,
        } => {
            range_pairs(range, &mut q);
            opt(&mut q, "strategy", strategy);
            (
                false,
                format!(
                    "/v1/tenants/{}/traces/{}/allocation",
                    segment(tenant),
                    segment(trace_id)
                ),
            )
        }
    };
    Ok(Some(ApiRequest {
        post,
        path,
        query: q,
    }))
}

/// Sends `req` and returns the answer's body; a non-2xx answer is an error carrying it.
pub async fn send(args: &ClientArgs, req: &ApiRequest) -> anyhow::Result<String> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .build()?;
    let url = format!("{}{}", args.url.trim_end_matches('/'), req.path);
    let mut r = if req.post {
        http.post(&url)
    } else {
        http.get(&url)
    }
    .query(&req.query);
    if let Some(k) = &args.key {
        r = r.bearer_auth(k);
    }
    let resp = r.send().await.map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    let status = resp.status();
    let body = resp.text().await?;
    if !status.is_success() {
        anyhow::bail!("{status}: {body}");
    }
    Ok(body)
}

/// Prints an answer: JSON pretty printed, anything else (CSV) as it came.
pub fn render(body: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_else(|_| body.to_string()),
        Err(_) => body.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subcommands_map_to_api_requests() {
        let r = request(&Command::Costs {
            tenant: Some("a/b c".into()),
            range: RangeArgs {
                period: Some("2026-03".into()),
                ..RangeArgs::default()
            },
            grain: Some("day".into()),
            group_by: Some("model".into()),
            filters: vec!["department=eng".into(), "label:team=ml=x".into()],
            source: None,
        })
        .unwrap()
        .unwrap();
        assert_eq!(r.path, "/v1/tenants/a%2Fb%20c/costs");
        assert!(r.query.contains(&("department".into(), "eng".into())));
        assert!(r.query.contains(&("label:team".into(), "ml=x".into())));
        let r = request(&Command::Invoice {
            tenant: "acme".into(),
            period: "2026-03".into(),
            format: "csv".into(),
            issue: true,
        })
        .unwrap()
        .unwrap();
        assert!(r.post && r.path == "/v1/tenants/acme/invoices/2026-03/issue");
        let top = |d: &str, t: Option<&str>| {
            request(&Command::Top {
                tenant: t.map(String::from),
                dimension: d.into(),
                n: Some(3),
                range: RangeArgs::default(),
            })
        };
        assert_eq!(
            top("traces", Some("acme")).unwrap().unwrap().path,
            "/v1/tenants/acme/top/traces"
        );
        assert!(top("traces", None).is_err());
        assert_eq!(top("user", None).unwrap().unwrap().path, "/v1/top");
        assert!(request(&Command::Serve).unwrap().is_none());
        assert_eq!(render("a,b\n"), "a,b\n");
    }
}
