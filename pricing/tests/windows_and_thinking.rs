//! Time-of-day windows and the thinking-mode rule: every window boundary of the shipped
//! DeepSeek prices at ±1 ms, weekdays against weekends, period changes inside a window, the
//! validation that refuses overlapping or gapped windows, and the cost of a Qwen thinking call.
//! Expected windows come from the issue's text (peak Monday–Friday 01:00–04:00 and
//! 06:00–10:00 UTC, every day before 2026-08-23), computed here with chrono's calendar, not
//! the code's week arithmetic; expected costs are worked by hand in the comments.

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc, Weekday};
use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use uuid::Uuid;

use costpipe_pricing::{price_event, Catalog};
use costpipe_schemas::UsageEvent;

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .with_timezone(&Utc)
}

/// 1 M input, 100 k cache hits, 100 k output: cost = input + cached/10 + output/10 per M.
fn call(model: &str, t: DateTime<Utc>) -> UsageEvent {
    let mut e = UsageEvent::new(Uuid::nil(), t.timestamp_millis(), "t", "p", model);
    e.input_tokens = 1_000_000;
    e.cached_input_tokens = 100_000;
    e.output_tokens = 100_000;
    e
}

/// The window the issue's text gives for `t` (from 2026-08-16).
fn expected_window(t: DateTime<Utc>) -> &'static str {
    let weekend = matches!(t.weekday(), Weekday::Sat | Weekday::Sun);
    let weekends_off = t >= at("2026-08-23T00:00:00Z");
    let h = t.hour();
    let peak_hour = (1..4).contains(&h) || (6..10).contains(&h);
    if peak_hour && !(weekend && weekends_off) {
        "peak"
    } else {
        "off-peak"
    }
}

/// (input, cache hit, output) USD per M for `model` at `t` in `window`, from the issue.
fn expected_prices(model: &str, t: DateTime<Utc>, window: &str) -> (Decimal, Decimal, Decimal) {
    let peak = match model {
        "deepseek-v4-pro" => (dec!(1.32), dec!(0.044), dec!(3.96)),
        _ if t >= at("2026-09-10T00:00:00Z") => (dec!(0.30), dec!(0.006), dec!(1.20)),
        _ => (dec!(0.44), dec!(0.014), dec!(1.32)),
    };
    if window == "peak" {
        peak
    } else {
        (peak.0 / dec!(2), peak.1 / dec!(2), peak.2 / dec!(2))
    }
}

fn expected_cost(model: &str, t: DateTime<Utc>) -> Decimal {
    let (i, c, o) = expected_prices(model, t, expected_window(t));
    i + c / dec!(10) + o / dec!(10)
}

fn assert_priced(catalog: &Catalog, model: &str, t: DateTime<Utc>) {
    let p = price_event(catalog, &call(model, t));
    assert_eq!(
        p.price_window.as_deref(),
        Some(expected_window(t)),
        "{model} at {t}"
    );
    assert_eq!(p.cost, expected_cost(model, t), "{model} at {t}");
}

#[test]
fn every_boundary_of_a_weekday_and_a_weekend_at_plus_minus_one_ms() {
    let catalog = Catalog::builtin();
    // Monday 2026-11-23 to Sunday 2026-11-29, and the every-day week of 2026-08-16.
    let days: Vec<DateTime<Utc>> = (0..7)
        .map(|d| at("2026-11-23T00:00:00Z") + Duration::days(d))
        .chain((0..7).map(|d| at("2026-08-16T00:00:00Z") + Duration::days(d)))
        .collect();
    for model in ["deepseek-v4-flash", "deepseek-v4-pro"] {
        for day in &days {
            for hour in [0, 1, 4, 6, 10, 24] {
                let b = *day + Duration::hours(hour);
                for t in [
                    b - Duration::milliseconds(1),
                    b,
                    b + Duration::milliseconds(1),
                ] {
                    if t < at("2026-08-16T00:00:00Z") {
                        continue; // the flat period before windows: checked below
                    }
                    assert_priced(&catalog, model, t);
                }
            }
        }
    }
    // Spelled out once, so the expectation itself is visible: Friday 03:59:59.999 is peak,
    // 04:00 off-peak; Saturday 02:00 off-peak; Monday 01:00 peak again.
    let w = |s: &str| {
        price_event(&catalog, &call("deepseek-v4-pro", at(s)))
            .price_window
            .map(|w| w.to_string())
    };
    assert_eq!(w("2026-11-27T03:59:59.999Z").as_deref(), Some("peak"));
    assert_eq!(w("2026-11-27T04:00:00Z").as_deref(), Some("off-peak"));
    assert_eq!(w("2026-11-28T02:00:00Z").as_deref(), Some("off-peak"));
    assert_eq!(w("2026-11-29T23:59:59.999Z").as_deref(), Some("off-peak"));
    assert_eq!(w("2026-11-30T01:00:00Z").as_deref(), Some("peak"));
}

#[test]
fn weekends_are_peak_until_2026_08_23_and_off_peak_after() {
    let catalog = Catalog::builtin();
    let p = |s: &str| price_event(&catalog, &call("deepseek-v4-pro", at(s)));
    // Saturday 2026-08-22 02:00: peak, every day still had peak hours.
    // 1 M * 1.32 + 100 k * 0.044 + 100 k * 3.96 = 1.32 + 0.0044 + 0.396 = 1.7204.
    let before = p("2026-08-22T02:00:00Z");
    assert_eq!(before.price_window.as_deref(), Some("peak"));
    assert_eq!(before.cost, dec!(1.7204));
    // Saturday 2026-08-29 02:00: off-peak, half: 0.8602.
    let after = p("2026-08-29T02:00:00Z");
    assert_eq!(after.price_window.as_deref(), Some("off-peak"));
    assert_eq!(after.cost, dec!(0.8602));
    // Before 2026-08-16 there are no windows: the flat price, no window stored.
    // 1 M * 0.435 + 100 k * 0.003625 + 100 k * 0.87 = 0.435 + 0.0003625 + 0.087 = 0.5223625.
    let flat = p("2026-08-15T23:59:59.999Z");
    assert_eq!(flat.price_window, None);
    assert_eq!(flat.cost, dec!(0.5223625));
    let first = p("2026-08-16T00:00:00Z");
    assert_eq!(first.price_window.as_deref(), Some("off-peak"));
}

#[test]
fn a_period_change_inside_a_window_changes_the_price_not_the_window() {
    let catalog = Catalog::builtin();
    // 2026-09-10 00:00 is a Thursday, off-peak on both sides; the Flash name becomes V4.1.
    // Before: 1 M * 0.22 + 100 k * 0.007 + 100 k * 0.66 = 0.22 + 0.0007 + 0.066 = 0.2867.
    // After:  1 M * 0.15 + 100 k * 0.003 + 100 k * 0.60 = 0.15 + 0.0003 + 0.06 = 0.2103.
    let p = |s: &str| price_event(&catalog, &call("deepseek-v4-flash", at(s)));
    let (a, b) = (p("2026-09-09T23:59:59.999Z"), p("2026-09-10T00:00:00Z"));
    assert_eq!(
        (a.price_window.as_deref(), a.cost),
        (Some("off-peak"), dec!(0.2867))
    );
    assert_eq!(
        (b.price_window.as_deref(), b.cost),
        (Some("off-peak"), dec!(0.2103))
    );
    // 2026-08-23 00:00 (Sunday) is off-peak on both sides, under different schedules.
    let pro = |s: &str| price_event(&catalog, &call("deepseek-v4-pro", at(s)));
    assert_eq!(
        pro("2026-08-22T23:59:59.999Z").price_window.as_deref(),
        Some("off-peak")
    );
    assert_eq!(
        pro("2026-08-23T00:00:00Z").price_window.as_deref(),
        Some("off-peak")
    );

    // A period change at 02:00, inside a peak window of 01:00-04:00.
    let toml = |from: &str, to: Option<&str>, peak: &str| {
        let to = to
            .map(|t| format!("effective_to = \"{t}\"\n"))
            .unwrap_or_default();
        format!(
            "[[models.prices]]\neffective_from = \"{from}\"\n{to}source = \"t\"\n\
             [[models.prices.windows]]\nname = \"peak\"\ninput = \"{peak}\"\noutput = \"0\"\n\
             times = [{{ days = [\"mon\",\"tue\",\"wed\",\"thu\",\"fri\",\"sat\",\"sun\"], from = \"01:00\", to = \"04:00\" }}]\n\
             [[models.prices.windows]]\nname = \"off-peak\"\ninput = \"1\"\noutput = \"0\"\n\
             times = [{{ days = [\"mon\",\"tue\",\"wed\",\"thu\",\"fri\",\"sat\",\"sun\"], from = \"00:00\", to = \"01:00\" }},\n\
             {{ days = [\"mon\",\"tue\",\"wed\",\"thu\",\"fri\",\"sat\",\"sun\"], from = \"04:00\", to = \"24:00\" }}]\n"
        )
    };
    let text = format!(
        "catalog_version = \"t\"\ndefault_billing_currency = \"USD\"\n[[models]]\nkey = \"m\"\nprovider = \"x\"\nkind = \"chat\"\ncurrency = \"USD\"\n{}{}",
        toml("2026-01-01T00:00:00Z", Some("2026-03-04T02:00:00Z"), "2"),
        toml("2026-03-04T02:00:00Z", None, "3")
    );
    let c = Catalog::from_toml(&text).expect("valid");
    let one = |s: &str| {
        let mut e = UsageEvent::new(Uuid::nil(), at(s).timestamp_millis(), "t", "p", "m");
        e.input_tokens = 1_000_000;
        let p = price_event(&c, &e);
        (p.price_window.map(|w| w.to_string()), p.cost)
    };
    assert_eq!(
        one("2026-03-04T01:59:59.999Z"),
        (Some("peak".into()), dec!(2))
    );
    assert_eq!(one("2026-03-04T02:00:00Z"), (Some("peak".into()), dec!(3)));
    assert_eq!(
        one("2026-03-04T04:00:00Z"),
        (Some("off-peak".into()), dec!(1))
    );
}

fn refused(toml: &str) -> String {
    Catalog::from_toml(toml)
        .expect_err("must be refused")
        .to_string()
}

fn windowed(peak_times: &str, off_times: &str, extra: &str) -> String {
    format!(
        "catalog_version = \"t\"\ndefault_billing_currency = \"USD\"\n[[models]]\nkey = \"m\"\nprovider = \"x\"\nkind = \"chat\"\ncurrency = \"USD\"\n\
         [[models.prices]]\neffective_from = \"2026-01-01T00:00:00Z\"\nsource = \"t\"\n{extra}\
         [[models.prices.windows]]\nname = \"peak\"\ninput = \"2\"\noutput = \"2\"\ntimes = [{peak_times}]\n\
         [[models.prices.windows]]\nname = \"off-peak\"\ninput = \"1\"\noutput = \"1\"\ntimes = [{off_times}]\n"
    )
}

#[test]
fn overlapping_or_gapped_windows_are_refused_with_clear_messages() {
    let all = r#"["mon","tue","wed","thu","fri","sat","sun"]"#;
    let ok = windowed(
        &format!(r#"{{ days = {all}, from = "09:00", to = "17:00" }}"#),
        &format!(
            r#"{{ days = {all}, from = "00:00", to = "09:00" }}, {{ days = {all}, from = "17:00", to = "24:00" }}"#
        ),
        "",
    );
    Catalog::from_toml(&ok).expect("a week covered exactly once is valid");

    let overlap = windowed(
        &format!(r#"{{ days = {all}, from = "09:00", to = "17:00" }}"#),
        &format!(
            r#"{{ days = {all}, from = "00:00", to = "09:30" }}, {{ days = {all}, from = "17:00", to = "24:00" }}"#
        ),
        "",
    );
    assert_eq!(
        refused(&overlap),
        "model m period from 2026-01-01T00:00:00Z: price windows overlap: off-peak [mon 00:00, mon 09:30) and peak [mon 09:00, mon 17:00)"
    );
    let gap = windowed(
        &format!(r#"{{ days = {all}, from = "09:00", to = "17:00" }}"#),
        &format!(
            r#"{{ days = {all}, from = "00:00", to = "09:00" }}, {{ days = ["mon","tue","wed","thu","fri","sat"], from = "17:00", to = "24:00" }}"#
        ),
        "",
    );
    assert_eq!(
        refused(&gap),
        "model m period from 2026-01-01T00:00:00Z: price windows leave a gap: [sun 17:00, mon 00:00) UTC is in no window"
    );
    let inner_gap = windowed(
        &format!(r#"{{ days = {all}, from = "09:00", to = "17:00" }}"#),
        &format!(
            r#"{{ days = {all}, from = "00:00", to = "08:59" }}, {{ days = {all}, from = "17:00", to = "24:00" }}"#
        ),
        "",
    );
    assert!(
        refused(&inner_gap).contains("[mon 08:59, mon 09:00) UTC is in no window"),
        "{}",
        refused(&inner_gap)
    );
    let bad_day = windowed(
        r#"{ days = ["moon"], from = "09:00", to = "17:00" }"#,
        "",
        "",
    );
    assert!(
        refused(&bad_day).contains("\"moon\" is not a weekday"),
        "{}",
        refused(&bad_day)
    );
    let bad_time = windowed(r#"{ days = ["mon"], from = "9:00", to = "17:00" }"#, "", "");
    assert!(refused(&bad_time).contains("\"9:00\" is not a valid window time"));
    let backwards = windowed(
        r#"{ days = ["mon"], from = "17:00", to = "09:00" }"#,
        "",
        "",
    );
    assert!(refused(&backwards).contains("`to` must be after `from`"));
    let with_prices = windowed(
        &format!(r#"{{ days = {all}, from = "00:00", to = "24:00" }}"#),
        "",
        "input = \"5\"\n",
    );
    assert!(refused(&with_prices).contains("takes its prices from the windows; remove input"));
}

proptest! {
    /// Any millisecond between 2026-08-01 and 2027-01-01: the window is the issue's and the
    /// cost its prices, for both models.
    #[test]
    fn any_instant_gets_the_documented_window(offset in 0i64..153 * 86_400_000, pro in any::<bool>()) {
        let t = Utc.timestamp_millis_opt(at("2026-08-01T00:00:00Z").timestamp_millis() + offset).unwrap();
        let catalog = Catalog::builtin();
        let model = if pro { "deepseek-v4-pro" } else { "deepseek-v4-flash" };
        let p = price_event(&catalog, &call(model, t));
        if t < at("2026-08-16T00:00:00Z") {
            prop_assert_eq!(p.price_window, None);
        } else {
            prop_assert_eq!(p.price_window.as_deref(), Some(expected_window(t)));
            prop_assert_eq!(p.cost, expected_cost(model, t));
        }
    }

    /// Just around any boundary hour of any day: ±1 ms either side.
    #[test]
    fn boundaries_of_any_day(day in 0i64..140, hour in prop::sample::select(vec![0i64, 1, 4, 6, 10, 24]), delta in -1i64..=1) {
        let t = at("2026-08-16T00:00:00Z") + Duration::days(day) + Duration::hours(hour) + Duration::milliseconds(delta);
        let catalog = Catalog::builtin();
        if t >= at("2026-08-16T00:00:00Z") {
            let p = price_event(&catalog, &call("deepseek-v4-pro", t));
            prop_assert_eq!(p.price_window.as_deref(), Some(expected_window(t)), "{}", t);
        }
    }

    /// Qwen thinking mode: with any reasoning, the whole output is at the thinking price
    /// (qwen-plus, up to 128 k prompt: input 0.8, output 2, thinking 8 CNY per M).
    #[test]
    fn a_thinking_call_bills_its_whole_output_at_the_thinking_price(
        input in 0i64..100_000, answer in 0i64..1_000_000, reasoning in 0i64..1_000_000,
    ) {
        let catalog = Catalog::builtin();
        let mut e = UsageEvent::new(Uuid::nil(), at("2026-11-15T12:00:00Z").timestamp_millis(), "t", "p", "qwen-plus");
        e.input_tokens = input;
        e.reasoning_tokens = reasoning;
        e.output_tokens = answer + reasoning;
        let out_price = if reasoning > 0 { dec!(8) } else { dec!(2) };
        let want = (Decimal::from(input) * dec!(0.8) + Decimal::from(answer + reasoning) * out_price) / dec!(1000000);
        prop_assert_eq!(price_event(&catalog, &e).cost, want.normalize());
    }
}

#[test]
fn the_documented_qwen_thinking_call_costs_0_012_cny() {
    // Alibaba's example: qwen-plus, 1,000 reasoning + 500 answer tokens, thinking price
    // 8 CNY per M for the whole 1,500: 1,500 * 8 / 10^6 = 0.012 CNY (the old rule gave 0.009).
    let catalog = Catalog::builtin();
    let mut e = UsageEvent::new(
        Uuid::nil(),
        at("2026-11-15T12:00:00Z").timestamp_millis(),
        "t",
        "p",
        "qwen-plus",
    );
    e.reasoning_tokens = 1_000;
    e.output_tokens = 1_500;
    let p = price_event(&catalog, &e);
    assert_eq!((p.cost, &*p.currency), (dec!(0.012), "CNY"));
    // Without reasoning, the answer is at the non-thinking output price: 500 * 2 / 10^6.
    e.reasoning_tokens = 0;
    e.output_tokens = 500;
    assert_eq!(price_event(&catalog, &e).cost, dec!(0.001));
}

#[test]
fn the_thinking_rule_needs_a_reasoning_price() {
    let text = "catalog_version = \"t\"\ndefault_billing_currency = \"USD\"\n[[models]]\nkey = \"m\"\nprovider = \"x\"\nkind = \"chat\"\ncurrency = \"USD\"\nreasoning_bills_whole_output = true\n\
                [[models.prices]]\neffective_from = \"2026-01-01T00:00:00Z\"\nsource = \"t\"\ninput = \"1\"\noutput = \"2\"\n";
    assert_eq!(
        refused(text),
        "model m (reasoning_bills_whole_output is set): price reasoning is required"
    );
}

#[test]
fn a_contract_price_for_a_thinking_model_follows_the_rule() {
    // A tenant's own qwen-plus price: output 1, thinking 4 CNY per M. A call with 1,000
    // reasoning + 500 answer tokens: 1,500 x 4 = 6,000 per M = 0.006 CNY; without the rule it
    // would be 1,000 x 4 + 500 x 1 = 0.0045.
    let text = format!(
        "{}\n[[contract_prices]]\ntenant = \"acme\"\nmodel = \"qwen-plus\"\ncurrency = \"CNY\"\n\
         effective_from = \"2026-01-01T00:00:00Z\"\ninput = \"0.5\"\noutput = \"1\"\nreasoning = \"4\"\n",
        Catalog::DEFAULT_TOML
    );
    let catalog = Catalog::from_toml(&text).expect("valid");
    let mut e = UsageEvent::new(
        Uuid::nil(),
        at("2026-11-15T12:00:00Z").timestamp_millis(),
        "acme",
        "p",
        "qwen-plus",
    );
    e.reasoning_tokens = 1_000;
    e.output_tokens = 1_500;
    let p = price_event(&catalog, &e);
    assert!(p.contract);
    assert_eq!(p.cost, dec!(0.006));
    // And a contract for a thinking model without a reasoning price is refused.
    let bad = text.replace("reasoning = \"4\"\n", "");
    assert!(
        refused(&bad).contains("price reasoning is required"),
        "{}",
        refused(&bad)
    );
}
