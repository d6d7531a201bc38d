//! A TCP proxy that can cut a service off and put it back: the way end-to-end tests make
//! ClickHouse unreachable for one aggregator.
//!
//! Why a proxy rather than stopping ClickHouse: the stack's ClickHouse is shared by the tests
//! of every other test binary, which run at the same time; stopping it would fail them.
//! From the client's side, a cut proxy is a stopped server: [`Proxy::cut`] resets every open
//! connection (`SO_LINGER` 0, so the peer sees a reset, not a clean end) and stops listening,
//! so new connections are refused, as they are by a host where nothing listens on the port.
//! [`Proxy::restore`] listens again on the same port.
//!
//! Bytes are forwarded as they come, both ways, with no parsing. A connection ends when
//! either side closes or fails (no half-close: the HTTP clients proxied here never
//! half-close, and everything read from one side is written to the other before the
//! connection is dropped).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

/// A running proxy from `127.0.0.1:<port>` to an upstream address.
pub struct Proxy {
    listen: SocketAddr,
    upstream: String,
    /// `true` while forwarding; connection tasks end when it turns `false`.
    open: watch::Sender<bool>,
    accept: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<Stats>,
}

#[derive(Default)]
struct Stats {
    accepted: AtomicU64,
    reset: AtomicU64,
}

impl Proxy {
    /// Starts forwarding from a free port on 127.0.0.1 to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Proxy {
        let listener = listen("127.0.0.1:0".parse().expect("address")).expect("proxy listens");
        let listen_addr = listener.local_addr().expect("proxy address");
        let (open, _) = watch::channel(true);
        let proxy = Proxy {
            listen: listen_addr,
            upstream: upstream.to_string(),
            open,
            accept: Mutex::new(None),
            stats: Arc::new(Stats::default()),
        };
        *proxy.accept.lock().await = Some(proxy.spawn_accept(listener));
        proxy
    }

    /// A proxy to the `host:port` of an `http://host:port` URL.
    pub async fn for_url(url: &str) -> Proxy {
        let authority = url
            .split_once("://")
            .map_or(url, |(_, rest)| rest)
            .trim_end_matches('/');
        Proxy::start(authority).await
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.listen.port()
    }

    /// `http://127.0.0.1:<port>`, for clients of an HTTP upstream.
    pub fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// Connections accepted while forwarding, so far.
    pub fn accepted(&self) -> u64 {
        self.stats.accepted.load(Ordering::Relaxed)
    }

    /// Connections reset by [`Proxy::cut`], so far.
    pub fn reset(&self) -> u64 {
        self.stats.reset.load(Ordering::Relaxed)
    }

    /// Resets every open connection and stops listening: from now on connections are refused.
    /// Returns once the port is closed.
    pub async fn cut(&self) {
        self.open.send_replace(false);
        if let Some(task) = self.accept.lock().await.take() {
            task.abort();
            // The listener is dropped with the task: wait for it, so the port is closed on return.
            let _ = task.await;
        }
    }

    /// Listens again on the same port and forwards new connections.
    pub async fn restore(&self) {
        let mut accept = self.accept.lock().await;
        if accept.is_some() {
            return;
        }
        let listener = listen(self.listen).unwrap_or_else(|e| {
            panic!("proxy cannot listen on {} again: {e}", self.listen);
        });
        self.open.send_replace(true);
        *accept = Some(self.spawn_accept(listener));
    }

    fn spawn_accept(&self, listener: TcpListener) -> JoinHandle<()> {
        let upstream = self.upstream.clone();
        let open = self.open.clone();
        let stats = self.stats.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    // Out of file descriptors or the like: try again shortly.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                let mut open = open.subscribe();
                let upstream = upstream.clone();
                let stats = stats.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        // Upstream down: the client sees its connection reset.
                        let _ = client.set_zero_linger();
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    tokio::select! {
                        _ = pump(&client, &server) => {}
                        _ = pump(&server, &client) => {}
                        _ = open.wait_for(|open| !*open) => {
                            stats.reset.fetch_add(1, Ordering::Relaxed);
                            let _ = client.set_zero_linger();
                            let _ = server.set_zero_linger();
                        }
                    }
                });
            }
        })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.open.send_replace(false);
        if let Ok(mut accept) = self.accept.try_lock() {
            if let Some(task) = accept.take() {
                task.abort();
            }
        }
    }
}

/// A listener on `addr` with `SO_REUSEADDR`, so that the same port can be taken again after
/// a cut while the cut connections are in `TIME_WAIT`.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Copies what `from` receives to `to` until `from` ends or either side fails.
async fn pump(from: &TcpStream, to: &TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        from.readable().await?;
        let n = match from.try_read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        let mut written = 0;
        while written < n {
            to.writable().await?;
            match to.try_write(&buf[written..n]) {
                Ok(k) => written += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}
