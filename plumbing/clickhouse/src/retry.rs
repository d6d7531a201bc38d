//! Retrying ClickHouse calls: which errors are worth retrying, and a retry loop with
//! exponential backoff and jitter (`backon`).
//!
//! **Retryable**: network errors and timeouts (connection refused or reset, a stalled
//! socket, [`Error::Timeout`]), HTTP 5xx/429/408 answers without a ClickHouse exception code,
//! and ClickHouse exceptions that go away by themselves: too many parts, memory limit,
//! too many simultaneous queries, server-side timeouts, read-only replicas, Keeper
//! trouble. **Permanent**: everything else, e.g. a syntax error, an unknown database or
//! table, bad credentials, a row type that does not match its table. Retrying a permanent
//! error only delays the same answer, so [`retry()`] returns it at once.
//!
//! Nothing here exits the process: when retries run out the last error is returned to the
//! caller, which decides.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use crate::Error;

/// Whether an error is worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient: the same call may succeed later.
    Retryable,
    /// The same call will fail the same way.
    Permanent,
}

/// Errors that can say whether they are worth retrying.
pub trait Classify {
    /// This error's class.
    fn class(&self) -> ErrorClass;
}

/// ClickHouse exception codes (`system.errors`) that are transient.
const RETRYABLE_CODES: &[(u32, &str)] = &[
    (3, "UNEXPECTED_END_OF_FILE"),
    (32, "ATTEMPT_TO_READ_AFTER_EOF"),
    (159, "TIMEOUT_EXCEEDED"),
    (160, "TOO_SLOW"),
    (202, "TOO_MANY_SIMULTANEOUS_QUERIES"),
    (203, "NO_FREE_CONNECTION"),
    (209, "SOCKET_TIMEOUT"),
    (210, "NETWORK_ERROR"),
    (236, "ABORTED"),
    (241, "MEMORY_LIMIT_EXCEEDED"),
    (242, "TABLE_IS_READ_ONLY"),
    (252, "TOO_MANY_PARTS"),
    (285, "TOO_FEW_LIVE_REPLICAS"),
    (319, "UNKNOWN_STATUS_OF_INSERT"),
    (394, "QUERY_WAS_CANCELLED"),
    (425, "SYSTEM_ERROR"),
    (439, "CANNOT_SCHEDULE_TASK"),
    (473, "DEADLOCK_AVOIDED"),
    (999, "KEEPER_EXCEPTION"),
];

/// The class of an error answer's text, as the `clickhouse` crate reports it in
/// [`clickhouse::error::Error::BadResponse`]: `Code: 252. DB::Exception: Too many parts …
/// (TOO_MANY_PARTS) …`, or only `Code: 252` or `503 Service Unavailable` when the body
/// was empty.
pub fn classify_response(text: &str) -> ErrorClass {
    let text = text.trim();
    if let Some(code) = exception_code(text) {
        return if RETRYABLE_CODES.iter().any(|(c, _)| *c == code) {
            ErrorClass::Retryable
        } else {
            ErrorClass::Permanent
        };
    }
    // No exception code: perhaps a proxy's answer, or a server error without a body.
    if RETRYABLE_CODES
        .iter()
        .any(|(_, name)| text.contains(&format!("({name})")))
    {
        return ErrorClass::Retryable;
    }
    match http_status(text) {
        Some(s) if (500..600).contains(&s) || s == 429 || s == 408 => ErrorClass::Retryable,
        _ => ErrorClass::Permanent,
    }
}

/// `N` of a leading `Code: N`.
fn exception_code(text: &str) -> Option<u32> {
    let rest = text.strip_prefix("Code:")?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// A leading 3-digit HTTP status (`503 Service Unavailable`).
fn http_status(text: &str) -> Option<u16> {
    let head = text.split_whitespace().next()?;
    (head.len() == 3).then(|| head.parse().ok()).flatten()
}

/// The class of an error of the `clickhouse` crate.
pub fn classify(e: &clickhouse::error::Error) -> ErrorClass {
    match e {
        clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut => {
            ErrorClass::Retryable
        }
        clickhouse::error::Error::BadResponse(text) => classify_response(text),
        _ => ErrorClass::Permanent,
    }
}

impl Classify for clickhouse::error::Error {
    fn class(&self) -> ErrorClass {
        classify(self)
    }
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            Error::Timeout { .. } => ErrorClass::Retryable,
            Error::Migration { source, .. } => classify(source),
            Error::ClickHouse(e) => classify(e),
            Error::InvalidDatabaseName(_) | Error::Config(_) => ErrorClass::Permanent,
        }
    }
}

impl Classify for std::io::Error {
    fn class(&self) -> ErrorClass {
        use std::io::ErrorKind::*;
        match self.kind() {
            TimedOut | ConnectionRefused | ConnectionReset | ConnectionAborted | BrokenPipe
            | NotConnected | UnexpectedEof | Interrupted | WouldBlock => ErrorClass::Retryable,
            _ => ErrorClass::Permanent,
        }
    }
}

/// Through the context chain: the first error of this crate, of the `clickhouse` crate,
/// an I/O error or an elapsed deadline decides; anything else is permanent.
impl Classify for anyhow::Error {
    fn class(&self) -> ErrorClass {
        for cause in self.chain() {
            if let Some(e) = cause.downcast_ref::<Error>() {
                return e.class();
            }
            if let Some(e) = cause.downcast_ref::<clickhouse::error::Error>() {
                return e.class();
            }
            if let Some(e) = cause.downcast_ref::<std::io::Error>() {
                return e.class();
            }
            if cause.is::<tokio::time::error::Elapsed>() {
                return ErrorClass::Retryable;
            }
        }
        ErrorClass::Permanent
    }
}

/// How to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the first retry.
    pub min_delay: Duration,
    /// Longest delay between two attempts, jitter included.
    pub max_delay: Duration,
    /// Retries after the first attempt at most; `None`: retry retryable errors for as long
    /// as they last (a service waiting for ClickHouse at start-up).
    pub max_retries: Option<usize>,
}

impl Default for RetryPolicy {
    /// 200 ms doubling up to 10 s, without a limit on retries.
    fn default() -> Self {
        RetryPolicy {
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_retries: None,
        }
    }
}

impl RetryPolicy {
    /// This policy with at most `n` retries.
    pub fn with_max_retries(self, n: usize) -> Self {
        RetryPolicy {
            max_retries: Some(n),
            ..self
        }
    }

    fn backoff(&self) -> ExponentialBuilder {
        let b = ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay.max(self.min_delay))
            .with_factor(2.0)
            .with_jitter();
        match self.max_retries {
            Some(n) => b.with_max_times(n),
            None => b.without_max_times(),
        }
    }
}

/// Runs `call` until it succeeds, fails with a permanent error, or the policy's retries
/// run out; then returns its last result. Each retry is logged with `what`.
pub async fn retry<T, E, F, Fut>(policy: &RetryPolicy, what: &str, call: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Classify + Display,
{
    let max_delay = policy.max_delay.max(policy.min_delay);
    call.retry(policy.backoff())
        .sleep(tokio::time::sleep)
        .when(|e: &E| e.class() == ErrorClass::Retryable)
        // Jitter adds up to the current delay again; keep the sum under the maximum.
        .adjust(move |_, delay| delay.map(|d| d.min(max_delay)))
        .notify(|e: &E, delay: Duration| {
            tracing::warn!(
                what,
                error = %format!("{e:#}"),
                retry_in_ms = delay.as_millis() as u64,
                "ClickHouse call failed; retrying"
            );
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use ErrorClass::{Permanent, Retryable};

    #[test]
    fn clickhouse_exceptions_are_classified_by_code() {
        let cases = [
            ("Code: 252. DB::Exception: Too many parts (300). Merges are processing significantly slower than inserts. (TOO_MANY_PARTS) (version 26.9.2.1)", Retryable),
            ("Code: 241. DB::Exception: Memory limit (total) exceeded: would use 10.00 GiB. (MEMORY_LIMIT_EXCEEDED)", Retryable),
            ("Code: 159. DB::Exception: Timeout exceeded: elapsed 30.1 seconds. (TIMEOUT_EXCEEDED)", Retryable),
            ("Code: 202. DB::Exception: Too many simultaneous queries. (TOO_MANY_SIMULTANEOUS_QUERIES)", Retryable),
            ("Code: 62. DB::Exception: Syntax error: failed at position 1 ('SELEC'). (SYNTAX_ERROR)", Permanent),
            ("Code: 81. DB::Exception: Database nope does not exist. (UNKNOWN_DATABASE)", Permanent),
            ("Code: 60. DB::Exception: Table costpipe.x does not exist. (UNKNOWN_TABLE)", Permanent),
            ("Code: 516. DB::Exception: default: Authentication failed. (AUTHENTICATION_FAILED)", Permanent),
            // Only the exception code header, the body was empty.
            ("Code: 252", Retryable),
            ("Code: 62", Permanent),
        ];
        for (text, class) in cases {
            assert_eq!(classify_response(text), class, "{text}");
            let e = clickhouse::error::Error::BadResponse(text.into());
            assert_eq!(classify(&e), class, "{text}");
        }
    }

    #[test]
    fn http_answers_without_a_code_are_classified_by_status() {
        assert_eq!(classify_response("503 Service Unavailable"), Retryable);
        assert_eq!(classify_response("502 Bad Gateway"), Retryable);
        assert_eq!(classify_response("429 Too Many Requests"), Retryable);
        assert_eq!(classify_response("404 Not Found"), Permanent);
        assert_eq!(classify_response("403 Forbidden"), Permanent);
        assert_eq!(classify_response("something odd"), Permanent);
        assert_eq!(classify_response("proxy says (TOO_MANY_PARTS)"), Retryable);
    }

    #[test]
    fn client_errors_are_classified_by_kind() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(
            classify(&clickhouse::error::Error::Network(Box::new(io))),
            Retryable
        );
        assert_eq!(classify(&clickhouse::error::Error::TimedOut), Retryable);
        assert_eq!(
            classify(&clickhouse::error::Error::NotEnoughData),
            Permanent
        );
        assert_eq!(
            classify(&clickhouse::error::Error::SchemaMismatch("x".into())),
            Permanent
        );
        assert_eq!(Error::InvalidDatabaseName("a-b".into()).class(), Permanent);
        assert_eq!(
            Error::Migration {
                name: "001",
                source: clickhouse::error::Error::BadResponse("Code: 62. (SYNTAX_ERROR)".into())
            }
            .class(),
            Permanent
        );
    }

    #[test]
    fn anyhow_chains_are_classified_by_their_cause() {
        let e = anyhow::Error::new(clickhouse::error::Error::BadResponse(
            "Code: 252. (TOO_MANY_PARTS)".into(),
        ))
        .context("writing rollups")
        .context("epoch 3");
        assert_eq!(e.class(), Retryable);
        let e = anyhow::Error::new(clickhouse::error::Error::BadResponse(
            "Code: 62. (SYNTAX_ERROR)".into(),
        ))
        .context("writing rollups");
        assert_eq!(e.class(), Permanent);
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "stalled");
        assert_eq!(anyhow::Error::new(io).context("x").class(), Retryable);
        assert_eq!(anyhow::anyhow!("a bug").class(), Permanent);
    }

    #[derive(Debug)]
    struct Fake(ErrorClass);
    impl Display for Fake {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{:?}", self.0)
        }
    }
    impl Classify for Fake {
        fn class(&self) -> ErrorClass {
            self.0
        }
    }

    fn quick() -> RetryPolicy {
        RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
            max_retries: None,
        }
    }

    #[tokio::test]
    async fn retryable_errors_are_retried_until_success() {
        let calls = AtomicUsize::new(0);
        let out = retry(&quick(), "test", || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0..=4 => Err(Fake(Retryable)),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(out.unwrap(), 5);
    }

    #[tokio::test]
    async fn permanent_errors_are_returned_at_once() {
        let calls = AtomicUsize::new(0);
        let out: Result<(), Fake> = retry(&quick(), "test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Fake(Permanent))
        })
        .await;
        assert_eq!(out.unwrap_err().0, Permanent);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn retries_stop_at_the_limit_and_delays_at_the_maximum() {
        let calls = AtomicUsize::new(0);
        let policy = RetryPolicy {
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(10),
            max_retries: Some(3),
        };
        let started = std::time::Instant::now();
        let out: Result<(), Fake> = retry(&policy, "test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Fake(Retryable))
        })
        .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        // Three delays of at most 10 ms each (plus scheduling slack).
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
