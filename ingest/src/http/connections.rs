//! Which open connections are waiting for a request (headers not yet complete, or idle
//! between requests), so that at the connection cap the service can make room for a new
//! client by closing the one that has waited longest, instead of refusing the newcomer.
//! Without this, a few hundred stalled connections (slowloris) hold every place until their
//! header-read timeout passes, and every valid client meanwhile is refused or queued.
//!
//! Also: the cap itself is kept below the process's descriptor limit
//! ([`descriptor_limit`]), so that accept never fails for lack of descriptors.
//!
//! And the two timers of a connection waiting for a request ([`Connection::deadline`]):
//! hyper's HTTP/1 header-read timer starts as soon as a keep-alive connection waits for its
//! next request, so it cannot tell "idle between requests" from "slow headers". Here the
//! header-read timeout runs from accept (first request) or from the first byte of a later
//! request, and the idle keep-alive timeout from the end of the previous answer until that
//! first byte. The socket is watched through [`Watched`], which sees every byte read.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// `first_byte_ms` when no byte of the next request has arrived.
const NONE: u64 = u64::MAX;

/// Descriptors kept for everything but client connections: the Kafka producers' broker
/// sockets and wake-up pipes, the listener, log files, the runtime.
pub const RESERVED_DESCRIPTORS: usize = 64;

/// The soft limit on open files of this process (`Max open files` in `/proc/self/limits`),
/// if it can be read (Linux).
pub fn descriptor_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The connections waiting for a request, oldest first.
pub struct Waiting {
    next_id: AtomicU64,
    waiting: Mutex<BTreeMap<u64, Arc<Notify>>>,
    /// Time zero of the connections' millisecond clocks.
    epoch: Instant,
}

impl Default for Waiting {
    fn default() -> Self {
        Waiting {
            next_id: AtomicU64::new(0),
            waiting: Mutex::new(BTreeMap::new()),
            epoch: Instant::now(),
        }
    }
}

/// One connection's entry; dropping it forgets the connection.
pub struct Connection {
    id: u64,
    in_flight: AtomicUsize,
    /// Notified when the connection is to be closed to make room.
    pub evict: Arc<Notify>,
    /// Notified when its timers change (a request starts or ends, a first byte arrives).
    pub changed: Notify,
    /// When it last began to wait for a request (accept, or the end of an answer), in ms
    /// since the epoch of [`Waiting`].
    waiting_since_ms: AtomicU64,
    /// When the first byte of the next request arrived, or [`NONE`].
    first_byte_ms: AtomicU64,
    /// Whether it has answered a request (then the idle timer applies between requests).
    served: AtomicBool,
    /// Whether bytes were read at all, and whether they opened HTTP/2.
    started: AtomicBool,
    http2: AtomicBool,
    waiting: Arc<Waiting>,
}

/// Which timer closes a waiting connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    HeaderRead,
    Idle,
}

impl Timer {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Timer::HeaderRead => "header_read_timeout",
            Timer::Idle => "idle_timeout",
        }
    }
}

impl Waiting {
    /// Registers a new connection, waiting for its first request.
    pub fn open(self: &Arc<Self>) -> Arc<Connection> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let evict = Arc::new(Notify::new());
        self.lock().insert(id, evict.clone());
        Arc::new(Connection {
            id,
            in_flight: AtomicUsize::new(0),
            evict,
            changed: Notify::new(),
            waiting_since_ms: AtomicU64::new(self.now_ms()),
            first_byte_ms: AtomicU64::new(NONE),
            served: AtomicBool::new(false),
            started: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            waiting: self.clone(),
        })
    }

    /// Asks the connection that has waited longest for a request to close; false if every
    /// open connection is serving a request.
    pub fn evict_oldest(&self) -> bool {
        let oldest = self.lock().pop_first();
        match oldest {
            Some((_, evict)) => {
                // notify_one keeps the permit if the task is not waiting on it yet.
                evict.notify_one();
                true
            }
            None => false,
        }
    }

    /// How many connections are waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Notify>>> {
        // A panic while holding this lock leaves the map consistent (single operations).
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Connection {
    /// A request started on this connection: it is no longer waiting. The guard marks it
    /// waiting again when the last request in flight is answered.
    pub fn request(self: &Arc<Self>) -> Busy {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            self.waiting.lock().remove(&self.id);
            self.changed.notify_one();
        }
        Busy(self.clone())
    }

    /// Bytes were read from the socket.
    pub fn saw_bytes(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if !self.started.swap(true, Ordering::AcqRel) {
            // The HTTP/2 connection preface; no HTTP/1 method is called PRI.
            self.http2
                .store(bytes.starts_with(b"PRI "), Ordering::Release);
        }
        if self.in_flight.load(Ordering::Acquire) == 0
            && self
                .first_byte_ms
                .compare_exchange(
                    NONE,
                    self.waiting.now_ms(),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            self.changed.notify_one();
        }
    }

    /// When, and by which timer, the connection is to be closed if nothing changes; `None`
    /// while it serves a request (the request deadline bounds that) or when the timer is off
    /// (0). HTTP/2 connections are only subject to the idle timer (no stream open): their
    /// frames between requests are not a request's headers.
    pub fn deadline(&self, header_read: Duration, idle: Duration) -> Option<(Instant, Timer)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let at = |ms: u64, d: Duration| {
            (!d.is_zero()).then(|| self.waiting.epoch + Duration::from_millis(ms) + d)
        };
        let since = self.waiting_since_ms.load(Ordering::Acquire);
        if self.http2.load(Ordering::Acquire) {
            return at(since, idle).map(|t| (t, Timer::Idle));
        }
        let first = self.first_byte_ms.load(Ordering::Acquire);
        if !self.served.load(Ordering::Acquire) {
            at(since, header_read).map(|t| (t, Timer::HeaderRead))
        } else if first == NONE {
            at(since, idle).map(|t| (t, Timer::Idle))
        } else {
            at(first, header_read).map(|t| (t, Timer::HeaderRead))
        }
    }

    /// Resolves with the timer that closes the connection, once one runs out while it waits
    /// for a request.
    pub async fn expired(&self, header_read: Duration, idle: Duration) -> Timer {
        loop {
            match self.deadline(header_read, idle) {
                None => self.changed.notified().await,
                Some((at, timer)) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {
                            // Still the same deadline (nothing changed meanwhile)?
                            if self
                                .deadline(header_read, idle)
                                .is_some_and(|(now_at, _)| now_at <= Instant::now())
                            {
                                return timer;
                            }
                        }
                        _ = self.changed.notified() => {}
                    }
                }
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.waiting.lock().remove(&self.id);
    }
}

/// A request in flight on a connection.
pub struct Busy(Arc<Connection>);

impl Drop for Busy {
    fn drop(&mut self) {
        let c = &self.0;
        if c.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            c.served.store(true, Ordering::Release);
            c.first_byte_ms.store(NONE, Ordering::Release);
            c.waiting_since_ms
                .store(c.waiting.now_ms(), Ordering::Release);
            c.waiting.lock().insert(c.id, c.evict.clone());
            c.changed.notify_one();
        }
    }
}

/// A socket whose reads are reported to its [`Connection`] (for its timers).
pub struct Watched<T> {
    inner: T,
    connection: Arc<Connection>,
}

impl<T> Watched<T> {
    pub fn new(inner: T, connection: Arc<Connection>) -> Self {
        Watched { inner, connection }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.connection.saw_bytes(&buf.filled()[before..]);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_waiting_idle_connection_is_evicted_first() {
        let w = Arc::new(Waiting::default());
        let a = w.open();
        let b = w.open();
        let c = w.open();
        let busy_a = a.request();
        assert_eq!(w.len(), 2);
        // a is serving a request: b goes first.
        assert!(w.evict_oldest());
        assert_eq!(w.len(), 1);
        drop(busy_a);
        assert_eq!(w.len(), 2);
        drop(c);
        assert_eq!(w.len(), 1);
        assert!(w.evict_oldest());
        assert!(!w.evict_oldest());
        drop((a, b));
        assert!(w.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn header_and_idle_timers_run_at_their_own_times() {
        let (header, idle) = (Duration::from_secs(1), Duration::from_secs(10));
        let w = Arc::new(Waiting::default());
        let c = w.open();
        let t0 = w.epoch;
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        // First request: the header timer runs from accept, bytes or not.
        assert_eq!(c.deadline(header, idle), Some((at(1), Timer::HeaderRead)));
        c.saw_bytes(b"GET / HTTP/1.1\r\n");
        assert_eq!(c.deadline(header, idle), Some((at(1), Timer::HeaderRead)));
        let busy = c.request();
        assert_eq!(c.deadline(header, idle), None);
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(busy);
        // Between requests: idle until the next request's first byte, then its headers.
        assert_eq!(c.deadline(header, idle), Some((at(15), Timer::Idle)));
        tokio::time::advance(Duration::from_secs(3)).await;
        c.saw_bytes(b"G");
        assert_eq!(c.deadline(header, idle), Some((at(9), Timer::HeaderRead)));
        assert_eq!(c.expired(header, idle).await, Timer::HeaderRead);
        assert_eq!(Instant::now(), at(9));
        // Off when 0.
        assert_eq!(c.deadline(Duration::ZERO, idle), None);
        // HTTP/2 (opened now, at 9 s): only the idle timer, from accept or the last stream.
        let h2 = w.open();
        h2.saw_bytes(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert_eq!(h2.deadline(header, idle), Some((at(19), Timer::Idle)));
    }

    #[test]
    fn the_descriptor_limit_is_read() {
        if cfg!(target_os = "linux") {
            assert!(descriptor_limit().is_some_and(|n| n > 0));
        }
    }
}
