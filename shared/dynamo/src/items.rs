//! Item mapping: events, idempotency markers and observed properties as
//! DynamoDB items. Attribute names are the table's (see [`crate::table`]).

use std::cell::RefCell;
use std::collections::HashMap;

use audit_core::error::StoreError;
use audit_core::event::{Event, PageEvent};
use audit_core::metadata::ObservedProperty;
use audit_core::store::IdempotentPut;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, WriteRequest};
use chrono::DateTime;
use libdeflater::{CompressionLvl, Compressor, DecompressionError, Decompressor};
use serde_json::value::RawValue;

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
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn event_with(data: Option<serde_json::Value>) -> Event {
        let mut value = json!({
            "cursor": "01J0000000000000000000000A", "accountId": "acme",
            "timestamp": "2026-11-27T10:00:00.000Z", "expiresAt": "2027-02-25T10:00:00.000Z",
            "serviceName": "s", "eventType": "t",
        });
        if let Some(data) = data {
            value["data"] = data;
        }
        serde_json::from_value(value).expect("event")
    }

    #[test]
    fn data_is_stored_deflated_and_read_back_exactly() {
        let data = json!({"float": 1.0, "big": 12345678901234567u64, "neg": -0.5,
            "text": "é ✓ \u{0}", "list": [1, "two", null, {"deep": [true]}], "empty": {}});
        let event = event_with(Some(data.clone()));
        let item = event_to_item(&event).expect("item");
        assert!(matches!(item.get(DATA), Some(AttributeValue::B(_))));
        let back = item_to_event(item).expect("event");
        assert_eq!(back.data, Some(data));
        assert_eq!(
            serde_json::to_value(&back).ok(),
            serde_json::to_value(&event).ok()
        );
    }

    #[test]
    fn an_event_without_data_has_no_data_attribute() {
        let item = event_to_item(&event_with(None)).expect("item");
        assert!(!item.contains_key(DATA));
        assert_eq!(item_to_event(item).expect("event").data, None);
    }

    #[test]
    fn an_item_written_with_data_as_a_map_still_reads() {
        let event = event_with(Some(json!({"a": {"b": "c"}})));
        let mut item = event_to_item(&event).expect("item");
        let map: AttributeValue =
            serde_dynamo::to_attribute_value(json!({"a": {"b": "c"}})).expect("map");
        item.insert(DATA.into(), map);
        assert_eq!(
            item_to_event(item).expect("event").data,
            Some(json!({"a": {"b": "c"}}))
        );
    }

    #[test]
    fn data_inflating_past_the_limit_is_refused_and_the_next_event_still_reads() {
        let bomb = json!({"x": "a".repeat(DATA_INFLATED_MAX)});
        let packed = deflate_data(&bomb).expect("deflates");
        assert!(packed.len() < 64 * 1024, "{} bytes", packed.len());
        assert!(inflate_data(&packed).is_err());
        // Exactly at the limit still reads.
        let text_max = DATA_INFLATED_MAX - r#"{"x":""}"#.len();
        let large = json!({"x": "b".repeat(text_max)});
        assert_eq!(
            inflate_data(&deflate_data(&large).expect("deflates")).ok(),
            Some(large)
        );
        let past = json!({"x": "b".repeat(text_max + 1)});
        assert!(inflate_data(&deflate_data(&past).expect("deflates")).is_err());
        let small = json!({"y": [1, 2]});
        assert_eq!(
            inflate_data(&deflate_data(&small).expect("deflates")).ok(),
            Some(small)
        );
    }

    /// What a tail page prints of an item, and what a lookup prints.
    fn printed_as_page_and_as_lookup(item: Item) -> (String, String) {
        let page = item_to_page_event(item.clone()).expect("page event");
        let lookup = item_to_event(item).expect("event");
        (
            serde_json::to_string(&page).unwrap_or_default(),
            serde_json::to_string(&lookup).unwrap_or_default(),
        )
    }

    #[test]
    fn a_page_prints_stored_data_as_the_lookup_does() {
        let data = json!({"float": 1.0, "big": 18446744073709551615u64, "neg": -9223372036854775808i64,
            "e": 1e18, "small": 1e-7, "text": "é ✓ \u{0} \u{2028} \"q\" \\", "list": [1, "two", null, {"deep": [true]}], "empty": {}});
        let item = event_to_item(&event_with(Some(data))).expect("item");
        let page = item_to_page_event(item.clone()).expect("page event");
        assert!(page.data_text.is_some() && page.event.data.is_none());
        let (page, lookup) = printed_as_page_and_as_lookup(item);
        assert_eq!(page, lookup);
        assert!(page.contains(r#""big":18446744073709551615"#), "{page}");
        // Without data, and with data stored as a map (before deflating).
        let (page, lookup) =
            printed_as_page_and_as_lookup(event_to_item(&event_with(None)).expect("item"));
        assert_eq!(page, lookup);
        let mut item = event_to_item(&event_with(Some(json!({"a": 1})))).expect("item");
        item.insert(
            DATA.into(),
            serde_dynamo::to_attribute_value(json!({"b": [2]})).expect("map"),
        );
        let (page, lookup) = printed_as_page_and_as_lookup(item);
        assert_eq!(page, lookup);
        assert!(page.contains(r#""data":{"b":[2]}"#), "{page}");
    }

    #[test]
    fn a_page_refuses_data_that_does_not_inflate_to_json() {
        let mut item = event_to_item(&event_with(Some(json!({"x": 1})))).expect("item");
        let not_json = miniz_oxide::deflate::compress_to_vec(b"{\"x\":", 6);
        item.insert(DATA.into(), AttributeValue::B(Blob::new(not_json)));
        assert!(item_to_page_event(item.clone()).is_err());
        let bomb = deflate_data(&json!({"x": "a".repeat(DATA_INFLATED_MAX)})).expect("deflates");
        item.insert(DATA.into(), AttributeValue::B(Blob::new(bomb)));
        assert!(item_to_page_event(item).is_err());
    }

    /// Any event: each optional field of the event table absent or any
    /// value of its type.
    fn any_event() -> impl Strategy<Value = Event> {
        use audit_core::event::{FieldRule, FieldType, EVENT_FIELDS};
        let fields: Vec<_> = EVENT_FIELDS
            .iter()
            .map(|spec| {
                let value: BoxedStrategy<serde_json::Value> = match (spec.name, spec.query_type) {
                    ("data", _) => {
                        prop_oneof![Just(json!({"k": [1, "v"]})), Just(json!("text"))].boxed()
                    }
                    ("indexedData", _) => proptest::collection::btree_map(".{0,8}", ".{0,8}", 0..4)
                        .prop_map(|m| json!(m))
                        .boxed(),
                    ("mayHaveMoreData", _) | (_, Some(FieldType::Boolean)) => {
                        any::<bool>().prop_map(|b| json!(b)).boxed()
                    }
                    _ => ".{0,12}".prop_map(|t| json!(t)).boxed(),
                };
                let required = matches!(
                    spec.rule,
                    FieldRule::RequiredText { .. } | FieldRule::Assigned
                ) && spec.name != "mayHaveMoreData"
                    || spec.name == "accountId";
                let value = if required {
                    value.prop_map(Some).boxed()
                } else {
                    proptest::option::of(value).boxed()
                };
                value.prop_map(move |v| (spec.name, v))
            })
            .collect();
        fields.prop_map(|fields| {
            let object: serde_json::Map<String, serde_json::Value> = fields
                .into_iter()
                .filter_map(|(name, value)| value.map(|v| (name.to_string(), v)))
                .collect();
            serde_json::from_value(serde_json::Value::Object(object)).expect("an event")
        })
    }

    /// Any attribute value DynamoDB could return, of most of its types.
    fn any_attribute() -> impl Strategy<Value = AttributeValue> {
        let leaf = prop_oneof![
            ".{0,6}".prop_map(AttributeValue::S),
            any::<i64>().prop_map(|n| AttributeValue::N(n.to_string())),
            proptest::collection::vec(any::<u8>(), 0..6)
                .prop_map(|b| AttributeValue::B(Blob::new(b))),
            any::<bool>().prop_map(AttributeValue::Bool),
            // DynamoDB refuses `NULL: false`.
            Just(AttributeValue::Null(true)),
            proptest::collection::vec(".{0,4}", 1..3).prop_map(AttributeValue::Ss),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                proptest::collection::hash_map(".{0,4}", inner.clone(), 0..3)
                    .prop_map(AttributeValue::M),
                proptest::collection::vec(inner, 0..3).prop_map(AttributeValue::L),
            ]
        })
    }

    proptest! {
        /// Any text in `data`, stored and read for a page, prints as the
        /// lookup prints it.
        #[test]
        fn any_stored_text_prints_on_a_page_as_on_a_lookup(
            chars in proptest::collection::vec(any::<char>(), 0..300),
            number in any::<f64>().prop_filter("finite", |f| f.is_finite()),
        ) {
            let text: String = chars.into_iter().collect();
            let data = json!({"text": text.clone(), "n": number, "list": [text, number]});
            let item = event_to_item(&event_with(Some(data))).expect("item");
            let (page, lookup) = printed_as_page_and_as_lookup(item);
            prop_assert_eq!(page, lookup);
        }

        /// Any text in `data` reads back exactly, events one after another.
        #[test]
        fn events_inflated_in_turn_each_read_back_exactly(
            texts in proptest::collection::vec(
                proptest::collection::vec(any::<char>(), 0..3000), 1..8)
        ) {
            let values: Vec<_> = texts
                .iter()
                .enumerate()
                .map(|(i, chars)| json!({"i": i, "text": chars.iter().collect::<String>()}))
                .collect();
            let packed: Vec<_> = values
                .iter()
                .map(|v| deflate_data(v).expect("deflates"))
                .collect();
            for (value, bytes) in values.iter().zip(&packed) {
                let back = inflate_data(bytes).ok();
                prop_assert_eq!(back.as_ref(), Some(value));
            }
        }

        /// Items stored before libdeflate hold `data` as miniz_oxide
        /// deflated it (the same raw DEFLATE): they read back exactly, on a
        /// page and on a lookup.
        #[test]
        fn data_deflated_by_miniz_oxide_still_reads(
            chars in proptest::collection::vec(any::<char>(), 0..2000),
            level in 0u8..=10,
        ) {
            let data = json!({"text": chars.iter().collect::<String>(), "n": [1, -2.5]});
            let mut item = event_to_item(&event_with(Some(json!({})))).expect("item");
            let stored = miniz_oxide::deflate::compress_to_vec(data.to_string().as_bytes(), level);
            item.insert(DATA.into(), AttributeValue::B(Blob::new(stored)));
            let (page, lookup) = printed_as_page_and_as_lookup(item.clone());
            prop_assert_eq!(page, lookup);
            prop_assert_eq!(item_to_event(item).expect("event").data, Some(data));
        }

        /// The item reader reads any event's item as serde_dynamo does, and
        /// as the event was written: every field, present or absent.
        #[test]
        fn the_item_reader_reads_any_event_as_serde_dynamo_does(event in any_event()) {
            let mut item = event_to_item(&event).expect("item");
            let data = item.remove(DATA);
            let ours: Event = crate::item_reader::from_item(item.clone()).expect("our reading");
            let theirs: Event = serde_dynamo::from_item(item).expect("serde_dynamo's reading");
            prop_assert_eq!(&ours, &theirs);
            let mut written = event.clone();
            written.data = None;
            prop_assert_eq!(&ours, &written);
            prop_assert_eq!(data.is_some(), event.data.is_some());
        }

        /// An altered item, one attribute replaced by any value of any
        /// type. An attribute the event names: what the item reader reads,
        /// serde_dynamo reads the same, and where serde_dynamo refuses, so
        /// does the reader. One it doesn't name (the TTL, anything else) is
        /// ignored whatever it holds.
        #[test]
        fn the_item_reader_is_never_looser_than_serde_dynamo(
            event in any_event(),
            name in prop_oneof![
                Just("cursor"), Just("message"), Just("sandbox"), Just("userId"),
                Just("indexedData"), Just("mayHaveMoreData"), Just("ttl"), Just("extra"),
            ],
            value in any_attribute(),
        ) {
            let mut item = event_to_item(&event).expect("item");
            item.remove(DATA);
            item.insert(name.to_string(), value);
            let ours: Result<Event, _> = crate::item_reader::from_item(item.clone());
            if matches!(name, "ttl" | "extra") {
                let mut written = event.clone();
                written.data = None;
                prop_assert_eq!(ours.ok(), Some(written));
            } else if let Ok(ours) = ours {
                let theirs: Result<Event, _> = serde_dynamo::from_item(item);
                prop_assert_eq!(Some(ours), theirs.ok());
            }
        }

        /// Whatever bytes an altered item holds, reading it is an error, never a panic.
        #[test]
        fn altered_data_bytes_are_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut item = event_to_item(&event_with(Some(json!({"x": 1})))).expect("item");
            item.insert(DATA.into(), AttributeValue::B(Blob::new(bytes)));
            let _ = item_to_event(item.clone());
            let _ = item_to_page_event(item);
        }
    }
}
