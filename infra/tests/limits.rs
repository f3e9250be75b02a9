//! DynamoDB's limits at the edge: what the validation refuses is what
//! DynamoDB would refuse, and one event the table refuses never fails its
//! neighbours. Runs on the embedded store and on DynamoDB Local.

mod common;

use std::time::{Duration, Instant};

use audit_core::error::StoreError;
use audit_core::event::Event;
use audit_core::pivot::{pivot_key, Posting, PIVOT_INDEXES};
use audit_core::store::{IdempotencyKey, IdempotentPut};
use audit_core::EventStore;
use audit_dynamo::DynamoStore;
use audit_infra::proxy::Faults;
use audit_infra::testkit::TestEnv;
use common::*;
use serde_json::{json, Value};

fn nested(depth: usize) -> Value {
    let mut value = json!(1);
    for _ in 0..depth {
        value = json!([value]);
    }
    value
}

fn raw_event(tenant: &str, data: Value) -> Event {
    let cursor = ulid::Ulid::new();
    Event {
        cursor: cursor.to_string(),
        account_id: tenant.into(),
        organization_id: None,
        timestamp: "2026-11-24T00:00:00.000Z".into(),
        occurred_at: None,
        expires_at: "2099-01-01T00:00:00.000Z".into(),
        service_name: "svc".into(),
        event_type: "kind".into(),
        message: None,
        sandbox: None,
        user_id: None,
        user_email: None,
        client_id: None,
        jwt_id: None,
        message_id: None,
        reference_id: None,
        trace_id: None,
        ip_address: None,
        user_agent: None,
        data: Some(data),
        indexed_data: None,
        may_have_more_data: None,
    }
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(6)
}

fn on_dynamodb_local() -> bool {
    std::env::var(audit_infra::testkit::ENDPOINT_VARIABLE).is_ok_and(|e| !e.is_empty())
}

fn store_of(env: &TestEnv) -> DynamoStore {
    DynamoStore::new(env.direct.clone(), env.config.table_name.clone())
}

/// The limits the validation enforces are the table's own: just inside
/// each, the table stores the item; just past it, the table refuses it
/// (`Rejected`, never a 500-class error).
#[tokio::test]
async fn the_validation_limits_are_the_tables_limits() {
    let env = TestEnv::start().await;
    let store = store_of(&env);
    let deepest = audit_core::event::MAX_DATA_DEPTH;
    assert_eq!(
        store
            .put_event(&raw_event("acme", nested(deepest)), soon())
            .await
            .ok(),
        Some(()),
        "{deepest} levels of data are storable"
    );
    // `data` is stored as deflated bytes, so the table no longer limits its
    // shape; the validation still refuses what a DynamoDB map could not hold.
    assert_eq!(
        store
            .put_event(&raw_event("acme", nested(deepest + 1)), soon())
            .await
            .ok(),
        Some(()),
        "data deeper than a DynamoDB map may nest is storable as bytes"
    );
    let mut empty_key = raw_event("acme", json!(1));
    empty_key.indexed_data = Some([(String::new(), "x".to_string())].into());
    let refused = [("an empty indexedData key", empty_key)];
    for (what, event) in refused {
        let result = store.put_event(&event, soon()).await;
        assert!(
            matches!(result, Err(StoreError::Rejected(_))),
            "{what}: {result:?}"
        );
    }
    // Key sizes: a pivot value keys its postings, `<tenant>#<tag>#<value>`.
    // The embedded store does not enforce the 2048 bytes; DynamoDB does.
    let posting = |value: String| Posting {
        index: &PIVOT_INDEXES[0],
        value,
        cursors: vec![ulid::Ulid::new()],
        expires_at_ms: i64::MAX,
    };
    let at_limit = posting("u".repeat(2048 - "acme#u#".len()));
    assert_eq!(
        pivot_key("acme", at_limit.index, &at_limit.value).len(),
        2048
    );
    let through = audit_core::store::PostedMark {
        through: ulid::Ulid::new().to_string(),
        log_size: None,
    };
    assert_eq!(
        store.put_postings("acme", &[at_limit], &through).await.ok(),
        Some(())
    );
    if on_dynamodb_local() {
        let over = posting("u".repeat(2049 - "acme#u#".len()));
        let result = store.put_postings("acme", &[over], &through).await;
        assert!(result.is_err(), "{result:?}");
    }
    // And the validation never lets a value through whose key is longer:
    // the longest `userId` of 4-byte characters, for the longest tenant.
    let tenant = "t".repeat(128);
    let longest = "\u{1F600}".repeat(audit_core::event::MAX_PIVOT_CHARS);
    for index in PIVOT_INDEXES {
        assert!(pivot_key(&tenant, index, &longest).len() <= 2048);
    }
}

/// The store isolates the one item the table refuses in a batch write:
/// its 24 neighbours are stored.
#[tokio::test]
async fn a_batch_write_stores_every_item_but_the_one_the_table_refuses() {
    let env = TestEnv::start().await;
    let store = store_of(&env);
    let events: Vec<Event> = (0..25)
        .map(|i| {
            if i == 3 {
                let mut event = raw_event("acme", json!({"i": i}));
                event.indexed_data = Some([(String::new(), "x".to_string())].into());
                event
            } else {
                raw_event("acme", json!({"i": i}))
            }
        })
        .collect();
    let results = store
        .put_events(&events, Instant::now() + Duration::from_secs(6))
        .await;
    for (i, result) in results.iter().enumerate() {
        if i == 3 {
            assert!(matches!(result, Err(StoreError::Rejected(_))), "{result:?}");
        } else {
            assert!(result.is_ok(), "event {i}: {result:?}");
        }
    }
    let stored = env.events_by_tenant().await;
    assert_eq!(stored.get("acme").map(Vec::len), Some(24));
}

/// A key the tenant's own writer sent.
fn own_key(key: &str) -> IdempotencyKey {
    IdempotencyKey {
        key: key.to_string(),
        producer: None,
    }
}

/// Keyed events are written together, one transaction per group, yet each
/// is answered on its own: in a group the table cancels, the event whose
/// key was used is a duplicate, the one the table refuses is refused, and
/// every other is stored.
#[tokio::test]
async fn a_keyed_group_stores_every_event_but_the_duplicate_and_the_refused() {
    let env = TestEnv::start().await;
    let store = store_of(&env);
    let soon = || Instant::now() + Duration::from_secs(6);
    let original = raw_event("acme", json!({"first": true}));
    let first = store
        .put_events_once(&[(original.clone(), own_key("used-key"))], soon())
        .await;
    assert!(
        matches!(first.as_slice(), [Ok(IdempotentPut::Stored)]),
        "{first:?}"
    );
    let events: Vec<(Event, IdempotencyKey)> = (0..60)
        .map(|i| {
            let mut event = raw_event("acme", json!({"i": i}));
            if i == 3 {
                event.indexed_data = Some([(String::new(), "x".to_string())].into());
            }
            let key = if i == 40 {
                "used-key".to_string()
            } else {
                format!("key-{i}")
            };
            (event, own_key(&key))
        })
        .collect();
    let results = store.put_events_once(&events, soon()).await;
    assert_eq!(results.len(), 60);
    for (i, result) in results.iter().enumerate() {
        match i {
            3 => assert!(matches!(result, Err(StoreError::Rejected(_))), "{result:?}"),
            40 => assert!(
                matches!(result, Ok(IdempotentPut::Duplicate { cursor, .. }) if *cursor == original.cursor),
                "{result:?}"
            ),
            _ => assert!(
                matches!(result, Ok(IdempotentPut::Stored)),
                "event {i}: {result:?}"
            ),
        }
    }
    let stored = env.events_by_tenant().await;
    assert_eq!(stored.get("acme").map(Vec::len), Some(1 + 58));
}

/// Through the API: 60 keyed events, one the table refuses as a whole
/// request (DynamoDB's ValidationException, naming no item) and one whose
/// key was used, take a handful of transactions, not one per event.
#[tokio::test]
async fn a_keyed_batch_takes_a_few_transactions_and_isolates_what_fails() {
    let api = Api::with_faults(Faults {
        refuse_writes_containing: Some("unstorable-marker".into()),
        ..Default::default()
    })
    .await;
    let proxy = api.proxy();
    let token = api.token("acme");
    let used = json!({"eventType": "kind", "serviceName": "svc", "messageId": "m-used"});
    let (status, original) = json_of(api.post_json(&token, "/audit/events", &used).await).await;
    assert_eq!(status, 201, "{original}");
    let events: Vec<Value> = (0..60)
        .map(|i| match i {
            3 => json!({"eventType": "kind", "serviceName": "svc", "messageId": "m-3", "message": "unstorable-marker"}),
            40 => used.clone(),
            _ => json!({"eventType": "kind", "serviceName": "svc", "messageId": format!("m-{i}"), "data": {"i": i}}),
        })
        .collect();
    let requests_before = proxy
        .counters
        .requests
        .load(std::sync::atomic::Ordering::SeqCst);
    let (status, answer) = json_of(
        api.post_json(&token, "/audit/events", &json!({ "events": events }))
            .await,
    )
    .await;
    let requests = proxy
        .counters
        .requests
        .load(std::sync::atomic::Ordering::SeqCst)
        - requests_before;
    assert_eq!(status, 207, "{answer}");
    assert_eq!(answer["summary"]["stored"], 58, "{answer}");
    assert_eq!(answer["summary"]["duplicates"], 1, "{answer}");
    assert_eq!(answer["summary"]["refused"], 1, "{answer}");
    assert_eq!(answer["results"][3]["status"], "refused");
    assert_eq!(answer["results"][40]["status"], "duplicate");
    assert_eq!(answer["results"][40]["cursor"], original["cursor"]);
    // Two groups, the refused one halved down to its event: about 15
    // requests in all; one transaction per event would be over 60.
    assert!(requests < 30, "{requests} requests to the store");
    let stored = api.env.events_by_tenant().await;
    assert_eq!(stored.get("acme").map(Vec::len), Some(1 + 58));
}

/// One keyed event whose items another transaction holds (DynamoDB cancels
/// the group's transaction with `TransactionConflict` for that event's
/// items and `None` for the rest) does not hold its neighbours back: they
/// are stored at once, and only it is answered `failed` when the conflict
/// outlasts the write deadline.
#[tokio::test]
async fn a_contended_keyed_event_does_not_hold_back_its_group() {
    let api = Api::with_faults(Faults {
        conflict_transactions_containing: Some("m-contended".into()),
        ..Default::default()
    })
    .await;
    let token = api.token("acme");
    let events: Vec<Value> = (0..20)
        .map(|i| {
            let key = if i == 7 {
                "m-contended".to_string()
            } else {
                format!("m-{i}")
            };
            json!({"eventType": "kind", "serviceName": "svc", "messageId": key, "data": {"i": i}})
        })
        .collect();
    let (status, answer) = json_of(
        api.post_json(&token, "/audit/events", &json!({ "events": events }))
            .await,
    )
    .await;
    // Some events are to be retried: 503, each event answered on its own.
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["summary"]["stored"], 19, "{answer}");
    assert_eq!(answer["summary"]["failed"], 1, "{answer}");
    assert_eq!(answer["results"][7]["status"], "failed", "{answer}");
    let stored = api.env.events_by_tenant().await;
    assert_eq!(stored.get("acme").map(Vec::len), Some(19));
    // Once the conflict is over, the client's retry stores it.
    api.proxy().set(Faults::default());
    let (status, again) = json_of(
        api.post_json(
            &token,
            "/audit/events",
            &json!({ "events": [events[7].clone()] }),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["results"][0]["status"], "stored", "{again}");
    let stored = api.env.events_by_tenant().await;
    assert_eq!(stored.get("acme").map(Vec::len), Some(20));
}

/// A batch of 30 with one event the table refuses (a limit the validation
/// doesn't know, injected by the proxy as DynamoDB's ValidationException)
/// stores 29 and refuses 1; the refused one leaves no trace in metadata.
#[tokio::test]
async fn a_batch_of_30_with_one_unstorable_event_stores_29_and_refuses_1() {
    let api = Api::with_faults(Faults {
        refuse_writes_containing: Some("unstorable-marker".into()),
        ..Default::default()
    })
    .await;
    let token = api.token("acme");
    let events: Vec<Value> = (0..30)
        .map(|i| {
            if i == 3 {
                json!({"eventType": "kind", "serviceName": "never-stored", "message": "unstorable-marker"})
            } else {
                json!({"eventType": "kind", "serviceName": "svc", "data": {"i": i}})
            }
        })
        .collect();
    let (status, answer) = json_of(
        api.post_json(&token, "/audit/events", &json!({ "events": events }))
            .await,
    )
    .await;
    assert_eq!(status, 207, "{answer}");
    assert_eq!(answer["summary"]["stored"], 29, "{answer}");
    assert_eq!(answer["summary"]["refused"], 1, "{answer}");
    assert_eq!(answer["summary"]["failed"], 0, "{answer}");
    assert_eq!(answer["results"][3]["status"], "refused");
    assert_eq!(answer["results"][3]["error"]["field"], "events[3]");
    let stored = api.env.events_by_tenant().await;
    assert_eq!(stored.get("acme").map(Vec::len), Some(29));

    // The same event alone: 400, not 500, and nothing stored.
    let (status, body) = json_of(api.post_json(&token, "/audit/events", &events[3]).await).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "invalid_request");
    let (status, body) = json_of(
        api.post_json(
            &token,
            "/audit/events",
            &json!({"events": [events[3].clone(), events[3].clone()]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        api.env.events_by_tenant().await.get("acme").map(Vec::len),
        Some(29)
    );

    // Metadata names only what was stored.
    let (status, metadata) = json_of(api.get(&token, "/audit/metadata").await).await;
    assert_eq!(status, 200, "{metadata}");
    assert!(!metadata.to_string().contains("never-stored"), "{metadata}");
    assert!(metadata.to_string().contains("\"svc\""), "{metadata}");
}

/// Every DynamoDB limit an event can hit is refused by validation, alone,
/// with a 400 naming the field; its neighbours are stored exactly as sent.
#[tokio::test]
async fn every_limit_an_event_can_hit_is_refused_alone_naming_the_field() {
    let api = Api::start().await;
    let token = api.token("acme");
    let deepest = audit_core::event::MAX_DATA_DEPTH;
    let valid =
        |i: usize| format!(r#"{{"eventType":"ok","serviceName":"svc","data":{{"i":{i}}}}}"#);
    let long = |n: usize| "x".repeat(n);
    // (event JSON text, the field its refusal must name)
    let bad: Vec<(String, String)> = vec![
        (
            format!(
                r#"{{"eventType":"a","serviceName":"s","data":{{"deep":{}}}}}"#,
                nested(deepest)
            ),
            "data.deep".into(),
        ),
        (
            r#"{"eventType":"a","serviceName":"s","data":{"x":{"":1}}}"#.into(),
            r#"data.x[""]"#.into(),
        ),
        (
            format!(
                r#"{{"eventType":"a","serviceName":"s","userId":"{}"}}"#,
                "é".repeat(1024)
            ),
            "userId".into(),
        ),
        (
            format!(
                r#"{{"eventType":"a","serviceName":"s","traceId":"{}"}}"#,
                "€".repeat(700)
            ),
            "traceId".into(),
        ),
        (
            r#"{"eventType":"a","serviceName":"s","data":{"n":123456789012345678901234567890}}"#
                .into(),
            "data.n".into(),
        ),
        (
            r#"{"eventType":"a","serviceName":"s","data":{"n":1e200}}"#.into(),
            "data.n".into(),
        ),
        (
            r#"{"eventType":"a","serviceName":"s","eventType":"b"}"#.into(),
            "eventType".into(),
        ),
        (
            r#"{"eventType":"a","serviceName":"s","data":{"k8s.pod":1,"k8s.pod":2}}"#.into(),
            r#"data["k8s.pod"]"#.into(),
        ),
        (
            format!(
                r#"{{"eventType":"a","serviceName":"s","messageId":"{}"}}"#,
                long(257)
            ),
            "messageId".into(),
        ),
    ];
    let mut texts = Vec::new();
    for (i, (text, _)) in bad.iter().enumerate() {
        texts.push(valid(i));
        texts.push(text.clone());
    }
    let body = format!(r#"{{"events":[{}]}}"#, texts.join(","));
    let response = api
        .http
        .post(format!("{}/audit/events", api.base))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let (status, answer) = json_of(response).await;
    assert_eq!(status, 207, "{answer}");
    for (i, (_, field)) in bad.iter().enumerate() {
        let good = &answer["results"][2 * i];
        assert_eq!(good["status"], "stored", "{good}");
        let refused = &answer["results"][2 * i + 1];
        assert_eq!(refused["status"], "refused", "case {i}: {refused}");
        // The nesting refusal names the path down to where it goes too deep.
        let named = refused["error"]["field"].as_str().unwrap_or_default();
        let expected = format!("events[{}].{field}", 2 * i + 1).replace(".[", "[");
        assert!(named.starts_with(&expected), "case {i}: {refused}");
    }
    assert_eq!(
        api.env.events_by_tenant().await.get("acme").map(Vec::len),
        Some(bad.len())
    );

    // Alone, each is a 400 naming the field, and nothing is stored.
    for (text, field) in &bad {
        let response = api
            .http
            .post(format!("{}/audit/events", api.base))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(text.clone())
            .send()
            .await
            .expect("request");
        let (status, body) = json_of(response).await;
        assert_eq!(status, 400, "{text}: {body}");
        let named = body["error"]["field"].as_str().unwrap_or_default();
        assert!(named.starts_with(field.as_str()), "{body}");
    }
    assert_eq!(
        api.env.events_by_tenant().await.get("acme").map(Vec::len),
        Some(bad.len())
    );

    // Just inside the limits, events are stored and read back exactly.
    let inside = format!(
        r#"{{"eventType":"a","serviceName":"s","userId":"{}","data":{{"deep":{},"big":18446744073709551615,"neg":-9223372036854775808,"f":0.1}}}}"#,
        "😀".repeat(audit_core::event::MAX_PIVOT_CHARS),
        nested(deepest - 1)
    );
    let response = api
        .http
        .post(format!("{}/audit/events", api.base))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(inside.clone())
        .send()
        .await
        .expect("request");
    let (status, stored) = json_of(response).await;
    assert_eq!(status, 201, "{stored}");
    let cursor = stored["cursor"].as_str().unwrap_or_default();
    let text = api
        .get(&token, &format!("/audit/events/{cursor}"))
        .await
        .text()
        .await
        .unwrap_or_default();
    assert!(text.contains("\"big\":18446744073709551615"), "{text}");
    assert!(text.contains("\"neg\":-9223372036854775808"), "{text}");
    assert!(text.contains("\"f\":0.1"), "{text}");
}
