//! Per-tenant rate limits: a token bucket (governor's GCRA) per tenant for events per second
//! and one for body bytes per second, each holding one second's worth. Tenants are known
//! from the API keys at start-up, so the set of buckets is fixed and cannot be grown by a
//! client. A request over a bucket is refused whole (429 with `Retry-After`) and nothing of
//! it is produced or dead-lettered: the client still holds its events.
//!
//! Configuration: a default for every tenant (`COSTPIPE_INGEST_RATE_EVENTS_PER_S`,
//! `COSTPIPE_INGEST_RATE_BYTES_PER_S`; 0 means no limit) and per-tenant overrides in
//! `COSTPIPE_INGEST_TENANT_RATES` as `tenant=events_per_s:bytes_per_s,…`.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};

type Bucket = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    DefaultClock,
    governor::middleware::NoOpMiddleware,
>;

/// A tenant's limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantRate {
    pub events_per_s: Option<NonZeroU32>,
    pub bytes_per_s: Option<NonZeroU32>,
}

impl TenantRate {
    fn new(events_per_s: u32, bytes_per_s: u32) -> TenantRate {
        TenantRate {
            events_per_s: NonZeroU32::new(events_per_s),
            bytes_per_s: NonZeroU32::new(bytes_per_s),
        }
    }
}

/// Which bucket refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Events,
    Bytes,
}

impl Limit {
    /// Metric label and error wording.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Events => "events",
            Limit::Bytes => "bytes",
        }
    }
}

/// Why a request may not pass now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over the rate: retry after this long (the bucket will then hold enough).
    Later {
        limit: Limit,
        retry_after: Duration,
        per_s: u32,
    },
    /// Larger than the bucket itself (one second's worth): can never pass as one request.
    TooLarge { limit: Limit, per_s: u32 },
}

struct Buckets {
    events: Option<(Bucket, NonZeroU32)>,
    bytes: Option<(Bucket, NonZeroU32)>,
}

/// The buckets of every configured tenant.
pub struct RateLimits {
    tenants: HashMap<String, Buckets>,
    clock: DefaultClock,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("tenants", &self.tenants.len())
            .finish()
    }
}

/// Parses `tenant=events_per_s:bytes_per_s,…`.
pub fn parse_overrides(spec: &str) -> anyhow::Result<HashMap<String, TenantRate>> {
    let mut out = HashMap::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        // A tenant may contain '=' or ':'; the numbers never do: split from the right.
        let (tenant, rates) = item.rsplit_once('=').ok_or_else(|| {
            anyhow::anyhow!("tenant rate {item:?} is not `tenant=events_per_s:bytes_per_s`")
        })?;
        let (events, bytes) = rates.split_once(':').ok_or_else(|| {
            anyhow::anyhow!("tenant rate {item:?} is not `tenant=events_per_s:bytes_per_s`")
        })?;
        let number = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|e| anyhow::anyhow!("tenant rate {item:?}: {s:?} is not a u32: {e}"))
        };
        let tenant = tenant.trim();
        anyhow::ensure!(!tenant.is_empty(), "tenant rate {item:?} has no tenant");
        let rate = TenantRate::new(number(events)?, number(bytes)?);
        anyhow::ensure!(
            out.insert(tenant.to_string(), rate).is_none(),
            "tenant {tenant:?} has two rates"
        );
    }
    Ok(out)
}

fn bucket(per_s: Option<NonZeroU32>) -> Option<(Bucket, NonZeroU32)> {
    per_s.map(|r| (RateLimiter::direct(Quota::per_second(r)), r))
}

impl RateLimits {
    /// Buckets for `tenants`, each with its override or the default.
    pub fn new<'a>(
        tenants: impl IntoIterator<Item = &'a str>,
        default: (u32, u32),
        overrides: &HashMap<String, TenantRate>,
    ) -> RateLimits {
        let default = TenantRate::new(default.0, default.1);
        let tenants = tenants
            .into_iter()
            .map(|t| {
                let rate = overrides.get(t).copied().unwrap_or(default);
                (
                    t.to_string(),
                    Buckets {
                        events: bucket(rate.events_per_s),
                        bytes: bucket(rate.bytes_per_s),
                    },
                )
            })
            .collect();
        RateLimits {
            tenants,
            clock: DefaultClock::default(),
        }
    }

    /// Takes `n` from `tenant`'s bucket for `limit`, or says why not.
    pub fn take(&self, tenant: &str, limit: Limit, n: usize) -> Result<(), Refusal> {
        let Some(buckets) = self.tenants.get(tenant) else {
            return Ok(());
        };
        let Some((bucket, per_s)) = (match limit {
            Limit::Events => &buckets.events,
            Limit::Bytes => &buckets.bytes,
        }) else {
            return Ok(());
        };
        let per_s = per_s.get();
        let Some(n) = u32::try_from(n).ok().and_then(NonZeroU32::new) else {
            // Zero passes; more than u32::MAX never could.
            return if n == 0 {
                Ok(())
            } else {
                Err(Refusal::TooLarge { limit, per_s })
            };
        };
        match bucket.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Refusal::Later {
                limit,
                retry_after: not_until.wait_time_from(self.clock.now()),
                per_s,
            }),
            Err(_) => Err(Refusal::TooLarge { limit, per_s }),
        }
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1 (the header has no fractions).
pub fn retry_after_seconds(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_parse_and_bad_ones_are_refused() {
        let o = parse_overrides(" acme=100:2000 , a=b:c=5:0").unwrap();
        assert_eq!(o["acme"], TenantRate::new(100, 2000));
        assert_eq!(o["a=b:c"], TenantRate::new(5, 0));
        assert_eq!(o["a=b:c"].bytes_per_s, None);
        for bad in [
            "acme",
            "acme=1",
            "=1:2",
            "acme=x:1",
            "acme=1:2,acme=3:4",
            "a=-1:2",
        ] {
            assert!(parse_overrides(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_tenant_over_its_rate_waits_and_others_do_not() {
        let overrides = parse_overrides("noisy=10:1000").unwrap();
        let limits = RateLimits::new(["noisy", "calm"], (1000, 0), &overrides);
        // The bucket holds one second's worth.
        assert_eq!(limits.take("noisy", Limit::Events, 10), Ok(()));
        match limits.take("noisy", Limit::Events, 5) {
            Err(Refusal::Later {
                limit: Limit::Events,
                retry_after,
                per_s: 10,
            }) => {
                // Five cells at 10/s: about half a second (less what passed since).
                assert!(retry_after <= Duration::from_millis(500), "{retry_after:?}");
                assert!(retry_after > Duration::from_millis(300), "{retry_after:?}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            limits.take("noisy", Limit::Events, 11),
            Err(Refusal::TooLarge {
                limit: Limit::Events,
                per_s: 10
            })
        );
        assert_eq!(limits.take("noisy", Limit::Bytes, 1000), Ok(()));
        assert!(limits.take("noisy", Limit::Bytes, 1).is_err());
        // Another tenant's buckets are its own; 0 bytes/s is unlimited; unknown tenants pass.
        assert_eq!(limits.take("calm", Limit::Events, 1000), Ok(()));
        assert_eq!(limits.take("calm", Limit::Bytes, usize::MAX), Ok(()));
        assert_eq!(limits.take("nobody", Limit::Events, 1 << 40), Ok(()));
        assert_eq!(limits.take("noisy", Limit::Events, 0), Ok(()));
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1001)), 2);
    }
}
