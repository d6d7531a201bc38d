//! `--model NAME --at TIME`: the price that would apply to a call, and why: which catalog
//! entry the name matched and how, which period, window and tier, and each rate.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use costpipe_pricing::window::show_ms_of_week;
use costpipe_pricing::{Catalog, Prices};

fn rates(out: &mut String, indent: &str, p: &Prices, rule: bool) {
    let reasoning = match (p.reasoning, rule) {
        (Some(r), true) => {
            format!("{r} (a call with reasoning bills its WHOLE output at this price)")
        }
        (Some(r), false) => format!("{r} (reasoning tokens only)"),
        (None, _) => "as output".to_string(),
    };
    let _ = writeln!(out, "{indent}input          {}", p.input);
    let _ = writeln!(out, "{indent}cached_input   {}", p.cached_input);
    let _ = writeln!(out, "{indent}cache_write_5m {}", p.cache_write_5m);
    let _ = writeln!(out, "{indent}cache_write_1h {}", p.cache_write_1h);
    let _ = writeln!(out, "{indent}output         {}", p.output);
    let _ = writeln!(out, "{indent}reasoning      {reasoning}");
    if !p.per_request.is_zero() {
        let _ = writeln!(out, "{indent}per_request    {} per call", p.per_request);
    }
}

/// The explanation for `name` at `at`, with the tier chosen for `prompt_tokens` when given.
pub fn explain(
    catalog: &Catalog,
    name: &str,
    at: DateTime<Utc>,
    prompt_tokens: Option<u64>,
) -> Result<String, String> {
    let model = catalog.lookup(name).ok_or_else(|| {
        format!(
            "{name:?} matches no catalog entry: events of it are stored unpriced (unknown_model)"
        )
    })?;
    let bare = name.split_once('/').map(|(_, b)| b);
    let how = if *model.key == *name {
        "its key".to_string()
    } else if model.aliases.iter().any(|a| a == name) {
        "an alias".to_string()
    } else if bare.is_some_and(|b| *model.key == *b || model.aliases.iter().any(|a| a == b)) {
        "its key or alias after the provider/ prefix".to_string()
    } else {
        "a pattern".to_string()
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{name} at {}",
        at.format("%Y-%m-%dT%H:%M:%S%.3fZ (%A)")
    );
    let _ = writeln!(
        out,
        "  entry   {} (provider {}, matched by {how}); prices in {} per 1,000,000 tokens",
        model.key, model.provider, model.currency
    );
    let at_ms = at.timestamp_millis();
    let Some(period) = model.period_at(at_ms) else {
        let _ = writeln!(
            out,
            "  period  none in force: events are stored unpriced (no_price_at_time)"
        );
        return Ok(out);
    };
    let show = |ms: i64| {
        if ms == i64::MAX {
            "open".to_string()
        } else {
            DateTime::from_timestamp_millis(ms).map_or(ms.to_string(), |t| {
                t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
            })
        }
    };
    let _ = writeln!(
        out,
        "  period  [{}, {})",
        show(period.from_ms),
        show(period.to_ms)
    );
    let _ = writeln!(out, "  source  {}", period.source);
    let rule = model.reasoning_bills_whole_output;
    if let Some(schedule) = &period.windows {
        let w = schedule.window_at(at_ms);
        let stretch = schedule
            .runs()
            .find(|(s, e, _)| {
                let t = costpipe_pricing::window::ms_of_week(at_ms);
                *s <= t && t < *e
            })
            .map(|(s, e, _)| format!("[{}, {}) UTC", show_ms_of_week(s), show_ms_of_week(e)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  window  {} {stretch} (the period has windows: {})",
            w.name,
            schedule
                .windows
                .iter()
                .map(|w| w.name.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(out, "  tier    none (windowed periods have no tiers)");
        let _ = writeln!(out, "  rates");
        rates(&mut out, "    ", &w.prices, rule);
        return Ok(out);
    }
    let _ = writeln!(out, "  window  none (one price all week)");
    match prompt_tokens {
        Some(prompt) => {
            let (p, tier) = period.prices_for(prompt);
            let _ = match tier {
                Some(t) => writeln!(out, "  tier    above {t} prompt tokens (prompt {prompt})"),
                None => writeln!(out, "  tier    base (prompt {prompt})"),
            };
            let _ = writeln!(out, "  rates");
            rates(&mut out, "    ", p, rule);
        }
        None => {
            let _ = writeln!(out, "  tier    base unless the prompt exceeds a threshold (give --prompt-tokens to choose)");
            let _ = writeln!(out, "  rates (base)");
            rates(&mut out, "    ", &period.base, rule);
            for t in &period.tiers {
                let _ = writeln!(
                    out,
                    "  rates (prompt above {} tokens; the whole call)",
                    t.above_prompt_tokens
                );
                rates(&mut out, "    ", &t.prices, rule);
            }
        }
    }
    Ok(out)
}
