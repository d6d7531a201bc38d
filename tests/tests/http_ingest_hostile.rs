//! HTTP ingest against hostile clients, over real sockets, with the real
//! `costpipe-ingest-http` binary:
//! - with the service's descriptor limit at 256 (`prlimit`), 300 connections stalled in
//!   their headers, 20 sending headers slowly and a body sent a byte a second do not keep a
//!   valid request from being served within 1 s; each is closed (to make room at the cap,
//!   or after the header-read timeout; the body after the request deadline, 408);
//! - at the connection cap, the connection that waited longest for a request is closed to
//!   make room; when every connection is serving a request, a new one is closed at accept;
//! - an idle keep-alive connection is closed at the idle timeout, not the header-read one,
//!   and headers of a later request get the header-read timeout from their first byte;
//! - a body sent a byte a second is cut off by the whole-request deadline (408);
//! - gzip and zstd bodies are decoded within the body limit (a zip bomb is 413), other
//!   encodings 415;
//! - a tenant at 10x its rate gets 429 with `Retry-After`, nothing of it dead-lettered,
//!   while another tenant sees no 429 and no added p99 latency beyond [`ADDED_P99_BOUND`];
//! - token counts at, just above and far above the shared bound get the documented verdict
//!   and nothing above the bound reaches the usage topic.
//!
//! Each refusal is counted in `/metrics`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

use costpipe_e2e::*;
use costpipe_schemas::UsageEvent;

/// `key_of("acme")`.
const KEY: &str = "key-of-acme";

/// Starts `costpipe-ingest-http` for tenant `acme` (key [`KEY`]) and waits until it is ready.
async fn start(stack: &Stack, names: &Names, extra: &[(&str, &str)]) -> Service {
    Service::ingest_http(
        stack,
        &names.usage,
        &names.dead_letters,
        &["acme"],
        1,
        extra,
    )
    .await
}

/// The value of the metric line starting with `name ` (0 when absent).
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// Reads until the server closes the connection (read returns 0, or an error such as a
/// reset); everything read on the way is returned. Panics after `bound`.
async fn read_until_closed(stream: &mut TcpStream, bound: Duration) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return seen,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the server did not close the connection within {bound:?}; read so far: {:?}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
}

async fn healthz_within(port: u16, bound: Duration) {
    let started = Instant::now();
    let r = reqwest::Client::builder()
        .timeout(bound)
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .expect("a valid request is served");
    assert_eq!(r.status(), 200);
    println!("valid request served in {:?}", started.elapsed());
    assert!(started.elapsed() < bound, "{:?}", started.elapsed());
}

/// The service's descriptor limit in the slowloris test: the one of the issue's report.
const NOFILE: u64 = 256;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn stalled_headers_are_closed_and_do_not_starve_valid_requests() {
    let stack = Stack::from_env();
    let names = Names::new("e2e_http_stall");
    let http = Service::ingest_http_limited(
        &stack,
        &names.usage,
        &names.dead_letters,
        &["acme"],
        1,
        &[
            ("COSTPIPE_INGEST_HEADER_READ_TIMEOUT_MS", "1000"),
            ("COSTPIPE_INGEST_REQUEST_TIMEOUT_MS", "3000"),
        ],
        Some(NOFILE),
    )
    .await;
    let opened = Instant::now();
    // A body sent a byte a second: its headers are complete, so only the request deadline
    // (3 s) ends it, with 408.
    let mut trickling = TcpStream::connect(("127.0.0.1", http.port)).await.unwrap();
    trickling
        .write_all(
            format!(
                "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\
                 Content-Length: 1000\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let (mut trickle_read, mut trickle_write) = trickling.into_split();
    let trickle = tokio::spawn(async move {
        while trickle_write.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    // Slow headers: a header line every 300 ms, never finished.
    let mut slow = Vec::new();
    for _ in 0..20 {
        let s = TcpStream::connect(("127.0.0.1", http.port)).await.unwrap();
        let (r, mut w) = s.into_split();
        slow.push(r);
        tokio::spawn(async move {
            let _ = w.write_all(b"GET /healthz HTTP/1.1\r\n").await;
            for i in 0.. {
                tokio::time::sleep(Duration::from_millis(300)).await;
                if w.write_all(format!("X-{i}: y\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
    }
    // 300 connections that send half their headers and stop: more than the descriptor limit
    // leaves room for.
    let mut stalled = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(("127.0.0.1", http.port)).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        stalled.push(s);
    }
    healthz_within(http.port, Duration::from_secs(1)).await;
    // Each stalled connection is closed by the server: made room for (at the cap) or once
    // the header-read timeout passed.
    for s in &mut stalled {
        read_until_closed(s, Duration::from_secs(10)).await;
    }
    for r in &mut slow {
        let mut buf = [0u8; 256];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "slow headers not closed within 10 s");
    }
    let elapsed = opened.elapsed();
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), trickle_read.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the trickling body was not cut off within 10 s"),
        }
    }
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let text = metrics_text(http.port).await;
    let closed = metric(
        &text,
        "costpipe_ingest_http_connections_refused_total{reason=\"header_read_timeout\"}",
    ) + metric(
        &text,
        "costpipe_ingest_http_connections_refused_total{reason=\"evicted_waiting\"}",
    );
    println!(
        "closed: {} by the header-read timeout, {} to make room, in {elapsed:?}",
        metric(
            &text,
            "costpipe_ingest_http_connections_refused_total{reason=\"header_read_timeout\"}"
        ),
        metric(
            &text,
            "costpipe_ingest_http_connections_refused_total{reason=\"evicted_waiting\"}"
        ),
    );
    assert!(closed >= 320, "{closed} closed for slow headers:\n{text}");
    assert_eq!(
        metric(&text, "costpipe_ingest_http_requests_timed_out_total"),
        1,
        "{text}"
    );
    assert!(
        !http.log_text().contains("Too many open files"),
        "accept ran out of descriptors:\n{}",
        http.log_text()
    );
    healthz_within(http.port, Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn at_the_cap_waiting_connections_make_room_and_busy_ones_do_not() {
    let stack = Stack::from_env();
    let names = Names::new("e2e_http_cap");
    let http = start(
        &stack,
        &names,
        &[
            ("COSTPIPE_INGEST_MAX_CONNECTIONS", "5"),
            ("COSTPIPE_INGEST_HEADER_READ_TIMEOUT_MS", "30000"),
        ],
    )
    .await;
    // Six stalled connections for five places (the readiness probe's connection may
    // still hold one for a moment): the oldest waiting ones are closed to make room, the
    // newest is kept.
    let mut held = Vec::new();
    for _ in 0..6 {
        let mut s = TcpStream::connect(("127.0.0.1", http.port)).await.unwrap();
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\n").await;
        held.push(s);
    }
    let closed = futures::future::join_all(held.iter_mut().map(|s| async move {
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }))
    .await;
    assert!(!closed[5], "the newest connection is kept");
    let closed = closed.into_iter().filter(|c| *c).count();
    assert!((1..=2).contains(&closed), "{closed} of 6 closed");
    drop(held);

    // Five connections busy with a request (a body that never comes): no one to make room,
    // so a new connection is closed at accept. `100 Continue` comes once the handler reads
    // the body, so each is known to be busy before the next one connects (a connection
    // still waiting for its headers could be closed to make room for the next).
    let mut busy = Vec::new();
    for _ in 0..5 {
        let mut s = TcpStream::connect(("127.0.0.1", http.port)).await.unwrap();
        s.write_all(
            format!(
                "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\
                 Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 64];
        while !seen.ends_with(b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .expect("100 Continue")
                .unwrap();
            assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        assert!(seen.starts_with(b"HTTP/1.1 100"), "{seen:?}");
        busy.push(s);
    }
    let port = http.port;
    wait_for(
        "a connection closed at accept",
        Duration::from_secs(10),
        || async move {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\n").await;
            let mut buf = [0u8; 64];
            matches!(
                tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await,
                Ok(Ok(0)) | Ok(Err(_))
            )
            .then_some(())
        },
    )
    .await;
    // The busy ones are still open.
    for s in &mut busy {
        let mut buf = [0u8; 64];
        assert!(
            tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf))
                .await
                .is_err(),
            "a connection serving a request was closed"
        );
    }
    drop(busy);
    let text = wait_for("metrics served again", Duration::from_secs(10), || {
        let port = http.port;
        async move {
            reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
                .await
                .ok()?
                .text()
                .await
                .ok()
        }
    })
    .await;
    for reason in ["max_connections", "evicted_waiting"] {
        let n = metric(
            &text,
            &format!("costpipe_ingest_http_connections_refused_total{{reason=\"{reason}\"}}"),
        );
        assert!(n >= 1, "{reason}: {text}");
    }
}

/// Sends `GET /healthz` on `s` and reads its answer (keep-alive).
async fn healthz_on(s: &mut TcpStream) {
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.ends_with(b"\r\n\r\nok") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed before answering");
        seen.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn idle_keep_alive_has_its_own_timeout() {
    let stack = Stack::from_env();
    let names = Names::new("e2e_http_idle");
    let http = start(
        &stack,
        &names,
        &[
            ("COSTPIPE_INGEST_HEADER_READ_TIMEOUT_MS", "1000"),
            ("COSTPIPE_INGEST_IDLE_TIMEOUT_MS", "3000"),
        ],
    )
    .await;
    // Both answered once; then one stays idle, the other starts a request and stalls.
    let mut idle = TcpStream::connect(("127.0.0.1", http.port)).await.unwrap();
    let mut slow = TcpStream::connect(("127.0.0.1", http.port)).await.unwrap();
    healthz_on(&mut idle).await;
    let idle_since = Instant::now();
    healthz_on(&mut slow).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let first_byte = Instant::now();
    read_until_closed(&mut slow, Duration::from_secs(10)).await;
    let slow_after = first_byte.elapsed();
    assert!(
        slow_after >= Duration::from_millis(900) && slow_after < Duration::from_millis(2500),
        "slow headers closed {slow_after:?} after their first byte (header-read timeout 1 s)"
    );
    // Past the header-read timeout, the idle one is still open (it sent nothing)...
    let mut buf = [0u8; 16];
    let early = tokio::time::timeout(
        Duration::from_millis(2000).saturating_sub(idle_since.elapsed()),
        idle.read(&mut buf),
    )
    .await;
    assert!(
        early.is_err(),
        "idle connection closed before the idle timeout: {early:?}"
    );
    // ...and closed at the idle timeout.
    read_until_closed(&mut idle, Duration::from_secs(10)).await;
    let idle_after = idle_since.elapsed();
    println!("slow headers closed after {slow_after:?}, idle keep-alive after {idle_after:?}");
    assert!(
        idle_after >= Duration::from_millis(2900) && idle_after < Duration::from_millis(5000),
        "idle keep-alive closed after {idle_after:?} (idle timeout 3 s)"
    );
    let text = metrics_text(http.port).await;
    for reason in ["idle_timeout", "header_read_timeout"] {
        let n = metric(
            &text,
            &format!("costpipe_ingest_http_connections_refused_total{{reason=\"{reason}\"}}"),
        );
        assert!(n >= 1, "{reason}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn a_body_trickling_in_is_cut_off_by_the_request_deadline() {
    let stack = Stack::from_env();
    let names = Names::new("e2e_http_slow");
    let http = start(
        &stack,
        &names,
        &[("COSTPIPE_INGEST_REQUEST_TIMEOUT_MS", "2000")],
    )
    .await;
    let mut s = TcpStream::connect(("127.0.0.1", http.port)).await.unwrap();
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (mut reader, mut writer) = s.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..1000 {
            if writer.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), reader.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "no answer within 10 s: {:?}",
                String::from_utf8_lossy(&answer)
            ),
        }
    }
    let elapsed = started.elapsed();
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(6),
        "{elapsed:?}"
    );
    let text = metrics_text(http.port).await;
    assert_eq!(
        metric(&text, "costpipe_ingest_http_requests_timed_out_total"),
        1,
        "{text}"
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip");
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(&data).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// zstd of `data`, by the `zstd` tool (not the service's library).
fn zstd(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("zstd")
        .args(["-c", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("zstd");
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(&data).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    out.stdout
}

async fn post_encoded(port: u16, encoding: &str, body: Vec<u8>) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/events"))
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .header("content-encoding", encoding)
        .body(body)
        .send()
        .await
        .expect("HTTP ingest answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn gzip_bodies_are_decoded_within_the_limit() {
    let stack = Stack::from_env();
    let names = Names::new("e2e_http_gzip");
    let http = start(&stack, &names, &[]).await;
    let now = chrono::Utc::now().timestamp_millis();
    let events: Vec<UsageEvent> = (0..20)
        .map(|i| {
            let mut e = UsageEvent::new(Uuid::new_v4(), now - 1000, "acme", "openai", "gpt-4o");
            e.input_tokens = 100 + i;
            e.output_tokens = 10;
            e
        })
        .collect();
    let (status, body) = post_encoded(
        http.port,
        "gzip",
        gzip(&serde_json::to_vec(&events).unwrap()),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 20, "{body}");
    let records = wait_records(&stack, &names.usage, 20).await;
    assert_eq!(records.len(), 20);

    // 10 MB of zeros, some 10 KB compressed: over the 8 MB limit once inflated.
    let bomb = gzip(&vec![0u8; 10 << 20]);
    assert!(bomb.len() < 100_000, "{}", bomb.len());
    let (status, body) = post_encoded(http.port, "gzip", bomb).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("body_too_large"))
    );
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("decompresses")),
        "{body}"
    );

    // zstd: the same batch lands, a bomb (10 MB of zeros in a few hundred bytes) is 413.
    let zevents: Vec<UsageEvent> = (0..20)
        .map(|i| {
            let mut e = UsageEvent::new(Uuid::new_v4(), now - 1000, "acme", "openai", "gpt-4o");
            e.input_tokens = 200 + i;
            e
        })
        .collect();
    let (status, body) = post_encoded(
        http.port,
        "zstd",
        zstd(&serde_json::to_vec(&zevents).unwrap()),
    )
    .await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (202, Some(20)),
        "{body}"
    );
    let records = wait_records(&stack, &names.usage, 40).await;
    assert_eq!(records.len(), 40);
    let bomb = zstd(&vec![0u8; 10 << 20]);
    assert!(bomb.len() < 100_000, "{}", bomb.len());
    let (status, body) = post_encoded(http.port, "zstd", bomb).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("body_too_large")),
        "{body}"
    );

    let (status, body) = post_encoded(http.port, "br", b"{}".to_vec()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (415, Some("unsupported_encoding"))
    );
}

/// How much a well-behaved tenant's p99 latency may grow while another tenant sends at 10x
/// its rate (documented in `ingest/README.md`).
const ADDED_P99_BOUND: Duration = Duration::from_millis(200);

/// POSTs `events` as a JSON array with `tenant`'s key: status, `Retry-After`, elapsed.
async fn post_batch(
    client: &reqwest::Client,
    port: u16,
    tenant: &str,
    events: &[UsageEvent],
) -> (u16, Option<String>, Duration, Value) {
    let started = Instant::now();
    let resp = client
        .post(format!("http://127.0.0.1:{port}/v1/events"))
        .header("authorization", format!("Bearer {}", key_of(tenant)))
        .json(events)
        .send()
        .await
        .expect("HTTP ingest answers");
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, retry_after, started.elapsed(), body)
}

fn batch(tenant: &str, n: usize) -> Vec<UsageEvent> {
    let now = chrono::Utc::now().timestamp_millis();
    (0..n)
        .map(|_| {
            let mut e = UsageEvent::new(Uuid::new_v4(), now - 1000, tenant, "openai", "gpt-4o");
            e.input_tokens = 10;
            e
        })
        .collect()
}

/// The calm tenant's latencies: 20-event batches every 50 ms for `rounds` requests.
async fn calm_latencies(port: u16, rounds: usize) -> (Vec<Duration>, usize) {
    let client = reqwest::Client::new();
    let mut latencies = Vec::new();
    let mut accepted = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    for _ in 0..rounds {
        tick.tick().await;
        let (status, _, elapsed, body) =
            post_batch(&client, port, "calm", &batch("calm", 20)).await;
        assert_eq!(status, 202, "the calm tenant is never limited: {body}");
        accepted += body["accepted"].as_u64().unwrap() as usize;
        latencies.push(elapsed);
    }
    latencies.sort();
    (latencies, accepted)
}

fn p99(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() * 99).div_ceil(100) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn a_tenant_over_its_rate_gets_429_and_others_are_not_slowed() {
    let stack = Stack::from_env();
    let names = Names::new("e2e_http_rate");
    // noisy: 100 events/s; calm: the default (50,000 events/s).
    let http = Service::ingest_http(
        &stack,
        &names.usage,
        &names.dead_letters,
        &["noisy", "calm"],
        1,
        &[("COSTPIPE_INGEST_TENANT_RATES", "noisy=100:0")],
    )
    .await;
    let port = http.port;
    // Alone first: the calm tenant's own p99.
    let (alone, calm_alone) = calm_latencies(port, 100).await;
    // Then beside noisy, which sends 100-event batches 10 times a second: 10x its rate.
    let noisy = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let (mut accepted, mut limited) = (0usize, 0usize);
        let started = Instant::now();
        for _ in 0..60 {
            tick.tick().await;
            let (status, retry_after, _, body) =
                post_batch(&client, port, "noisy", &batch("noisy", 100)).await;
            match status {
                202 => accepted += body["accepted"].as_u64().unwrap() as usize,
                429 => {
                    limited += 1;
                    assert_eq!(body["error"], "rate_limited", "{body}");
                    let secs: u64 = retry_after
                        .expect("429 carries Retry-After")
                        .parse()
                        .expect("Retry-After in whole seconds");
                    assert!((1..=2).contains(&secs), "Retry-After {secs}");
                }
                other => panic!("noisy got {other}: {body}"),
            }
        }
        (accepted, limited, started.elapsed())
    });
    let (beside, calm_beside) = calm_latencies(port, 100).await;
    let (noisy_accepted, limited, noisy_elapsed) = noisy.await.unwrap();
    // 60 requests of 100 events at 100 events/s over ~6 s: about 7 pass (the first from
    // the full bucket), the rest are refused.
    let allowed = 100 + 100 * (noisy_elapsed.as_millis() as usize / 1000 + 1);
    assert!(noisy_accepted <= allowed, "{noisy_accepted} > {allowed}");
    assert!(noisy_accepted >= 100, "the first batch fits the bucket");
    assert!(limited >= 45, "only {limited} of 60 refused");
    let (p99_alone, p99_beside) = (p99(&alone), p99(&beside));
    println!("calm p99 alone {p99_alone:?}, beside noisy {p99_beside:?}");
    assert!(
        p99_beside <= p99_alone + ADDED_P99_BOUND,
        "calm p99 {p99_beside:?} beside noisy, {p99_alone:?} alone"
    );
    // Exactly the accepted events are on the usage topic; nothing was dead-lettered.
    let expected = noisy_accepted + calm_alone + calm_beside;
    let records = wait_records(&stack, &names.usage, expected).await;
    assert_eq!(records.len(), expected);
    let text = metrics_text(port).await;
    assert_eq!(
        metric(
            &text,
            "costpipe_ingest_http_rate_limited_total{tenant=\"noisy\",limit=\"events\"}"
        ),
        limited as u64,
        "{text}"
    );
    assert!(!text.contains("tenant=\"calm\""), "{text}");
    assert!(
        read_topic(&stack.brokers, &names.dead_letters, 1).is_empty(),
        "a rate-limited request is not dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn token_counts_at_and_over_the_bound_get_the_documented_verdict() {
    use costpipe_schemas::MAX_TOKENS_PER_FIELD;
    let stack = Stack::from_env();
    let names = Names::new("e2e_http_tokens");
    let http = start(&stack, &names, &[]).await;
    let now = chrono::Utc::now().timestamp_millis();
    // The bound as documented (10^12), written out here rather than taken on trust.
    assert_eq!(MAX_TOKENS_PER_FIELD, 1_000_000_000_000);
    let bound = 1_000_000_000_000i64;
    let event = |f: &dyn Fn(&mut UsageEvent)| {
        let mut e = UsageEvent::new(Uuid::new_v4(), now - 1000, "acme", "openai", "gpt-4o");
        f(&mut e);
        e
    };
    let cases: Vec<(&str, UsageEvent, Option<&str>)> = vec![
        (
            "i64::MAX",
            event(&|e| e.input_tokens = i64::MAX),
            Some("tokens_too_large"),
        ),
        (
            "2^62 + 2^62 (the sum overflows i64)",
            event(&|e| {
                e.input_tokens = 1 << 62;
                e.cached_input_tokens = 1 << 62;
            }),
            Some("tokens_too_large"),
        ),
        (
            "bound + 1",
            event(&|e| e.output_tokens = bound + 1),
            Some("tokens_too_large"),
        ),
        ("bound", event(&|e| e.output_tokens = bound), None),
        ("bound - 1", event(&|e| e.output_tokens = bound - 1), None),
        (
            "every field at the bound",
            event(&|e| {
                e.input_tokens = bound;
                e.output_tokens = bound;
                e.cached_input_tokens = bound;
                e.cache_write_tokens = bound;
                e.reasoning_tokens = bound;
                e.cache_write_1h_tokens = Some(bound);
            }),
            None,
        ),
    ];
    let events: Vec<&UsageEvent> = cases.iter().map(|(_, e, _)| e).collect();
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/v1/events", http.port))
        .header("authorization", format!("Bearer {KEY}"))
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    for (i, (what, e, code)) in cases.iter().enumerate() {
        let r = &body["results"][i];
        assert_eq!(r["event_id"], e.event_id.to_string(), "{what}");
        match code {
            None => assert_eq!(r["status"], "accepted", "{what}: {r}"),
            Some(code) => {
                assert_eq!(r["status"], "rejected", "{what}: {r}");
                assert_eq!(r["code"], *code, "{what}: {r}");
            }
        }
    }
    let accepted: Vec<&UsageEvent> = cases
        .iter()
        .filter(|c| c.2.is_none())
        .map(|c| &c.1)
        .collect();
    let rejected = cases.len() - accepted.len();
    // The usage topic holds exactly the accepted events, none above the bound; the
    // rejected ones are dead letters with the reason.
    let records = wait_records(&stack, &names.usage, accepted.len()).await;
    let letters = wait_records(&stack, &names.dead_letters, rejected).await;
    let codec = costpipe_schemas::UsageCodec::current();
    let mut on_topic: Vec<UsageEvent> = records
        .iter()
        .map(|m| codec.decode(rdkafka::Message::payload(m).unwrap()).unwrap())
        .collect();
    on_topic.sort_by_key(|e| e.event_id);
    let mut expected: Vec<UsageEvent> = accepted.into_iter().cloned().collect();
    expected.sort_by_key(|e| e.event_id);
    assert_eq!(on_topic, expected);
    for e in &on_topic {
        for t in [
            e.input_tokens,
            e.output_tokens,
            e.cached_input_tokens,
            e.cache_write_tokens,
            e.reasoning_tokens,
            e.cache_write_1h_tokens.unwrap_or(0),
        ] {
            assert!(
                (0..=bound).contains(&t),
                "{t} above the bound on the usage topic"
            );
        }
    }
    assert_eq!(letters.len(), rejected);
    for m in &letters {
        assert_eq!(
            header(m, "costpipe.reason_code").as_deref(),
            Some("tokens_too_large")
        );
    }
}
