//! A realistic synthetic usage stream for demos and load tests: several tenants with skewed
//! volumes, departments and users per tenant, a model mix, log-normal token counts, prompt
//! caching where the provider has it, and event times spread over a time range.
//! Deterministic for a given seed.

use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::LogNormal;
use uuid::Uuid;

use costpipe_schemas::UsageEvent;

const TENANTS: &[&str] = &[
    "acme",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "stark",
    "wayne",
    "wonka",
    "tyrell",
    "cyberdyne",
];
const DEPARTMENTS: &[&str] = &[
    "engineering",
    "research",
    "support",
    "marketing",
    "sales",
    "legal",
];
const FEATURES: &[&str] = &["chat", "summarize", "search", "codegen", "classify"];
/// (provider, model, weight). The last one is not in the shipped catalog on purpose: real
/// streams carry models nobody priced yet, and they must come out flagged, not dropped.
const MODELS: &[(&str, &str, u32)] = &[
    ("openai", "gpt-4o-mini", 50),
    ("openai", "gpt-4o", 25),
    ("openai", "gpt-4o-2024-08-06", 5),
    ("anthropic", "claude-sonnet-4-5", 19),
    ("mistral", "mistral-large-latest", 1),
];

/// Shape of the stream.
#[derive(Debug, Clone)]
pub struct SyntheticConfig {
    /// Number of tenants (at most 10); tenant i gets weight 1/(i+1) (Zipf-like skew).
    pub tenants: usize,
    /// Earliest event time, UTC ms.
    pub start_ms: i64,
    /// Latest event time (exclusive), UTC ms.
    pub end_ms: i64,
    /// Whether to include a model that is not in the catalog.
    pub include_unpriced: bool,
}

/// An endless deterministic iterator of events.
pub struct SyntheticStream {
    rng: StdRng,
    config: SyntheticConfig,
    tenant_pick: WeightedIndex<f64>,
    model_pick: WeightedIndex<u32>,
    input: LogNormal<f64>,
    output: LogNormal<f64>,
}

impl SyntheticStream {
    /// A stream seeded with `seed`.
    pub fn new(seed: u64, config: SyntheticConfig) -> Self {
        let tenants = config.tenants.clamp(1, TENANTS.len());
        let tenant_weights: Vec<f64> = (0..tenants).map(|i| 1.0 / (i as f64 + 1.0)).collect();
        let models: Vec<u32> = MODELS
            .iter()
            .map(|(_, m, w)| {
                if !config.include_unpriced && *m == "mistral-large-latest" {
                    0
                } else {
                    *w
                }
            })
            .collect();
        SyntheticStream {
            rng: StdRng::seed_from_u64(seed),
            tenant_pick: WeightedIndex::new(tenant_weights).expect("positive weights"),
            model_pick: WeightedIndex::new(models).expect("positive weights"),
            input: LogNormal::new(7.0, 1.0).expect("valid parameters"),
            output: LogNormal::new(5.5, 0.9).expect("valid parameters"),
            config,
        }
    }

    /// The tenant names this stream can produce.
    pub fn tenant_names(&self) -> &'static [&'static str] {
        &TENANTS[..self.config.tenants.clamp(1, TENANTS.len())]
    }
}

impl Iterator for SyntheticStream {
    type Item = UsageEvent;

    fn next(&mut self) -> Option<UsageEvent> {
        let rng = &mut self.rng;
        let tenant_idx = self.tenant_pick.sample(rng);
        let tenant = TENANTS[tenant_idx];
        // Each tenant uses 3 departments of its own, offset so tenants differ.
        let department = DEPARTMENTS[(tenant_idx + rng.random_range(0..3)) % DEPARTMENTS.len()];
        let (provider, model, _) = MODELS[self.model_pick.sample(rng)];
        let event_time = rng
            .random_range(self.config.start_ms..self.config.end_ms.max(self.config.start_ms + 1));
        let mut bytes = [0u8; 16];
        rng.fill(&mut bytes);
        let mut e = UsageEvent::new(
            uuid::Builder::from_random_bytes(bytes).into_uuid(),
            event_time,
            tenant,
            provider,
            model,
        );
        let prompt = (self.input.sample(rng) as i64).clamp(1, 400_000);
        let cached = if rng.random_bool(0.4) {
            prompt * rng.random_range(10..90) / 100
        } else {
            0
        };
        let cache_write = if provider == "anthropic" && rng.random_bool(0.1) {
            (prompt - cached) / 2
        } else {
            0
        };
        e.input_tokens = prompt - cached - cache_write;
        e.cached_input_tokens = cached;
        e.cache_write_tokens = cache_write;
        e.output_tokens = (self.output.sample(rng) as i64).clamp(1, 32_000);
        e.reasoning_tokens = if rng.random_bool(0.2) {
            e.output_tokens / 3
        } else {
            0
        };
        e.department = Some(department.to_string());
        e.user_id = Some(format!("{tenant}-user-{}", rng.random_range(0..40)));
        e.project_id = Some(format!("{tenant}-proj-{}", rng.random_range(0..5)));
        e.feature = Some(FEATURES[rng.random_range(0..FEATURES.len())].to_string());
        e.environment = Some(
            if rng.random_bool(0.9) {
                "prod"
            } else {
                "staging"
            }
            .to_string(),
        );
        e.request_id = Some(Uuid::from_u128(rng.random()).to_string());
        e.trace_id = Some(format!("{:032x}", rng.random::<u128>()));
        e.span_name = Some("llm.call".to_string());
        e.labels.insert(
            "region".into(),
            if rng.random_bool(0.5) {
                "eu-west-1"
            } else {
                "us-east-1"
            }
            .into(),
        );
        Some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use costpipe_schemas::ValidationLimits;

    #[test]
    fn events_are_valid_deterministic_and_skewed() {
        let cfg = SyntheticConfig {
            tenants: 5,
            start_ms: 1_764_000_000_000,
            end_ms: 1_764_100_000_000,
            include_unpriced: false,
        };
        let a: Vec<_> = SyntheticStream::new(7, cfg.clone()).take(2000).collect();
        let b: Vec<_> = SyntheticStream::new(7, cfg).take(2000).collect();
        assert_eq!(a, b);
        let limits = ValidationLimits {
            max_past_ms: i64::MAX / 2,
            max_future_ms: i64::MAX / 2,
            ..Default::default()
        };
        for e in &a {
            limits.check(e, 1_764_050_000_000).unwrap();
            assert!(e.model != "mistral-large-latest");
        }
        let first = a.iter().filter(|e| e.tenant_id == "acme").count();
        let last = a.iter().filter(|e| e.tenant_id == "hooli").count();
        assert!(
            first > 2 * last,
            "tenant volumes are skewed: {first} vs {last}"
        );
    }
}
