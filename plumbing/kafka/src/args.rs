//! `KafkaArgs`: the broker flags every binary that talks to Kafka flattens into its config
//! (`#[command(flatten)] kafka: KafkaArgs`), so the flag, its variable and its default are
//! declared once.

use clap::Args;
use rdkafka::config::ClientConfig;

/// Where the broker is when nothing says otherwise: the local stack (`scripts/stack`).
pub const DEFAULT_BROKERS: &str = "127.0.0.1:19092";

/// Kafka connection flags.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers.
    // `global`: binaries with subcommands (costpipe-deadletters) accept it after the
    // subcommand too, as they always did.
    #[arg(long, env = "COSTPIPE_KAFKA_BROKERS", default_value = DEFAULT_BROKERS, global = true)]
    pub brokers: String,
}

impl Default for KafkaArgs {
    fn default() -> Self {
        KafkaArgs::new(DEFAULT_BROKERS)
    }
}

impl KafkaArgs {
    /// Args for `brokers` (tests, benchmarks).
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaArgs {
            brokers: brokers.into(),
        }
    }

    /// A client configuration with `bootstrap.servers` set; add the rest per client.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(subcommand)]
        command: Option<Command>,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Command {
        List,
    }

    #[test]
    fn flag_default_and_position() {
        // The variable may be set in the environment running the tests; only check it when not.
        if std::env::var_os("COSTPIPE_KAFKA_BROKERS").is_none() {
            assert_eq!(Cli::parse_from(["x"]).kafka.brokers, DEFAULT_BROKERS);
        }
        assert_eq!(
            Cli::parse_from(["x", "--brokers", "a:1"]).kafka.brokers,
            "a:1"
        );
        // After a subcommand too (global).
        assert_eq!(
            Cli::parse_from(["x", "list", "--brokers", "b:2"])
                .kafka
                .brokers,
            "b:2"
        );
    }
}
