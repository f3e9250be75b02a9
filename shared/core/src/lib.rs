//! The Audit Trail API domain: the event model and its field table, the
//! route table, cursors, the ingest, read and query services, self-audit,
//! and the store port. Nothing here knows Lambda, HTTP status codes or the
//! AWS SDK: `audit-http` is the edge, `audit-dynamo` the store.

pub mod auth;
pub mod config;
pub mod cursor;
pub mod error;
pub mod event;
pub mod ingest;
pub mod integrity;
pub mod json;
pub mod metadata;
pub mod pivot;
pub mod publish;
pub mod query;
pub mod read;
pub mod routes;
pub mod selfaudit;
pub mod settings;
pub mod store;

pub use config::Config;
pub use error::ApiError;
pub use event::Event;
pub use store::EventStore;

/// Generators shared by the property tests.
#[cfg(test)]
pub(crate) mod testing {
    use proptest::prelude::*;
    use serde_json::Value;

    /// Any JSON value whose numbers are 64-bit integers or finite doubles.
    pub fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            // Fractions (whole doubles beyond 64 bits are refused by design).
            (-1e15f64..1e15).prop_map(|f| Value::from(if f.fract() == 0.0 { f + 0.5 } else { f })),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(".{0,8}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
