//! Topic administration: creates the pipeline's topics when they are missing. Which topics
//! a service needs is the service's business; this module only creates them, within a
//! timeout, so an unreachable broker fails start-up with a clear message instead of
//! hanging it.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;

use crate::Error;

/// How long [`ensure_topics`] waits for the broker, all requests included.
pub const DEFAULT_ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

/// One topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Partitions, when it is created.
    pub partitions: i32,
    /// `cleanup.policy=compact` (control topic).
    pub compacted: bool,
}

/// Creates every topic in `specs` that does not exist yet, within [`DEFAULT_ADMIN_TIMEOUT`].
pub async fn ensure_topics(brokers: &str, specs: &[TopicSpec]) -> Result<(), Error> {
    ensure_topics_within(brokers, specs, DEFAULT_ADMIN_TIMEOUT).await
}

/// Creates every topic in `specs` that does not exist yet; fails with [`Error::Timeout`]
/// when the broker has not answered within `timeout`.
pub async fn ensure_topics_within(
    brokers: &str,
    specs: &[TopicSpec],
    timeout: Duration,
) -> Result<(), Error> {
    if specs.is_empty() {
        return Ok(());
    }
    let timeout_ms = timeout.as_millis().min(i32::MAX as u128) as u64;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("socket.timeout.ms", timeout_ms.max(10).to_string())
        .create()?;
    let new_topics: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|s| {
            let t = NewTopic::new(&s.name, s.partitions, TopicReplication::Fixed(1));
            if s.compacted {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    // Broker side (operation) and client side (request) timeouts, and a hard stop around
    // both in case librdkafka keeps waiting for a broker it cannot reach.
    let opts = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let results = tokio::time::timeout(timeout, admin.create_topics(&new_topics, &opts))
        .await
        .map_err(|_| Error::Timeout {
            what: format!("creating topics at {brokers}"),
            after_ms: timeout_ms,
        })??;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(Error::TopicNotCreated { topic, code }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nothing_to_create_needs_no_broker() {
        ensure_topics("127.0.0.1:1", &[]).await.unwrap();
    }

    #[tokio::test]
    async fn an_unreachable_broker_times_out() {
        // Port 1 on loopback: nothing listens there, so the admin request never completes.
        let spec = TopicSpec {
            name: "t".into(),
            partitions: 1,
            compacted: false,
        };
        let started = std::time::Instant::now();
        let err = ensure_topics_within("127.0.0.1:1", &[spec], Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "{err}");
        assert!(
            matches!(err, Error::Timeout { .. } | Error::Client(_)),
            "{err}"
        );
    }
}
