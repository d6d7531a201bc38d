//! Which open connections are waiting for a request (headers not yet complete, or idle
//! between requests), so that at the connection cap the service can make room for a new
//! client by closing the one that has waited longest, instead of refusing the newcomer.
//! Without this, a few hundred stalled connections (slowloris) hold every place until their
//! header-read timeout passes, and every valid client meanwhile is refused or queued.
//!
//! Also: the cap itself is kept below the process's descriptor limit
//! ([`descriptor_limit`]), so that accept never fails for lack of descriptors.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

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
#[derive(Default)]
pub struct Waiting {
    next_id: AtomicU64,
    waiting: Mutex<BTreeMap<u64, Arc<Notify>>>,
}

/// One connection's entry; dropping it forgets the connection.
pub struct Connection {
    id: u64,
    in_flight: AtomicUsize,
    /// Notified when the connection is to be closed to make room.
    pub evict: Arc<Notify>,
    waiting: Arc<Waiting>,
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
        }
        Busy(self.clone())
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
            c.waiting.lock().insert(c.id, c.evict.clone());
        }
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

    #[test]
    fn the_descriptor_limit_is_read() {
        if cfg!(target_os = "linux") {
            assert!(descriptor_limit().is_some_and(|n| n > 0));
        }
    }
}
