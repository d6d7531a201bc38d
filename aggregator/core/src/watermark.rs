//! `Watermark`: one partition's event-time watermark — how far event time has surely
//! progressed, so windows know what is late. It owns the lateness and idle-partition rules
//! and nothing else; it never reads a clock (wall-clock `now_ms` is always an argument) and
//! knows nothing of windows or Kafka.
//!
//! Rules, with `L = allowed_lateness_ms`:
//! - The watermark is `max event time observed − L`.
//! - If no event was observed for `idle_timeout_ms` of wall-clock time (counted from the last
//!   event, or from the start for a partition that has none yet), the watermark follows the
//!   wall clock instead: `now_ms − L`, so an idle partition does not hold the others back.
//! - It never goes backwards, even if the wall clock steps back or a partition that woke up
//!   from idleness delivers old events (those events are then late): what the idle rule
//!   reached is kept when the next event arrives.
//! - Before any event and before the idle timeout, the watermark is `i64::MIN` ("nothing is
//!   late yet").

use serde::{Deserialize, Serialize};

/// Watermark settings of the aggregator's source, per partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatermarkConfig {
    /// How far the watermark trails the newest event time (and, on an idle partition, the
    /// wall clock), in milliseconds. An event older than the watermark is late. Must be ≥ 0.
    pub allowed_lateness_ms: i64,
    /// Wall-clock time without any event after which a partition counts as idle and its
    /// watermark follows the wall clock, in milliseconds. Must be > 0.
    pub idle_timeout_ms: i64,
}

impl Default for WatermarkConfig {
    fn default() -> Self {
        WatermarkConfig {
            allowed_lateness_ms: 5_000,
            idle_timeout_ms: 10_000,
        }
    }
}

/// A setting of [`WatermarkConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatermarkError {
    /// A field is out of its range; the message names the field and the range.
    #[error("watermark config: {field} is {value}, but must be {must}")]
    Invalid {
        field: &'static str,
        value: i64,
        must: &'static str,
    },
}

impl WatermarkConfig {
    /// Checks the settings and builds the watermark of a partition assigned at wall-clock
    /// time `started_at_ms` (where its idle timeout starts counting).
    pub fn validate(&self, started_at_ms: i64) -> Result<Watermark, WatermarkError> {
        if self.allowed_lateness_ms < 0 {
            return Err(WatermarkError::Invalid {
                field: "allowed_lateness_ms",
                value: self.allowed_lateness_ms,
                must: ">= 0",
            });
        }
        if self.idle_timeout_ms <= 0 {
            return Err(WatermarkError::Invalid {
                field: "idle_timeout_ms",
                value: self.idle_timeout_ms,
                must: "> 0",
            });
        }
        Ok(Watermark {
            config: *self,
            max_event_ms: None,
            last_event_wall_ms: started_at_ms,
            floor_ms: i64::MIN,
        })
    }
}

/// One partition's watermark. Build it with [`WatermarkConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    config: WatermarkConfig,
    max_event_ms: Option<i64>,
    /// Wall-clock time of the latest observation (or of the start).
    last_event_wall_ms: i64,
    /// The highest value returned so far; what keeps the watermark from going back.
    floor_ms: i64,
}

impl Watermark {
    /// The watermark of a partition assigned at `started_at_ms`. The config is meant to have
    /// passed [`WatermarkConfig::validate`] at start-up; out-of-range values are clamped to
    /// the nearest valid one rather than refused here.
    pub fn new(config: WatermarkConfig, started_at_ms: i64) -> Watermark {
        Watermark {
            config: WatermarkConfig {
                allowed_lateness_ms: config.allowed_lateness_ms.max(0),
                idle_timeout_ms: config.idle_timeout_ms.max(1),
            },
            max_event_ms: None,
            last_event_wall_ms: started_at_ms,
            floor_ms: i64::MIN,
        }
    }

    /// Records an event with time `event_time_ms` observed at wall-clock `now_ms`.
    pub fn observe(&mut self, event_time_ms: i64, now_ms: i64) {
        // Going idle and waking up is a change of rule; pin what the idle rule reached so the
        // event-time rule cannot pull the watermark back below it.
        self.floor_ms = self.peek(now_ms);
        self.max_event_ms = Some(
            self.max_event_ms
                .map_or(event_time_ms, |m| m.max(event_time_ms)),
        );
        self.last_event_wall_ms = self.last_event_wall_ms.max(now_ms);
    }

    /// The watermark at wall-clock `now_ms`, remembered so it never goes back.
    pub fn current(&mut self, now_ms: i64) -> i64 {
        self.floor_ms = self.peek(now_ms);
        self.floor_ms
    }

    /// The watermark [`Watermark::current`] would return, without remembering it.
    pub fn peek(&self, now_ms: i64) -> i64 {
        let lateness = self.config.allowed_lateness_ms;
        let by_events = self
            .max_event_ms
            .map_or(i64::MIN, |m| m.saturating_sub(lateness));
        let by_clock = if self.is_idle(now_ms) {
            now_ms.saturating_sub(lateness)
        } else {
            i64::MIN
        };
        self.floor_ms.max(by_events).max(by_clock)
    }

    /// True if an event at `event_time_ms` is older than the watermark at `now_ms`.
    pub fn is_late(&self, event_time_ms: i64, now_ms: i64) -> bool {
        event_time_ms < self.peek(now_ms)
    }

    /// True if no event was observed for at least `idle_timeout_ms` before `now_ms`.
    pub fn is_idle(&self, now_ms: i64) -> bool {
        now_ms.saturating_sub(self.last_event_wall_ms) >= self.config.idle_timeout_ms
    }

    /// The newest event time observed, if any.
    pub fn max_event_ms(&self) -> Option<i64> {
        self.max_event_ms
    }

    /// The settings.
    pub fn config(&self) -> &WatermarkConfig {
        &self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wm(started_at_ms: i64) -> Watermark {
        WatermarkConfig::default().validate(started_at_ms).unwrap()
    }

    #[test]
    fn trails_the_newest_event_by_the_lateness() {
        let mut w = wm(1_000_000);
        assert_eq!(w.current(1_000_000), i64::MIN);
        assert!(!w.is_late(0, 1_000_000));
        w.observe(500_000, 1_000_001);
        w.observe(400_000, 1_000_002);
        assert_eq!(w.current(1_000_003), 495_000);
        assert!(w.is_late(494_999, 1_000_003));
        assert!(!w.is_late(495_000, 1_000_003));
        assert_eq!(w.max_event_ms(), Some(500_000));
    }

    #[test]
    fn an_idle_partition_follows_the_wall_clock_and_never_goes_back() {
        // No event at all: idle once 10 s have passed since the start.
        let mut empty = wm(0);
        assert_eq!(empty.current(9_999), i64::MIN);
        assert_eq!(empty.current(10_000), 5_000);

        let mut w = wm(0);
        w.observe(1_000, 1_000);
        w.observe(3_000, 3_100);
        assert_eq!(w.current(3_100), -2_000);
        assert!(!w.is_idle(13_099));
        assert_eq!(w.current(13_099), -2_000);
        assert_eq!(w.current(13_100), 8_100);
        assert_eq!(w.current(20_000), 15_000);
        // It wakes up with an old event: the watermark stays where the idle rule left it.
        w.observe(12_000, 20_500);
        assert!(!w.is_idle(20_501));
        assert_eq!(w.current(20_501), 15_500);
        assert!(w.is_late(12_000, 20_501));
        // The wall clock stepping back does not move it back either.
        assert_eq!(w.current(100), 15_500);
        w.observe(30_000, 30_000);
        assert_eq!(w.current(30_000), 25_000);
    }

    #[test]
    fn config_rejects_bad_values_and_unknown_fields() {
        let bad = WatermarkConfig {
            allowed_lateness_ms: -1,
            ..WatermarkConfig::default()
        };
        assert!(bad.validate(0).is_err());
        let bad = WatermarkConfig {
            idle_timeout_ms: 0,
            ..WatermarkConfig::default()
        };
        let msg = bad.validate(0).unwrap_err().to_string();
        assert!(msg.contains("idle_timeout_ms"), "{msg}");
        use serde::de::value::{Error, MapDeserializer};
        let parse = |fields: Vec<(&'static str, i64)>| {
            WatermarkConfig::deserialize(MapDeserializer::<_, Error>::new(fields.into_iter()))
        };
        let parsed = parse(vec![("allowed_lateness_ms", 2_000)]).unwrap();
        assert_eq!(parsed.allowed_lateness_ms, 2_000);
        assert_eq!(parsed.idle_timeout_ms, 10_000);
        let msg = parse(vec![("lateness_ms", 1)]).unwrap_err().to_string();
        assert!(msg.contains("unknown field"), "{msg}");
    }
}
