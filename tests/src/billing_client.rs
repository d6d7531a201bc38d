//! What the billing end-to-end tests share: a billing service started with hashed keys, a
//! small HTTP client for its API, and raw inserts of known rows into ClickHouse.

use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{binary, free_port, wait_for, Names, Service, Stack};

/// The sha256 hex digest billing is configured with for key `k`.
pub fn digest(k: &str) -> String {
    hex::encode(Sha256::digest(k.as_bytes()))
}

/// A money field of an answer: billing sends decimals as strings.
pub fn decimal(v: &Value) -> Decimal {
    Decimal::from_str(
        v.as_str()
            .unwrap_or_else(|| panic!("{v} is not a decimal string")),
    )
    .unwrap()
}

/// Inserts JSON rows into `db.table`, refusing unknown fields.
pub async fn insert_rows(stack: &Stack, db: &str, table: &str, rows: &[Value]) {
    let body: String = rows.iter().map(|r| format!("{r}\n")).collect();
    stack
        .query(&format!(
            "INSERT INTO {db}.{table} SETTINGS input_format_skip_unknown_fields = 0 FORMAT JSONEachRow\n{body}"
        ))
        .await;
}

/// The billing API of a started service.
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub async fn get(&self, path: &str, key: Option<&str>) -> (u16, String) {
        let mut r = self.http.get(format!("{}{path}", self.base));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        let resp = r.send().await.expect("billing answers");
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// The 200 answer to `path`, as JSON.
    pub async fn json(&self, path: &str, key: &str) -> Value {
        let (s, body) = self.get(path, Some(key)).await;
        assert_eq!(s, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    pub async fn post(&self, path: &str, key: &str) -> (u16, String) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}

/// Starts billing on `names.database` with an admin key, `tenant_keys` (tenant, key) and
/// extra environment, and waits until its migrations have run.
pub async fn start_billing(
    stack: &Stack,
    names: &Names,
    admin_key: &str,
    tenant_keys: &[(&str, &str)],
    extra: &[(&str, &str)],
) -> (Service, Api) {
    let db = &names.database;
    let port = free_port();
    let log = std::env::temp_dir().join(format!("{db}-billing.log"));
    let tenant_keys: Vec<String> = tenant_keys
        .iter()
        .map(|(tenant, key)| format!("{}={tenant}", digest(key)))
        .collect();
    let mut cmd = Command::new(binary("costpipe-billing"));
    cmd.env("COSTPIPE_CLICKHOUSE_URL", &stack.clickhouse_url)
        .env("COSTPIPE_CLICKHOUSE_DATABASE", db)
        .env("COSTPIPE_BILLING_ADDR", format!("127.0.0.1:{port}"))
        .env("COSTPIPE_BILLING_ADMIN_KEY_SHA256", digest(admin_key))
        .env("COSTPIPE_BILLING_TENANT_KEYS", tenant_keys.join(","));
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let service = Service::spawn(cmd, log, port);
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
    };
    wait_for("billing's migrations", Duration::from_secs(60), || async {
        stack
            // Migration 074 marks the daily rollup's coverage: every table and view billing
            // reads is in place after it (075-077 only add columns and change views in place,
            // atomically).
            .try_query(&format!(
                "SELECT count() > 0 FROM {db}.rollup_coverage WHERE rollup = 'usage_cost_day'"
            ))
            .await
            .filter(|s| s == "1")
    })
    .await;
    (service, api)
}
