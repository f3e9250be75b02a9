//! Item mapping: events, idempotency markers and observed properties as
//! DynamoDB items. Attribute names are the table's (see [`crate::table`]).

use std::cell::RefCell;
use std::collections::HashMap;

use audit_core::error::StoreError;
use audit_core::event::{Event, PageEvent};
use audit_core::metadata::ObservedProperty;
use audit_core::store::{IdempotencyKey, IdempotentPut};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, WriteRequest};
use chrono::DateTime;
use libdeflater::{CompressionLvl, Compressor, DecompressionError, Decompressor};
use serde_json::value::RawValue;

use crate::table::{IDEMPOTENCY_PREFIX, PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE};

pub type Item = HashMap<String, AttributeValue>;

/// The attributes of an idempotency marker beside its keys.
const MARKER_TARGET: &str = "target";
pub(crate) const MARKER_TIMESTAMP: &str = "timestamp";
pub(crate) const MARKER_EXPIRES_AT: &str = "expiresAt";
/// On every marker written since keys were scoped to their producer: a
/// marker in a tenant's partition without it was written before, by the
/// tenant or by a platform producer (nothing said which).
pub(crate) const MARKER_SCOPED: &str = "scoped";

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

/// The stored item of an event: its fields and the TTL number (no index
/// keys: pivot postings are written by the sealer).
pub fn event_to_item(event: &Event) -> Result<Item, StoreError> {
    let mut item: Item =
        serde_dynamo::to_item(event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    if let Some(data) = &event.data {
        item.insert(
            DATA.into(),
            AttributeValue::B(Blob::new(deflate_data(data).map_err(StoreError::Corrupt)?)),
        );
    }
    insert_ttl(&mut item, &event.expires_at);
    Ok(item)
}

pub fn item_to_event(item: Item) -> Result<Event, StoreError> {
    let (mut event, packed) = split_data(item)?;
    if let Some(bytes) = packed {
        event.data = Some(inflate_data(&bytes).map_err(StoreError::Corrupt)?);
    }
    Ok(event)
}

/// The event of `item` for a page that only prints it: `data` inflated but
/// left as its JSON text.
pub fn item_to_page_event(item: Item) -> Result<PageEvent, StoreError> {
    let (event, packed) = split_data(item)?;
    let data_text = packed
        .map(|bytes| inflate_data_text(&bytes).map_err(StoreError::Corrupt))
        .transpose()?;
    Ok(PageEvent { event, data_text })
}

/// The event's fields and its deflated `data`, if it has any.
fn split_data(mut item: Item) -> Result<(Event, Option<Vec<u8>>), StoreError> {
    let packed = match item.remove(DATA) {
        Some(AttributeValue::B(bytes)) => Some(bytes.into_inner()),
        // Items written before `data` was deflated hold it as a map (any
        // `data` not binary goes this way), which serde_dynamo reads as it
        // always has, its numbers included.
        Some(other) => {
            item.insert(DATA.into(), other);
            let event: Event =
                serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            return Ok((event, None));
        }
        None => None,
    };
    let event: Event =
        crate::item_reader::from_item(item).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok((event, packed))
}

/// The attribute holding an event's `data`: its JSON, deflated. A ~1 KB
/// event's item then stays under 1 KB (one write unit, not two), and its
/// numbers come back exactly as sent. Conditions on `data.*` are evaluated
/// in the process, never by DynamoDB, so nothing reads it as a map.
pub const DATA: &str = "data";

/// Inflated `data` larger than this is refused: a stored item is at most
/// 400 KB, and deflate gains at most ~1000×, but an altered item must not
/// make a reader allocate without bound.
const DATA_INFLATED_MAX: usize = 4 * 1024 * 1024;

thread_local! {
    // libdeflate's states are reused: a compressor at level 6 holds about
    // half a MB of match-finder tables that a fresh one would allocate per event.
    static DEFLATER: RefCell<Option<Compressor>> = const { RefCell::new(None) };
    static INFLATER: RefCell<Option<Decompressor>> = const { RefCell::new(None) };
}

/// `data`'s compact JSON, deflated (raw DEFLATE, RFC 1951, level 6).
pub fn deflate_data(data: &serde_json::Value) -> Result<Vec<u8>, String> {
    let text = data.to_string();
    DEFLATER.with_borrow_mut(|deflater| {
        let deflater = deflater.get_or_insert_with(|| Compressor::new(CompressionLvl::default()));
        let mut out = vec![0; deflater.deflate_compress_bound(text.len())];
        let written = deflater
            .deflate_compress(text.as_bytes(), &mut out)
            .map_err(|e| format!("event data does not deflate: {e}"))?;
        out.truncate(written);
        Ok(out)
    })
}

pub fn inflate_data(bytes: &[u8]) -> Result<serde_json::Value, String> {
    serde_json::from_slice(&inflate(bytes)?).map_err(|e| format!("event data is not JSON: {e}"))
}

/// `data` inflated and checked to be JSON, but not parsed into a value.
pub fn inflate_data_text(bytes: &[u8]) -> Result<Box<RawValue>, String> {
    let text =
        String::from_utf8(inflate(bytes)?).map_err(|e| format!("event data is not UTF-8: {e}"))?;
    RawValue::from_string(text).map_err(|e| format!("event data is not JSON: {e}"))
}

/// libdeflate inflates into a buffer of known size: start at eight times
/// the stored bytes (JSON deflates about 2:1, rarely past 8:1) and grow
/// fourfold until the limit.
fn inflate(bytes: &[u8]) -> Result<Vec<u8>, String> {
    INFLATER.with_borrow_mut(|inflater| {
        let inflater = inflater.get_or_insert_with(Decompressor::new);
        let mut capacity = bytes.len().saturating_mul(8).clamp(1024, DATA_INFLATED_MAX);
        loop {
            let mut out = vec![0; capacity];
            match inflater.deflate_decompress(bytes, &mut out) {
                Ok(written) => {
                    out.truncate(written);
                    return Ok(out);
                }
                Err(DecompressionError::InsufficientSpace) if capacity < DATA_INFLATED_MAX => {
                    capacity = capacity.saturating_mul(4).min(DATA_INFLATED_MAX);
                }
                Err(DecompressionError::InsufficientSpace) => {
                    return Err(format!(
                        "event data inflates past {DATA_INFLATED_MAX} bytes"
                    ))
                }
                Err(e) => return Err(format!("event data does not inflate: {e}")),
            }
        }
    })
}

/// The idempotency marker of an event written under `key`.
pub fn marker_item(event: &Event, key: &IdempotencyKey) -> Item {
    let mut item = Item::new();
    item.insert(
        PARTITION_KEY.into(),
        AttributeValue::S(format!(
            "{IDEMPOTENCY_PREFIX}{}",
            key.scope(&event.account_id)
        )),
    );
    item.insert(SORT_KEY.into(), AttributeValue::S(key.key.clone()));
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
    item.insert(MARKER_SCOPED.into(), AttributeValue::Bool(true));
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

/// `[serviceName, eventType, property, type]`, each part as JSON:
/// unambiguous, and sorted so a service's or a kind's properties share a
/// key prefix ([`property_key_part`] keeps it within DynamoDB's 1024 bytes).
pub(crate) fn property_key(property: &ObservedProperty) -> String {
    format!(
        "[{},{},{},{}]",
        property_key_part(&property.service_name),
        property_key_part(&property.event_type),
        property_key_part(&property.name),
        property_key_part(&property.json_type)
    )
}

/// The longest part of a property key written as its JSON text: four such
/// parts and the brackets stay under DynamoDB's 1024-byte sort key.
const PROPERTY_KEY_PART_MAX_BYTES: usize = 250;

/// A part of a property key: its JSON text, or, when that is longer than
/// [`PROPERTY_KEY_PART_MAX_BYTES`] (a name of 256 characters can take 1 KB
/// of UTF-8), `#` and the SHA-256 of the text. A JSON string starts with
/// `"`, so the two forms never meet; the item holds the names whole, and
/// listings read them from there. (Such a name's property was left out
/// before: its key was too long to write.)
pub(crate) fn property_key_part(text: &str) -> String {
    use sha2::Digest;
    let json = json_text(text);
    if json.len() <= PROPERTY_KEY_PART_MAX_BYTES {
        return json;
    }
    let digest = sha2::Sha256::digest(text.as_bytes());
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("#{hex}")
}

pub(crate) fn cursor_of(request: &WriteRequest) -> Option<String> {
    match request.put_request()?.item().get(SORT_KEY)? {
        AttributeValue::S(cursor) => Some(cursor.clone()),
        _ => None,
    }
}

/// DynamoDB's item size: attribute names plus values (strings by UTF-8
/// length, numbers about 1 byte per 2 digits, 3 bytes per map or list).
pub fn item_size(item: &Item) -> usize {
    fn value_size(value: &AttributeValue) -> usize {
        match value {
            AttributeValue::S(s) => s.len(),
            AttributeValue::N(n) => n.len().div_ceil(2) + 1,
            AttributeValue::B(bytes) => bytes.as_ref().len(),
            AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
            AttributeValue::M(map) => {
                3 + map
                    .iter()
                    .map(|(k, v)| k.len() + value_size(v) + 1)
                    .sum::<usize>()
            }
            AttributeValue::L(list) => 3 + list.iter().map(|v| value_size(v) + 1).sum::<usize>(),
            _ => 0,
        }
    }
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

#[cfg(test)]
mod tests;
