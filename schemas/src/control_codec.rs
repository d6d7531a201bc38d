//! Encode and decode control records: v2 is written; v1 records (builds before budgets of
//! any scope) are still read, and upgraded to v2 by [`BudgetControl::from`].
//!
//! v2 is a new Avro record (`dev.costpipe.control.v2.BudgetControl`) rather than a
//! resolution-compatible evolution of v1, because v1's key field was renamed
//! (`scope_key` → `budget_id`) and apache-avro's resolution does not follow field aliases.
//! The upgrade is therefore explicit and tested; an external Confluent registry must accept
//! v2 under the control subject with compatibility `NONE` (or the control topic renamed).

use crate::codec::Codec;
use crate::control_event::BudgetControl;
use crate::control_event_v1::BudgetControlV1;
use crate::error::{DecodeError, EncodeError};
use crate::registry::{CONTROL_V1_ID, CONTROL_V2_ID};
use crate::wire;

/// Writes v2; reads v1 and v2 (and schemas of either record learnt from a registry).
#[derive(Debug, Clone)]
pub struct ControlCodec {
    v2: Codec<BudgetControl>,
    v1: Codec<BudgetControlV1>,
}

impl Default for ControlCodec {
    fn default() -> Self {
        Self::current()
    }
}

impl ControlCodec {
    /// Writes control v2, the current version.
    pub fn current() -> Self {
        ControlCodec {
            v2: Codec::for_id(CONTROL_V2_ID),
            v1: Codec::for_id(CONTROL_V1_ID),
        }
    }

    /// The writer schema's id.
    pub fn schema_id(&self) -> u32 {
        self.v2.schema_id()
    }

    /// Writes with the v2 schema under the id an external registry assigned to it.
    pub fn with_writer_id(mut self, id: u32, subject: &str) -> Self {
        self.v2 = self.v2.with_writer_id(id, subject);
        self
    }

    /// Encodes a control record (v2, Confluent framing).
    pub fn encode(&self, control: &BudgetControl) -> Result<Vec<u8>, EncodeError> {
        self.v2.encode(control)
    }

    /// Decodes a framed v1 or v2 record into v2. A v1 record is upgraded (see
    /// `control_event_v1`).
    pub fn decode(&self, record: &[u8]) -> Result<BudgetControl, DecodeError> {
        match self.v2.decode(record) {
            Err(DecodeError::WrongSubject { .. }) => {
                let (id, _) = wire::split(record)?;
                match self.v1.decode(record) {
                    Ok(v1) => Ok(v1.into()),
                    // Neither v1 nor v2: report it against the current subject.
                    Err(DecodeError::WrongSubject { subject, .. }) => {
                        Err(DecodeError::WrongSubject {
                            id,
                            subject,
                            expected: self
                                .v2
                                .schema()
                                .name()
                                .map_or_else(String::new, |n| n.fullname(None)),
                        })
                    }
                    Err(e) => Err(e),
                }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::control_event::{BudgetLevel, ControlKind, FxRate};
    use crate::registry::USAGE_V2_ID;

    pub(crate) fn sample_v2() -> BudgetControl {
        BudgetControl {
            control_id: "5e0c0f3c-0000-5000-8000-000000000001".into(),
            budget_id: "acme:research:day".into(),
            kind: ControlKind::State,
            scope: BTreeMap::from([
                ("tenant".into(), "acme".into()),
                ("department".into(), "research".into()),
            ]),
            tenant_id: Some("acme".into()),
            level: BudgetLevel::Downgrade,
            previous_level: Some(BudgetLevel::Warning),
            threshold: "0.8".into(),
            throttle_requests_per_minute: None,
            downgrade_to: Some("gpt-4o-mini".into()),
            retry_after_ms: Some(3_600_000),
            spend: "80.000000000001".into(),
            limit: "100".into(),
            ratio: "0.80000000000001".into(),
            currency: "USD".into(),
            period_kind: "day".into(),
            period: "2026-11-30".into(),
            period_start: Some(1_795_993_200_000),
            period_end: Some(1_796_079_600_000),
            shadow: false,
            whitelist_features: vec!["healthcheck".into()],
            reason: "spend reached 80 % of the day limit".into(),
            trigger_event_id: Some("0190f3a4-0000-7000-8000-000000000000".into()),
            fx_rates: vec![FxRate {
                from: "EUR".into(),
                to: "USD".into(),
                rate: "1.08".into(),
                date: "2026-11-01".into(),
            }],
            forecast_spend: None,
            method: None,
            decided_at: 1_796_000_000_000,
        }
    }

    #[test]
    fn v2_round_trips_with_its_header() {
        let codec = ControlCodec::current();
        let c = sample_v2();
        let bytes = codec.encode(&c).unwrap();
        assert_eq!(&bytes[..5], &[0, 0, 0, 0, CONTROL_V2_ID as u8]);
        assert_eq!(codec.decode(&bytes).unwrap(), c);
        let mut rolling = c.clone();
        rolling.period_start = None;
        rolling.period_end = None;
        rolling.tenant_id = None;
        rolling.scope.clear();
        rolling.previous_level = None;
        let bytes = codec.encode(&rolling).unwrap();
        assert_eq!(codec.decode(&bytes).unwrap(), rolling);
    }

    #[test]
    fn v1_records_on_the_topic_are_read_as_v2() {
        let v1 = BudgetControlV1 {
            scope_key: "tenant:acme".into(),
            scope_kind: "tenant".into(),
            tenant_id: "acme".into(),
            period: "2026-12".into(),
            level: BudgetLevel::Block,
            previous_level: Some(BudgetLevel::Throttle),
            spend: "150".into(),
            limit: "100".into(),
            currency: "USD".into(),
            decided_at: 1_796_083_200_000 + 1000,
            reason: "spend 150 USD is 150% of the 2026-12 limit 100".into(),
        };
        let v1_writer: Codec<BudgetControlV1> = Codec::for_id(CONTROL_V1_ID);
        let bytes = v1_writer.encode(&v1).unwrap();
        assert_eq!(bytes[4], CONTROL_V1_ID as u8);
        let read = ControlCodec::current().decode(&bytes).unwrap();
        // 2026-12-01T00:00:00Z and 2027-01-01T00:00:00Z (`date -ud 2026-12-01 +%s`).
        let (start, end) = (1_796_083_200_000, 1_798_761_600_000);
        assert_eq!(read.budget_id, "tenant:acme");
        assert_eq!(read.tenant_id.as_deref(), Some("acme"));
        assert_eq!(read.scope.get("tenant").map(String::as_str), Some("acme"));
        assert_eq!(read.kind, ControlKind::State);
        assert_eq!(
            (read.level, read.previous_level),
            (BudgetLevel::Block, Some(BudgetLevel::Throttle))
        );
        assert_eq!(
            (read.period_start, read.period_end),
            (Some(start), Some(end))
        );
        assert_eq!(read.retry_after_ms, Some(end - v1.decided_at));
        assert_eq!((read.threshold.as_str(), read.ratio.as_str()), ("1", "1.5"));
        assert_eq!(read.period_kind, "month");
        assert_eq!(
            (read.spend, read.limit),
            (v1.spend.clone(), v1.limit.clone())
        );
        assert_eq!(read.reason, v1.reason);
        assert_eq!(
            read.control_id,
            crate::control_event::control_id(
                "tenant:acme",
                ControlKind::State,
                start,
                "100",
                crate::control_event::Direction::Up,
                BudgetLevel::Block
            ),
            "the upgraded record carries the transition's deterministic id"
        );
        // A v1 re-publish of the same transition has the same id.
        let mut again = v1.clone();
        again.decided_at += 5000;
        let again = ControlCodec::current()
            .decode(&v1_writer.encode(&again).unwrap())
            .unwrap();
        assert_eq!(again.control_id, read.control_id);
    }

    #[test]
    fn v2_records_are_refused_cleanly_by_a_v1_reader_and_usage_by_both() {
        let bytes = ControlCodec::current().encode(&sample_v2()).unwrap();
        let v1_reader: Codec<BudgetControlV1> = Codec::for_id(CONTROL_V1_ID);
        assert_eq!(
            v1_reader.decode(&bytes).unwrap_err().code(),
            "wrong_subject"
        );
        let mut usage = bytes.clone();
        usage[4] = USAGE_V2_ID as u8;
        assert_eq!(
            ControlCodec::current().decode(&usage).unwrap_err().code(),
            "wrong_subject"
        );
        assert_eq!(
            ControlCodec::current()
                .decode(&bytes[..bytes.len() - 2])
                .unwrap_err()
                .code(),
            "undecodable_avro"
        );
    }
}
