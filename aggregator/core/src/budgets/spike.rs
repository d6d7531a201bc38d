//! Spike detection of one budget: the rule (a definition's `spike` options, defaults
//! applied), whether an hour's spend is a spike against its trailing window, decided in
//! `Decimal` without roots or division (products round only beyond 28 significant digits),
//! and the words of a SPIKE record (its reason and method). The hourly data is
//! [`HourlySpend`](super::hourly::HourlySpend)'s; when to evaluate, the history needed and
//! once-per-hour publishing are the book's.
//!
//! The hour judged is the current UTC clock hour, so far: spend in an hour only grows, so a
//! partial hour that is already a spike is one, and it is reported within the hour instead
//! of after it. The trailing window is the `trailing_hours` full hours before it.

use rust_decimal::{Decimal, RoundingStrategy};

use costpipe_schemas::SpikeOptions;

use super::hourly::Trailing;

/// A budget's spike rule (present when spike detection is on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpikeRule {
    pub min_spend: Decimal,
    pub factor: Decimal,
    pub sigmas: Decimal,
    pub trailing_hours: u32,
}

impl SpikeRule {
    /// The rule of validated options; `None` when they turn detection off.
    pub fn from_options(o: &SpikeOptions) -> Option<SpikeRule> {
        o.enabled.then_some(SpikeRule {
            min_spend: o.min_spend,
            factor: o.factor,
            sigmas: o.sigmas,
            trailing_hours: o.trailing_hours,
        })
    }

    /// The method, stated in every SPIKE record.
    pub fn method(&self) -> String {
        let (f, k, n, min) = (
            fmt(self.factor),
            fmt(self.sigmas),
            self.trailing_hours,
            fmt(self.min_spend),
        );
        format!(
            "spike when last > {f} * mean or last > mean + {k} * sigma, and last >= {min}; \
last = spend in the current UTC hour so far; mean and sigma (population) of the hourly spend \
of the {n} full hours before it, hours without spend counted as 0, S = their sum; compared \
without roots as {n} * last > {f} * S and ({n} * last - S > 0 and {n} * ({n} * last - S)^2 > {k}^2 * \
sum over the hours of ({n} * x - S)^2); needs spend seen at least {n} hours before the hour; \
once per budget per hour"
        )
    }
}

/// Which rule fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fired {
    /// `last > factor × mean`.
    Mean,
    /// `last > mean + sigmas × σ`.
    Sigma,
    Both,
}

/// Whether `last` is a spike against `t` under `rule`; `None` when it is not (or when a
/// product is beyond `Decimal`, which no real spend reaches).
pub fn check(rule: &SpikeRule, last: Decimal, t: &Trailing) -> Option<Fired> {
    if last < rule.min_spend {
        return None;
    }
    let n = Decimal::from(t.n);
    let n_last = n.checked_mul(last)?;
    // last > f·S/n  ⇔  n·last > f·S
    let mean_rule = rule.factor.checked_mul(t.sum).is_some_and(|fs| n_last > fs);
    // last > S/n + k·σ  ⇔  n·last − S > 0 and (n·last − S)² > k²·n²σ² = k²·sq_dev/n,
    // squared both sides and times n: no root, no division.
    let sigma_rule = n_last.checked_sub(t.sum).is_some_and(|excess| {
        let lhs = excess.checked_mul(excess).and_then(|e| e.checked_mul(n));
        let rhs = rule
            .sigmas
            .checked_mul(rule.sigmas)
            .and_then(|k2| k2.checked_mul(t.sq_dev));
        excess > Decimal::ZERO && matches!((lhs, rhs), (Some(l), Some(r)) if l > r)
    });
    match (mean_rule, sigma_rule) {
        (true, true) => Some(Fired::Both),
        (true, false) => Some(Fired::Mean),
        (false, true) => Some(Fired::Sigma),
        (false, false) => None,
    }
}

fn fmt(d: Decimal) -> String {
    d.normalize().to_string()
}

/// `d` rounded to 6 places, for display.
fn round6(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(6, RoundingStrategy::MidpointAwayFromZero)
        .normalize()
}

/// The reason of a SPIKE record: the hour's spend, the trailing mean and σ (rounded to 6
/// places), and the rule(s) that fired with their thresholds.
pub fn reason(
    rule: &SpikeRule,
    fired: Fired,
    last: Decimal,
    t: &Trailing,
    currency: &str,
    hour_label: &str,
) -> String {
    let mean = t.mean().map(round6);
    let sigma = t.sigma().map(round6);
    let show = |d: Option<Decimal>| d.map_or_else(|| "?".to_string(), fmt);
    let by_mean = format!(
        "{} * mean = {}",
        fmt(rule.factor),
        show(mean.and_then(|m| m.checked_mul(rule.factor)))
    );
    let by_sigma = format!(
        "mean + {} * sigma = {}",
        fmt(rule.sigmas),
        show(
            mean.zip(sigma)
                .and_then(|(m, s)| m.checked_add(s.checked_mul(rule.sigmas)?))
        )
    );
    let rules = match fired {
        Fired::Mean => format!("above {by_mean}"),
        Fired::Sigma => format!("above {by_sigma}"),
        Fired::Both => format!("above {by_mean} and above {by_sigma}"),
    };
    format!(
        "spike: {} {currency} spent in the hour from {hour_label} so far, {rules}; trailing {} h: \
mean {}, sigma {}",
        fmt(last),
        t.n,
        show(mean),
        show(sigma)
    )
}
