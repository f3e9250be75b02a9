//! Every stored event reaches subscribers exactly once through the local
//! relay (the real DynamoDB Streams API → the `stream` handler → HTTP).

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use audit_core::event::format_time;
use audit_core::Event;
use audit_dynamo::event_to_item;
use audit_infra::relay::Subscriber;
use audit_infra::testkit::{TestEnv, TestSubscriber};
use chrono::Utc;
use common::*;
use serde_json::json;

async fn wait_for(subscriber: &TestSubscriber, count: usize) {
    let started = Instant::now();
    while subscriber.accepted_cursors().len() < count && started.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every one of `cursors` is delivered. Written last, they
/// follow in the stream every record written before them, so what the
/// relay would do with those (deliver one again, forward what it should
/// not) is done by then: no fixed sleep to outwait a slow relay.
async fn wait_for_sentinels(subscriber: &TestSubscriber, cursors: &[String]) {
    let started = Instant::now();
    while !cursors
        .iter()
        .all(|c| subscriber.accepted_cursors().contains(c))
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the sentinels {cursors:?} were not delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn counts(cursors: Vec<String>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for cursor in cursors {
        *counts.entry(cursor).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stored_event_arrives_exactly_once_and_nothing_else() {
    let api = Api::streaming(None).await;
    let subscriber = TestSubscriber::start(None).await;
    api.env
        .start_relay(vec![Subscriber::Http(subscriber.url.clone())])
        .await;
    let token = api.token("acme");
    let batch = json!({"events": (0..40).map(|i| json!({"eventType": "bulk", "serviceName": "s", "messageId": format!("m{}", i % 30), "data": {"i": i}})).collect::<Vec<_>>()});
    let (status, _) = json_of(api.post_json(&token, "/audit/events", &batch).await).await;
    assert_eq!(status, 200);
    for i in 0..5 {
        json_of(
            api.post_json(
                &api.token("globex"),
                "/audit/events",
                &event(&format!("single{i}")),
            )
            .await,
        )
        .await;
    }
    let put = |body| {
        let (http, url, token) = (
            api.http.clone(),
            format!("{}/audit/settings", api.base),
            api.env.token("acme", "audit:admin"),
        );
        async move {
            http.put(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(put(json!({"retentionDays": 30})).await, 200);

    let stored: HashSet<String> = api
        .env
        .events_by_tenant()
        .await
        .into_values()
        .flatten()
        .collect();
    assert_eq!(
        stored.len(),
        30 + 5 + 1,
        "30 distinct messageIds, 5 singles, the settings change"
    );
    wait_for(&subscriber, stored.len()).await;
    // One more event in each tenant's partition: once both arrive,
    // anything extra would have arrived before them.
    let mut sentinels = Vec::new();
    for tenant in ["acme", "globex"] {
        let (status, answer) = json_of(
            api.post_json(&api.token(tenant), "/audit/events", &event("sentinel"))
                .await,
        )
        .await;
        assert_eq!(status, 201, "{answer}");
        sentinels.push(answer["cursor"].as_str().unwrap().to_string());
    }
    wait_for_sentinels(&subscriber, &sentinels).await;
    let delivered: HashMap<String, usize> = counts(subscriber.accepted_cursors())
        .into_iter()
        .filter(|(cursor, _)| !sentinels.contains(cursor))
        .collect();
    assert_eq!(
        delivered.keys().cloned().collect::<HashSet<_>>(),
        stored,
        "markers, settings and metadata items are not forwarded"
    );
    assert!(delivered.values().all(|n| *n == 1), "exactly once");

    // the detail is the event as the API returns it
    let envelope = subscriber.accepted.lock().unwrap()[0].clone();
    assert_eq!(envelope["detail-type"], "AuditEvent");
    assert_eq!(envelope["source"], "audit-trail.local");
    let cursor = envelope["detail"]["cursor"].as_str().unwrap();
    let tenant = envelope["detail"]["accountId"].as_str().unwrap();
    let (_, looked_up) = json_of(
        api.get(&api.token(tenant), &format!("/audit/events/{cursor}"))
            .await,
    )
    .await;
    assert_eq!(envelope["detail"], looked_up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_removed_by_ttl_is_not_forwarded() {
    let env = TestEnv::start().await;
    if env.embedded.is_none() {
        // sweep_ttl is the embedded store's; DynamoDB Local has no TTL
        // sweeper to drive.
        eprintln!("skipped on DynamoDB Local: no TTL sweeper to drive");
        return;
    }
    let subscriber = TestSubscriber::start(None).await;
    env.start_relay(vec![Subscriber::Http(subscriber.url.clone())])
        .await;
    let past = Utc::now() - chrono::Duration::hours(1);
    let expired: Event = serde_json::from_value(json!({
        "cursor": ulid::Ulid::new().to_string(), "accountId": "acme", "timestamp": format_time(past - chrono::Duration::days(90)),
        "expiresAt": format_time(past), "serviceName": "s", "eventType": "expiring"
    }))
    .unwrap();
    env.direct
        .put_item()
        .table_name(&env.config.table_name)
        .set_item(Some(event_to_item(&expired).unwrap()))
        .send()
        .await
        .unwrap();
    wait_for(&subscriber, 1).await;
    assert_eq!(
        subscriber.accepted_cursors(),
        vec![expired.cursor.clone()],
        "its insert is delivered once"
    );
    let removed = env.embedded.as_ref().unwrap().database.sweep_ttl().unwrap();
    assert_eq!(removed, 1, "TTL removed the item");
    assert!(env.events_by_tenant().await.is_empty());
    // An event written after the removal arrives after whatever the relay
    // makes of it.
    let sentinel: Event = serde_json::from_value(json!({
        "cursor": ulid::Ulid::new().to_string(), "accountId": "acme", "timestamp": format_time(Utc::now()),
        "expiresAt": format_time(Utc::now() + chrono::Duration::days(90)), "serviceName": "s", "eventType": "sentinel"
    }))
    .unwrap();
    env.direct
        .put_item()
        .table_name(&env.config.table_name)
        .set_item(Some(event_to_item(&sentinel).unwrap()))
        .send()
        .await
        .unwrap();
    wait_for_sentinels(&subscriber, std::slice::from_ref(&sentinel.cursor)).await;
    assert_eq!(
        subscriber.accepted_cursors(),
        vec![expired.cursor.clone(), sentinel.cursor.clone()],
        "the TTL removal is not a user event"
    );
    assert_eq!(subscriber.attempts.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_failure_re_delivers_only_that_entry() {
    let api = Api::streaming(None).await;
    let subscriber = TestSubscriber::start(Some("flaky")).await;
    api.env
        .start_relay(vec![Subscriber::Http(subscriber.url.clone())])
        .await;
    let token = api.token("acme");
    let events: Vec<_> = (0..12)
        .map(|i| {
            if i == 5 {
                event("flaky")
            } else {
                event(&format!("fine{i}"))
            }
        })
        .collect();
    let (_, answer) = json_of(
        api.post_json(&token, "/audit/events", &json!({"events": events}))
            .await,
    )
    .await;
    let cursors: Vec<String> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cursor"].as_str().unwrap().to_string())
        .collect();
    wait_for(&subscriber, 12).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let accepted = counts(subscriber.accepted_cursors());
    assert_eq!(accepted.len(), 12);
    assert!(accepted.values().all(|n| *n == 1));
    let attempts = counts(subscriber.attempts.lock().unwrap().clone());
    assert_eq!(attempts[&cursors[5]], 2, "the refused entry was sent again");
    for (i, cursor) in cursors.iter().enumerate() {
        if i != 5 {
            assert_eq!(attempts[cursor], 1, "entry {i} was not sent again");
        }
    }
}

/// Each subscriber is retried on its own, as each EventBridge target is: an
/// entry one subscriber was out for is sent again to that one only, never
/// to those that took it or refused it for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_goes_only_to_the_subscriber_that_was_out() {
    let api = Api::streaming(None).await;
    let healthy = TestSubscriber::start(None).await;
    let flaky = TestSubscriber::start(Some("flaky")).await;
    let refusing = TestSubscriber::start(None).await;
    refusing
        .first_answer
        .lock()
        .unwrap()
        .insert("flaky".into(), 400);
    api.env
        .start_relay(vec![
            Subscriber::Http(healthy.url.clone()),
            Subscriber::Http(flaky.url.clone()),
            Subscriber::Http(refusing.url.clone()),
        ])
        .await;
    let events: Vec<_> = (0..8)
        .map(|i| event(if i == 3 { "flaky" } else { "fine" }))
        .collect();
    let cursors = store_batch(&api, events).await;
    wait_for(&flaky, 8).await;
    wait_for(&healthy, 8).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let flaky_attempts = counts(flaky.attempts.lock().unwrap().clone());
    assert_eq!(
        flaky_attempts[&cursors[3]], 2,
        "the flaky one was sent it again"
    );
    assert_eq!(counts(flaky.accepted_cursors()).len(), 8);
    for subscriber in [&healthy, &refusing] {
        let attempts = counts(subscriber.attempts.lock().unwrap().clone());
        assert_eq!(attempts.len(), 8);
        assert!(
            attempts.values().all(|n| *n == 1),
            "a subscriber that took or refused an entry got it again: {attempts:?}"
        );
    }
    assert_eq!(counts(healthy.accepted_cursors()).len(), 8);
    assert_eq!(
        refusing.accepted_cursors().len(),
        7,
        "it refused one for good"
    );
}

async fn wait_until(done: impl Fn() -> bool, limit: Duration) {
    let started = Instant::now();
    while !done() && started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The cursors of a batch's results, in order.
async fn store_batch(api: &Api, events: Vec<serde_json::Value>) -> Vec<String> {
    let token = api.token("acme");
    let (status, answer) = json_of(
        api.post_json(&token, "/audit/events", &json!({"events": events}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cursor"].as_str().unwrap().to_string())
        .collect()
}

/// A subscriber's answer is taken as EventBridge takes an API destination's:
/// a status it retries (401, 407, 409, 429, 5xx) is sent again until taken;
/// any other refusal is final, so the entry goes to the dead letters once
/// and is never sent again, and nothing behind it waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_refusal_is_retried_or_dead_lettered_by_its_status() {
    let api = Api::streaming(None).await;
    let subscriber = TestSubscriber::start(None).await;
    let retried = [401u16, 407, 409, 429, 500, 503];
    let final_refusals = [400u16, 403, 404, 410, 413, 422];
    let statuses: Vec<u16> = retried.iter().chain(&final_refusals).copied().collect();
    for status in &statuses {
        subscriber
            .first_answer
            .lock()
            .unwrap()
            .insert(format!("s{status}"), *status);
    }
    api.env
        .start_relay(vec![Subscriber::Http(subscriber.url.clone())])
        .await;
    let mut events: Vec<_> = statuses.iter().map(|s| event(&format!("s{s}"))).collect();
    events.push(event("after"));
    let cursors = store_batch(&api, events).await;
    let expected_accepted = retried.len() + 1;
    wait_until(
        || {
            subscriber.accepted_cursors().len() >= expected_accepted
                && api.env.dead_letters_kept().len() >= final_refusals.len()
        },
        Duration::from_secs(20),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let accepted = counts(subscriber.accepted_cursors());
    let attempts = counts(subscriber.attempts.lock().unwrap().clone());
    let kept: Vec<String> = api
        .env
        .dead_letters_kept()
        .iter()
        .map(|letter| {
            letter["record"]["detail"]["cursor"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    for (status, cursor) in statuses.iter().zip(&cursors) {
        if retried.contains(status) {
            assert_eq!(
                accepted.get(cursor),
                Some(&1),
                "{status} is retried and then taken"
            );
            assert_eq!(attempts[cursor], 2, "{status}");
            assert!(!kept.contains(cursor), "{status} is not a dead letter");
        } else {
            assert_eq!(accepted.get(cursor), None, "{status}");
            assert_eq!(attempts[cursor], 1, "{status} is final: never sent again");
            assert_eq!(
                kept.iter().filter(|k| *k == cursor).count(),
                1,
                "{status} is kept with the dead letters once"
            );
        }
    }
    assert_eq!(accepted.get(&cursors[statuses.len()]), Some(&1));
    assert_eq!(kept.len(), final_refusals.len(), "{kept:?}");
}

/// A record the stream handler can't read is skipped (logged and counted),
/// never reported: no retry could read it, and reporting it would make
/// Lambda give up the good records behind it with it. What is behind it
/// arrives once, and nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_record_is_skipped_and_the_records_behind_it_arrive_once() {
    use aws_sdk_dynamodb::types::AttributeValue::S;
    let api = Api::streaming(None).await;
    let subscriber = TestSubscriber::start(None).await;
    // Both written before the relay starts (it reads from the oldest
    // record), so they reach the handler in one batch.
    // An item with an event's keys and `serviceName`, so the stream takes
    // it for an event, but none of an event's other fields.
    let poison = ulid::Ulid::new().to_string();
    api.env
        .direct
        .put_item()
        .table_name(&api.env.config.table_name)
        .item("accountId", S("acme".into()))
        .item("cursor", S(poison.clone()))
        .item("serviceName", S("s".into()))
        .send()
        .await
        .expect("put");
    let behind = store_batch(&api, vec![event("behind-the-poison")]).await;
    api.env
        .start_relay(vec![Subscriber::Http(subscriber.url.clone())])
        .await;
    wait_for(&subscriber, 1).await;
    let after = store_batch(&api, vec![event("after")]).await;
    wait_until(
        || subscriber.accepted_cursors().contains(&after[0]),
        Duration::from_secs(20),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let accepted = counts(subscriber.accepted_cursors());
    assert_eq!(accepted.get(&behind[0]), Some(&1), "{accepted:?}");
    assert_eq!(accepted.get(&after[0]), Some(&1), "{accepted:?}");
    assert!(!accepted.contains_key(&poison));
    assert!(api.env.dead_letters_kept().is_empty());
}

/// The lookup, the tail, the query and the stream return byte for byte the
/// same JSON for an event, numbers and unicode included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_tail_query_and_stream_return_the_same_bytes() {
    let api = Api::streaming(Some(|c| c.settle_horizon = Duration::from_millis(1))).await;
    let subscriber = TestSubscriber::start(None).await;
    api.env
        .start_relay(vec![Subscriber::Http(subscriber.url.clone())])
        .await;
    let token = api.token("acme");
    let text = r#"{"eventType":"same.bytes","serviceName":"svc","userId":"ü-1","message":"line\nnext \"quoted\" \u2028",
        "occurredAt":"2026-11-01T10:00:00.5+02:00","sandbox":true,"indexedData":{"z":"1","a":"2"},
        "data":{"big":18446744073709551615,"neg":-9223372036854775808,"f":0.1,"e":1e18,"one":1.0,"k8s.pod":"p",
                "nested":{"list":[1,"two",null,false,{"deep":[]}]},"emoji":"🦀","zero":0}}"#;
    let response = api
        .http
        .post(format!("{}/audit/events", api.base))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(text)
        .send()
        .await
        .expect("request");
    let (status, stored) = json_of(response).await;
    assert_eq!(status, 201, "{stored}");
    let cursor = stored["cursor"].as_str().unwrap_or_default().to_string();

    let lookup = api
        .get(&token, &format!("/audit/events/{cursor}"))
        .await
        .text()
        .await
        .expect("lookup");
    tokio::time::sleep(Duration::from_millis(50)).await;
    #[derive(serde::Deserialize)]
    struct Tail {
        events: Vec<Box<serde_json::value::RawValue>>,
    }
    #[derive(serde::Deserialize)]
    struct QueryPage {
        data: Vec<Box<serde_json::value::RawValue>>,
    }
    let tail_text = api
        .get(&token, "/audit?selfAudit=exclude")
        .await
        .text()
        .await
        .expect("tail");
    let tail: Tail = serde_json::from_str(&tail_text).expect("tail page");
    let query_text = api
        .post_json(
            &token,
            "/audit/query",
            &json!({"and": [{"field": "eventType", "operator": "eq", "value": "same.bytes"}]}),
        )
        .await
        .text()
        .await
        .expect("query");
    let query: QueryPage = serde_json::from_str(&query_text).expect("query page");
    wait_for(&subscriber, 1).await;
    #[derive(serde::Deserialize)]
    struct Envelope {
        detail: Box<serde_json::value::RawValue>,
    }
    let delivered: Vec<String> = subscriber
        .accepted_raw
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|raw| serde_json::from_str::<Envelope>(raw).ok())
        .map(|e| e.detail.get().to_string())
        .filter(|detail| detail.starts_with(&format!("{{\"cursor\":\"{cursor}\"")))
        .collect();

    assert_eq!(tail.events.len(), 1, "{tail_text}");
    assert_eq!(tail.events[0].get(), lookup, "tail");
    assert_eq!(query.data.len(), 1, "{query_text}");
    assert_eq!(query.data[0].get(), lookup, "query");
    assert_eq!(delivered, vec![lookup.clone()], "stream");
    // And the numbers are the ones sent (a whole number as an integer,
    // however it was spelt).
    for kept in [
        "18446744073709551615",
        "-9223372036854775808",
        "\"f\":0.1,",
        "\"e\":1000000000000000000,",
        "\"one\":1,",
        "\"🦀\"",
    ] {
        assert!(lookup.contains(kept), "{kept} in {lookup}");
    }
}

/// A subscriber outage far longer than Lambda's retry budget loses nothing:
/// the relay backs off, keeps its position, and delivers once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_never_drops_a_record_while_a_subscriber_is_down() {
    let api = Api::streaming(None).await;
    let subscriber = TestSubscriber::start(None).await;
    subscriber
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    api.env
        .start_relay(vec![Subscriber::Http(subscriber.url.clone())])
        .await;
    let token = api.token("acme");
    let (status, _) = json_of(
        api.post_json(&token, "/audit/events", &event("outage"))
            .await,
    )
    .await;
    assert_eq!(status, 201);
    // Several times the old five attempts (about 3 s of outage).
    let started = Instant::now();
    while subscriber.attempts.lock().expect("lock").len() < 7
        && started.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(subscriber.attempts.lock().expect("lock").len() >= 7);
    assert!(subscriber.accepted_cursors().is_empty());
    subscriber
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let started = Instant::now();
    while subscriber.accepted_cursors().is_empty() && started.elapsed() < Duration::from_secs(40) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(subscriber.accepted_cursors().len(), 1);
}

/// The relay of `audit-local serve` starts at the newest record, and takes
/// that position before it returns: an event stored right after is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_takes_its_position_before_the_api_serves() {
    let api = Api::streaming(None).await;
    let token = api.token("acme");
    let (status, _) = json_of(
        api.post_json(&token, "/audit/events", &event("before"))
            .await,
    )
    .await;
    assert_eq!(status, 201);
    let subscriber = TestSubscriber::start(None).await;
    api.env
        .start_relay_at_latest(vec![Subscriber::Http(subscriber.url.clone())])
        .await;
    let (status, stored) = json_of(
        api.post_json(&token, "/audit/events", &event("right-after"))
            .await,
    )
    .await;
    assert_eq!(status, 201);
    wait_for(&subscriber, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        subscriber.accepted_cursors(),
        vec![stored["cursor"].as_str().unwrap_or_default().to_string()]
    );
}

/// The handler reports the first record it could not deliver, so Lambda
/// retries from it, and still sends the rest; an unreadable record is
/// counted and skipped, not reported.
#[tokio::test]
async fn the_handler_reports_the_first_undelivered_record_and_skips_an_unreadable_one() {
    use audit_core::publish::{BusEntry, Publisher};
    use std::sync::atomic::{AtomicUsize, Ordering};
    static UNREADABLE: AtomicUsize = AtomicUsize::new(0);
    /// Takes every entry but those of `refused`.
    #[derive(Default)]
    struct Recording {
        sent: std::sync::Mutex<Vec<String>>,
        refused: Option<String>,
    }
    #[async_trait::async_trait]
    impl Publisher for Recording {
        async fn publish(&self, entries: &[BusEntry]) -> Result<Vec<bool>, String> {
            let mut sent = self.sent.lock().unwrap();
            Ok(entries
                .iter()
                .map(|e| {
                    let taken = self.refused.as_deref() != Some(e.record_id.as_str());
                    if taken {
                        sent.push(e.record_id.clone());
                    }
                    taken
                })
                .collect())
        }
    }
    let file = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../events/dynamodb-stream-batch.json"),
    )
    .unwrap();
    let batch: serde_json::Value = serde_json::from_str(&file).unwrap();
    let ids: Vec<String> = batch["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["dynamodb"]["SequenceNumber"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), 4, "an event, an idempotency item, two events");
    let reported = |response: aws_lambda_events::streams::DynamoDbEventResponse| -> Vec<String> {
        response
            .batch_item_failures
            .iter()
            .filter_map(|f| f.item_identifier.clone())
            .collect()
    };

    // The third record made unreadable: an event's keys and service only.
    let mut poisoned = batch.clone();
    poisoned["Records"][2]["dynamodb"]["NewImage"]
        .as_object_mut()
        .unwrap()
        .retain(|name, _| ["accountId", "cursor", "serviceName"].contains(&name.as_str()));
    let handler = stream::StreamHandler::new(Recording::default(), "audit-trail.test")
        .counting_unreadable_with(|| {
            UNREADABLE.fetch_add(1, Ordering::SeqCst);
        });
    let response = handler
        .handle(serde_json::from_value(poisoned).unwrap())
        .await;
    assert!(
        reported(response).is_empty(),
        "an unreadable record is not reported"
    );
    assert_eq!(UNREADABLE.load(Ordering::SeqCst), 1);
    assert_eq!(
        *handler.publisher().sent.lock().unwrap(),
        vec![ids[0].clone(), ids[3].clone()],
        "the records behind it are sent"
    );

    // The first event refused for good: it is reported, the rest still sent.
    let handler = stream::StreamHandler::new(
        Recording {
            refused: Some(ids[0].clone()),
            ..Recording::default()
        },
        "audit-trail.test",
    );
    let response = handler.handle(serde_json::from_value(batch).unwrap()).await;
    assert_eq!(reported(response), vec![ids[0].clone()]);
    assert_eq!(
        *handler.publisher().sent.lock().unwrap(),
        vec![ids[2].clone(), ids[3].clone()]
    );
}

/// A relay that keeps its position (as `audit-local serve` does beside its
/// data), stopped and started again: what was stored while it was down is
/// delivered after the restart, and it goes on from where it stopped, not
/// from the stream's start. (It started at the stream's end every time, so
/// a restart dropped whatever was stored and not yet delivered.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_relay_goes_on_where_it_stopped() {
    let api = Api::streaming(None).await;
    let position = std::env::temp_dir().join(format!("relay-{}.json", ulid::Ulid::new()));
    let first = TestSubscriber::start(None).await;
    let relay = api
        .env
        .start_relay_keeping_position(vec![Subscriber::Http(first.url.clone())], &position)
        .await;
    let before = store_batch(&api, (0..5).map(|i| event(&format!("before{i}"))).collect()).await;
    wait_for_sentinels(&first, &before).await;
    let started = Instant::now();
    while !position.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no position was kept"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The position is kept right after a batch is handled: a few of the
    // relay's 50 ms polls later, the batch that delivered `before` is kept.
    tokio::time::sleep(Duration::from_millis(400)).await;
    relay.abort();
    let _ = relay.await;
    let during = store_batch(&api, (0..5).map(|i| event(&format!("during{i}"))).collect()).await;
    let second = TestSubscriber::start(None).await;
    api.env
        .start_relay_keeping_position(vec![Subscriber::Http(second.url.clone())], &position)
        .await;
    let after = store_batch(&api, (0..3).map(|i| event(&format!("after{i}"))).collect()).await;
    let expected: Vec<String> = during.iter().chain(&after).cloned().collect();
    wait_for_sentinels(&second, &expected).await;
    let delivered = second.accepted_cursors();
    assert!(
        before.iter().any(|c| !delivered.contains(c)),
        "it went on from its position, not from the stream's start: {delivered:?}"
    );
    let _ = std::fs::remove_file(&position);
}

/// A relay stopped before it delivered anything (its subscriber was
/// unreachable for the whole run) leaves nothing behind: the next start,
/// with the subscriber back, delivers what the first one read and could
/// not deliver, and what was stored while neither ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_stopped_before_delivering_anything_leaves_nothing_behind() {
    let api = Api::streaming(None).await;
    let position = std::env::temp_dir().join(format!("relay-{}.json", ulid::Ulid::new()));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let unreachable = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let relay = api
        .env
        .start_relay_keeping_position(vec![Subscriber::Http(unreachable)], &position)
        .await;
    let undelivered = store_batch(
        &api,
        (0..4).map(|i| event(&format!("undelivered{i}"))).collect(),
    )
    .await;
    // Read, and refused by the unreachable subscriber, a few times over.
    tokio::time::sleep(Duration::from_millis(600)).await;
    relay.abort();
    let _ = relay.await;
    let meanwhile = store_batch(
        &api,
        (0..2).map(|i| event(&format!("meanwhile{i}"))).collect(),
    )
    .await;
    let back = TestSubscriber::start(None).await;
    api.env
        .start_relay_keeping_position(vec![Subscriber::Http(back.url.clone())], &position)
        .await;
    let expected: Vec<String> = undelivered.iter().chain(&meanwhile).cloned().collect();
    wait_for_sentinels(&back, &expected).await;
    let _ = std::fs::remove_file(&position);
}

/// A position file the relay cannot use (damaged, or of another stream) is
/// read as no position at all: every shard from its beginning, so what was
/// stored before the start is delivered (again, at worst), never skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_file_the_relay_cannot_use_skips_nothing() {
    for damaged in [
        "{not json".to_string(),
        serde_json::json!({"streamArn": "arn:another", "shards": {"s": "1"}}).to_string(),
    ] {
        let api = Api::streaming(None).await;
        let position = std::env::temp_dir().join(format!("relay-{}.json", ulid::Ulid::new()));
        std::fs::write(&position, &damaged).unwrap();
        let stored =
            store_batch(&api, (0..3).map(|i| event(&format!("stored{i}"))).collect()).await;
        let subscriber = TestSubscriber::start(None).await;
        api.env
            .start_relay_keeping_position(vec![Subscriber::Http(subscriber.url.clone())], &position)
            .await;
        wait_for_sentinels(&subscriber, &stored).await;
        let _ = std::fs::remove_file(&position);
    }
}

/// The relay looks for the stream's shards at its start, when a shard
/// closes and now and then, not on every poll: the embedded store answers
/// `DescribeStream` with a scan of the stream's whole index, and once about
/// 250 000 events were stored that made the relay fall behind for good. A
/// shard that gave a whole batch is read on without the pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_looks_for_shards_now_and_then_not_on_every_poll() {
    let env = TestEnv::start_with(audit_infra::testkit::EnvOptions {
        with_proxy: true,
        ..Default::default()
    })
    .await;
    let proxy = env.proxy.as_ref().expect("a proxy");
    let subscriber = TestSubscriber::start(None).await;
    env.start_relay_through(
        vec![Subscriber::Http(subscriber.url.clone())],
        &proxy.endpoint,
    )
    .await;
    let base = env.serve().await;
    let token = env.token("acme", "audit:read audit:write");
    let events: Vec<_> = (0..250)
        .map(|i| json!({"eventType": "bulk", "serviceName": "s", "data": {"i": i}}))
        .collect();
    let answer = reqwest::Client::new()
        .post(format!("{base}/audit/events"))
        .bearer_auth(&token)
        .json(&json!({ "events": events }))
        .send()
        .await
        .expect("stored");
    assert!(answer.status().is_success());
    wait_for(&subscriber, 250).await;
    assert_eq!(subscriber.accepted_cursors().len(), 250);
    // A second of polls (every 50 ms here) with nothing new.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let operations = proxy.counters.operations.lock().unwrap().clone();
    let named = |name: &str| operations.iter().filter(|o| o.ends_with(name)).count();
    assert!(named("GetRecords") >= 15, "{operations:?}");
    assert!(
        named("DescribeStream") <= 2,
        "{} DescribeStream",
        named("DescribeStream")
    );
}
