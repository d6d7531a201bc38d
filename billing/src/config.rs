//! The service's settings: flags and environment variables, with safe defaults. Without any
//! key configured the API is open, which is allowed only on a loopback address (local runs
//! and tests); any other address needs keys or the service refuses to start.

use std::net::SocketAddr;

use clap::Args;

use costpipe_clickhouse::ClickHouseArgs;

use crate::limits::Limits;

/// The billing service's settings.
#[derive(Debug, Clone, Args)]
pub struct BillingConfig {
    /// Listen address.
    #[arg(long, env = "COSTPIPE_BILLING_ADDR", default_value = "127.0.0.1:8088")]
    pub addr: SocketAddr,
    /// SHA-256 digests (hex, comma-separated) of admin keys: they read every tenant and
    /// issue invoices.
    #[arg(
        long,
        env = "COSTPIPE_BILLING_ADMIN_KEY_SHA256",
        default_value = "",
        hide_env_values = true
    )]
    pub admin_key_sha256: String,
    /// Tenant keys: comma-separated `<sha256-hex>=<tenant>`; each reads its tenant only.
    #[arg(
        long,
        env = "COSTPIPE_BILLING_TENANT_KEYS",
        default_value = "",
        hide_env_values = true
    )]
    pub tenant_keys: String,
    /// Time zone of tenants without one of their own (IANA name).
    #[arg(
        long,
        env = "COSTPIPE_BILLING_DEFAULT_TIME_ZONE",
        default_value = "UTC"
    )]
    pub default_time_zone: String,
    /// Tenants' time zones: comma-separated `tenant=Zone`.
    #[arg(long, env = "COSTPIPE_BILLING_TENANT_TIME_ZONES", default_value = "")]
    pub tenant_time_zones: String,
    /// TOML file of tenants' invoice discounts and markups (`[tenant]` tables with
    /// `discount_percent` / `markup_percent` as decimal strings); none when unset.
    #[arg(long, env = "COSTPIPE_BILLING_TENANT_TERMS")]
    pub tenant_terms: Option<std::path::PathBuf>,
    /// Price catalog file (TOML) that report suggestions name cheaper models from; the
    /// shipped catalog when unset (the aggregator's setting of the same name).
    #[arg(long, env = "COSTPIPE_CATALOG")]
    pub catalog: Option<std::path::PathBuf>,
    /// Trace spans (`span_name`, comma-separated) that are auxiliary: their cost is shared
    /// by the trace's primary spans under the proportional and hybrid strategies.
    #[arg(
        long,
        env = "COSTPIPE_BILLING_TRACE_AUXILIARY_SPANS",
        default_value = "retrieval,embedding,rerank,guardrail,moderation"
    )]
    pub trace_auxiliary_spans: String,
    /// Hybrid weights of primary span names, `name=weight,…` (1 when not listed).
    #[arg(long, env = "COSTPIPE_BILLING_TRACE_WEIGHTS", default_value = "")]
    pub trace_weights: String,
    /// Query limits.
    #[command(flatten)]
    pub limits: Limits,
    /// ClickHouse connection.
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    /// Budgets topic (`/v1/budgets`).
    #[command(flatten)]
    pub budgets: crate::budgets_api::BudgetsArgs,
    /// The aggregator's live view (`/v1/tenants/{tenant}/live`).
    #[command(flatten)]
    pub live: crate::live_api::LiveArgs,
}

impl BillingConfig {
    /// Refuses an open API on a non-loopback address.
    pub fn validate(&self, keys_configured: bool) -> anyhow::Result<()> {
        if !keys_configured && !self.addr.ip().is_loopback() {
            anyhow::bail!(
                "no API keys configured (COSTPIPE_BILLING_ADMIN_KEY_SHA256, COSTPIPE_BILLING_TENANT_KEYS): \
                 the open API may only listen on a loopback address, not {}",
                self.addr
            );
        }
        Ok(())
    }
}
