use super::*;

/// The field table and the struct that is stored and returned name the
/// same fields.
#[test]
fn the_field_table_names_every_field_of_the_event() {
    let text = Some(String::from("x"));
    let event = Event {
        cursor: "c".into(),
        account_id: "a".into(),
        organization_id: text.clone(),
        timestamp: "t".into(),
        occurred_at: text.clone(),
        expires_at: "e".into(),
        service_name: "s".into(),
        event_type: "k".into(),
        message: text.clone(),
        sandbox: Some(true),
        user_id: text.clone(),
        user_email: text.clone(),
        client_id: text.clone(),
        jwt_id: text.clone(),
        message_id: text.clone(),
        reference_id: text.clone(),
        trace_id: text.clone(),
        ip_address: text.clone(),
        user_agent: text,
        data: Some(Value::Null),
        indexed_data: Some(BTreeMap::new()),
        may_have_more_data: Some(true),
    };
    let Ok(Value::Object(serialised)) = serde_json::to_value(&event) else {
        panic!("an event serialises to an object");
    };
    let struct_names: std::collections::BTreeSet<&str> =
        serialised.keys().map(String::as_str).collect();
    let table_names: std::collections::BTreeSet<&str> =
        EVENT_FIELDS.iter().map(|f| f.name).collect();
    assert_eq!(table_names.len(), EVENT_FIELDS.len(), "no name twice");
    assert_eq!(struct_names, table_names);
}
use serde_json::json;

fn field_of(err: ApiError) -> String {
    err.field().unwrap_or_default().to_string()
}

#[test]
fn a_minimal_event_is_accepted_and_ids_are_assigned() {
    let parsed =
        NewEvent::parse(json!({"eventType": "user.login", "serviceName": "idp"}), "").unwrap();
    let cursor = Ulid::new();
    let now = cursor_time(cursor);
    let event = parsed.into_event(cursor, "acme".into(), 90, "").unwrap();
    assert_eq!(event.timestamp, format_time(now));
    assert_eq!(event.account_id, "acme");
    assert_eq!(event.expires_at, format_time(now + Duration::days(90)));
    assert!(!event.is_expired(now));
    assert!(event.is_expired(now + Duration::days(91)));
}

#[test]
fn required_fields_unknown_fields_and_types_are_named() {
    let missing = NewEvent::parse(json!({"serviceName": "idp"}), "").unwrap_err();
    assert_eq!(field_of(missing), "eventType");
    let unknown = NewEvent::parse(
        json!({"eventType": "a", "serviceName": "b", "colour": 1}),
        "events[2]",
    )
    .unwrap_err();
    assert_eq!(field_of(unknown.clone()), "events[2].colour");
    assert!(unknown.to_string().contains("colour"));
    let wrong = NewEvent::parse(
        json!({"eventType": "a", "serviceName": "b", "sandbox": "yes"}),
        "",
    )
    .unwrap_err();
    assert_eq!(field_of(wrong), "sandbox");
    let indexed = NewEvent::parse(
        json!({"eventType": "a", "serviceName": "b", "indexedData": {"k": 1}}),
        "",
    )
    .unwrap_err();
    assert_eq!(field_of(indexed), "indexedData.k");
    let time = NewEvent::parse(
        json!({"eventType": "a", "serviceName": "b", "occurredAt": "yesterday"}),
        "",
    )
    .unwrap_err();
    assert_eq!(field_of(time), "occurredAt");
}

#[test]
fn assigned_fields_are_refused() {
    for field in ["cursor", "timestamp", "expiresAt"] {
        let mut body = json!({"eventType": "a", "serviceName": "b"});
        body[field] = json!("x");
        let err = NewEvent::parse(body, "").unwrap_err();
        assert_eq!(err.code(), "invalid_request");
        assert_eq!(field_of(err), field);
    }
}

#[test]
fn unstorable_numbers_are_refused() {
    let tiny = NewEvent::parse(
        json!({"eventType": "a", "serviceName": "b", "data": {"x": [1, 5.7e-224]}}),
        "",
    )
    .unwrap_err();
    assert_eq!(field_of(tiny), "data.x[1]");
    let huge = NewEvent::parse(
        json!({"eventType": "a", "serviceName": "b", "data": 1e200}),
        "",
    )
    .unwrap_err();
    assert_eq!(field_of(huge), "data");
    assert!(NewEvent::parse(
        json!({"eventType": "a", "serviceName": "b", "data": {"x": 0.0, "y": -1.5e100}}),
        ""
    )
    .is_ok());
}

#[test]
fn oversize_events_are_413() {
    let body = json!({"eventType": "a", "serviceName": "b", "data": {"blob": "x".repeat(MAX_EVENT_BYTES)}});
    assert_eq!(
        NewEvent::parse(body, "").unwrap_err().code(),
        "payload_too_large"
    );
}

#[test]
fn names_of_invisible_characters_only_are_refused() {
    for &(lo, hi) in INVISIBLE_CHARACTERS {
        for c in [lo, hi] {
            let name = format!("{c}{c}");
            let refused = NewEvent::parse(json!({"eventType": name, "serviceName": "idp"}), "")
                .expect_err("invisible eventType");
            assert_eq!(field_of(refused), "eventType", "U+{:04X}", u32::from(c));
            let refused = NewEvent::parse(json!({"eventType": "a", "serviceName": name}), "")
                .expect_err("invisible serviceName");
            assert_eq!(field_of(refused), "serviceName", "U+{:04X}", u32::from(c));
            let shown = format!("{c}x{c}");
            assert!(
                NewEvent::parse(json!({"eventType": shown, "serviceName": "idp"}), "").is_ok(),
                "a visible character beside U+{:04X}",
                u32::from(c)
            );
        }
    }
    for visible in [
        "é",
        "用户",
        "🦀",
        "-",
        "0",
        "\u{2010}",
        "\u{13440}",
        "\u{e1000}",
    ] {
        assert!(has_visible_text(visible), "{visible}");
    }
    // Every default-ignorable code point (Unicode 16,
    // DerivedCoreProperties.txt) is invisible, whatever the table groups.
    let default_ignorable: &[(u32, u32)] = &[
        (0xad, 0xad),
        (0x34f, 0x34f),
        (0x61c, 0x61c),
        (0x115f, 0x1160),
        (0x17b4, 0x17b5),
        (0x180b, 0x180f),
        (0x200b, 0x200f),
        (0x202a, 0x202e),
        (0x2060, 0x206f),
        (0x3164, 0x3164),
        (0xfe00, 0xfe0f),
        (0xfeff, 0xfeff),
        (0xffa0, 0xffa0),
        (0xfff0, 0xfff8),
        (0x1bca0, 0x1bca3),
        (0x1d173, 0x1d17a),
        (0xe0000, 0xe0fff),
    ];
    for &(lo, hi) in default_ignorable {
        for code in lo..=hi {
            let Some(c) = char::from_u32(code) else {
                continue;
            };
            assert!(!has_visible_text(&c.to_string()), "U+{code:04X}");
        }
    }
}

/// An `occurredAt` is stored in UTC: one an offset carries out of the
/// years 0000-9999, or a leap second, would read back as no RFC 3339 time
/// a reader takes, so it is refused; the edges that stay inside are kept.
#[test]
fn an_occurred_at_outside_four_digit_utc_years_is_refused() {
    // A leap second (`:60`, in any minute chrono parses it) has no UTC
    // time to be written back as: `22:59:60.500Z` is refused by readers.
    for time in [
        "9999-12-31T23:59:59-01:00",
        "0000-01-01T00:00:00+01:00",
        "2016-12-31T23:59:60.5+01:00",
        "2016-12-31T23:59:60Z",
        "2024-03-05T10:17:60Z",
    ] {
        let err = NewEvent::parse(
            json!({"eventType": "a", "serviceName": "b", "occurredAt": time}),
            "",
        )
        .unwrap_err();
        assert_eq!(field_of(err), "occurredAt", "{time}");
    }
    for time in [
        "9999-12-31T23:59:59Z",
        "0000-01-01T00:00:00Z",
        "2026-01-31T12:00:00+05:30",
    ] {
        let event = NewEvent::parse(
            json!({"eventType": "a", "serviceName": "b", "occurredAt": time}),
            "",
        );
        assert!(event.is_ok(), "{time}");
    }
}

/// The API's own service name, and anything that reads as it, is refused
/// to producers; names that merely contain it are not.
#[test]
fn producers_may_not_use_the_apis_own_service_name() {
    for taken in [
        "audit-api",
        "AUDIT-API",
        " audit-api ",
        "audit\u{200b}-api",
        "audit\u{2010}api",
        "audit\u{ff0d}api",
        "audit_api",
        "Audit - Api",
        "audit api",
        "audit\u{a0}api",
        "ａｕｄｉｔ-ａｐｉ",
        "audit-api\u{e0001}",
        "audit\u{180b}-api",
        "\u{1d173}audit-api",
        "aud\u{200a}it-api",
        "audit-a\u{2009}pi",
        "au\u{202f}dit_api",
        "audit\u{3164}api",
        "audit\u{2800}api",
        "audit--api",
        // Found by the seventh hostile pass: other dashes and connectors,
        // mathematical and circled letters, an accent, Cyrillic letters.
        "audit\u{2e3a}api",
        "audit\u{058a}api",
        "audit\u{fe4f}api",
        "audit\u{203f}api",
        "\u{1d41a}\u{1d42e}\u{1d41d}\u{1d422}\u{1d42d}-api",
        "\u{24d0}\u{24e4}\u{24d3}\u{24d8}\u{24e3}-api",
        "audit-ap\u{ed}",
        "audit-api\u{301}",
        "\u{430}udit-\u{430}pi",
        "AUDIT\u{2014}API",
        // Capital I's look-alikes (the review): drawn first, then lowered.
        "AUDlT-APl",
        "AUD1T-AP1",
        "AUD|T-AP|",
        "AUD\u{4c0}T-AP\u{4c0}",
    ] {
        assert!(names_the_api(taken), "{taken:?}");
        let err = NewEvent::parse(
            serde_json::json!({"eventType": "audit.list", "serviceName": taken}),
            "",
        )
        .expect_err(taken);
        assert!(err.to_string().contains("the API's own"), "{err}");
    }
    for free in [
        "audit-apis",
        "my-audit-api",
        "auditapi",
        "audit-app",
        "idp",
        "audit-a-pi",
        "audit-apl",
        "audit-ap",
        "audlt-api",
    ] {
        assert!(!names_the_api(free), "{free:?}");
    }
    // Every dash and connector Unicode has (its categories Pd and Pc)
    // between the two words.
    use unicode_general_category::{get_general_category, GeneralCategory};
    let separators: Vec<char> = (0..=0x10ffff_u32)
        .filter_map(char::from_u32)
        .filter(|c| {
            matches!(
                get_general_category(*c),
                GeneralCategory::DashPunctuation | GeneralCategory::ConnectorPunctuation
            )
        })
        .collect();
    assert!(separators.len() > 30, "{}", separators.len());
    for c in separators {
        assert!(
            names_the_api(&format!("audit{c}api")),
            "U+{:04X}",
            u32::from(c)
        );
    }
}

/// An `occurredAt` keeps every digit of its fraction (up to the
/// nanosecond): cut to the millisecond, a query with the value sent missed
/// the event. A fraction past the nanosecond that is not zero names an
/// instant no stored time can hold, so it is refused rather than cut.
#[test]
fn an_occurred_at_keeps_every_digit_it_was_sent_with() {
    for (sent, stored) in [
        ("2026-01-01T00:00:00.0009Z", "2026-01-01T00:00:00.000900Z"),
        ("2026-01-01T00:00:00.9999Z", "2026-01-01T00:00:00.999900Z"),
        (
            "2026-01-01T01:00:00.123456789+01:00",
            "2026-01-01T00:00:00.123456789Z",
        ),
        (
            "2026-01-01T00:00:00.123456789000Z",
            "2026-01-01T00:00:00.123456789Z",
        ),
        ("2026-01-01T00:00:00.5Z", "2026-01-01T00:00:00.500Z"),
        ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00.000Z"),
        ("2026-01-01t00:00:00.000001z", "2026-01-01T00:00:00.000001Z"),
    ] {
        let parsed = NewEvent::parse(
            json!({"eventType": "a", "serviceName": "b", "occurredAt": sent}),
            "",
        )
        .unwrap();
        let event = parsed
            .into_event(Ulid::new(), "acme".into(), 90, "")
            .unwrap();
        assert_eq!(event.occurred_at.as_deref(), Some(stored), "{sent}");
        let stored_event = serde_json::to_value(&event).unwrap();
        for operator in ["eq", "gte", "lte", "in"] {
            let value = if operator == "in" {
                json!([sent])
            } else {
                json!(sent)
            };
            let query = crate::query::Query::parse(
                &json!({"and": [{"field": "occurredAt", "operator": operator, "value": value}]}),
                Utc::now(),
            )
            .unwrap();
            assert!(query.matches(&stored_event), "{sent} {operator}");
        }
    }
    let err = NewEvent::parse(
        json!({"eventType": "a", "serviceName": "b", "occurredAt": "2026-01-01T00:00:00.1234567891Z"}),
        "",
    )
    .unwrap_err();
    assert_eq!(field_of(err), "occurredAt");
}
