//! The compiled-in schema registry: every schema costpipe writes, with its Confluent id and
//! subject (`<topic>-value` naming), parsed once at start-up.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use apache_avro::Schema;

/// Schema id of usage event v1.
pub const USAGE_V1_ID: u32 = 1;
/// Schema id of budget control event v1.
pub const CONTROL_V1_ID: u32 = 2;
/// Schema id of usage event v2 (adds `cache_write_1h_tokens`).
pub const USAGE_V2_ID: u32 = 3;
/// Schema id of budget control event v2 (budgets of any scope and period, actions, ids).
pub const CONTROL_V2_ID: u32 = 4;

/// Subject of usage events: Confluent's `<topic>-value` naming for the default usage topic.
pub const USAGE_SUBJECT: &str = "costpipe.usage.v1-value";
/// Subject of budget control events, for the default control topic.
pub const CONTROL_SUBJECT: &str = "costpipe.control.v1-value";

/// The Confluent subject of values on `topic` (TopicNameStrategy). Deployments that rename
/// topics register the same schemas under their topics' subjects; ids do not change.
pub fn subject_for_topic(topic: &str) -> String {
    format!("{topic}-value")
}

const USAGE_V1: &str = include_str!("../avro/usage_event_v1.avsc");
const CONTROL_V1: &str = include_str!("../avro/budget_control_v1.avsc");
const USAGE_V2: &str = include_str!("../avro/usage_event_v2.avsc");
const CONTROL_V2: &str = include_str!("../avro/budget_control_v2.avsc");

/// A parsed schema with its registry coordinates.
#[derive(Debug)]
pub struct RegisteredSchema {
    pub id: u32,
    pub subject: String,
    pub version: u32,
    pub schema: Schema,
}

/// Schemas by id.
#[derive(Debug, Clone)]
pub struct SchemaRegistry {
    by_id: HashMap<u32, Arc<RegisteredSchema>>,
}

impl SchemaRegistry {
    /// The schemas compiled into this build. Parsing them cannot fail unless the shipped
    /// `.avsc` files are broken, which the unit tests catch.
    pub fn builtin() -> &'static SchemaRegistry {
        static REGISTRY: OnceLock<SchemaRegistry> = OnceLock::new();
        REGISTRY.get_or_init(|| {
            let mut by_id = HashMap::new();
            for (id, subject, version, text) in [
                (USAGE_V1_ID, USAGE_SUBJECT, 1, USAGE_V1),
                (CONTROL_V1_ID, CONTROL_SUBJECT, 1, CONTROL_V1),
                (USAGE_V2_ID, USAGE_SUBJECT, 2, USAGE_V2),
                (CONTROL_V2_ID, CONTROL_SUBJECT, 2, CONTROL_V2),
            ] {
                let schema = Schema::parse_str(text).expect("shipped .avsc files parse");
                by_id.insert(
                    id,
                    Arc::new(RegisteredSchema {
                        id,
                        subject: subject.to_string(),
                        version,
                        schema,
                    }),
                );
            }
            SchemaRegistry { by_id }
        })
    }

    /// Adds a schema learnt from an external (Confluent-compatible) registry.
    pub fn insert(&mut self, schema: RegisteredSchema) {
        self.by_id.insert(schema.id, Arc::new(schema));
    }

    /// The schema registered under `id`, if any.
    pub fn get(&self, id: u32) -> Option<&Arc<RegisteredSchema>> {
        self.by_id.get(&id)
    }

    /// The raw `.avsc` text of a shipped schema, for publishing to an external registry.
    pub fn source(id: u32) -> Option<&'static str> {
        match id {
            USAGE_V1_ID => Some(USAGE_V1),
            CONTROL_V1_ID => Some(CONTROL_V1),
            USAGE_V2_ID => Some(USAGE_V2),
            CONTROL_V2_ID => Some(CONTROL_V2),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_schemas_parse() {
        let reg = SchemaRegistry::builtin();
        assert_eq!(reg.get(USAGE_V1_ID).unwrap().subject, USAGE_SUBJECT);
        assert_eq!(reg.get(CONTROL_V1_ID).unwrap().subject, CONTROL_SUBJECT);
        assert_eq!(reg.get(CONTROL_V2_ID).unwrap().subject, CONTROL_SUBJECT);
        assert!(reg.get(99).is_none());
        assert_eq!(subject_for_topic("costpipe.usage.v1"), USAGE_SUBJECT);
    }
}
