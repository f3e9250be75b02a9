//! From the table's stream to subscribers: the EventBridge entries events
//! become. (Which stream records are events is the adapter's business:
//! `audit_dynamo::stream`.)

use async_trait::async_trait;
use serde_json::Value;

use crate::event::Event;

pub const DETAIL_TYPE: &str = "AuditEvent";
/// EventBridge's limit for one entry and for one PutEvents call.
pub const MAX_ENTRY_BYTES: usize = 256 * 1024;
pub const MAX_ENTRIES_PER_CALL: usize = 10;

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
