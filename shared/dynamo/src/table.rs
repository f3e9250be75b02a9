//! The one table, defined once. `template.yaml` declares the same table; a
//! test compares the two, and the local runner and the tests create the table
//! from [`definition`].
//!
//! Item types (see docs/KEY-DESIGN.md):
//! - event: `accountId` = tenant, `cursor` = ULID.
//! - idempotency marker: `accountId` = `idem#<tenant>` (or
//!   `idem#<tenant>/<producer>`: `IdempotencyKey::scope`), `cursor` = the key.
//! - settings: `accountId` = `settings#<tenant>`, `cursor` = `settings`.
//! - observed property: `accountId` = `meta#<tenant>`, `cursor` =
//!   `[serviceName, eventType, property, type]`, each part its JSON string
//!   or, past 250 bytes, `#` and its SHA-256 (`items::property_key_part`).
//! - integrity log: tiles (`log#<tenant>`, the C2SP tile path), the entry
//!   tile index (`logidx#<tenant>`, a full entry tile's last cursor), tree
//!   heads (`tree#<tenant>`, the size), checkpoints (`ckpt#<tenant>`,
//!   `<size>#<timestamp>`) and the sealing queue (`seal#queue`, the tenant).
//! - pivot posting: `accountId` = `<tenant>#<tag>#<value>`, `cursor` = the
//!   last cursor it lists; the posted-through mark: `posted#<tenant>`.
//!
//! Tenant ids never contain `#`, so no other item type shares a partition
//! with a tenant's events.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;

pub const PARTITION_KEY: &str = "accountId";
pub const SORT_KEY: &str = "cursor";
pub const TTL_ATTRIBUTE: &str = "ttl";
pub const IDEMPOTENCY_PREFIX: &str = "idem#";
pub const SETTINGS_PREFIX: &str = "settings#";
pub const SETTINGS_SORT_KEY: &str = "settings";
pub const METADATA_PREFIX: &str = "meta#";
/// The integrity log (docs/INTEGRITY.md): tiles by C2SP path.
pub const LOG_TILE_PREFIX: &str = "log#";
/// Full entry tiles by their last cursor.
pub const LOG_INDEX_PREFIX: &str = "logidx#";
/// Tree heads by size: one root per size, ever.
pub const TREE_HEAD_PREFIX: &str = "tree#";
/// Checkpoints by `<size>#<timestamp>`.
pub const CHECKPOINT_PREFIX: &str = "ckpt#";
/// A tenant's posted-through mark: the last cursor whose pivot postings are
/// written (postings themselves are keyed `<tenant>#<tag>#<value>`).
pub const POSTED_PREFIX: &str = "posted#";
pub const POSTED_SORT_KEY: &str = "through";
/// The sealing queue: one item per tenant with events.
pub const SEAL_QUEUE_KEY: &str = "seal#queue";
/// Every partition-key pattern the seal function may write (its IAM policy
/// says the same; a test compares them).
/// Postings match `*#<tag>#*`: two `#`, which no other item type's key has.
pub const SEAL_WRITABLE_KEYS: &[&str] = &[
    "log#*",
    "logidx#*",
    "tree#*",
    "ckpt#*",
    "seal#queue",
    "posted#*",
    "*#u#*",
    "*#e#*",
    "*#s#*",
    "*#t#*",
];

/// (attribute name, HASH|RANGE) pairs.
pub type KeySchema = Vec<(String, String)>;
/// (index name, key schema, projection type)
pub type IndexDefinition = (String, KeySchema, String);

/// The table could not be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the table: {0}")]
pub struct TableSetupError(String);

fn setup_error<E: Into<aws_sdk_dynamodb::Error>>(err: E) -> TableSetupError {
    TableSetupError(err.into().to_string())
}

/// The table as plain data, comparable with the template.
#[derive(Debug, Clone, PartialEq)]
pub struct TableDefinition {
    pub table_name: String,
    /// (name, HASH|RANGE)
    pub key_schema: Vec<(String, String)>,
    /// (name, S|N|B)
    pub attributes: Vec<(String, String)>,
    /// (index name, key schema, projection type)
    pub indexes: Vec<IndexDefinition>,
    pub billing_mode: String,
    /// `None`: no stream (test tables whose test starts no relay).
    pub stream_view_type: Option<String>,
    pub ttl_attribute: String,
}

pub fn definition(table_name: &str) -> TableDefinition {
    // No secondary index: the sealer writes pivot postings off the write
    // path instead (docs/KEY-DESIGN.md, "Pivot postings").
    let attributes = vec![
        (PARTITION_KEY.to_string(), "S".to_string()),
        (SORT_KEY.to_string(), "S".to_string()),
    ];
    TableDefinition {
        table_name: table_name.to_string(),
        key_schema: vec![
            (PARTITION_KEY.to_string(), "HASH".to_string()),
            (SORT_KEY.to_string(), "RANGE".to_string()),
        ],
        attributes,
        indexes: Vec::new(),
        billing_mode: "PAY_PER_REQUEST".to_string(),
        stream_view_type: Some("NEW_IMAGE".to_string()),
        ttl_attribute: TTL_ATTRIBUTE.to_string(),
    }
}

fn key_element(name: &str, kind: &str) -> Result<KeySchemaElement, TableSetupError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(KeyType::from(kind))
        .build()
        .map_err(setup_error)
}

/// Creates the table (and turns on TTL) unless it exists.
pub async fn ensure_table(
    client: &Client,
    table: &TableDefinition,
) -> Result<bool, TableSetupError> {
    if client
        .describe_table()
        .table_name(&table.table_name)
        .send()
        .await
        .is_ok()
    {
        return Ok(false);
    }
    let mut request = client
        .create_table()
        .table_name(&table.table_name)
        .billing_mode(BillingMode::from(table.billing_mode.as_str()));
    if let Some(view) = &table.stream_view_type {
        request = request.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::from(view.as_str()))
                .build()
                .map_err(setup_error)?,
        );
    }
    for (name, kind) in &table.key_schema {
        request = request.key_schema(key_element(name, kind)?);
    }
    for (name, kind) in &table.attributes {
        request = request.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::from(kind.as_str()))
                .build()
                .map_err(setup_error)?,
        );
    }
    for (name, keys, projection) in &table.indexes {
        let mut index = GlobalSecondaryIndex::builder().index_name(name).projection(
            Projection::builder()
                .projection_type(ProjectionType::from(projection.as_str()))
                .build(),
        );
        for (key, kind) in keys {
            index = index.key_schema(key_element(key, kind)?);
        }
        request = request.global_secondary_indexes(index.build().map_err(setup_error)?);
    }
    request.send().await.map_err(setup_error)?;
    client
        .update_time_to_live()
        .table_name(&table.table_name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(&table.ttl_attribute)
                .build()
                .map_err(setup_error)?,
        )
        .send()
        .await
        .map_err(setup_error)?;
    Ok(true)
}
