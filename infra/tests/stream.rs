//! Every stored event reaches subscribers exactly once through the local
//! relay (the real DynamoDB Streams API → the `stream` handler → HTTP).

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use audit_infra::relay::Subscriber;
use audit_infra::testkit::{TestEnv, TestSubscriber};
use audit_shared::dynamo::event_to_item;
use audit_shared::event::format_time;
use audit_shared::Event;
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

fn counts(cursors: Vec<String>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for cursor in cursors {
        *counts.entry(cursor).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stored_event_arrives_exactly_once_and_nothing_else() {
    let api = Api::start().await;
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
    tokio::time::sleep(Duration::from_millis(500)).await; // anything extra would arrive now
    let delivered = counts(subscriber.accepted_cursors());
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
        return; // sweep_ttl is the embedded store's; DynamoDB Local has no TTL sweeper to drive
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
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        subscriber.accepted_cursors().len(),
        1,
        "the TTL removal is not a user event"
    );
    assert_eq!(subscriber.attempts.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_failure_re_delivers_only_that_entry() {
    let api = Api::start().await;
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
