use super::*;
use serde_json::json;

fn query(body: Value) -> Result<Query, ApiError> {
    Query::parse(&body, Utc::now())
}

#[test]
fn defaults_window_to_thirty_days_before_to() {
    let q = query(json!({})).unwrap();
    assert_eq!(q.to - q.from, Duration::days(30));
    let q = query(json!({"to": "2026-01-31T00:00:00Z"})).unwrap();
    assert_eq!(q.from.to_rfc3339(), "2026-01-01T00:00:00+00:00");
    // `from` after `to`: an empty window, as the OpenAPI document allows.
    assert!(query(json!({"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"})).is_ok());
}

#[test]
fn bad_conditions_are_named() {
    let cases = [
        (
            json!({"and": [{"field": "colour", "operator": "eq", "value": "x"}]}),
            "colour",
        ),
        (
            json!({"and": [{"field": "userId", "operator": "like", "value": "x"}]}),
            "like",
        ),
        (
            json!({"and": [{"field": "userId", "operator": "eq", "value": 5}]}),
            "userId",
        ),
        (
            json!({"and": [{"field": "sandbox", "operator": "startsWith", "value": "t"}]}),
            "startsWith",
        ),
        (
            json!({"and": [{"field": "userId", "operator": "in", "value": (0..101).map(|i| i.to_string()).collect::<Vec<_>>()}]}),
            "100",
        ),
        (
            json!({"and": [{"field": "timestamp", "operator": "gt", "value": "yesterday"}]}),
            "timestamp",
        ),
    ];
    for (body, named) in cases {
        let err = query(body.clone()).unwrap_err();
        assert_eq!(err.code(), "invalid_request", "{body}");
        assert!(err.to_string().contains(named), "{err} should name {named}");
        assert_eq!(err.field(), Some("and[0]"));
    }
    let many: Vec<Value> = (0..21)
        .map(|_| json!({"field": "userId", "operator": "exists", "value": true}))
        .collect();
    assert_eq!(
        query(json!({"and": many})).unwrap_err().field(),
        Some("and")
    );
}

#[test]
fn every_operator_evaluates() {
    let event = json!({"userId": "u-17", "sandbox": false, "timestamp": "2026-01-02T00:00:00.000Z",
        "data": {"n": 5, "tags": ["a", "b"], "user": {"role": "admin"}}, "indexedData": {"region": "eu-west"}});
    let check = |field: &str, op: &str, value: Value| {
        query(json!({"and": [{"field": field, "operator": op, "value": value}]}))
            .unwrap()
            .matches(&event)
    };
    assert!(check("userId", "eq", json!("u-17")));
    assert!(!check("userId", "eq", json!("u-1")));
    assert!(check("userId", "ne", json!("u-1")));
    assert!(
        check("message", "ne", json!("x")),
        "a missing field is not equal"
    );
    assert!(check("userId", "in", json!(["u-1", "u-17"])));
    assert!(check("userId", "startsWith", json!("u-1")));
    assert!(check("userId", "contains", json!("-1")));
    assert!(check("data.tags", "contains", json!("b")));
    assert!(check("data.user.role", "eq", json!("admin")));
    assert!(check("data.tags[0]", "eq", json!("a")));
    assert!(check("indexedData.region", "startsWith", json!("eu")));
    assert!(check("userEmail", "exists", json!(false)));
    assert!(check("data.n", "gt", json!(4)));
    assert!(check("data.n", "gte", json!(5)));
    assert!(!check("data.n", "lt", json!(5)));
    assert!(check("data.n", "lte", json!(5.0)));
    assert!(!check(
        "timestamp",
        "gt",
        json!("2026-01-01T23:00:00-02:00")
    ));
    assert!(check("timestamp", "lt", json!("2026-01-02T01:00:00+00:00")));
    assert!(check("sandbox", "eq", json!(false)));
}

/// `[n]` names an array position and nothing else; `.key` and `["key"]`
/// name an object key and nothing else, digits or not. A path means one
/// thing whatever shape the event's data has.
#[test]
fn positions_and_keys_are_told_apart() {
    let event = json!({"data": {"list": ["a", "b"], "map": {"0": "zero", "1": "one"}},
        "indexedData": {"0": "x"}});
    let check = |field: &str, value: &str| {
        query(json!({"and": [{"field": field, "operator": "eq", "value": value}]}))
            .unwrap()
            .matches(&event)
    };
    assert!(check("data.list[1]", "b"));
    assert!(!check("data.list.1", "b"), "`.1` is a key, not a position");
    assert!(!check("data.list[\"1\"]", "b"), "`[\"1\"]` is a key");
    assert!(check("data.map.1", "one"));
    assert!(check("data.map[\"0\"]", "zero"));
    assert!(
        !check("data.map[0]", "zero"),
        "`[0]` is a position, not a key"
    );
    assert!(check("indexedData.0", "x"));
    assert!(check("indexedData[\"0\"]", "x"));
    // indexedData is a flat map of strings: a position there names nothing.
    for field in [
        "indexedData[0]",
        "indexedData[\"a\"][0]",
        "indexedData.a[0]",
    ] {
        let err =
            query(json!({"and": [{"field": field, "operator": "eq", "value": "x"}]})).unwrap_err();
        assert_eq!(err.field(), Some("and[0]"), "{field}");
    }
}

/// Every time the query takes is one it could echo back in UTC: a leap
/// second (`:60`) is refused as a bound and as a time field's value.
#[test]
fn a_leap_second_is_no_time() {
    for bound in ["from", "to"] {
        let err = query(json!({ bound: "2016-12-31T23:59:60Z" })).unwrap_err();
        assert_eq!(err.field(), Some(bound));
    }
    for operator in ["eq", "gt", "lte"] {
        let err = query(json!({"and": [{"field": "timestamp", "operator": operator,
            "value": "2024-03-05T10:17:60Z"}]}))
        .unwrap_err();
        assert_eq!(err.field(), Some("and[0]"), "{operator}");
    }
    assert!(query(json!({"from": "2016-12-31T23:59:59.999Z"})).is_ok());
}

#[test]
fn the_plan_picks_the_most_selective_pivot() {
    let q = query(json!({"and": [
        {"field": "eventType", "operator": "eq", "value": "login"},
        {"field": "userId", "operator": "in", "value": ["b", "a"]},
    ]}))
    .unwrap();
    let plan = Plan::for_query(&q);
    assert_eq!(plan.index.map(|i| i.name), Some("byUserId"));
    assert_eq!(plan.values, vec!["a", "b"]);
    let unindexed =
        query(json!({"and": [{"field": "data.x", "operator": "eq", "value": 1}]})).unwrap();
    assert_eq!(Plan::for_query(&unindexed).index, None);
}

#[test]
fn cursors_are_bound_to_tenant_and_query_and_tamper_proof() {
    let signer = CursorSigner::new(b"key");
    let cursor = QueryCursor {
        tenant: "acme".into(),
        fingerprint: "f1".into(),
        position: "01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
        from_ms: 1,
        to_ms: 2,
    };
    let token = signer.sign(&cursor);
    assert_eq!(signer.verify(&token, "acme", "f1").unwrap(), cursor);
    assert!(signer.verify(&token, "globex", "f1").is_err());
    assert!(signer.verify(&token, "acme", "f2").is_err());
    assert!(CursorSigner::new(b"other")
        .verify(&token, "acme", "f1")
        .is_err());
    let mut tampered = token.clone().into_bytes();
    tampered[3] ^= 1;
    assert!(signer
        .verify(&String::from_utf8_lossy(&tampered), "acme", "f1")
        .is_err());
}

/// A refusal names only value types the operator takes: every type its
/// message says is needed is accepted (it said "a string, number or
/// boolean" to a boolean for `lt`, and "a string" to `contains` on `data`,
/// which takes numbers and booleans too).
#[test]
fn a_refused_value_is_told_only_types_that_are_taken() {
    let fields = ["userId", "timestamp", "sandbox", "data.x"];
    let samples = [
        json!("x"),
        json!(1),
        json!(true),
        json!(null),
        json!({}),
        json!("2026-01-01T00:00:00Z"),
    ];
    let representative = |kind: &str| match kind {
        "string" => json!("x"),
        "number" => json!(1),
        "boolean" => json!(true),
        _ => json!("2026-01-01T00:00:00Z"),
    };
    let accepted = |field: &str, op: &str, value: &Value| {
        query(json!({"and": [{"field": field, "operator": op, "value": value}]})).is_ok()
    };
    let mut refusals = 0;
    for field in fields {
        for op in [
            "eq",
            "ne",
            "gt",
            "gte",
            "lt",
            "lte",
            "contains",
            "startsWith",
            "in",
        ] {
            for sample in &samples {
                let sent = if op == "in" {
                    json!([sample])
                } else {
                    sample.clone()
                };
                let Err(err) =
                    query(json!({"and": [{"field": field, "operator": op, "value": sent}]}))
                else {
                    continue;
                };
                let message = err.to_string();
                let Some((_, needed)) = message.split_once(" needs ") else {
                    continue; // the operator does not apply to the field
                };
                refusals += 1;
                for kind in ["string", "number", "boolean", "RFC 3339 time"] {
                    if needed.contains(kind) {
                        let value = representative(kind);
                        let value = if op == "in" { json!([value]) } else { value };
                        assert!(
                            accepted(field, op, &value),
                            "{field} {op} {sent}: `{message}`, but {value} is refused"
                        );
                    }
                }
            }
        }
    }
    assert!(refusals > 20, "{refusals}");
}

/// The window evaluated is the window echoed, and an echoed bound is always
/// a time RFC 3339 can write: a bound outside the years 0000-9999 in UTC is
/// refused (it echoed `-0001-…` and `+10000-…`), a default `from` stops at
/// the year 0000, and a bound inside a millisecond is taken at the next one
/// (it was evaluated exactly but echoed cut, so the echoed window held
/// other events).
#[test]
fn a_window_is_evaluated_as_it_is_echoed() {
    for (field, bound) in [
        ("from", "0000-01-01T00:00:00+01:00"),
        ("to", "9999-12-31T23:59:59-01:00"),
        ("to", "9999-12-31T23:59:59.9999Z"),
    ] {
        let err = query(json!({ field: bound })).expect_err(bound);
        assert!(err.to_string().contains("0000-9999"), "{err}");
    }
    let q = query(json!({"to": "0000-01-01T00:00:00Z"})).unwrap();
    assert_eq!(q.from, q.to);
    assert_eq!(
        crate::event::format_time(q.from),
        "0000-01-01T00:00:00.000Z"
    );
    let q = query(json!({"from": "2026-01-01T00:00:42.537Z", "to": "2026-01-01T00:00:42.5371Z"}))
        .unwrap();
    assert_eq!(
        crate::event::format_time(q.from),
        "2026-01-01T00:00:42.537Z"
    );
    assert_eq!(crate::event::format_time(q.to), "2026-01-01T00:00:42.538Z");
    // An event of that millisecond is in the window both ways.
    let at = DateTime::parse_from_rfc3339("2026-01-01T00:00:42.537Z")
        .unwrap()
        .with_timezone(&Utc);
    assert!(q.from <= at && at < q.to);
    let q = query(json!({"from": "2026-01-01T00:00:42.5371Z"})).unwrap();
    assert_eq!(
        crate::event::format_time(q.from),
        "2026-01-01T00:00:42.538Z"
    );
    // Left out, `to` is now at a millisecond too, and so the default `from`.
    let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:42.5371Z")
        .unwrap()
        .with_timezone(&Utc);
    let q = Query::parse(&json!({}), now).unwrap();
    assert_eq!(crate::event::format_time(q.to), "2026-01-01T00:00:42.538Z");
    assert_eq!(q.to.timestamp_subsec_nanos() % 1_000_000, 0);
    assert_eq!(q.from.timestamp_subsec_nanos() % 1_000_000, 0);
}

/// What metadata lists for a `data` value's JSON type is what the evaluator
/// does: each listed operator matches the value with some operand; every
/// other one matches it with no operand, or (`ne` on an array or an object,
/// which equals no scalar) with every one, which tells nothing.
#[test]
fn the_operators_listed_for_a_json_type_are_those_that_can_match_it() {
    let samples = [
        ("boolean", json!(true)),
        ("number", json!(5)),
        ("array", json!(["a", 5])),
        ("object", json!({"k": "a"})),
        ("string", json!("abc")),
    ];
    let operands = [
        json!("a"),
        json!("abc"),
        json!("b"),
        json!(5),
        json!(4),
        json!(6),
        json!(true),
        json!(false),
    ];
    for (json_type, value) in samples {
        let event = json!({"data": {"v": value}});
        let listed = operators_for_json_type(json_type);
        for operator in Operator::ALL {
            let outcomes: Vec<bool> = operands
                .iter()
                .filter_map(|operand| {
                    let operand = match operator {
                        Operator::Exists => json!(true),
                        Operator::In => json!([operand]),
                        _ => operand.clone(),
                    };
                    query(json!({"and": [{"field": "data.v", "operator": operator.name(), "value": operand}]}))
                        .ok()
                        .map(|q| q.matches(&event))
                })
                .collect();
            let some = outcomes.iter().any(|m| *m);
            let every = outcomes.iter().all(|m| *m);
            if listed.contains(operator) {
                assert!(
                    some,
                    "{json_type} {} is listed and never matches",
                    operator.name()
                );
            } else {
                assert!(
                    !some || every,
                    "{json_type} {} matches some and is not listed",
                    operator.name()
                );
            }
        }
    }
}

/// Any key an event can hold can be queried: the longest `data` key of an
/// event of 64 KiB, plain or in the `["..."]` syntax, and escaped keys as
/// long as their names fit the cap. (Names were capped at 2048 characters,
/// and a longer key was stored but "unknown" to a query.) A longer name
/// says what is wrong.
#[test]
fn every_key_an_event_can_hold_can_be_queried() {
    let key = "k".repeat(crate::event::MAX_EVENT_BYTES - 64);
    let quoted_key = "\"".repeat(crate::event::MAX_EVENT_BYTES / 2 - 64);
    let cjk_key = "監".repeat((crate::event::MAX_EVENT_BYTES - 64) / 6);
    let event = json!({"data": {key.clone(): 21, quoted_key.clone(): 1, cjk_key.clone(): 3}});
    for (field, value) in [
        (format!("data.{key}"), 21),
        (
            format!("data[{}]", serde_json::to_string(&key).unwrap()),
            21,
        ),
        (
            format!("data[{}]", serde_json::to_string(&quoted_key).unwrap()),
            1,
        ),
        // A key of three-byte characters, each a `\u` escape, as some
        // serialisers write them (a name of six characters each).
        (
            format!(
                "data[\"{}\"]",
                cjk_key
                    .chars()
                    .map(|c| format!("\\u{:04x}", u32::from(c)))
                    .collect::<String>()
            ),
            3,
        ),
    ] {
        let q = query(json!({"and": [{"field": field, "operator": "eq", "value": value}]}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(q.matches(&event));
    }
    let too_long = format!("data.{}", "k".repeat(MAX_FIELD_NAME_CHARS));
    let err =
        query(json!({"and": [{"field": too_long, "operator": "eq", "value": 1}]})).unwrap_err();
    assert!(err.to_string().contains("longer than"), "{err}");
}
