//! Ingest and cursor lookup through the local gateway, over the real SDK
//! against the embedded store (or DynamoDB Local when
//! AUDIT_TEST_DYNAMODB_ENDPOINT is set).

mod common;

use std::collections::{HashMap, HashSet};

use audit_core::event::{format_time, MAX_EVENT_BYTES};
use audit_core::Event;
use audit_dynamo::event_to_item;
use audit_infra::proxy::Faults;
use audit_infra::testkit::{EnvOptions, TestEnv};
use chrono::{Duration, Utc};
use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn an_event_is_stored_and_looked_up_whole() {
    let api = Api::start().await;
    let token = api.token("acme");
    let sent = json!({
        "eventType": "user.login", "serviceName": "idp", "userId": "u-1", "message": "signed in",
        "sandbox": false, "occurredAt": "2026-11-01T10:00:00+01:00",
        "indexedData": {"region": "eu"}, "data": {"nested": {"list": [1, 2.5, "x", null, true]}}
    });
    let (status, stored) = json_of(api.post_json(&token, "/audit/events", &sent).await).await;
    assert_eq!(status, 201, "{stored}");
    assert_eq!(stored["status"], "stored");
    let cursor = stored["cursor"].as_str().expect("cursor").to_string();
    assert_eq!(cursor.len(), 26);

    let (status, event) = json_of(api.get(&token, &format!("/audit/events/{cursor}")).await).await;
    assert_eq!(status, 200, "{event}");
    assert_eq!(event["cursor"], cursor.as_str());
    assert_eq!(event["accountId"], "acme");
    assert_eq!(event["timestamp"], stored["timestamp"]);
    assert_eq!(event["expiresAt"], stored["expiresAt"]);
    assert_eq!(event["occurredAt"], "2026-11-01T09:00:00.000Z");
    assert_eq!(event["data"], sent["data"]);
    assert_eq!(event["indexedData"], sent["indexedData"]);
    assert_eq!(event["sandbox"], false);
    // default retention: 90 days after the timestamp
    let timestamp =
        chrono::DateTime::parse_from_rfc3339(event["timestamp"].as_str().unwrap()).unwrap();
    let expires =
        chrono::DateTime::parse_from_rfc3339(event["expiresAt"].as_str().unwrap()).unwrap();
    assert_eq!(expires - timestamp, Duration::days(90));
    // lower-case cursors name the same event
    let (status, _) = json_of(
        api.get(&token, &format!("/audit/events/{}", cursor.to_lowercase()))
            .await,
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_batch_answers_per_item_and_stores_only_valid_events() {
    let api = Api::start().await;
    let token = api.token("acme");
    let body = json!({"events": [
        event("a"),
        {"eventType": "b"},
        {"eventType": "c", "serviceName": "s", "messageId": "m-1"},
        {"eventType": "c", "serviceName": "s", "messageId": "m-1"},
        {"eventType": "d", "serviceName": "s", "colour": "red"},
        {"eventType": "e", "serviceName": "s", "data": {"blob": "x".repeat(MAX_EVENT_BYTES)}},
    ]});
    let (status, answer) = json_of(api.post_json(&token, "/audit/events", &body).await).await;
    assert_eq!(status, 207, "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 6);
    assert_eq!(
        (
            results[5]["error"]["code"].as_str(),
            results[5]["error"]["field"].as_str()
        ),
        (Some("payload_too_large"), Some("events[5]")),
        "an oversize event is named by its field: {}",
        results[5]
    );
    assert_eq!(results[0]["status"], "stored");
    assert_eq!(results[1]["status"], "refused");
    assert_eq!(results[1]["error"]["field"], "events[1].serviceName");
    assert_eq!(results[2]["status"], "stored");
    assert_eq!(results[3]["status"], "duplicate");
    assert_eq!(results[3]["cursor"], results[2]["cursor"]);
    assert_eq!(results[4]["status"], "refused");
    assert!(results[4]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("colour"));
    assert_eq!(answer["summary"]["stored"], 2);
    // A batch of one names its event `events[0]` too: what the event is
    // called depends on the body's shape, not on how many it holds.
    for (event, field) in [
        (json!({"eventType": "b"}), "events[0].serviceName"),
        (
            json!({"eventType": "b", "serviceName": "s", "accountId": "other"}),
            "events[0].accountId",
        ),
        (
            json!({"eventType": "e", "serviceName": "s", "data": {"blob": "x".repeat(MAX_EVENT_BYTES)}}),
            "events[0]",
        ),
    ] {
        let (_, answer) = json_of(
            api.post_json(&token, "/audit/events", &json!({"events": [event]}))
                .await,
        )
        .await;
        assert_eq!(answer["results"][0]["error"]["field"], field, "{answer}");
    }
    let stored = api.env.events_by_tenant().await;
    let mut expected = vec![
        results[0]["cursor"].as_str().unwrap().to_string(),
        results[2]["cursor"].as_str().unwrap().to_string(),
    ];
    expected.sort();
    assert_eq!(stored.get("acme"), Some(&expected));

    // a full batch of valid events: 200, every one stored, cursors increasing
    let many: Vec<Value> = (0..120).map(|i| event(&format!("e{i}"))).collect();
    let (status, answer) = json_of(
        api.post_json(&token, "/audit/events", &json!({"events": many}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let cursors: Vec<&str> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cursor"].as_str().unwrap())
        .collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(api.env.events_by_tenant().await["acme"].len(), 122);
}

/// A string or key that JSON can carry but Unicode can't (half of a
/// surrogate pair) refuses the event it sits in, by its path; the batch's
/// other events are stored. (Before, the whole body was "not valid JSON".)
#[tokio::test]
async fn a_lone_surrogate_refuses_only_the_event_it_sits_in() {
    let api = Api::start().await;
    let token = api.token("acme");
    let body = r#"{"events":[
        {"eventType":"a","serviceName":"s"},
        {"eventType":"b","serviceName":"s","message":"\ud800"},
        {"eventType":"c","serviceName":"s","data":{"\udc00":1}},
        {"eventType":"d","serviceName":"s","message":"\ud83d\ude00"}
    ]}"#;
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
    let statuses: Vec<&str> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["stored", "refused", "refused", "stored"],
        "{answer}"
    );
    assert_eq!(answer["results"][1]["error"]["field"], "events[1].message");
    assert_eq!(answer["results"][2]["error"]["field"], "events[2].data");
    assert_eq!(api.env.events_by_tenant().await["acme"].len(), 2);
    let cursor = answer["results"][3]["cursor"].as_str().unwrap();
    let (_, event) = json_of(api.get(&token, &format!("/audit/events/{cursor}")).await).await;
    assert_eq!(event["message"], "\u{1F600}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_of_one_key_store_one_event() {
    let api = Api::start().await;
    let token = api.token("acme");
    let mut calls = Vec::new();
    for i in 0..24 {
        let http = api.http.clone();
        let url = format!("{}/audit/events", api.base);
        let token = token.clone();
        calls.push(tokio::spawn(async move {
            let mut request = http.post(url).bearer_auth(token);
            // half use the header, half the messageId: the same key either way
            let body = if i % 2 == 0 {
                request = request.header("Idempotency-Key", "order-77");
                json!({"eventType": "order.paid", "serviceName": "shop"})
            } else {
                json!({"eventType": "order.paid", "serviceName": "shop", "messageId": "order-77"})
            };
            json_of(request.json(&body).send().await.expect("send")).await
        }));
    }
    let mut cursors = HashSet::new();
    let mut stored = 0;
    for call in calls {
        let (status, body) = call.await.unwrap();
        assert!(status == 201 || status == 200, "{status} {body}");
        if body["status"] == "stored" {
            stored += 1;
        } else {
            assert_eq!(body["status"], "duplicate");
        }
        cursors.insert(body["cursor"].as_str().unwrap().to_string());
    }
    assert_eq!(stored, 1, "exactly one call stores");
    assert_eq!(cursors.len(), 1, "every call names the same cursor");
    let events = api.env.events_by_tenant().await;
    assert_eq!(events["acme"], cursors.into_iter().collect::<Vec<_>>());
    // the same key in another tenant is another event
    let (status, _) = json_of(
        api.post_json(
            &api.token("globex"),
            "/audit/events",
            &json!({"eventType": "order.paid", "serviceName": "shop", "messageId": "order-77"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201);
}

/// The header and the body name one key: a request where they could mean two
/// different keys is refused whole, and stores nothing.
#[tokio::test]
async fn the_idempotency_header_must_agree_with_the_body() {
    let api = Api::start().await;
    let token = api.token("acme");
    let url = format!("{}/audit/events", api.base);
    for (body, field) in [
        (
            json!({"eventType": "a", "serviceName": "s", "messageId": "m-2"}),
            "messageId",
        ),
        (
            json!({"events": [{"eventType": "a", "serviceName": "s"}]}),
            "Idempotency-Key",
        ),
    ] {
        let request = api
            .http
            .post(&url)
            .bearer_auth(&token)
            .header("Idempotency-Key", "m-1")
            .json(&body);
        let (status, answer) = json_of(request.send().await.expect("send")).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
    assert!(!api.env.events_by_tenant().await.contains_key("acme"));
    // agreeing header and body are one key
    let agreeing = api
        .http
        .post(&url)
        .bearer_auth(&token)
        .header("Idempotency-Key", "m-1")
        .json(&json!({"eventType": "a", "serviceName": "s", "messageId": "m-1"}));
    let (status, answer) = json_of(agreeing.send().await.expect("send")).await;
    assert_eq!(status, 201, "{answer}");
}

/// One header, one key: a header given twice (which API Gateway joins with a
/// comma), a comma, a space or a tab is refused, and stores nothing.
#[tokio::test]
async fn an_idempotency_header_is_one_visible_key() {
    let api = Api::start().await;
    let token = api.token("acme");
    let url = format!("{}/audit/events", api.base);
    let event = json!({"eventType": "a", "serviceName": "s"});
    let cases: [&[&str]; 5] = [&["k1", "k2"], &["k1,k2"], &["k1, k2"], &["a b"], &["a\tb"]];
    for values in cases {
        let mut request = api.http.post(&url).bearer_auth(&token).json(&event);
        for value in values {
            request = request.header("Idempotency-Key", *value);
        }
        let (status, answer) = json_of(request.send().await.expect("send")).await;
        assert_eq!(status, 400, "{values:?}: {answer}");
        assert_eq!(answer["error"]["field"], "Idempotency-Key", "{answer}");
    }
    assert!(!api.env.events_by_tenant().await.contains_key("acme"));
    let request = api.http.post(&url).bearer_auth(&token).json(&event);
    let request = request.header("Idempotency-Key", "k1");
    let (status, answer) = json_of(request.send().await.expect("send")).await;
    assert_eq!(status, 201, "{answer}");
}

#[tokio::test]
async fn a_platform_token_writes_for_any_tenant_a_tenant_token_only_for_its_own() {
    let api = Api::start().await;
    let platform = api.env.token("platform", "audit:write audit:platform");
    let (status, body) = json_of(
        api.post_json(
            &platform,
            "/audit/events",
            &json!({"eventType": "a", "serviceName": "b", "accountId": "globex"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let tenant = api.token("acme");
    let (status, body) = json_of(
        api.post_json(
            &tenant,
            "/audit/events",
            &json!({"eventType": "a", "serviceName": "b", "accountId": "globex"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(error_code(&body), "forbidden");
    assert_eq!(body["error"]["field"], "accountId", "{body}");
    // In a batch, the refused event's result names its field; the others are stored.
    let (status, body) = json_of(
        api.post_json(
            &tenant,
            "/audit/events",
            &json!({"events": [
                {"eventType": "a", "serviceName": "b"},
                {"eventType": "a", "serviceName": "b", "accountId": "globex"},
            ]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 207, "{body}");
    assert_eq!(body["results"][0]["status"], "stored", "{body}");
    let refused = &body["results"][1];
    assert_eq!(
        (
            refused["error"]["code"].as_str(),
            refused["error"]["field"].as_str()
        ),
        (Some("forbidden"), Some("events[1].accountId")),
        "{body}"
    );
    let (status, _) = json_of(
        api.post_json(
            &tenant,
            "/audit/events",
            &json!({"eventType": "a", "serviceName": "b", "accountId": "acme"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201);
    let events = api.env.events_by_tenant().await;
    assert_eq!(events["globex"].len(), 1);
    assert_eq!(events["acme"].len(), 2);
    // globex reads its event, acme can't see it
    let cursor = &events["globex"][0];
    let (status, _) = json_of(
        api.get(&api.token("globex"), &format!("/audit/events/{cursor}"))
            .await,
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = json_of(api.get(&tenant, &format!("/audit/events/{cursor}")).await).await;
    assert_eq!(status, 404);
    assert_eq!(error_code(&body), "not_found");
}

/// A platform producer's idempotency keys are its own in each tenant it
/// writes to: the tenant's own writer using the same key first neither
/// suppresses the platform's event nor is answered with it, and each
/// retry is answered with its own first event, in single and batch writes.
/// (The key was the tenant's alone, so a tenant writer that guessed a
/// platform `messageId` had the platform's event answered `duplicate`,
/// naming the tenant's event, and never stored.)
#[tokio::test]
async fn a_platform_producers_keys_are_its_own_in_the_tenant_it_writes_to() {
    let api = Api::start().await;
    let platform = api.env.token("platform", "audit:write audit:platform");
    let tenant = api.token("beta");
    let post = |token: String, body: Value| {
        let api = &api;
        async move { json_of(api.post_json(&token, "/audit/events", &body).await).await }
    };
    let tenants_event =
        json!({"eventType": "noop", "serviceName": "tenant-svc", "messageId": "plat-1"});
    let platforms_event = json!({"eventType": "admin.impersonation", "serviceName": "platform-support",
                                 "accountId": "beta", "messageId": "plat-1"});
    let (status, first) = post(tenant.clone(), tenants_event.clone()).await;
    assert_eq!(status, 201, "{first}");
    for round in 0..2 {
        let (status, body) = post(platform.clone(), platforms_event.clone()).await;
        let expected = if round == 0 {
            (201, "stored")
        } else {
            (200, "duplicate")
        };
        assert_eq!(
            (status, body["status"].as_str().unwrap_or_default()),
            (expected.0, expected.1),
            "{body}"
        );
        assert_ne!(
            body["cursor"], first["cursor"],
            "the platform's event is its own: {body}"
        );
        let (status, again) = post(tenant.clone(), tenants_event.clone()).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["cursor"], first["cursor"], "{again}");
    }
    // In a batch too, beside a key the tenant's writer never used.
    let (status, batch) = post(
        platform.clone(),
        json!({"events": [platforms_event, {"eventType": "a", "serviceName": "b", "accountId": "beta", "messageId": "plat-2"}]}),
    )
    .await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["results"][0]["status"], "duplicate", "{batch}");
    assert_eq!(batch["results"][1]["status"], "stored", "{batch}");
    let events = api.env.events_by_tenant().await;
    assert_eq!(
        events["beta"].len(),
        3,
        "the tenant's event and the platform's two"
    );
    assert!(
        !events.contains_key("platform"),
        "nothing in the producer's own tenant"
    );

    // A platform event written before keys were scoped to their producer
    // left its marker in the tenant's own partition, saying nothing of who
    // wrote it: a retry within a day is still answered by it, not stored
    // again. (Such a marker is made here by moving a new one there and
    // taking off what marks it new.) Once its event has expired, or the
    // marker is older than a retry comes (it may be the tenant's own key),
    // the key is free.
    use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
    let table = &api.env.config.table_name;
    for (key, stale) in [
        ("legacy-1", None),
        ("legacy-2", Some("expiresAt")),
        ("legacy-3", Some("timestamp")),
    ] {
        let event =
            json!({"eventType": "a", "serviceName": "b", "accountId": "beta", "messageId": key});
        let (status, original) = post(platform.clone(), event.clone()).await;
        assert_eq!(status, 201, "{original}");
        let marker_key = HashMap::from([
            (
                "accountId".to_string(),
                AttributeValue::S("idem#beta/platform".into()),
            ),
            ("cursor".to_string(), AttributeValue::S(key.to_string())),
        ]);
        let mut legacy = api
            .env
            .direct
            .delete_item()
            .table_name(table)
            .set_key(Some(marker_key))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .expect("the new marker")
            .attributes
            .expect("it was there");
        legacy.remove("scoped").expect("a new marker is marked so");
        legacy.insert("accountId".into(), AttributeValue::S("idem#beta".into()));
        match stale {
            Some("expiresAt") => {
                let past = format_time(Utc::now() - Duration::seconds(1));
                legacy.insert("expiresAt".into(), AttributeValue::S(past));
            }
            Some(_) => {
                let past = format_time(Utc::now() - Duration::days(2));
                legacy.insert("timestamp".into(), AttributeValue::S(past));
            }
            None => {}
        }
        api.env
            .direct
            .put_item()
            .table_name(table)
            .set_item(Some(legacy))
            .send()
            .await
            .expect("put");
        let (status, retried) = post(platform.clone(), event).await;
        let answered = (status, retried["status"].as_str());
        if stale.is_some() {
            assert_eq!(answered, (201, Some("stored")), "{stale:?}: {retried}");
            assert_ne!(retried["cursor"], original["cursor"], "{retried}");
        } else {
            assert_eq!(answered, (200, Some("duplicate")), "{retried}");
            assert_eq!(retried["cursor"], original["cursor"], "{retried}");
        }
    }
}

#[tokio::test]
async fn bad_input_gets_a_json_error_and_changes_nothing() {
    let api = Api::start().await;
    let token = api.token("acme");
    let url = format!("{}/audit/events", api.base);
    let huge_event = json!({"eventType": "a", "serviceName": "b", "data": {"blob": "x".repeat(MAX_EVENT_BYTES)}});
    let big_batch: Vec<Value> = (0..100).map(|_| json!({"eventType": "a", "serviceName": "b", "data": {"blob": "y".repeat(63 * 1024)}})).collect();
    let too_many: Vec<Value> = (0..1001).map(|_| event("a")).collect();
    type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, u16, &'a str);
    let raw_cases: Vec<Case> = vec![
        (
            "malformed JSON",
            Some("application/json"),
            b"{\"eventType\": ".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "wrong content type",
            Some("text/plain"),
            br#"{"eventType":"a","serviceName":"b"}"#.to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "no content type",
            None,
            br#"{"eventType":"a","serviceName":"b"}"#.to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "empty body",
            Some("application/json"),
            Vec::new(),
            400,
            "invalid_request",
        ),
        (
            "array body",
            Some("application/json"),
            b"[1,2]".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "missing required",
            Some("application/json"),
            br#"{"serviceName":"b"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "wrong type",
            Some("application/json"),
            br#"{"eventType":7,"serviceName":"b"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "wrong type of optional",
            Some("application/json"),
            br#"{"eventType":"a","serviceName":"b","userId":{"x":1}}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "unknown field",
            Some("application/json"),
            br#"{"eventType":"a","serviceName":"b","severity":"high"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "assigned field",
            Some("application/json"),
            br#"{"eventType":"a","serviceName":"b","cursor":"01ARZ3NDEKTSV4RRFFQ69G5FAV"}"#
                .to_vec(),
            400,
            "invalid_request",
        ),
        (
            "oversize event",
            Some("application/json"),
            serde_json::to_vec(&huge_event).unwrap(),
            413,
            "payload_too_large",
        ),
        (
            "oversize batch",
            Some("application/json"),
            serde_json::to_vec(&json!({"events": big_batch})).unwrap(),
            413,
            "payload_too_large",
        ),
        (
            "1001 events",
            Some("application/json"),
            serde_json::to_vec(&json!({"events": too_many})).unwrap(),
            413,
            "payload_too_large",
        ),
        (
            "events not an array",
            Some("application/json"),
            br#"{"events":{"eventType":"a"}}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "batch of bad events",
            Some("application/json"),
            br#"{"events":[{"eventType":"a"},{"serviceName":"b"}]}"#.to_vec(),
            400,
            "invalid_request",
        ),
    ];
    for (name, content_type, body, want_status, want_code) in raw_cases {
        let mut request = api.http.post(&url).bearer_auth(&token).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let (status, answer) = json_of(request.send().await.unwrap()).await;
        assert_eq!(status, want_status, "{name}: {answer}");
        assert_eq!(error_code(&answer), want_code, "{name}: {answer}");
    }
    // A compressed body is refused for its coding, on every route with a
    // body (it read as "not valid JSON" at line 1, column 1).
    let admin = api.env.token("acme", "audit:read audit:write audit:admin");
    for path in ["/audit/events", "/audit/query", "/audit/settings"] {
        for coding in ["gzip", "br", "identity, deflate", "x-custom"] {
            let request = if path == "/audit/settings" {
                api.http.put(format!("{}{path}", api.base))
            } else {
                api.http.post(format!("{}{path}", api.base))
            };
            let (status, answer) = json_of(
                request
                    .bearer_auth(&admin)
                    .header("content-type", "application/json")
                    .header("content-encoding", coding)
                    .body(b"\x1f\x8b\x08\x00".to_vec())
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(status, 415, "{path} {coding}: {answer}");
            assert_eq!(error_code(&answer), "unsupported_media_type");
            assert!(
                answer["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("Content-Encoding"),
                "{answer}"
            );
        }
    }
    // A repeated `Content-Type` (joined with a comma, as API Gateway joins
    // it) is named for what it is, not taken for a wrong media type.
    for path in ["/audit/events", "/audit/query", "/audit/settings"] {
        let request = if path == "/audit/settings" {
            api.http.put(format!("{}{path}", api.base))
        } else {
            api.http.post(format!("{}{path}", api.base))
        };
        let (status, answer) = json_of(
            request
                .bearer_auth(&admin)
                .header("content-type", "application/json")
                .header("content-type", "application/json")
                .body(r#"{"retentionDays": 30}"#)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 415, "{path}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("more than once"), "{path}: {answer}");
    }
    // the unknown field is named, and so is the missing one
    let (_, answer) = json_of(
        api.post_json(
            &token,
            "/audit/events",
            &json!({"eventType": "a", "serviceName": "b", "severity": 1}),
        )
        .await,
    )
    .await;
    assert_eq!(answer["error"]["field"], "severity");
    assert!(
        api.env.all_items().await.is_empty(),
        "bad input stored something"
    );

    // auth failures
    let other_secret = audit_infra::devauth::DevAuth::with_secret("not-the-secret").mint(
        "acme",
        RW,
        std::time::Duration::from_secs(60),
    );
    let expired = api.env.auth.mint_claims(json!({"tenant_id": "acme", "scope": RW, "iss": api.env.auth.issuer, "aud": api.env.auth.audience, "exp": Utc::now().timestamp() - 5}));
    let no_tenant = api.env.auth.mint_claims(json!({"scope": RW, "iss": api.env.auth.issuer, "aud": api.env.auth.audience, "exp": Utc::now().timestamp() + 60}));
    for (name, token, want) in [
        ("wrongly signed", other_secret.as_str(), 401),
        ("expired", expired.as_str(), 401),
        ("no tenant claim", no_tenant.as_str(), 401),
        ("garbage", "not.a.token", 401),
    ] {
        let (status, answer) =
            json_of(api.post_json(token, "/audit/events", &event("a")).await).await;
        assert_eq!(status, want, "{name}: {answer}");
        assert_eq!(error_code(&answer), "unauthorized");
    }
    let (status, answer) =
        json_of(api.http.post(&url).json(&event("a")).send().await.unwrap()).await;
    assert_eq!(
        (status, error_code(&answer).as_str()),
        (401, "unauthorized")
    );
    let read_only = api.env.token("acme", "audit:read");
    let (status, answer) = json_of(
        api.post_json(&read_only, "/audit/events", &event("a"))
            .await,
    )
    .await;
    assert_eq!((status, error_code(&answer).as_str()), (403, "forbidden"));
    let write_only = api.env.token("acme", "audit:write");
    let (status, answer) = json_of(
        api.get(&write_only, "/audit/events/01ARZ3NDEKTSV4RRFFQ69G5FAV")
            .await,
    )
    .await;
    assert_eq!((status, error_code(&answer).as_str()), (403, "forbidden"));
    assert!(
        api.env.all_items().await.is_empty(),
        "a refused request stored something"
    );

    // cursors
    for bad in [
        "nope",
        "01ARZ3NDEKTSV4RRFFQ69G5FA!",
        "81ARZ3NDEKTSV4RRFFQ69G5FAV",
        "01ARZ3NDEKTSV4RRFFQ69G5FAVX",
    ] {
        let (status, answer) =
            json_of(api.get(&token, &format!("/audit/events/{bad}")).await).await;
        assert_eq!(
            (status, error_code(&answer).as_str()),
            (400, "invalid_request"),
            "{bad}"
        );
        assert_eq!(answer["error"]["field"], "cursor", "{bad}: {answer}");
    }
    let (status, answer) = json_of(
        api.get(&token, "/audit/events/01ARZ3NDEKTSV4RRFFQ69G5FAV")
            .await,
    )
    .await;
    assert_eq!((status, error_code(&answer).as_str()), (404, "not_found"));
    // `identity` is no coding at all.
    let (status, answer) = json_of(
        api.http
            .post(&url)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .header("content-encoding", "identity")
            .body(br#"{"eventType":"a","serviceName":"b"}"#.to_vec())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
}

#[tokio::test]
async fn an_expired_event_not_yet_removed_is_not_found() {
    let api = Api::start().await;
    let past = Utc::now() - Duration::days(2);
    let event = Event {
        cursor: ulid::Ulid::from_datetime(past.into()).to_string(),
        account_id: "acme".into(),
        timestamp: format_time(past - Duration::days(90)),
        expires_at: format_time(past),
        ..serde_json::from_value(json!({"cursor":"", "accountId":"", "timestamp":"", "expiresAt":"", "serviceName":"s", "eventType":"t"})).unwrap()
    };
    api.env
        .direct
        .put_item()
        .table_name(&api.env.config.table_name)
        .set_item(Some(event_to_item(&event).unwrap()))
        .send()
        .await
        .unwrap();
    let (status, answer) = json_of(
        api.get(
            &api.token("acme"),
            &format!("/audit/events/{}", event.cursor),
        )
        .await,
    )
    .await;
    assert_eq!((status, error_code(&answer).as_str()), (404, "not_found"));
}

/// Throttling between the SDK and the store never loses an acknowledged
/// event: what the API calls stored is in the table, what it calls failed is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn throttling_never_loses_an_acknowledged_event() {
    let env = TestEnv::start_with(EnvOptions {
        with_proxy: true,
        write_deadline: Some(std::time::Duration::from_millis(2500)),
        ..Default::default()
    })
    .await;
    let api = Api::from_env(env).await;
    let proxy = api.env.proxy.as_ref().unwrap();
    let token = api.token("acme");
    let batch =
        |n: usize| json!({"events": (0..n).map(|i| event(&format!("t{i}"))).collect::<Vec<_>>()});

    // 1. DynamoDB hands back half of every batch as unprocessed: retries store all.
    proxy.set(Faults {
        batch_keep_share: Some(0.5),
        ..Default::default()
    });
    let (status, answer) = json_of(api.post_json(&token, "/audit/events", &batch(100)).await).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["summary"]["stored"], 100);
    assert!(
        proxy
            .counters
            .items_returned_unprocessed
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 50
    );

    // 2. Every write throttled: 503 + Retry-After, every item failed, nothing stored.
    proxy.set(Faults {
        throttle_writes: true,
        ..Default::default()
    });
    let response = api.post_json(&token, "/audit/events", &batch(30)).await;
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string()),
        Some("1".into())
    );
    let (status, answer) = json_of(response).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["summary"]["failed"], 30);
    let response = api
        .post_json(&token, "/audit/events", &event("single"))
        .await;
    assert!(response.headers().contains_key("retry-after"));
    let (status, answer) = json_of(response).await;
    assert_eq!((status, error_code(&answer).as_str()), (503, "unavailable"));

    // 3. Nothing ever processed beyond the first half of the first attempt,
    //    and the deadline passes: a partial answer that says exactly what landed.
    proxy.set(Faults {
        batch_keep_share: Some(0.0),
        ..Default::default()
    });
    let (status, answer) = json_of(api.post_json(&token, "/audit/events", &batch(60)).await).await;
    assert_eq!(status, 503, "{answer}");
    proxy.set(Faults::default());

    // Count what is in the table against what was acknowledged.
    let in_table: HashSet<String> = api
        .env
        .events_by_tenant()
        .await
        .remove("acme")
        .unwrap_or_default()
        .into_iter()
        .collect();
    assert_eq!(in_table.len(), 100, "only the first batch was acknowledged");
    let (_, again) = json_of(api.post_json(&token, "/audit/events", &batch(5)).await).await;
    let acknowledged: Vec<String> = again["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cursor"].as_str().unwrap().to_string())
        .collect();
    let in_table: HashSet<String> = api
        .env
        .events_by_tenant()
        .await
        .remove("acme")
        .unwrap_or_default()
        .into_iter()
        .collect();
    assert!(acknowledged.iter().all(|c| in_table.contains(c)));
    assert_eq!(in_table.len(), 105);
}

/// A partly throttled table: some items of a batch land, some don't, and the
/// per-item answer matches the table exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partly_throttled_batch_reports_exactly_what_landed() {
    let env = TestEnv::start_with(EnvOptions {
        with_proxy: true,
        write_deadline: Some(std::time::Duration::from_millis(60)),
        ..Default::default()
    })
    .await;
    let api = Api::from_env(env).await;
    let proxy = api.env.proxy.as_ref().unwrap();
    let token = api.token("acme");
    proxy.set(Faults {
        batch_keep_share: Some(0.4),
        ..Default::default()
    });
    let body = json!({"events": (0..200).map(|i| event(&format!("p{i}"))).collect::<Vec<_>>()});
    let (status, answer) = json_of(api.post_json(&token, "/audit/events", &body).await).await;
    let results = answer["results"].as_array().unwrap();
    let stored: HashSet<String> = results
        .iter()
        .filter(|r| r["status"] == "stored")
        .map(|r| r["cursor"].as_str().unwrap().to_string())
        .collect();
    let failed = results.iter().filter(|r| r["status"] == "failed").count();
    assert_eq!(stored.len() + failed, 200);
    assert!(!stored.is_empty());
    assert_eq!(status, if failed > 0 { 503 } else { 200 });
    let in_table: HashSet<String> = api
        .env
        .events_by_tenant()
        .await
        .remove("acme")
        .unwrap_or_default()
        .into_iter()
        .collect();
    assert_eq!(
        in_table, stored,
        "the table holds exactly the acknowledged events"
    );
}

/// A batch whose write fails outright (a 500 on every attempt the SDK makes,
/// or a timeout) is tried again while the write deadline allows, so a
/// passing fault fails no event of a batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_write_that_fails_outright_is_retried_within_the_deadline() {
    let env = TestEnv::start_with(EnvOptions {
        with_proxy: true,
        write_deadline: Some(std::time::Duration::from_secs(20)),
        ..Default::default()
    })
    .await;
    let api = Api::from_env(env).await;
    let proxy = api.env.proxy.as_ref().unwrap();
    let token = api.token("acme");
    // The tenant's sealing mark is written by this first request, so the
    // failures below all fall on the batch.
    let (status, answer) = json_of(
        api.post_json(&token, "/audit/events", &json!({"events": [event("warm")]}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{answer}");

    // The SDK makes 4 attempts per call; all of them fail.
    proxy.fail_next_writes(4);
    let body = json!({"events": (0..20).map(|i| event(&format!("f{i}"))).collect::<Vec<_>>()});
    let (status, answer) = json_of(api.post_json(&token, "/audit/events", &body).await).await;
    assert_eq!(
        proxy
            .counters
            .failed_requests
            .load(std::sync::atomic::Ordering::Relaxed),
        4,
        "every injected failure was met"
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["summary"]["stored"], 20);
    let in_table = api
        .env
        .events_by_tenant()
        .await
        .remove("acme")
        .unwrap_or_default();
    assert_eq!(in_table.len(), 21);
}

/// DynamoDB can apply a write and lose its answer; the SDK then sends it
/// again. On every write path the event is reported stored, and stored once:
/// the single event's conditional put finds its own first attempt, not a
/// collision; the keyed transaction is made idempotent by the SDK's
/// `ClientRequestToken`, which this holds to.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_whose_answer_was_lost_is_reported_stored_once() {
    let env = TestEnv::start_with(EnvOptions {
        with_proxy: true,
        write_deadline: Some(std::time::Duration::from_secs(20)),
        ..Default::default()
    })
    .await;
    let api = Api::from_env(env).await;
    let proxy = api.env.proxy.as_ref().unwrap();
    let token = api.token("acme");
    let (status, _) = json_of(api.post_json(&token, "/audit/events", &event("warm")).await).await;
    assert_eq!(status, 201);

    let mut keyed = event("keyed");
    keyed["messageId"] = json!("lost-answer-1");
    let cases = [
        ("single", event("single"), 1),
        ("keyed", keyed, 1),
        (
            "batch",
            json!({"events": (0..5).map(|i| event(&format!("b{i}"))).collect::<Vec<_>>()}),
            5,
        ),
    ];
    let mut expected = 1;
    for (name, body, count) in cases {
        let lost_before = proxy
            .counters
            .failed_requests
            .load(std::sync::atomic::Ordering::Relaxed);
        proxy.lose_next_write_answers(1);
        let (status, answer) = json_of(api.post_json(&token, "/audit/events", &body).await).await;
        assert_eq!(
            proxy
                .counters
                .failed_requests
                .load(std::sync::atomic::Ordering::Relaxed),
            lost_before + 1,
            "{name}: an answer was lost"
        );
        assert!(status == 200 || status == 201, "{name}: {status} {answer}");
        let statuses: Vec<&str> = match answer["results"].as_array() {
            Some(results) => results
                .iter()
                .filter_map(|r| r["status"].as_str())
                .collect(),
            None => vec![if answer["cursor"].is_string() {
                "stored"
            } else {
                "?"
            }],
        };
        assert_eq!(statuses, vec!["stored"; count], "{name}: {answer}");
        expected += count;
        let in_table = api
            .env
            .events_by_tenant()
            .await
            .remove("acme")
            .unwrap_or_default();
        assert_eq!(in_table.len(), expected, "{name}: stored once");
    }
}

/// A tenant beyond its partitions' throughput (each key held to a few write
/// units per second, as DynamoDB holds each to about 1000) is slowed, never
/// lossy: every event acknowledged is in the table, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_past_its_partition_ceiling_loses_nothing_acknowledged() {
    let env = TestEnv::start_with(EnvOptions {
        with_proxy: true,
        write_deadline: Some(std::time::Duration::from_secs(2)),
        ..Default::default()
    })
    .await;
    let api = Api::from_env(env).await;
    let proxy = api.env.proxy.as_ref().unwrap();
    let token = api.token("acme");
    proxy.set(Faults {
        units_per_key_per_second: Some(40.0),
        ..Default::default()
    });
    let sends = (0..4).map(|w| {
        let body =
            json!({"events": (0..50).map(|i| event(&format!("w{w}-{i}"))).collect::<Vec<_>>()});
        let (api, token) = (&api, &token);
        async move { json_of(api.post_json(token, "/audit/events", &body).await).await }
    });
    let answers = futures::future::join_all(sends).await;
    proxy.set(Faults::default());
    let mut acknowledged = HashSet::new();
    let mut failed = 0;
    for (status, answer) in &answers {
        assert!(*status == 200 || *status == 503, "{status} {answer}");
        for result in answer["results"].as_array().unwrap() {
            match result["status"].as_str() {
                Some("stored") => {
                    assert!(acknowledged.insert(result["cursor"].as_str().unwrap().to_string()))
                }
                Some("failed") => failed += 1,
                other => panic!("unexpected {other:?}: {answer}"),
            }
        }
    }
    assert_eq!(acknowledged.len() + failed, 200);
    assert!(
        proxy
            .counters
            .items_throttled_per_key
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "the limit was reached"
    );
    let in_table: Vec<String> = api
        .env
        .events_by_tenant()
        .await
        .remove("acme")
        .unwrap_or_default();
    let in_table_set: HashSet<&String> = in_table.iter().collect();
    assert_eq!(in_table.len(), in_table_set.len(), "no event twice");
    for cursor in &acknowledged {
        assert!(
            in_table_set.contains(cursor),
            "acknowledged {cursor} is stored"
        );
    }
}

/// The settle horizon rests on one bound: no attempt to write an event
/// starts later than the write deadline plus one attempt after its cursor
/// was assigned, and none is waited for beyond that. (An attempt already in
/// flight may still commit a little later; the horizon's 2 s margin covers
/// that, and the proxy's hold here is longer than an attempt.) Writes slower
/// than an attempt make the SDK retry on its own; those retries must stop at
/// that bound even when the operation timeout is far longer, on every write
/// path (single, keyed, batch).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_write_attempt_starts_later_than_the_deadline_plus_one_attempt() {
    fn timing(config: &mut audit_core::Config) {
        config.write_deadline = std::time::Duration::from_millis(600);
        config.attempt_timeout = std::time::Duration::from_millis(500);
        config.operation_timeout = std::time::Duration::from_secs(20);
    }
    let env = TestEnv::start_with(EnvOptions {
        with_proxy: true,
        configure: Some(timing),
        ..Default::default()
    })
    .await;
    let api = Api::from_env(env).await;
    let proxy = api.env.proxy.as_ref().unwrap();
    let token = api.token("acme");
    // Most attempts (nine in ten) outlast the attempt timeout.
    proxy.set(Faults {
        write_delay_ms: Some((450, 950)),
        ..Default::default()
    });
    let mut keyed = event("keyed");
    keyed["messageId"] = json!("bound-1");
    let bodies = [
        event("single-1"),
        event("single-2"),
        keyed,
        json!({"events": (0..10).map(|i| event(&format!("b{i}"))).collect::<Vec<_>>()}),
        json!({"events": (0..10).map(|i| event(&format!("c{i}"))).collect::<Vec<_>>()}),
    ];
    let sends = bodies.iter().map(|body| {
        let (api, token) = (&api, &token);
        async move { api.post_json(token, "/audit/events", body).await.status() }
    });
    futures::future::join_all(sends).await;
    // Retries the SDK still had pending would arrive now.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    proxy.set(Faults::default());
    let attempts = proxy.counters.attempts.lock().unwrap().clone();
    assert!(!attempts.is_empty(), "something was sent");
    // Retries happened (most attempts outlast their timeout), so
    // the bound below is tested, not vacuous.
    let mut per_cursor: HashMap<&str, usize> = HashMap::new();
    for (_, cursor) in &attempts {
        *per_cursor.entry(cursor.as_str()).or_default() += 1;
    }
    assert!(
        per_cursor.values().any(|n| *n >= 2),
        "no attempt was retried"
    );
    // Deadline + one attempt, and a second for scheduling on a loaded
    // machine: a store that left the SDK's retries unbounded would go on
    // for its 20 s operation timeout.
    let bound_ms = 600 + 500 + 1000;
    for (arrived_at, cursor) in &attempts {
        let assigned = ulid::Ulid::from_string(cursor).unwrap().timestamp_ms() as i64;
        assert!(
            arrived_at - assigned <= bound_ms,
            "an attempt to write {cursor} started {} ms after its cursor was assigned (bound {bound_ms} ms)",
            arrived_at - assigned
        );
    }
}

/// A key is free the moment its event expires, to the millisecond readers
/// stop seeing the event at: the marker counts as gone by its `expiresAt`,
/// not by its TTL in whole seconds (a retry in that last second was
/// answered `duplicate` of an event no one could read any more).
#[tokio::test]
async fn a_key_is_free_the_moment_its_event_expires() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let api = Api::start().await;
    let token = api.token("acme");
    // What an event stored under "lapsed" leaves once it has just expired:
    // its marker, `expiresAt` a millisecond ago, its TTL not reached.
    let expired_at = Utc::now() - Duration::milliseconds(1);
    let gone = ulid::Ulid::new().to_string();
    let marker = std::collections::HashMap::from([
        (
            audit_dynamo::table::PARTITION_KEY.to_string(),
            AttributeValue::S(format!("{}acme", audit_dynamo::table::IDEMPOTENCY_PREFIX)),
        ),
        (
            audit_dynamo::table::SORT_KEY.to_string(),
            AttributeValue::S("lapsed".into()),
        ),
        ("target".to_string(), AttributeValue::S(gone.clone())),
        (
            "timestamp".to_string(),
            AttributeValue::S(format_time(expired_at - Duration::days(90))),
        ),
        (
            "expiresAt".to_string(),
            AttributeValue::S(format_time(expired_at)),
        ),
        (
            audit_dynamo::table::TTL_ATTRIBUTE.to_string(),
            AttributeValue::N((Utc::now().timestamp() + 60).to_string()),
        ),
    ]);
    api.env
        .direct
        .put_item()
        .table_name(&api.env.config.table_name)
        .set_item(Some(marker))
        .send()
        .await
        .unwrap();
    let mut keyed = event("again");
    keyed["messageId"] = json!("lapsed");
    let (status, answer) = json_of(api.post_json(&token, "/audit/events", &keyed).await).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["status"], "stored", "{answer}");
    assert_ne!(answer["cursor"], gone.as_str());
    // And a key whose event has not expired is still a duplicate.
    let (status, again) = json_of(api.post_json(&token, "/audit/events", &keyed).await).await;
    assert_eq!(
        (status, again["status"].as_str()),
        (200, Some("duplicate")),
        "{again}"
    );
    assert_eq!(again["cursor"], answer["cursor"]);
}
