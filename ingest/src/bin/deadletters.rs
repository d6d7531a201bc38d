//! costpipe-deadletters: lists the dead-letter topic and replays dead letters after a fix.
//!
//! `list` prints one line per dead letter: partition@offset, source, reason code, size,
//! time, tenant, reason and the first bytes. `replay` produces the matching letters to the
//! usage topic again: Avro letters (from the aggregator) as their original bytes, JSON
//! letters (from HTTP ingest) through the emitter after judging them again like a request
//! of their tenant. A letter that would only be dead-lettered again is skipped and said so
//! (`--force` produces Avro letters anyway, for a fix this build does not know about).
//! Replaying the same letter twice produces its events twice; the aggregator counts an
//! `event_id` once. On a terminal, reading and replaying show progress on stderr; `replay`
//! ends with a one-line summary.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use futures::future::join_all;
use tracing_subscriber::EnvFilter;

use costpipe_ingest::dead_letters::{plan_replay, read_dead_letters, DeadLetterRecord, ReplayPlan};
use costpipe_ingest::{Emitter, EmitterConfig};
use costpipe_kafka::KafkaArgs;
use costpipe_progress::Progress;
use costpipe_schemas::ValidationLimits;

#[derive(Debug, Parser)]
#[command(
    name = "costpipe-deadletters",
    about = "Lists dead letters and replays them to the usage topic after a fix"
)]
struct Cli {
    /// Kafka connection.
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Dead-letter topic.
    #[arg(
        long,
        env = "COSTPIPE_DEAD_LETTER_TOPIC",
        default_value = "costpipe.usage.dlq",
        global = true
    )]
    dead_letter_topic: String,
    /// Stop reading when no record arrived for this long, in milliseconds.
    #[arg(long, default_value_t = 1500, global = true)]
    idle_ms: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prints every dead letter that matches.
    List {
        #[command(flatten)]
        filter: Filter,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
        /// How many leading bytes to show.
        #[arg(long, default_value_t = 48)]
        bytes: usize,
    },
    /// Produces the matching dead letters to the usage topic again.
    Replay {
        #[command(flatten)]
        filter: Filter,
        /// Usage topic.
        #[arg(
            long,
            env = "COSTPIPE_USAGE_TOPIC",
            default_value = "costpipe.usage.v1"
        )]
        usage_topic: String,
        /// Produce Avro letters even when this build still cannot decode or validate them.
        #[arg(long)]
        force: bool,
        /// Only say what would be replayed.
        #[arg(long)]
        dry_run: bool,
        /// Confluent-compatible schema registry the emitter registers with (as the services do).
        #[arg(long, env = "COSTPIPE_SCHEMA_REGISTRY_URL")]
        schema_registry_url: Option<String>,
    },
}

#[derive(Debug, Args)]
struct Filter {
    /// Only letters with this reason code, e.g. `unknown_schema_id`.
    #[arg(long)]
    reason: Option<String>,
    /// Only letters from this source: `aggregator` or `http-ingest`.
    #[arg(long)]
    source: Option<String>,
    /// Only letters after this offset (on every partition), e.g. the last one already replayed.
    #[arg(long)]
    after_offset: Option<i64>,
}

impl Filter {
    fn matches(&self, l: &DeadLetterRecord) -> bool {
        self.reason
            .as_ref()
            .is_none_or(|r| l.reason_code.as_ref() == Some(r))
            && self
                .source
                .as_ref()
                .is_none_or(|s| l.source.as_ref() == Some(s))
            && self.after_offset.is_none_or(|o| l.offset > o)
    }
}

fn time(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| "-".into())
}

fn describe(l: &DeadLetterRecord, bytes: usize) -> String {
    let size = match l.truncated_from {
        Some(total) => format!("{} B (of {total} B)", l.size),
        None => format!("{} B", l.size),
    };
    format!(
        "p{}@{:<6} {:<11} {:<24} {:>10}  {}  tenant={}  {}  | {}",
        l.partition,
        l.offset,
        l.source.as_deref().unwrap_or("-"),
        l.reason_code.as_deref().unwrap_or("-"),
        size,
        time(l.failed_at_ms),
        l.tenant.as_deref().unwrap_or("-"),
        l.reason.as_deref().unwrap_or("-"),
        l.preview(bytes),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let (brokers, topic, idle) = (
        cli.kafka.brokers.clone(),
        cli.dead_letter_topic.clone(),
        Duration::from_millis(cli.idle_ms),
    );
    let reading = Progress::spinner("reading dead letters");
    let letters =
        tokio::task::spawn_blocking(move || read_dead_letters(&brokers, &topic, idle)).await??;
    reading.clear();
    match cli.command {
        Command::List {
            filter,
            json,
            bytes,
        } => {
            let shown: Vec<&DeadLetterRecord> =
                letters.iter().filter(|l| filter.matches(l)).collect();
            for l in &shown {
                if json {
                    let mut v = serde_json::to_value(l)?;
                    v["preview"] = l.preview(bytes).into();
                    println!("{v}");
                } else {
                    println!("{}", describe(l, bytes));
                }
            }
            if !json {
                eprintln!(
                    "{} of {} dead letters on {}",
                    shown.len(),
                    letters.len(),
                    cli.dead_letter_topic
                );
            }
        }
        Command::Replay {
            filter,
            usage_topic,
            force,
            dry_run,
            schema_registry_url,
        } => {
            let now = chrono::Utc::now().timestamp_millis();
            let limits = ValidationLimits::default();
            let mut emitter = Emitter::new(EmitterConfig {
                limits: limits.clone(),
                ..EmitterConfig::new(&cli.kafka.brokers, &usage_topic)
            })?;
            if let Some(url) = &schema_registry_url {
                emitter = emitter.use_schema_registry(url).await?;
            }
            let (mut replayed, mut events, mut skipped, mut failed) = (0, 0, 0, 0);
            let mut last_offset = None;
            let matching: Vec<&DeadLetterRecord> =
                letters.iter().filter(|l| filter.matches(l)).collect();
            let bar = Progress::bar(
                matching.len() as u64,
                "letters",
                if dry_run { "checking" } else { "replaying" },
            );
            for l in matching {
                bar.inc(1);
                let at = format!("p{}@{}", l.partition, l.offset);
                let code = l.reason_code.as_deref().unwrap_or("-");
                let pending = match plan_replay(l, &limits, force, now) {
                    ReplayPlan::Skip(why) => {
                        skipped += 1;
                        bar.println(format!("{at} {code}: skipped, {why}"));
                        continue;
                    }
                    _ if dry_run => {
                        replayed += 1;
                        bar.println(format!("{at} {code}: would be replayed"));
                        continue;
                    }
                    ReplayPlan::Raw {
                        event_id,
                        tenant,
                        payload,
                    } => vec![emitter.enqueue_encoded(event_id, &tenant, &payload).await?],
                    ReplayPlan::Events {
                        events: evs,
                        still_rejected,
                    } => {
                        for r in &still_rejected {
                            bar.println(format!("{at} {code}: one event still rejected, {r}"));
                        }
                        let mut p = Vec::new();
                        for e in &evs {
                            p.push(emitter.enqueue(e).await?);
                        }
                        p
                    }
                };
                let n = pending.len();
                let outcomes = join_all(pending.into_iter().map(|p| p.wait())).await;
                let lost = outcomes.iter().filter(|o| o.is_err()).count();
                if let Some(Err(e)) = outcomes.iter().find(|o| o.is_err()) {
                    bar.println(format!(
                        "{at} {code}: {lost} of {n} events not delivered: {e}"
                    ));
                }
                failed += lost;
                events += n - lost;
                replayed += 1;
                last_offset = Some(last_offset.map_or(l.offset, |o: i64| o.max(l.offset)));
                bar.println(format!(
                    "{at} {code}: replayed {n} event(s) to {usage_topic}"
                ));
            }
            emitter.flush(Duration::from_secs(30))?;
            let secs = bar.elapsed().as_secs_f64();
            bar.finish(format!(
                "{replayed} dead letters {} ({events} events), {skipped} skipped, {failed} events not delivered ({secs:.1} s){}",
                if dry_run { "to replay" } else { "replayed" },
                last_offset
                    .map(|o| format!("; next time use --after-offset {o}"))
                    .unwrap_or_default()
            ));
            anyhow::ensure!(failed == 0, "{failed} events were not delivered");
        }
    }
    Ok(())
}
