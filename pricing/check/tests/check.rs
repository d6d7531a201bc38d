//! The check against the vendored tables: the shipped catalog passes; a deliberately wrong
//! price, the catalog before issue 11's fixes, and a stale allowlist entry each fail with a
//! message naming model, component, period, both values and the source.

use std::path::PathBuf;

use chrono::{DateTime, Utc};

use costpipe_catalog::{check, explain::explain, load_tables, Allowlist, Report, SNAPSHOT_AS_OF};
use costpipe_pricing::Catalog;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn allowlist() -> Allowlist {
    Allowlist::from_toml(
        &std::fs::read_to_string(repo("pricing/catalog/check-allowlist.toml")).unwrap(),
    )
    .unwrap()
}

fn as_of() -> DateTime<Utc> {
    SNAPSHOT_AS_OF.parse().unwrap()
}

fn run(catalog: &Catalog, allow: &Allowlist) -> Report {
    let tables = load_tables(&repo("pricing/catalog/external")).unwrap();
    assert_eq!(
        tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        [
            "genai-prices 0.2.3",
            "litellm 1.110.2",
            "models.dev 1.0.398"
        ]
    );
    check(catalog, &tables, allow, as_of())
}

fn unexplained(r: &Report) -> Vec<String> {
    r.unexplained().map(|d| d.to_string()).collect()
}

#[test]
fn the_shipped_catalog_passes_against_the_vendored_tables() {
    let r = run(&Catalog::builtin(), &allowlist());
    assert!(
        r.passed(),
        "unexplained: {:#?}\nstale: {:#?}",
        unexplained(&r),
        r.stale
    );
    // It compared something substantial: every USD model's prices, hourly for windows.
    assert!(r.agreed > 1000, "{} values compared", r.agreed);
}

#[test]
fn a_wrong_price_fails_with_a_clear_message() {
    let right = "input = \"2.50\"\n  cached_input = \"1.25\"\n  output = \"10.00\"";
    assert!(
        Catalog::DEFAULT_TOML.contains(right),
        "gpt-4o's prices are where the test expects"
    );
    let wrong = Catalog::DEFAULT_TOML.replacen(
        right,
        "input = \"2.60\"\n  cached_input = \"1.25\"\n  output = \"10.00\"",
        1,
    );
    let r = run(&Catalog::from_toml(&wrong).unwrap(), &allowlist());
    assert!(!r.passed());
    assert_eq!(
        unexplained(&r),
        [
            "gpt-4o input, period [2024-10-02T00:00:00Z, open): catalog 2.6, genai-prices 0.2.3 \"gpt-4o\" says 2.5",
            "gpt-4o input, period [2024-10-02T00:00:00Z, open): catalog 2.6, litellm 1.110.2 \"gpt-4o\" says 2.5",
            "gpt-4o input, period [2024-10-02T00:00:00Z, open): catalog 2.6, models.dev 1.0.398 \"openai/gpt-4o\" says 2.5",
        ]
    );
}

#[test]
fn the_catalog_before_the_fixes_fails_on_mistral_cache_and_deepseek() {
    // Mistral cached input removed again: the catalog bills cache reads at the input price.
    let fixed = "  cached_input = \"0.05\"\n  output = \"1.50\"";
    assert!(Catalog::DEFAULT_TOML.contains(fixed));
    let old = Catalog::DEFAULT_TOML.replacen(fixed, "  output = \"1.50\"", 1);
    let r = run(&Catalog::from_toml(&old).unwrap(), &allowlist());
    assert_eq!(
        unexplained(&r),
        [
            "mistral-large-2512 cached_input, period [2025-12-02T00:00:00Z, open): catalog 0.5, genai-prices 0.2.3 \"mistral-large-2512\" says 0.05",
            "mistral-large-2512 cached_input, period [2025-12-02T00:00:00Z, open): catalog 0.5, litellm 1.110.2 \"mistral/mistral-large-2512\" says 0.05",
        ]
    );
    // A peak price typed wrong in the current Pro period (its last window block) is found
    // in that window, against both tables.
    let peak = "name = \"peak\"\n    input = \"1.32\"";
    let at = Catalog::DEFAULT_TOML
        .rfind(peak)
        .expect("the Pro peak window");
    let typo = format!(
        "{}name = \"peak\"\n    input = \"1.23\"{}",
        &Catalog::DEFAULT_TOML[..at],
        &Catalog::DEFAULT_TOML[at + peak.len()..]
    );
    let r = run(&Catalog::from_toml(&typo).unwrap(), &allowlist());
    assert_eq!(
        unexplained(&r),
        [
            "deepseek-v4-pro input, period [2026-08-23T00:00:00Z, open), window peak (at Mon 2026-11-30T01:01Z): catalog 1.23, genai-prices 0.2.3 \"deepseek-v4-pro\" says 1.32",
            "deepseek-v4-pro input, period [2026-08-23T00:00:00Z, open), window any (the table has no times of day): catalog off-peak 0.66 / peak 1.23, litellm 1.110.2 \"deepseek/deepseek-v4-pro\" says 1.32",
        ]
    );
}

#[test]
fn an_allowlist_entry_that_explains_nothing_fails() {
    let mut allow = allowlist();
    allow.difference.push(costpipe_catalog::compare::Allowed {
        model: "gpt-4o".into(),
        source: "litellm 1.110.2".into(),
        component: Some("output".into()),
        window: None,
        reason: "no longer true".into(),
    });
    let r = run(&Catalog::builtin(), &allow);
    assert!(!r.passed());
    assert_eq!(r.stale.len(), 1);
    assert!(Allowlist::from_toml(
        "[[difference]]\nmodel = \"m\"\nsource = \"s\"\nreason = \" \"\n"
    )
    .is_err());
}

#[test]
fn explain_names_entry_period_window_and_rates() {
    let c = Catalog::builtin();
    let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
    let peak = explain(
        &c,
        "deepseek/deepseek-v4-pro",
        at("2026-11-27T03:59:59.999Z"),
        None,
    )
    .unwrap();
    assert!(
        peak.contains("entry   deepseek-v4-pro (provider deepseek"),
        "{peak}"
    );
    assert!(
        peak.contains("period  [2026-08-23T00:00:00Z, open)"),
        "{peak}"
    );
    assert!(
        peak.contains("window  peak [fri 01:00, fri 04:00) UTC"),
        "{peak}"
    );
    assert!(peak.contains("input          1.32\n"), "{peak}");
    let off = explain(&c, "deepseek-v4-pro", at("2026-11-27T04:00:00Z"), None).unwrap();
    assert!(
        off.contains("window  off-peak [fri 04:00, fri 06:00) UTC"),
        "{off}"
    );
    assert!(off.contains("output         1.98\n"), "{off}");
    let qwen = explain(&c, "qwen-plus", at("2026-11-27T04:00:00Z"), Some(1_000)).unwrap();
    assert!(
        qwen.contains(
            "reasoning      8 (a call with reasoning bills its WHOLE output at this price)"
        ),
        "{qwen}"
    );
    let tier = explain(
        &c,
        "gemini-2.5-pro",
        at("2026-11-27T04:00:00Z"),
        Some(200_001),
    )
    .unwrap();
    assert!(
        tier.contains("tier    above 200000 prompt tokens"),
        "{tier}"
    );
    assert!(explain(&c, "no-such-model", at("2026-11-27T04:00:00Z"), None).is_err());
}
