//! Item mapping: events, idempotency markers and observed properties as
//! DynamoDB items. Attribute names are the table's (see [`crate::table`]).

use std::collections::HashMap;

use audit_core::error::StoreError;
use audit_core::event::Event;
use audit_core::metadata::ObservedProperty;
use audit_core::pivot::{pivot_key, PIVOT_INDEXES};
use audit_core::store::IdempotentPut;
use aws_sdk_dynamodb::types::{AttributeValue, WriteRequest};
use chrono::DateTime;

use crate::table::{IDEMPOTENCY_PREFIX, PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE};

pub type Item = HashMap<String, AttributeValue>;

/// The attributes of an idempotency marker beside its keys.
const MARKER_TARGET: &str = "target";
const MARKER_TIMESTAMP: &str = "timestamp";
const MARKER_EXPIRES_AT: &str = "expiresAt";

/// The TTL attribute for an `expiresAt` (epoch seconds), computed once for
/// every item type.
fn insert_ttl(item: &mut Item, expires_at: &str) {
    if let Ok(expires_at) = DateTime::parse_from_rfc3339(expires_at) {
        item.insert(
            TTL_ATTRIBUTE.into(),
            AttributeValue::N(expires_at.timestamp().to_string()),
        );
    }
}

/// The stored item of an event: its fields, the TTL number and the keys of
/// the pivot indexes.
pub fn event_to_item(event: &Event) -> Result<Item, StoreError> {
    let mut item: Item =
        serde_dynamo::to_item(event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    insert_ttl(&mut item, &event.expires_at);
    for index in PIVOT_INDEXES {
        if let Some(AttributeValue::S(value)) = item.get(index.field) {
            let key = pivot_key(&event.account_id, value);
            item.insert(index.key_attribute.into(), AttributeValue::S(key));
        }
    }
    Ok(item)
}

pub fn item_to_event(item: Item) -> Result<Event, StoreError> {
    serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The idempotency marker of an event written under `key`.
pub fn marker_item(event: &Event, key: &str) -> Item {
    let mut item = Item::new();
    item.insert(
        PARTITION_KEY.into(),
        AttributeValue::S(format!("{IDEMPOTENCY_PREFIX}{}", event.account_id)),
    );
    item.insert(SORT_KEY.into(), AttributeValue::S(key.to_string()));
    item.insert(
        MARKER_TARGET.into(),
        AttributeValue::S(event.cursor.clone()),
    );
    item.insert(
        MARKER_TIMESTAMP.into(),
        AttributeValue::S(event.timestamp.clone()),
    );
    item.insert(
        MARKER_EXPIRES_AT.into(),
        AttributeValue::S(event.expires_at.clone()),
    );
    insert_ttl(&mut item, &event.expires_at);
    item
}

pub(crate) fn duplicate_from_marker(item: &Item) -> Option<IdempotentPut> {
    let text = |name: &str| match item.get(name) {
        Some(AttributeValue::S(s)) => Some(s.clone()),
        _ => None,
    };
    Some(IdempotentPut::Duplicate {
        cursor: text(MARKER_TARGET)?,
        timestamp: text(MARKER_TIMESTAMP)?,
        expires_at: text(MARKER_EXPIRES_AT)?,
    })
}

pub(crate) fn json_text(value: &str) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// `[serviceName, eventType, property, type]` as JSON: unambiguous, and
/// sorted so a service's or a kind's properties share a key prefix.
pub(crate) fn property_key(property: &ObservedProperty) -> String {
    format!(
        "[{},{},{},{}]",
        json_text(&property.service_name),
        json_text(&property.event_type),
        json_text(&property.name),
        json_text(&property.json_type)
    )
}

pub(crate) fn cursor_of(request: &WriteRequest) -> Option<String> {
    match request.put_request()?.item().get(SORT_KEY)? {
        AttributeValue::S(cursor) => Some(cursor.clone()),
        _ => None,
    }
}
