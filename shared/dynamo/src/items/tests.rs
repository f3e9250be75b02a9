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
        proptest::collection::vec(any::<u8>(), 0..6).prop_map(|b| AttributeValue::B(Blob::new(b))),
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

/// Every property key fits DynamoDB's 1024-byte sort key, whatever the
/// names (each up to 256 characters of up to 4 bytes, or a `data` path far
/// longer), and the prefixes a listing filters by still begin the keys of
/// that service and kind. (A longer key was left out, so the service or
/// property was missing from metadata.)
#[test]
fn every_property_key_fits_a_sort_key_and_keeps_its_prefixes() {
    let long_names = [
        "idp".to_string(),
        "監".repeat(99),
        "😀".repeat(256),
        "\u{1}".repeat(256),
        "x".repeat(3000),
    ];
    for service in &long_names {
        for kind in &long_names {
            for name in &long_names {
                let property = ObservedProperty {
                    service_name: service.clone(),
                    event_type: kind.clone(),
                    name: format!("data.{name}"),
                    json_type: "boolean".into(),
                };
                let key = property_key(&property);
                assert!(key.len() <= 1024, "{} bytes", key.len());
                let by_service = format!("[{},", property_key_part(service));
                let by_kind = format!("{by_service}{},", property_key_part(kind));
                assert!(key.starts_with(&by_kind), "{key}");
                assert!(by_kind.len() <= 1024);
            }
        }
    }
    // Two long names that differ only at their end have different keys.
    assert_ne!(
        property_key_part(&format!("{}a", "x".repeat(300))),
        property_key_part(&format!("{}b", "x".repeat(300)))
    );
}
