//! HTTP ingest against hostile clients, over real sockets, with the real
//! `costpipe-ingest-http` binary:
//! - connections that stall in their headers do not keep a valid request from being
//!   served, and are closed after the header-read timeout;
//! - connections over the cap are closed at accept;
//! - a body sent a byte a second is cut off by the whole-request deadline (408);
//! - gzip bodies are decoded within the body limit (a zip bomb is 413), other encodings 415.
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

async fn metrics(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
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
    assert!(started.elapsed() < bound, "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn stalled_headers_are_closed_and_do_not_starve_valid_requests() {
    let stack = Stack::from_env();
    let names = Names::new("e2e_http_stall");
    let http = start(
        &stack,
        &names,
        &[("COSTPIPE_INGEST_HEADER_READ_TIMEOUT_MS", "1000")],
    )
    .await;
    let mut stalled = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(("127.0.0.1", http.port)).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        stalled.push(s);
    }
    let opened = Instant::now();
    healthz_within(http.port, Duration::from_secs(1)).await;
    // Each stalled connection is closed by the server once the header-read timeout passed.
    for s in &mut stalled {
        read_until_closed(s, Duration::from_secs(10)).await;
    }
    let elapsed = opened.elapsed();
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    let text = metrics(http.port).await;
    let closed = metric(
        &text,
        "costpipe_ingest_http_connections_refused_total{reason=\"header_read_timeout\"}",
    );
    assert!(closed >= 300, "{closed} closed for slow headers:\n{text}");
    healthz_within(http.port, Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn connections_over_the_cap_are_closed_at_accept() {
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
    // still hold one for a moment): at least one is closed at once.
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
    let closed = closed.into_iter().filter(|c| *c).count();
    assert!((1..=2).contains(&closed), "{closed} of 6 closed");
    drop(held);
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
    let refused = metric(
        &text,
        "costpipe_ingest_http_connections_refused_total{reason=\"max_connections\"}",
    );
    assert!(refused >= 1, "{text}");
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
    let text = metrics(http.port).await;
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

    let (status, body) = post_encoded(http.port, "br", b"{}".to_vec()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (415, Some("unsupported_encoding"))
    );
}
