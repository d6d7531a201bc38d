//! The dashboard in a real browser: headless Debian Chromium driven through ChromeDriver
//! (WebDriver, fantoccini), against billing on the local stack with known rows
//! (`costpipe_e2e::dashboard_data`). Logs in with a tenant key and checks that the page's
//! totals (read from `data-amount`, the API's exact decimal text) equal billing's API and
//! the test's own sums; forces another tenant into the URL and sees an error and no number;
//! opens every view; logs in as admin and picks the other tenant; stops billing and sees
//! the page say so. Screenshots go to `<target>/screenshots/` (`COSTPIPE_SCREENSHOT_DIR`
//! overrides). Every wait polls the DOM for a condition, with a deadline.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (`scripts/stack deps` installs
//! Debian's `chromium` and `chromium-driver`; `COSTPIPE_CHROMIUM`, `COSTPIPE_CHROMEDRIVER`
//! override the paths).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use chrono::Utc;
use chrono_tz::Tz;
use fantoccini::{Client, ClientBuilder, Locator};
use rust_decimal::Decimal;
use serde_json::{json, Value};

use costpipe_e2e::billing_client::{decimal, start_billing, Api};
use costpipe_e2e::dashboard_data::{
    cost_between, day_and_month_start, generate, local_day, spawn_live_aggregators, write_controls,
    write_usage, ACME, ACME_ZONE, ADMIN, GLOBEX, GLOBEX_SECRET,
};
use costpipe_e2e::{free_port, test_seed, wait_for, Names, Stack};

/// How long one page state may take to appear (the machine may be busy building).
const PAGE_DEADLINE: Duration = Duration::from_secs(30);

fn tool(env: &str, default: &str) -> PathBuf {
    let path = PathBuf::from(std::env::var(env).unwrap_or_else(|_| default.to_string()));
    assert!(
        path.exists(),
        "{} is missing: the dashboard browser test drives Debian's headless Chromium through \
         ChromeDriver. Install both with `scripts/stack deps` (apt packages chromium and \
         chromium-driver; CI runs it), or point {env} at them.",
        path.display()
    );
    path
}

/// ChromeDriver on a free port; killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start() -> Driver {
        let chromedriver = tool("COSTPIPE_CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = free_port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let status = format!("{}/status", driver.url);
        wait_for("chromedriver to be ready", Duration::from_secs(30), || {
            let status = status.clone();
            async move {
                let v: Value = reqwest::get(&status).await.ok()?.json().await.ok()?;
                v["value"]["ready"].as_bool().filter(|r| *r)
            }
        })
        .await;
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let chromium = tool("COSTPIPE_CHROMIUM", "/usr/bin/chromium");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            // As root in a sandbox-less VM, with no network but loopback: no sandbox, no
            // GPU, and none of Chromium's background connections.
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-quic", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--window-size=1440,1350",
                     "--force-device-scale-factor=1", "--lang=en-US",
                     format!("--user-data-dir={}", profile.display())],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session in headless Chromium")
}

fn screenshot_dir() -> PathBuf {
    let dir = match std::env::var_os("COSTPIPE_SCREENSHOT_DIR") {
        Some(d) => PathBuf::from(d),
        // <target>/debug/deps/<test> → <target>/screenshots
        None => std::env::current_exe()
            .expect("test path")
            .ancestors()
            .nth(3)
            .expect("target dir")
            .join("screenshots"),
    };
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn snap(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    let path = screenshot_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).expect("write screenshot");
    println!("screenshot {}", path.display());
}

/// Waits until `css` matches an element, or fails with what the page shows.
async fn wait_css(c: &Client, css: &str) -> fantoccini::elements::Element {
    match c
        .wait()
        .at_most(PAGE_DEADLINE)
        .every(Duration::from_millis(100))
        .for_element(Locator::Css(css))
        .await
    {
        Ok(e) => e,
        Err(e) => {
            let text = match c.find(Locator::Css("body")).await {
                Ok(b) => b.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            snap(c, "failed-wait").await;
            panic!(
                "no element matches {css} after {PAGE_DEADLINE:?} ({e}); the page shows:\n{text}"
            );
        }
    }
}

/// The render counter of `#view` (bumped by every render).
async fn seq(c: &Client) -> String {
    c.find(Locator::Css("#view"))
        .await
        .expect("#view")
        .attr("data-seq")
        .await
        .expect("data-seq")
        .unwrap_or_default()
}

/// Goes to `#hash` and waits until the view rendered again and settled in `state`.
async fn open(c: &Client, hash: &str, view: &str, state: &str) {
    let before = seq(c).await;
    c.execute("location.hash = arguments[0];", vec![json!(hash)])
        .await
        .expect("set hash");
    wait_css(
        c,
        &format!(r#"#view[data-view="{view}"][data-state="{state}"]:not([data-seq="{before}"])"#),
    )
    .await;
}

/// The exact amount in `data-amount` of the element `css`.
async fn amount(c: &Client, css: &str) -> Decimal {
    let e = wait_css(c, css).await;
    let text = e
        .attr("data-amount")
        .await
        .expect("attr")
        .unwrap_or_else(|| panic!("{css} has no data-amount"));
    Decimal::from_str(&text).unwrap_or_else(|_| panic!("{css}: {text:?} is not a decimal"))
}

async fn count(c: &Client, css: &str) -> usize {
    c.find_all(Locator::Css(css)).await.expect("find_all").len()
}

/// Σ billing_cost of a cost answer's rows in `currency`.
fn billing_sum(v: &Value, currency: &str) -> Decimal {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["billing_currency"] == currency)
        .map(|r| decimal(&r["billing_cost"]))
        .sum()
}

async fn log_in(c: &Client, key: &str) {
    let input = wait_css(c, "#login-key").await;
    input.send_keys(key).await.expect("type key");
    c.find(Locator::Css("#login-submit"))
        .await
        .expect("submit")
        .click()
        .await
        .expect("click");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack and Chromium: scripts/test installs and starts them"]
async fn the_dashboard_shows_the_apis_numbers_to_their_tenant_only() {
    let seed = test_seed("dashboard_browser");
    let now = Utc::now();
    let stack = Stack::from_env();
    let names = Names::new("dashboard_browser");
    let db = names.database.clone();
    let (live_url, live_sums) = spawn_live_aggregators(now).await;
    let zones = format!("acme={ACME_ZONE}");
    let (billing, api) = start_billing(
        &stack,
        &names,
        ADMIN,
        &[("acme", ACME), ("globex", GLOBEX)],
        &[
            ("COSTPIPE_BILLING_TENANT_TIME_ZONES", zones.as_str()),
            ("COSTPIPE_BILLING_LIVE_URL", live_url.as_str()),
        ],
    )
    .await;
    let evs = generate(seed, now);
    write_usage(&stack, &db, &evs).await;
    write_controls(&stack, &db, now).await;

    let driver = Driver::start().await;
    let profile = std::env::temp_dir().join(format!("{db}-chromium"));
    let c = browser(&driver, &profile).await;
    // `run` owns billing (it stops it to see the page's error; a panic drops and kills it);
    // the browser and the driver are closed here whatever happened.
    let result = tokio::spawn(run(c.clone(), api, now, evs, live_sums, billing)).await;
    let _ = c.close().await;
    drop(driver);
    let _ = std::fs::remove_dir_all(&profile);
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn run(
    c: Client,
    api: Api,
    now: chrono::DateTime<Utc>,
    evs: Vec<costpipe_e2e::dashboard_data::Usage>,
    live_sums: std::collections::BTreeMap<&'static str, Decimal>,
    mut billing: costpipe_e2e::Service,
) {
    let paris: Tz = ACME_ZONE.parse().unwrap();
    let (day_start, month_start) = day_and_month_start(now, paris);
    let today = local_day(now, paris);
    let tomorrow = local_day(day_start + chrono::Duration::hours(30), paris);
    let month = &today[..7];
    let month_first = format!("{month}-01");

    // A wrong key is refused on the login form.
    c.goto(&format!("{}/dashboard/", api.base))
        .await
        .expect("open");
    log_in(&c, "not-a-key").await;
    let err = wait_css(&c, "#login-error:not([hidden])").await;
    assert!(err.text().await.unwrap().contains("refused"));

    // acme's key: the overview's totals are the API's, and the test's own sums.
    log_in(&c, ACME).await;
    wait_css(
        &c,
        r#"#view[data-view="overview"][data-state="ready"][data-tenant="acme"]"#,
    )
    .await;
    let q = |p: &str| format!("/v1/tenants/acme/costs?{p}");
    let api_today = api
        .json(&q(&format!("from={today}&to={tomorrow}&grain=total")), ACME)
        .await;
    let api_mtd = api
        .json(
            &q(&format!("from={month_first}&to={tomorrow}&grain=total")),
            ACME,
        )
        .await;
    // The forecast is as of the instant the page asked: ask for the same instant.
    let as_of = wait_css(&c, r#"[data-testid="kpi-forecast"][data-as-of]"#)
        .await
        .attr("data-as-of")
        .await
        .unwrap()
        .unwrap();
    let api_forecast = api
        .json(
            &format!(
                "/v1/tenants/acme/forecast?period={month}&as_of={}",
                as_of.replace('+', "%2B")
            ),
            ACME,
        )
        .await;
    let page_today = amount(&c, r#"[data-testid="kpi-today-USD"]"#).await;
    let page_mtd = amount(&c, r#"[data-testid="kpi-mtd-USD"]"#).await;
    let page_forecast = amount(&c, r#"[data-testid="kpi-forecast-USD"]"#).await;
    assert_eq!(page_today, billing_sum(&api_today, "USD"));
    assert_eq!(page_mtd, billing_sum(&api_mtd, "USD"));
    assert_eq!(page_today, cost_between(&evs, "acme", day_start, now));
    assert_eq!(page_mtd, cost_between(&evs, "acme", month_start, now));
    assert_eq!(
        page_forecast,
        decimal(&api_forecast["rows"][0]["projected"])
    );
    assert!(page_mtd > Decimal::ZERO);
    // One gauge per budget state, at its recorded level.
    assert_eq!(count(&c, r#"[data-testid="budget"]"#).await, 3);
    let month_card = wait_css(&c, r#"[data-budget="acme:month"]"#).await;
    assert!(month_card.text().await.unwrap().contains("THROTTLE"));
    let at_ok = wait_css(&c, r#"[data-budget="acme:support:month"]"#).await;
    assert!(at_ok.text().await.unwrap().contains("OK"));
    wait_css(
        &c,
        r#"[data-budget="acme:support:month"] [data-testid="meter-agg-forecast"]"#,
    )
    .await;
    wait_css(
        &c,
        r#"[data-budget="acme:month"] [data-testid="meter-mtd"]"#,
    )
    .await;
    wait_css(&c, r#"[data-testid="chart-model"] .uplot"#).await;
    snap(&c, "overview").await;

    // Costs over time: the range total is the API's, at day and at hour grain.
    let range = format!("from={month_first}&to={tomorrow}");
    open(
        &c,
        &format!("#/acme/costs?{range}&grain=day"),
        "costs",
        "ready",
    )
    .await;
    let api_range = api.json(&q(&format!("{range}&grain=total")), ACME).await;
    assert_eq!(
        amount(&c, r#"[data-testid="costs-total-USD"]"#).await,
        billing_sum(&api_range, "USD")
    );
    assert_eq!(
        amount(&c, r#"[data-testid="by-model-total-USD"]"#).await,
        billing_sum(&api_range, "USD")
    );
    assert_eq!(
        amount(&c, r#"[data-testid="by-department-total-USD"]"#).await,
        billing_sum(&api_range, "USD")
    );
    wait_css(&c, r#"[data-testid="chart-department"] .uplot"#).await;
    snap(&c, "costs").await;
    open(
        &c,
        &format!("#/acme/costs?{range}&grain=hour"),
        "costs",
        "ready",
    )
    .await;
    assert_eq!(
        amount(&c, r#"[data-testid="costs-total-USD"]"#).await,
        billing_sum(&api_range, "USD")
    );
    wait_css(&c, r#"[data-testid="chart-model"] .uplot"#).await;

    // Live windows: the aggregator's (behind an owner redirect), summed exactly.
    open(&c, "#/acme/live", "live", "ready").await;
    let api_live = api.json("/v1/tenants/acme/live", ACME).await;
    for w in ["1m", "5m", "1h", "24h"] {
        let page = amount(&c, &format!(r#"[data-testid="live-{w}"]"#)).await;
        assert_eq!(page, live_sums[w], "window {w}");
        assert_eq!(page, decimal(&api_live["totals"][w]["cost"]), "window {w}");
    }
    assert_eq!(count(&c, r#"[data-testid="live-keys"] tbody tr"#).await, 3);
    snap(&c, "live").await;

    // Top users, features, traces: the first of each is the API's.
    open(&c, &format!("#/acme/top?{range}"), "top", "ready").await;
    for (testid, path) in [
        (
            "top-users",
            format!("/v1/tenants/acme/top?{range}&dimension=user&n=10"),
        ),
        (
            "top-features",
            format!("/v1/tenants/acme/top?{range}&dimension=feature&n=10"),
        ),
        (
            "top-traces",
            format!("/v1/tenants/acme/top/traces?{range}&n=10"),
        ),
    ] {
        let v = api.json(&path, ACME).await;
        let rows = v["rows"].as_array().unwrap();
        assert_eq!(
            count(&c, &format!(r#"[data-testid="{testid}"] tbody tr"#)).await,
            rows.len()
        );
        assert_eq!(
            amount(&c, &format!(r#"[data-testid="{testid}-0"]"#)).await,
            decimal(&rows[0]["billing_cost"]),
            "{testid}"
        );
    }
    snap(&c, "top").await;

    // Anomalies and control events.
    open(
        &c,
        &format!("#/acme/anomalies?{range}"),
        "anomalies",
        "ready",
    )
    .await;
    wait_css(&c, r#"[data-testid="anomalies"]"#).await;
    snap(&c, "anomalies").await;
    open(&c, "#/acme/controls", "controls", "ready").await;
    let api_controls = api.json("/v1/tenants/acme/controls?n=100", ACME).await;
    assert_eq!(
        count(&c, r#"[data-testid="control"]"#).await,
        api_controls["events"].as_array().unwrap().len()
    );
    assert_eq!(count(&c, r#"[data-budget="globex:month"]"#).await, 0);
    snap(&c, "controls").await;

    // The invoice: its total is the API's; the CSV downloads with the key.
    open(
        &c,
        &format!("#/acme/invoice?period={month}"),
        "invoice",
        "ready",
    )
    .await;
    let api_invoice = api
        .json(&format!("/v1/tenants/acme/invoices/{month}"), ACME)
        .await;
    assert_eq!(
        amount(&c, r#"[data-testid="invoice-total-USD"]"#).await,
        decimal(&api_invoice["totals"][0]["total"])
    );
    c.find(Locator::Css(r#"[data-testid="csv-download"]"#))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let status = wait_css(&c, r#"[data-testid="csv-status"][data-bytes]"#).await;
    let (s, csv) = api
        .get(
            &format!("/v1/tenants/acme/invoices/{month}?format=csv"),
            Some(ACME),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        status.attr("data-bytes").await.unwrap().unwrap(),
        csv.len().to_string()
    );
    snap(&c, "invoice").await;

    // Nothing of globex ever reached acme's pages; forcing globex in the URL is refused by
    // the API, and the page shows the refusal and no number.
    assert!(!c.source().await.unwrap().contains(GLOBEX_SECRET));
    for view in ["overview", "costs", "live", "controls", "invoice"] {
        open(&c, &format!("#/globex/{view}"), view, "error").await;
        let e = wait_css(&c, r#"#view [data-testid="error"]"#).await;
        assert_eq!(
            e.attr("data-status").await.unwrap().as_deref(),
            Some("403"),
            "{view}"
        );
        assert!(e.text().await.unwrap().contains("may not read tenant"));
        assert_eq!(count(&c, "#view [data-amount]").await, 0, "{view}");
        assert!(!c.source().await.unwrap().contains(GLOBEX_SECRET));
    }
    snap(&c, "forbidden").await;
    for path in [
        format!("/v1/tenants/globex/costs?period={month}&grain=total"),
        "/v1/tenants/globex/budgets/states".to_string(),
        "/v1/tenants/globex/controls".to_string(),
    ] {
        assert_eq!(api.get(&path, Some(ACME)).await.0, 403, "{path}");
    }

    // An admin key picks any tenant: globex's numbers are globex's.
    c.find(Locator::Css("#logout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    log_in(&c, ADMIN).await;
    wait_css(
        &c,
        r#"#view[data-view="overview"][data-state="ready"][data-tenant="acme"]"#,
    )
    .await;
    assert_eq!(count(&c, "#tenant-picker option").await, 2);
    let before = seq(&c).await;
    c.find(Locator::Css("#tenant-picker"))
        .await
        .unwrap()
        .select_by_value("globex")
        .await
        .unwrap();
    wait_css(
        &c,
        &format!(r#"#view[data-tenant="globex"][data-state="ready"]:not([data-seq="{before}"])"#),
    )
    .await;
    let g_today = local_day(now, chrono_tz::UTC);
    let g_month = format!("{}-01", &g_today[..7]);
    let g_tomorrow = local_day(now + chrono::Duration::days(1), chrono_tz::UTC);
    let api_g = api
        .json(
            &format!("/v1/tenants/globex/costs?from={g_month}&to={g_tomorrow}&grain=total"),
            ADMIN,
        )
        .await;
    assert_eq!(
        amount(&c, r#"[data-testid="kpi-mtd-USD"]"#).await,
        billing_sum(&api_g, "USD")
    );
    snap(&c, "admin-globex").await;

    // The API goes away: the page says so instead of showing stale numbers.
    billing.kill();
    open(&c, "#/globex/controls", "controls", "error").await;
    let e = wait_css(&c, r#"#view [data-testid="error"][data-status="0"]"#).await;
    assert!(e.text().await.unwrap().contains("cannot be reached"));
    snap(&c, "api-down").await;
}
