//! Prints a topic's records (debug aid): `cargo run -p costpipe-e2e --example dump_topic -- TOPIC [PARTITIONS]`.
use rdkafka::message::Message;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let topic = args.get(1).expect("usage: dump_topic TOPIC [PARTITIONS]");
    let partitions = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(1);
    let stack = costpipe_e2e::Stack::from_env();
    for m in costpipe_e2e::read_topic(&stack.brokers, topic, partitions) {
        println!(
            "p{} o{} key={:?} {} bytes",
            m.partition(),
            m.offset(),
            m.key().map(String::from_utf8_lossy),
            m.payload().map_or(0, <[u8]>::len)
        );
    }
}
