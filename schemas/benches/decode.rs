//! Decode cost per usage event, one core, three paths over the same bytes in one run:
//! - `apache-avro (before)`: what `UsageCodec::decode` did before the direct reader
//!   (`from_avro_datum`, then `from_value`);
//! - `pre-scan + apache-avro`: the path registry-learnt schemas now take;
//! - `direct reader`: the path of v1 and v2 records now.
//!
//! `cargo bench -p costpipe-schemas --bench decode`; `COSTPIPE_BENCH_EVENTS` sets the number of
//! distinct events (default 20,000). Payloads are packed into one buffer, as they arrive in a
//! fetched batch, so that the allocator's layout is not what is measured.

use std::hint::black_box;
use std::io::Cursor;
use std::time::Instant;

use apache_avro::{from_avro_datum, from_value};
use costpipe_schemas::usage_wire::write_usage_v2;
use costpipe_schemas::{UsageCodec, UsageEvent};
use uuid::Uuid;

/// A small deterministic generator (xorshift), to need no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An event shaped like `costpipe-loadgen`'s (about 260 bytes encoded).
fn event(rng: &mut Rng) -> UsageEvent {
    let models = [
        ("openai", "gpt-4o-2024-08-06"),
        ("anthropic", "claude-sonnet-4-5-20250929"),
        ("google", "gemini-2.5-pro"),
    ];
    let (provider, model) = models[rng.below(3) as usize];
    let mut e = UsageEvent::new(
        Uuid::from_u128(u128::from(rng.next()) << 64 | u128::from(rng.next())),
        1_764_000_000_000 + rng.below(30 * 86_400_000) as i64,
        format!("tenant-{:04}", rng.below(500)),
        provider,
        model,
    );
    e.department = Some(["research", "support", "sales"][rng.below(3) as usize].into());
    e.user_id = Some(format!("user-{:06}", rng.below(100_000)));
    e.project_id = Some(format!("project-{:03}", rng.below(200)));
    e.feature = Some("chat-completion".into());
    e.environment = Some("prod".into());
    e.input_tokens = rng.below(20_000) as i64;
    e.output_tokens = rng.below(2_000) as i64;
    e.cached_input_tokens = rng.below(5_000) as i64;
    e.reasoning_tokens = e.output_tokens / 4;
    e.cache_write_1h_tokens = (rng.below(4) == 0).then_some(rng.below(1_000) as i64);
    e.request_id = Some(format!("req_{:016x}", rng.next()));
    e.trace_id = Some(format!("{:016x}{:016x}", rng.next(), rng.next()));
    e.labels.insert("region".into(), "eu-west-1".into());
    e.labels.insert("tier".into(), "enterprise".into());
    e
}

fn main() {
    let n: usize = std::env::var("COSTPIPE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let codec = UsageCodec::current();
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    let mut buf = Vec::new();
    let mut ends = Vec::with_capacity(n);
    for _ in 0..n {
        write_usage_v2(&event(&mut rng), codec.schema_id(), &mut buf);
        ends.push(buf.len());
    }
    let records: Vec<&[u8]> = std::iter::once(0)
        .chain(ends.iter().copied())
        .zip(ends.iter().copied())
        .map(|(start, end)| &buf[start..end])
        .collect();
    println!(
        "{n} events, {:.0} bytes each on average",
        buf.len() as f64 / n as f64
    );

    let schema = codec.schema().clone();
    let before = |r: &[u8]| {
        let value = from_avro_datum(&schema, &mut Cursor::new(&r[5..]), None).ok()?;
        from_value::<UsageEvent>(&value).ok()
    };
    // All three agree before they are timed.
    for r in records.iter().take(1000) {
        let direct = codec.decode(r).ok();
        assert!(direct.is_some());
        assert_eq!(direct, before(r));
        assert_eq!(direct, codec.decode_with_apache_avro(r).ok());
    }

    let rounds = 5;
    let mut results: Vec<(&str, Vec<f64>)> = vec![
        ("apache-avro (before)", Vec::new()),
        ("pre-scan + apache-avro", Vec::new()),
        ("direct reader (now)", Vec::new()),
    ];
    // Rounds alternate between the paths, so that a change in machine load hits all three.
    for _ in 0..rounds {
        for (i, (_, times)) in results.iter_mut().enumerate() {
            let start = Instant::now();
            for r in &records {
                match i {
                    0 => drop(black_box(before(black_box(r)))),
                    1 => drop(black_box(codec.decode_with_apache_avro(black_box(r)))),
                    _ => drop(black_box(codec.decode(black_box(r)))),
                }
            }
            times.push(start.elapsed().as_nanos() as f64 / n as f64);
        }
    }
    println!("{:<24} {:>12} {:>12}", "path", "ns/event", "events/s");
    for (name, mut times) in results {
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            "{name:<24} {median:>12.0} {:>12.0}   (rounds: {})",
            1e9 / median,
            times
                .iter()
                .map(|t| format!("{t:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}
