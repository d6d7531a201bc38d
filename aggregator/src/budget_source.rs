//! Where budget definitions come from: the compacted budgets topic (JSON values keyed by
//! budget id, tombstones delete), seeded from a budgets file (`COSTPIPE_BUDGETS_FILE`: a JSON
//! array, or TOML with `[[budgets]]` tables) and from the legacy `COSTPIPE_BUDGET_LIMITS`
//! shorthand. Publishing definitions is here too, for the aggregator's seeding and the
//! `costpipe-budgets` CLI.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rust_decimal::Decimal;

use costpipe_schemas::{BudgetDefinition, BudgetPeriod, CalendarUnit, Rung, RungAction};

const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// A change read from the budgets topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BudgetChange {
    Upsert(Box<BudgetDefinition>),
    Delete(String),
    /// A value that is not a valid definition (kept out; logged with its reason).
    Invalid {
        key: String,
        reason: String,
    },
}

/// Reads one record of the budgets topic.
pub fn change_of(key: &[u8], value: Option<&[u8]>) -> BudgetChange {
    let key = String::from_utf8_lossy(key).into_owned();
    match value {
        None => BudgetChange::Delete(key),
        Some(bytes) => match BudgetDefinition::from_json(bytes) {
            Ok(def) if def.budget_id == key => BudgetChange::Upsert(Box::new(def)),
            Ok(def) => BudgetChange::Invalid {
                reason: format!("value names budget {:?}, key is {key:?}", def.budget_id),
                key,
            },
            Err(e) => BudgetChange::Invalid {
                key,
                reason: e.to_string(),
            },
        },
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    budgets: Vec<BudgetDefinition>,
}

/// Parses a budgets file: a JSON array of definitions, or TOML with `[[budgets]]`. Every
/// definition is validated (shape only; the aggregator checks the catalog); the error names
/// the budget and the field.
pub fn parse_budgets_file(text: &str, name: &str) -> anyhow::Result<Vec<BudgetDefinition>> {
    let defs: Vec<BudgetDefinition> =
        if text.trim_start().starts_with('[') && !text.trim_start().starts_with("[[") {
            serde_json::from_str(text)
                .with_context(|| format!("{name}: not a JSON array of budgets"))?
        } else {
            toml::from_str::<TomlFile>(text)
                .with_context(|| format!("{name}: not a TOML file of [[budgets]]"))?
                .budgets
        };
    let mut seen = BTreeMap::new();
    for (i, d) in defs.iter().enumerate() {
        d.validate()
            .with_context(|| format!("{name}: budget #{}", i + 1))?;
        if let Some(first) = seen.insert(d.budget_id.clone(), i) {
            anyhow::bail!(
                "{name}: budget_id {:?} appears twice (#{} and #{})",
                d.budget_id,
                first + 1,
                i + 1
            );
        }
    }
    Ok(defs)
}

/// Reads and parses a budgets file.
pub fn read_budgets_file(path: &Path) -> anyhow::Result<Vec<BudgetDefinition>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading budgets file {}", path.display()))?;
    parse_budgets_file(&text, &path.display().to_string())
}

/// The legacy per-tenant monthly limits (`acme=500,globex=120.50`) as budgets
/// `tenant:<t>:month` with the v1 ladder (notify 80 %, throttle 95 %, block 100 %).
pub fn legacy_budgets(limits: &BTreeMap<String, Decimal>, currency: &str) -> Vec<BudgetDefinition> {
    limits
        .iter()
        .map(|(tenant, limit)| BudgetDefinition {
            budget_id: format!("tenant:{tenant}:month"),
            version: costpipe_schemas::budget_definition::BUDGET_DEFINITION_VERSION,
            scope: BTreeMap::from([("tenant".to_string(), tenant.clone())]),
            period: BudgetPeriod::Calendar {
                calendar: CalendarUnit::Month,
                time_zone: None,
            },
            limit: *limit,
            currency: currency.to_string(),
            ladder: vec![
                Rung {
                    at: Decimal::new(8, 1),
                    action: RungAction::Notify,
                },
                Rung {
                    at: Decimal::new(95, 2),
                    action: RungAction::Throttle {
                        requests_per_minute:
                            costpipe_schemas::budget_definition::DEFAULT_THROTTLE_RPM,
                    },
                },
                Rung {
                    at: Decimal::ONE,
                    action: RungAction::Block,
                },
            ],
            hysteresis: Decimal::new(2, 2),
            whitelist_features: Vec::new(),
            shadow: false,
            overrides: Vec::new(),
            time_zone: "UTC".to_string(),
            spike: None,
        })
        .collect()
}

/// Publishes definitions (JSON, keyed by id), all in flight at once, and waits for the
/// broker's acknowledgements.
pub async fn publish_definitions(
    producer: &FutureProducer,
    topic: &str,
    defs: &[BudgetDefinition],
) -> anyhow::Result<()> {
    let values: Vec<(&str, Vec<u8>)> = defs
        .iter()
        .map(|d| Ok((d.budget_id.as_str(), serde_json::to_vec(d)?)))
        .collect::<anyhow::Result<_>>()?;
    let sends = values.iter().map(|(id, value)| {
        let send = producer.send(
            FutureRecord::to(topic).key(*id).payload(value),
            Timeout::After(SEND_TIMEOUT),
        );
        async move {
            send.await
                .map_err(|(e, _)| anyhow::anyhow!("budget {id} not published: {e}"))
        }
    });
    futures::future::try_join_all(sends).await?;
    Ok(())
}

/// Publishes a tombstone for `budget_id`.
pub async fn publish_delete(
    producer: &FutureProducer,
    topic: &str,
    budget_id: &str,
) -> anyhow::Result<()> {
    producer
        .send(
            FutureRecord::<str, [u8]>::to(topic).key(budget_id),
            Timeout::After(SEND_TIMEOUT),
        )
        .await
        .map_err(|(e, _)| anyhow::anyhow!("budget {budget_id} not deleted: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_toml_files_parse_and_errors_name_budget_and_field() {
        let json =
            r#"[{"budget_id": "a", "period": {"rolling": "1h"}, "limit": "5", "currency": "USD"}]"#;
        assert_eq!(
            parse_budgets_file(json, "f.json").unwrap()[0].budget_id,
            "a"
        );
        let toml = r#"
[[budgets]]
budget_id = "acme:month"
scope = { tenant = "acme" }
period = { calendar = "month", time_zone = "Europe/Paris" }
limit = "150"
currency = "USD"
ladder = [
  { at = "0.5", action = "notify" },
  { at = "0.8", action = { downgrade = { to = "gpt-4o-mini" } } },
  { at = "1", action = "block" },
]
"#;
        let defs = parse_budgets_file(toml, "f.toml").unwrap();
        assert_eq!(defs[0].limit, Decimal::new(150, 0));
        assert_eq!(
            defs[0].ladder[1].action,
            RungAction::Downgrade {
                to: "gpt-4o-mini".into()
            }
        );
        let bad = r#"[{"budget_id": "a", "period": {"rolling": "1h"}, "limit": "5", "currency": "USD", "hysteresis": "2"}]"#;
        let err = format!("{:#}", parse_budgets_file(bad, "f.json").unwrap_err());
        assert!(err.contains("budget \"a\": hysteresis"), "{err}");
        let twice = r#"[{"budget_id": "a", "period": {"rolling": "1h"}, "limit": "5", "currency": "USD"},
                        {"budget_id": "a", "period": {"rolling": "1h"}, "limit": "6", "currency": "USD"}]"#;
        assert!(format!("{:#}", parse_budgets_file(twice, "f").unwrap_err()).contains("twice"));
    }

    #[test]
    fn topic_records_become_changes() {
        let v =
            br#"{"budget_id": "a", "period": {"rolling": "1h"}, "limit": "5", "currency": "USD"}"#;
        assert!(matches!(change_of(b"a", Some(v)), BudgetChange::Upsert(_)));
        assert_eq!(change_of(b"a", None), BudgetChange::Delete("a".into()));
        assert!(matches!(
            change_of(b"b", Some(v)),
            BudgetChange::Invalid { .. }
        ));
        assert!(matches!(
            change_of(b"a", Some(b"{")),
            BudgetChange::Invalid { .. }
        ));
    }

    #[test]
    fn legacy_limits_become_monthly_tenant_budgets() {
        let defs = legacy_budgets(
            &BTreeMap::from([("acme".to_string(), Decimal::new(150, 0))]),
            "USD",
        );
        assert_eq!(defs[0].budget_id, "tenant:acme:month");
        defs[0].validate().unwrap();
    }
}
