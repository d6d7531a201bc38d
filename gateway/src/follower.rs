//! Kafka adapter: reads the control topic from the beginning into a [`BudgetTable`].

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use costpipe_schemas::{BudgetControl, ControlCodec};

use crate::table::BudgetTable;

fn consumer(brokers: &str, topic: &str) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("costpipe-gateway-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    // The control topic has one partition: one ordered history of levels.
    tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    Ok(consumer)
}

/// Every control record from the beginning until none arrives for `idle`, in order.
pub fn read_all(brokers: &str, topic: &str, idle: Duration) -> anyhow::Result<Vec<BudgetControl>> {
    let consumer = consumer(brokers, topic)?;
    let codec = ControlCodec::current();
    let mut out = Vec::new();
    let mut last = Instant::now();
    while last.elapsed() < idle {
        if let Some(msg) = consumer.poll(Duration::from_millis(100)) {
            let msg = msg?;
            if let Some(payload) = msg.payload() {
                out.push(codec.decode(payload)?);
            }
            last = Instant::now();
        }
    }
    Ok(out)
}

/// Follows the control topic on a background thread, keeping `table` current. Undecodable
/// records are skipped with a message on stderr (the table keeps the last good level).
pub fn follow(brokers: &str, topic: &str) -> anyhow::Result<Arc<RwLock<BudgetTable>>> {
    let consumer = consumer(brokers, topic)?;
    let table = Arc::new(RwLock::new(BudgetTable::default()));
    let shared = table.clone();
    std::thread::Builder::new()
        .name("costpipe-control-follower".into())
        .spawn(move || {
            let codec = ControlCodec::current();
            loop {
                match consumer.poll(Duration::from_millis(500)) {
                    Some(Ok(msg)) => match msg.payload().map(|p| codec.decode(p)) {
                        Some(Ok(control)) => {
                            if let Ok(mut t) = shared.write() {
                                t.apply(control);
                            }
                        }
                        Some(Err(e)) => eprintln!("costpipe-gateway: skipping control record: {e}"),
                        None => {}
                    },
                    Some(Err(e)) => eprintln!("costpipe-gateway: control topic error: {e}"),
                    None => {}
                }
            }
        })?;
    Ok(table)
}
