//! Long commands with their output piped: no progress bar (no carriage return, no escape
//! code) on stdout or stderr, and a one-line summary as the last line of stdout, whose numbers
//! match what the test set up or reads back itself. `costpipe-loadgen`,
//! `costpipe-deadletters replay` and `costpipe-reprice` are run; the bar itself is
//! `costpipe-progress`, shared by every long command (the benchmarks too). As a control, the
//! load generator is also run on a pseudo-terminal (`script`), where the bar must draw.

use std::process::{Command, Output};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use costpipe_e2e::*;

/// Stdout and stderr hold no bar, the command succeeded, and the last line of stdout is
/// returned (the summary).
fn quiet_summary(what: &str, out: &Output) -> String {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{what} failed: {stdout}{stderr}");
    for (name, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        assert!(
            !text.contains('\u{1b}') && !text.contains('\r'),
            "{what}: progress drawn on a piped {name}: {text:?}"
        );
    }
    stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("{what}: no summary line: {stdout:?}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn long_commands_piped_print_a_summary_and_no_bar() {
    let stack = Stack::from_env();
    let names = Names::new("progress");
    const EVENTS: i64 = 300;

    // Load generator.
    let out = Command::new(binary("costpipe-loadgen"))
        .env("COSTPIPE_KAFKA_BROKERS", &stack.brokers)
        .args(["--topic", &names.usage, "--events", &EVENTS.to_string()])
        .args(["--partitions", "2", "--seed", "7"])
        .output()
        .expect("run costpipe-loadgen");
    let summary = quiet_summary("costpipe-loadgen", &out);
    assert!(
        summary.starts_with(&format!("produced {EVENTS} events to {}", names.usage)),
        "{summary}"
    );
    assert!(summary.ends_with("0 failed"), "{summary}");
    assert_eq!(
        read_topic(&stack.brokers, &names.usage, 2).len() as i64,
        EVENTS,
        "the records on the topic"
    );

    // Dead-letter replay (dry run) over letters that are not costpipe's: each is judged,
    // none produced.
    costpipe_kafka::ensure_topics(
        &stack.brokers,
        &[costpipe_kafka::TopicSpec {
            name: names.dead_letters.clone(),
            partitions: 1,
            compacted: false,
        }],
    )
    .await
    .expect("dead-letter topic");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .create()
        .expect("producer");
    const LETTERS: usize = 2;
    for i in 0..LETTERS {
        producer
            .send(
                FutureRecord::to(&names.dead_letters)
                    .key("t")
                    .payload(&format!("not an event {i}")),
                Duration::from_secs(10),
            )
            .await
            .expect("letter produced");
    }
    let out = Command::new(binary("costpipe-deadletters"))
        .env("COSTPIPE_KAFKA_BROKERS", &stack.brokers)
        .env("COSTPIPE_DEAD_LETTER_TOPIC", &names.dead_letters)
        // A topic nothing reads: a dry run produces nothing anyway.
        .env("COSTPIPE_USAGE_TOPIC", &names.control)
        .args(["replay", "--dry-run"])
        .output()
        .expect("run costpipe-deadletters");
    let summary = quiet_summary("costpipe-deadletters replay", &out);
    // "<n> dead letters to replay (<e> events), <s> skipped, ...": every letter is counted
    // once, one way or the other.
    let words: Vec<&str> = summary.split_whitespace().collect();
    assert!(
        summary.contains("dead letters to replay") && words.len() > 7,
        "{summary}"
    );
    let to_replay: usize = words[0].parse().expect("a count first");
    let skipped: usize = words[7].parse().expect("the skipped count");
    assert_eq!(to_replay + skipped, LETTERS, "{summary}");

    // Repricing a tenant with nothing stored, in a fixed past month.
    let out = Command::new(binary("costpipe-reprice"))
        .args(["--tenant", "acme", "--period", "2020-01"])
        .env("COSTPIPE_CLICKHOUSE_URL", &stack.clickhouse_url)
        .env("COSTPIPE_CLICKHOUSE_DATABASE", &names.database)
        .output()
        .expect("run costpipe-reprice");
    let summary = quiet_summary("costpipe-reprice", &out);
    assert!(
        summary
            .starts_with("repriced acme 2020-01: 0 events examined, 0 changed, nothing to write ("),
        "{summary}"
    );
    stack
        .query(&format!("DROP DATABASE IF EXISTS {}", names.database))
        .await;

    // Control: on a terminal the same command draws its bar.
    if std::path::Path::new("/usr/bin/script").exists() {
        let topic = format!("{}.tty", names.usage);
        let command = format!(
            "{} --topic {topic} --events {EVENTS} --partitions 1",
            binary("costpipe-loadgen").display()
        );
        let out = Command::new("/usr/bin/script")
            .args(["-qec", &command, "/dev/null"])
            .env("COSTPIPE_KAFKA_BROKERS", &stack.brokers)
            .env("TERM", "xterm")
            .output()
            .expect("run script");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains('\u{1b}'),
            "no bar drawn on a terminal: {text:?}"
        );
        assert!(text.contains(&format!("produced {EVENTS} events to {topic}")));
    } else {
        eprintln!("/usr/bin/script missing: the terminal control was not run");
    }
}
