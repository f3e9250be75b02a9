//! Property tests of every parser of request input: no input panics them,
//! and every refusal is a 400 JSON error naming what was wrong. Cases per
//! property: `PROPTEST_CASES` (proptest's default 256; the test script sets
//! more).

use audit_core::cursor::parse_cursor;
use audit_core::error::{parse_json_body, ApiError};
use audit_core::event::NewEvent;
use audit_core::query::{CursorSigner, Query, QueryCursor};
use chrono::Utc;
use proptest::prelude::*;
use serde_json::{json, Value};

/// Any JSON value, numbers of every kind included.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("eventType"),
            Just("serviceName"),
            Just("userId"),
            Just("data"),
            Just("indexedData"),
            Just("2026-03-01T10:00:00Z"),
            Just("eq"),
            Just("in"),
            Just("contains"),
            Just("data.x"),
            Just("data[\"k.x\"]"),
            Just("timestamp"),
            Just("")
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        let keys = prop_oneof![
            "\\PC{0,10}",
            prop_oneof![
                Just("eventType"),
                Just("serviceName"),
                Just("userId"),
                Just("traceId"),
                Just("data"),
                Just("indexedData"),
                Just("occurredAt"),
                Just("sandbox"),
                Just("accountId"),
                Just("messageId"),
                Just("and"),
                Just("from"),
                Just("to"),
                Just("field"),
                Just("operator"),
                Just("value"),
                Just(""),
            ]
            .prop_map(str::to_string),
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map(keys, inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A refusal is a client error with the JSON error body.
fn assert_client_error(err: &ApiError) -> Result<(), TestCaseError> {
    // The client's fault (400, 403, 413 at the edge), never the service's.
    prop_assert!(
        matches!(
            err,
            ApiError::BadRequest { .. }
                | ApiError::Forbidden { .. }
                | ApiError::PayloadTooLarge { .. }
        ),
        "unexpected error {:?}",
        err
    );
    let body = serde_json::to_value(err).unwrap();
    prop_assert!(body["code"].is_string());
    prop_assert!(body["message"].is_string());
    if matches!(err, ApiError::BadRequest { .. }) {
        prop_assert!(body["field"].is_string() || err.field().is_none());
    }
    Ok(())
}

fn condition() -> impl Strategy<Value = Value> {
    let field = prop_oneof![
        Just("userId"),
        Just("eventType"),
        Just("timestamp"),
        Just("occurredAt"),
        Just("sandbox"),
        Just("data.n"),
        Just("data.s"),
        Just("data.tags"),
        Just("data[\"k8s.pod\"]"),
        Just("data.a[0]"),
        Just("indexedData.region"),
        Just("indexedData[\"display name\"]"),
        Just("data."),
        Just("data[\"x"),
        Just("colour"),
    ];
    let operator = prop_oneof![
        Just("eq"),
        Just("ne"),
        Just("in"),
        Just("startsWith"),
        Just("contains"),
        Just("exists"),
        Just("gt"),
        Just("gte"),
        Just("lt"),
        Just("lte"),
        Just("like"),
    ];
    (field, operator, json_value())
        .prop_map(|(f, o, v)| json!({"field": f, "operator": o, "value": v}))
}

proptest! {
    /// The strict body reader: any bytes, no panic; refusals are 400s.
    #[test]
    fn the_body_reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Err(err) = parse_json_body(&bytes, "JSON") {
            assert_client_error(&err)?;
            prop_assert_eq!(err.code(), "invalid_request");
        }
    }

    /// The event parser: any JSON, no panic; a refusal names its field.
    #[test]
    fn the_event_parser_never_panics(value in json_value()) {
        if let Err(err) = NewEvent::parse(value, "events[0]") {
            assert_client_error(&err)?;
        }
    }

    /// Events with the required fields and any optional content: accepted or
    /// refused with a 400 naming the field; never a panic.
    #[test]
    fn events_parse_or_name_their_field(data in json_value(), user in "\\PC{0,40}") {
        let event = json!({"eventType": "t", "serviceName": "s", "userId": user, "data": data});
        match NewEvent::parse(event, "") {
            Ok(parsed) => prop_assert!(parsed.fields.contains_key("eventType")),
            Err(err) => {
                assert_client_error(&err)?;
                prop_assert!(err.field().is_some());
            }
        }
    }

    /// The query parser and evaluator: any body, no panic; valid queries
    /// evaluate on any event without panicking.
    #[test]
    fn the_query_parser_and_evaluator_never_panic(
        conditions in proptest::collection::vec(condition(), 0..4),
        from in prop_oneof![Just(Value::Null), json_value(), Just(json!("2026-01-01T00:00:00Z"))],
        event in json_value(),
        body in json_value(),
    ) {
        if let Err(err) = Query::parse(&body, Utc::now()) {
            assert_client_error(&err)?;
        }
        let body = json!({"and": conditions, "from": from});
        match Query::parse(&body, Utc::now()) {
            Ok(query) => {
                let _ = query.matches(&event);
                let wrapped = json!({"userId": "u", "data": event, "indexedData": {"region": "eu"}});
                let _ = query.matches(&wrapped);
            }
            Err(err) => assert_client_error(&err)?,
        }
    }

    /// Cursors from paths and query strings, and continuation tokens: any
    /// text, no panic, a 400 when not valid.
    #[test]
    fn cursor_and_continuation_decoding_never_panic(text in "\\PC{0,60}", raw in any::<Vec<u8>>()) {
        if let Err(err) = parse_cursor("cursor", &text) {
            prop_assert_eq!(err.code(), "invalid_request");
        }
        let signer = CursorSigner::new(b"key");
        for token in [text.clone(), String::from_utf8_lossy(&raw).into_owned(), format!("{text}.{text}")] {
            match signer.verify(&token, "acme", "f") {
                Ok(_) => prop_assert!(false, "a forged cursor was accepted: {}", token),
                Err(err) => prop_assert_eq!(err.code(), "invalid_request"),
            }
        }
        // A real token with one character changed is refused too.
        let real = signer.sign(&QueryCursor {
            tenant: "acme".into(), fingerprint: "f".into(),
            position: "01ARZ3NDEKTSV4RRFFQ69G5FAV".into(), from_ms: 0, to_ms: 1,
        });
        prop_assert!(signer.verify(&real, "acme", "f").is_ok());
        if let Some(c) = text.chars().next() {
            let mut changed = real.clone();
            let at = (raw.len() % real.len().max(1)).min(real.len().saturating_sub(1));
            if real.is_char_boundary(at) && real.is_char_boundary(at + 1) && real[at..at + 1] != *c.to_string() {
                changed.replace_range(at..at + 1, &c.to_string());
                prop_assert!(signer.verify(&changed, "acme", "f").is_err());
            }
        }
    }
}
