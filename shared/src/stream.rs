//! From the table's stream to subscribers: which records are user events,
//! and the EventBridge entries they become.

use async_trait::async_trait;
use serde_json::Value;

use crate::event::Event;
use crate::table::{PARTITION_KEY, PIVOT_INDEXES};

pub const DETAIL_TYPE: &str = "AuditEvent";
/// EventBridge's limit for one entry and for one PutEvents call.
pub const MAX_ENTRY_BYTES: usize = 256 * 1024;
pub const MAX_ENTRIES_PER_CALL: usize = 10;
/// The principal of a TTL deletion in a stream record.
pub const TTL_PRINCIPAL: &str = "dynamodb.amazonaws.com";

/// One entry for the bus (or a local subscriber).
#[derive(Debug, Clone, PartialEq)]
pub struct BusEntry {
    pub source: String,
    pub detail_type: String,
    /// The event as the API returns it, JSON.
    pub detail: String,
    /// The stream record it came from (its sequence number).
    pub record_id: String,
}

impl BusEntry {
    /// Bytes EventBridge counts for the entry.
    pub fn size(&self) -> usize {
        self.source.len() + self.detail_type.len() + self.detail.len()
    }
}

/// Delivers entries; one result per entry (`true` = accepted).
#[async_trait]
pub trait Publisher: Send + Sync {
    async fn publish(&self, entries: &[BusEntry]) -> Result<Vec<bool>, String>;
}

/// The event in a stream record's new image, if the item is an event.
/// Other item types (idempotency markers, settings, metadata) have a `#`
/// in their partition key and none of the pivot-index attributes.
pub fn event_from_image(image: serde_dynamo::Item) -> Option<Result<Event, String>> {
    let is_event = matches!(image.get(PARTITION_KEY), Some(serde_dynamo::AttributeValue::S(tenant)) if !tenant.contains('#'))
        && image.contains_key(PIVOT_INDEXES[2].key_attribute);
    if !is_event {
        return None;
    }
    Some(serde_dynamo::from_item(image).map_err(|e| e.to_string()))
}

/// The bus entry for an event, shortened (`data` dropped,
/// `mayHaveMoreData: true`) when it would exceed EventBridge's entry limit;
/// a subscriber fetches the whole event by its `cursor`.
pub fn entry_for(event: &Event, source: &str, record_id: &str, max_bytes: usize) -> BusEntry {
    let mut entry = BusEntry {
        source: source.to_string(),
        detail_type: DETAIL_TYPE.to_string(),
        detail: serde_json::to_string(event).unwrap_or_default(),
        record_id: record_id.to_string(),
    };
    if entry.size() > max_bytes {
        let mut short = event.clone();
        short.data = None;
        short.may_have_more_data = Some(true);
        entry.detail = serde_json::to_string(&short).unwrap_or_default();
        if entry.size() > max_bytes {
            // Even without data it is too big (huge message or indexedData): keep the ids.
            entry.detail = serde_json::json!({
                "cursor": event.cursor, "accountId": event.account_id, "timestamp": event.timestamp,
                "serviceName": event.service_name, "eventType": event.event_type, "mayHaveMoreData": true,
            })
            .to_string();
        }
    }
    entry
}

/// Groups entries into PutEvents calls: at most 10 entries and 256 KB each.
pub fn calls(entries: Vec<BusEntry>, max_bytes: usize) -> Vec<Vec<BusEntry>> {
    let mut calls: Vec<Vec<BusEntry>> = Vec::new();
    let mut size = 0;
    for entry in entries {
        let fits = calls
            .last()
            .is_some_and(|c| c.len() < MAX_ENTRIES_PER_CALL && size + entry.size() <= max_bytes);
        if !fits {
            calls.push(Vec::new());
            size = 0;
        }
        size += entry.size();
        if let Some(call) = calls.last_mut() {
            call.push(entry);
        }
    }
    calls
}

/// The detail as JSON (for local subscribers that print or POST it).
pub fn detail_json(entry: &BusEntry) -> Value {
    serde_json::from_str(&entry.detail).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data_bytes: usize) -> Event {
        serde_json::from_value(serde_json::json!({
            "cursor": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "accountId": "acme", "timestamp": "t", "expiresAt": "e",
            "serviceName": "s", "eventType": "t", "data": {"blob": "x".repeat(data_bytes)}
        }))
        .unwrap()
    }

    #[test]
    fn oversize_events_are_shortened_with_their_cursor() {
        let small = entry_for(&event(10), "src", "1", 1000);
        assert!(!small.detail.contains("mayHaveMoreData"));
        let big = entry_for(&event(5000), "src", "1", 1000);
        let detail = detail_json(&big);
        assert_eq!(detail["mayHaveMoreData"], true);
        assert_eq!(detail["cursor"], "01ARZ3NDEKTSV4RRFFQ69G5FAV");
        assert!(detail.get("data").is_none());
        assert!(big.size() <= 1000);
    }

    #[test]
    fn calls_hold_at_most_ten_entries_and_the_byte_limit() {
        let entries: Vec<BusEntry> = (0..25)
            .map(|i| entry_for(&event(100), "s", &i.to_string(), MAX_ENTRY_BYTES))
            .collect();
        let grouped = calls(entries.clone(), MAX_ENTRY_BYTES);
        assert_eq!(
            grouped.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![10, 10, 5]
        );
        let tight = calls(
            entries,
            entry_for(&event(100), "s", "0", MAX_ENTRY_BYTES).size() * 3,
        );
        assert!(tight.iter().all(|c| c.len() <= 3));
    }
}
