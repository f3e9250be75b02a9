//! The integrity log end to end, on the embedded store and (in the test
//! script) on DynamoDB Local: proofs verify by RFC 6962 and Ed25519 alone,
//! concurrent sealers publish one tree per size, and every way of changing
//! the table behind the API's back is detected and named.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use audit_core::integrity::merkle::{verify_consistency, verify_inclusion};
use audit_core::integrity::note::NoteVerifier;
use audit_core::integrity::seal::SealBudget;
use audit_core::integrity::verify::{verify, EventStatus, Evidence, Report};
use audit_core::integrity::LogStore;
use audit_core::integrity::{decode_hash, event_leaf_hash, CheckpointRecord, EntryView};
use audit_core::Event;
use audit_core::EventStore;
use audit_dynamo::table::{self, CHECKPOINT_PREFIX, PARTITION_KEY, SORT_KEY};
use audit_dynamo::{event_to_item, DynamoStore};
use audit_infra::relay::LocalPublisher;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use common::{json_of, Api};
use seal::SealHandler;
use serde_json::{json, Value};

fn sealer(api: &Api) -> SealHandler<DynamoStore, LocalPublisher> {
    SealHandler::new(
        Arc::new(DynamoStore::new(
            api.env.direct.clone(),
            &api.env.config.table_name,
        )),
        &api.env.config,
        LocalPublisher::new(Vec::new()),
        "audit-trail.test",
    )
}

/// A sealing run as if the settle horizon had passed for everything stored.
async fn seal_now(api: &Api) {
    let later = Utc::now()
        + chrono::Duration::from_std(api.env.config.settle_horizon).unwrap()
        + chrono::Duration::seconds(1);
    sealer(api).run(later).await.expect("a sealing run");
}

async fn ingest(api: &Api, token: &str, count: usize, tag: &str) -> Vec<String> {
    let events: Vec<Value> = (0..count)
        .map(|i| json!({"eventType": "user.login", "serviceName": "idp", "userId": format!("u-{i}"), "data": {"tag": tag, "n": i}}))
        .collect();
    let (status, body) = json_of(
        api.post_json(token, "/audit/events", &json!({ "events": events }))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cursor"].as_str().unwrap().to_string())
        .collect()
}

async fn get_ok(api: &Api, token: &str, path: &str) -> Value {
    let (status, body) = json_of(api.get(token, path).await).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// Everything `audit verify --online` fetches, fetched the same way.
async fn evidence(api: &Api, token: &str) -> (Vec<CheckpointRecord>, Vec<EntryView>, Vec<Event>) {
    let mut checkpoints: Vec<CheckpointRecord> = Vec::new();
    let mut next = "/audit/checkpoints?limit=1000".to_string();
    loop {
        let page = get_ok(api, token, &next).await;
        let batch: Vec<CheckpointRecord> =
            serde_json::from_value(page["checkpoints"].clone()).unwrap();
        if batch.is_empty() {
            break;
        }
        checkpoints.extend(batch);
        let href = page["_links"]["next"]["href"].as_str().unwrap();
        next = href[href.find("/audit").unwrap()..].to_string();
    }
    let mut entries = Vec::new();
    let mut start = 0;
    loop {
        let (status, page) = json_of(
            api.get(token, &format!("/audit/entries?start={start}"))
                .await,
        )
        .await;
        if status == 404 {
            break;
        }
        let batch: Vec<EntryView> = serde_json::from_value(page["entries"].clone()).unwrap();
        if batch.is_empty() {
            break;
        }
        start += batch.len();
        entries.extend(batch);
    }
    // The whole events, straight from the table (the tail would hide an
    // event with a broken cursor, which is what some tampering makes).
    let events: Vec<Event> = api
        .env
        .all_items()
        .await
        .into_iter()
        .filter(|i| {
            i.get(PARTITION_KEY)
                .and_then(|v| v.as_s().ok())
                .is_some_and(|p| p == "acme")
        })
        .filter_map(|i| audit_dynamo::item_to_event(i).ok())
        .collect();
    (checkpoints, entries, events)
}

async fn verifier_key(api: &Api, token: &str) -> NoteVerifier {
    let body = get_ok(api, token, "/audit/verifier-key").await;
    NoteVerifier::parse(body["verifierKey"].as_str().unwrap()).unwrap()
}

async fn run_verifier(api: &Api, token: &str, trusted: &[String], now_ms: i64) -> Report {
    let key = verifier_key(api, token).await;
    let (checkpoints, entries, events) = evidence(api, token).await;
    let notes: Vec<String> = checkpoints.iter().map(|c| c.note.clone()).collect();
    verify(
        &Evidence {
            key: &key,
            origin: None,
            entries: &entries,
            checkpoints: &notes,
            trusted,
            now_ms,
            absence_seen_at: &[],
            stale_after_ms: Some(2 * 3_600_000),
        },
        events,
    )
}

fn status_of(report: &Report, cursor: &str) -> Option<EventStatus> {
    report
        .events
        .iter()
        .find(|f| f.cursor == cursor)
        .map(|f| f.status)
}

/// A sealed log of two checkpoints (300 then 600 events, so tiles fill and
/// roll up), and the token of its tenant.
async fn sealed_log() -> (Api, String, Vec<String>) {
    let api = Api::start().await;
    let token = api.token("acme");
    let mut cursors = Vec::new();
    for round in 0..2 {
        for batch in 0..3 {
            cursors.extend(ingest(&api, &token, 100, &format!("{round}-{batch}")).await);
        }
        seal_now(&api).await;
    }
    (api, token, cursors)
}

/// The checkpoints page's `after` is a time, compared as the instant it
/// names: the same instant with an offset or without its milliseconds
/// pages exactly as the `next` link's own form does (as text, `+00:00`
/// sorted before `Z` and the page began again at the checkpoint it was
/// after).
#[tokio::test]
async fn checkpoint_paging_reads_after_as_an_instant() {
    let (api, token, _) = sealed_log().await;
    let first: CheckpointRecord = serde_json::from_value(
        get_ok(&api, &token, "/audit/checkpoints?limit=1").await["checkpoints"][0].clone(),
    )
    .unwrap();
    let at = chrono::DateTime::parse_from_rfc3339(&first.timestamp).unwrap();
    let page = |after: String| {
        let (api, token) = (&api, &token);
        let path = format!(
            "/audit/checkpoints?limit=5&fromSize={}&after={}",
            first.tree_size,
            after.replace('+', "%2B")
        );
        async move { get_ok(api, token, &path).await["checkpoints"].clone() }
    };
    let expected = page(first.timestamp.clone()).await;
    assert!(
        expected.as_array().is_some_and(
            |c| !c.is_empty() && c.iter().all(|c| c["timestamp"] != first.timestamp.as_str())
        ),
        "{expected}"
    );
    let same_instant = [
        at.to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
        at.with_timezone(&chrono::FixedOffset::east_opt(7200).unwrap())
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    ];
    for after in same_instant {
        assert_eq!(page(after.clone()).await, expected, "after={after}");
    }
    let (status, _) = json_of(
        api.get(&token, "/audit/checkpoints?after=2016-12-31T23:59:60Z")
            .await,
    )
    .await;
    assert_eq!(status, 400, "a leap second is no checkpoint time");
}

#[tokio::test]
async fn an_events_proof_verifies_by_rfc_6962_and_ed25519_alone() {
    let (api, token, cursors) = sealed_log().await;
    let key = verifier_key(&api, &token).await;
    let checkpoint: CheckpointRecord =
        serde_json::from_value(get_ok(&api, &token, "/audit/checkpoint").await).unwrap();
    let signed = key
        .open(&checkpoint.note)
        .expect("the checkpoint's signature verifies");
    assert_eq!(signed.size, checkpoint.tree_size);
    assert!(
        checkpoint.tree_size >= 600,
        "every event and the reads' own records are leaves"
    );
    for cursor in [&cursors[0], &cursors[299], &cursors[599]] {
        let proof = get_ok(&api, &token, &format!("/audit/events/{cursor}/proof")).await;
        // The leaf from the event as the lookup returns it.
        let event: Event =
            serde_json::from_value(get_ok(&api, &token, &format!("/audit/events/{cursor}")).await)
                .unwrap();
        let leaf = event_leaf_hash(&event);
        assert_eq!(decode_hash(proof["leafHash"].as_str().unwrap()), Some(leaf));
        let path: Vec<[u8; 32]> = proof["inclusion"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| decode_hash(h.as_str().unwrap()).unwrap())
            .collect();
        assert!(path.len() <= 32);
        let index = proof["leafIndex"].as_u64().unwrap();
        let size = proof["treeSize"].as_u64().unwrap();
        let root = key
            .open(proof["checkpoint"]["note"].as_str().unwrap())
            .unwrap()
            .root;
        assert!(
            verify_inclusion(index, size, &leaf, &path, &root),
            "{cursor}"
        );
        // One other leaf, or one changed field, does not verify.
        let mut changed = event.clone();
        changed.message = Some("changed".into());
        assert!(!verify_inclusion(
            index,
            size,
            &event_leaf_hash(&changed),
            &path,
            &root
        ));
    }
    // Against the first checkpoint too, and the two are consistent.
    let first: CheckpointRecord = serde_json::from_value(
        get_ok(&api, &token, "/audit/checkpoints?limit=1").await["checkpoints"][0].clone(),
    )
    .unwrap();
    let early = get_ok(
        &api,
        &token,
        &format!(
            "/audit/events/{}/proof?treeSize={}",
            cursors[5], first.tree_size
        ),
    )
    .await;
    assert_eq!(early["treeSize"].as_u64(), Some(first.tree_size));
    let consistency = get_ok(
        &api,
        &token,
        &format!(
            "/audit/proofs/consistency?from={}&to={}",
            first.tree_size, checkpoint.tree_size
        ),
    )
    .await;
    let proof: Vec<[u8; 32]> = consistency["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| decode_hash(h.as_str().unwrap()).unwrap())
        .collect();
    let (old, new) = (key.open(&first.note).unwrap(), signed);
    assert!(verify_consistency(
        old.size, new.size, &old.root, &new.root, &proof
    ));
    assert!(!verify_consistency(
        old.size, new.size, &new.root, &new.root, &proof
    ));
    // The whole log verifies.
    let report = run_verifier(&api, &token, &[], Utc::now().timestamp_millis()).await;
    assert!(report.ok(), "{:?}", report.log);
    assert_eq!(
        report.counts.get("verified").copied(),
        Some(checkpoint.tree_size)
    );
}

#[tokio::test]
async fn an_event_not_sealed_yet_answers_409_with_retry_after_and_others_404() {
    let api = Api::start().await;
    let token = api.token("acme");
    let cursor = ingest(&api, &token, 1, "fresh").await.remove(0);
    let response = api
        .get(&token, &format!("/audit/events/{cursor}/proof"))
        .await;
    assert!(response.headers().get("retry-after").is_some());
    let (status, body) = json_of(response).await;
    assert_eq!(
        (status, common::error_code(&body).as_str()),
        (409, "not_sealed_yet")
    );
    seal_now(&api).await;
    assert_eq!(
        json_of(
            api.get(&token, &format!("/audit/events/{cursor}/proof"))
                .await
        )
        .await
        .0,
        200
    );
    // Another tenant's cursor is unknown to this one.
    let other = api.token("other");
    let (status, _) = json_of(
        api.get(&other, &format!("/audit/events/{cursor}/proof"))
            .await,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = json_of(api.get(&other, "/audit/checkpoint").await).await;
    assert_eq!(status, 404, "a tenant without events has no checkpoint");
}

/// Every whole number a size parameter can carry, past 2^64 included, is
/// schema-valid, so it is answered: a page, or 404 for a tree the log has
/// not reached (or one that ends before the leaf). Never a 400, never a 500.
#[tokio::test]
async fn every_whole_number_a_tree_size_parameter_takes_is_answered() {
    let api = Api::start().await;
    let token = api.token("acme");
    let cursors = ingest(&api, &token, 20, "sizes").await;
    seal_now(&api).await;
    let latest: CheckpointRecord =
        serde_json::from_value(get_ok(&api, &token, "/audit/checkpoint").await).unwrap();
    let size = latest.tree_size;
    let leaf = get_ok(
        &api,
        &token,
        &format!("/audit/events/{}/proof", cursors[10]),
    )
    .await["leafIndex"]
        .as_u64()
        .unwrap();
    let past: Vec<String> = vec![
        (size + 1).to_string(),
        u64::MAX.to_string(),
        "18446744073709551616".to_string(),
        "9".repeat(40),
    ];
    let status = |path: String| {
        let api = &api;
        let token = &token;
        async move { (json_of(api.get(token, &path).await).await, path) }
    };
    // Pages: empty past the end, and still 200.
    for start in &past {
        let ((code, body), path) = status(format!("/audit/entries?start={start}")).await;
        assert_eq!(code, 200, "{path}: {body}");
        assert_eq!(body["entries"].as_array().map(Vec::len), Some(0), "{path}");
        assert_eq!(body["treeSize"].as_u64(), Some(size), "{path}");
        let ((code, body), path) = status(format!("/audit/checkpoints?fromSize={start}")).await;
        assert_eq!(code, 200, "{path}: {body}");
        assert_eq!(
            body["checkpoints"].as_array().map(Vec::len),
            Some(0),
            "{path}"
        );
    }
    // Trees the log has not reached.
    for beyond in &past {
        for path in [
            format!("/audit/events/{}/proof?treeSize={beyond}", cursors[10]),
            format!("/audit/proofs/consistency?from=1&to={beyond}"),
            format!("/audit/proofs/consistency?from={beyond}"),
            format!("/audit/proofs/consistency?from={beyond}&to={beyond}"),
        ] {
            let ((code, body), path) = status(path).await;
            assert_eq!(
                (code, common::error_code(&body).as_str()),
                (404, "not_found"),
                "{path}: {body}"
            );
            // A size past 2^64 is never named as another number.
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(
                !message.contains(&u64::MAX.to_string()),
                "{path}: {message}"
            );
        }
    }
    // A tree that ends before the leaf does not hold it.
    for small in [1, leaf] {
        let ((code, body), path) = status(format!(
            "/audit/events/{}/proof?treeSize={small}",
            cursors[10]
        ))
        .await;
        assert_eq!(code, 404, "{path}: {body}");
    }
    // The edges that exist are answered with a proof.
    for path in [
        format!("/audit/events/{}/proof?treeSize={size}", cursors[10]),
        format!("/audit/proofs/consistency?from=0&to={size}"),
        format!("/audit/proofs/consistency?from={size}"),
        format!("/audit/entries?start={}", size - 1),
    ] {
        let ((code, body), path) = status(path).await;
        assert_eq!(code, 200, "{path}: {body}");
    }
    // Two real trees in the wrong order is the caller's mistake.
    let ((code, body), path) = status(format!("/audit/proofs/consistency?from={size}&to=1")).await;
    assert_eq!(code, 400, "{path}: {body}");
    // Not a whole number at all.
    for bad in ["-1", "1.5", "ten", ""] {
        let ((code, body), path) = status(format!("/audit/entries?start={bad}")).await;
        assert_eq!(code, 400, "{path}: {body}");
    }
}

#[tokio::test]
async fn concurrent_sealers_publish_one_tree_per_size() {
    let api = Api::start().await;
    let token = api.token("acme");
    for batch in 0..4 {
        ingest(&api, &token, 100, &format!("c{batch}")).await;
    }
    let later = Utc::now()
        + chrono::Duration::from_std(api.env.config.settle_horizon).unwrap()
        + chrono::Duration::seconds(1);
    let (a, b, c) = (sealer(&api), sealer(&api), sealer(&api));
    let (ra, rb, rc) = tokio::join!(a.run(later), b.run(later), c.run(later));
    // A sealer that lost a race may fail its run; none may fork the log.
    assert!(ra.is_ok() || rb.is_ok() || rc.is_ok());
    let heads: HashMap<String, Vec<String>> = api
        .env
        .all_items()
        .await
        .into_iter()
        .filter(|i| {
            i.get(PARTITION_KEY)
                .and_then(|v| v.as_s().ok())
                .is_some_and(|p| p == "tree#acme")
        })
        .fold(HashMap::new(), |mut map, item| {
            let size = item[SORT_KEY].as_s().unwrap().clone();
            map.entry(size)
                .or_default()
                .push(item["root"].as_s().unwrap().clone());
            map
        });
    assert!(!heads.is_empty());
    assert!(heads.values().all(|roots| roots.len() == 1));
    // Every checkpoint of a size signs that size's one root.
    let mut roots_by_size: HashMap<u64, std::collections::BTreeSet<String>> = HashMap::new();
    for item in partition(&api, &format!("{CHECKPOINT_PREFIX}acme")).await {
        roots_by_size
            .entry(item["treeSize"].as_n().unwrap().parse().unwrap())
            .or_default()
            .insert(item["rootHash"].as_s().unwrap().clone());
    }
    assert!(!roots_by_size.is_empty());
    assert!(
        roots_by_size.values().all(|roots| roots.len() == 1),
        "{roots_by_size:?}"
    );
    let report = run_verifier(&api, &token, &[], Utc::now().timestamp_millis()).await;
    assert!(report.ok(), "{:?}", report.log);
    // What keeps a slower sealer from forking the log: a tree head of a
    // size already recorded takes the same root again, never another.
    let store = DynamoStore::new(api.env.direct.clone(), &api.env.config.table_name);
    let (size, roots) = heads.iter().next().unwrap();
    let size: u64 = size.parse().unwrap();
    store
        .put_tree_head("acme", size, &roots[0])
        .await
        .expect("the same root again");
    let forked = store.put_tree_head("acme", size, "AAAA").await;
    assert!(
        matches!(forked, Err(audit_core::error::StoreError::ConditionFailed)),
        "{forked:?}"
    );
}

/// A sealing run takes only settled events: one written within the settle
/// horizon is left to a later run, as are its postings (an event whose
/// write committed late would otherwise fall behind leaves already sealed,
/// and be called forged, and be missed by pivot queries for good).
#[tokio::test]
async fn a_sealing_run_leaves_what_is_within_the_settle_horizon() {
    let api = Api::configured(|config| {
        config.settle_horizon = std::time::Duration::from_secs(60);
    })
    .await;
    let token = api.token("acme");
    let fresh = ingest(&api, &token, 3, "fresh").await;
    let report = sealer(&api).run(Utc::now()).await.expect("a sealing run");
    assert!(
        report.checkpoints.iter().all(|c| c.tree_size == 0),
        "{report:?}"
    );
    for cursor in &fresh {
        let (status, body) = json_of(
            api.get(&token, &format!("/audit/events/{cursor}/proof"))
                .await,
        )
        .await;
        assert_eq!(status, 409, "{body}");
    }
    let store = Arc::new(DynamoStore::new(
        api.env.direct.clone(),
        &api.env.config.table_name,
    ));
    let poster = audit_core::integrity::seal::Poster::new(store, &api.env.config);
    let (posted, _) = poster
        .post_tenant("acme", Utc::now())
        .await
        .expect("a posting run");
    assert_eq!(posted, 0, "nothing settled to post");
    seal_now(&api).await;
    for cursor in &fresh {
        let (status, body) = json_of(
            api.get(&token, &format!("/audit/events/{cursor}/proof"))
                .await,
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
}

async fn stored_event(api: &Api, cursor: &str) -> Event {
    let item = api
        .env
        .direct
        .get_item()
        .table_name(&api.env.config.table_name)
        .key(PARTITION_KEY, AttributeValue::S("acme".into()))
        .key(SORT_KEY, AttributeValue::S(cursor.to_string()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    audit_dynamo::item_to_event(item).unwrap()
}

async fn put_event_item(api: &Api, event: &Event) {
    api.env
        .direct
        .put_item()
        .table_name(&api.env.config.table_name)
        .set_item(Some(event_to_item(event).unwrap()))
        .send()
        .await
        .unwrap();
}

async fn delete_key(api: &Api, partition: &AttributeValue, sort: &AttributeValue) {
    api.env
        .direct
        .delete_item()
        .table_name(&api.env.config.table_name)
        .key(PARTITION_KEY, partition.clone())
        .key(SORT_KEY, sort.clone())
        .send()
        .await
        .unwrap();
}

/// Items of one partition, straight from the table.
async fn partition(api: &Api, key: &str) -> Vec<audit_dynamo::Item> {
    api.env
        .all_items()
        .await
        .into_iter()
        .filter(|i| {
            i.get(PARTITION_KEY)
                .and_then(|v| v.as_s().ok())
                .is_some_and(|p| p == key)
        })
        .collect()
}

/// Changing, deleting or inserting an event behind the API's back is
/// named per event; an event gone after its `expiresAt` is retention.
#[tokio::test]
async fn a_changed_deleted_or_inserted_event_is_named() {
    let (api, token, cursors) = sealed_log().await;
    let now = Utc::now().timestamp_millis();

    let altered = &cursors[10];
    let mut event = stored_event(&api, altered).await;
    event.user_id = Some("someone-else".into());
    put_event_item(&api, &event).await;

    let deleted = &cursors[20];
    delete_key(
        &api,
        &AttributeValue::S("acme".into()),
        &AttributeValue::S(deleted.clone()),
    )
    .await;

    // A forged event with an old cursor, between two sealed ones (cursors
    // of one batch are consecutive; this is far from all of them).
    let mut forged = stored_event(&api, &cursors[30]).await;
    let below: ulid::Ulid = cursors[30].parse().unwrap();
    forged.cursor = ulid::Ulid(below.0 + (1 << 40)).to_string();
    assert!(!cursors.contains(&forged.cursor) && forged.cursor < cursors[299]);
    forged.user_id = Some("u-forged".into());
    put_event_item(&api, &forged).await;

    let report = run_verifier(&api, &token, &[], now).await;
    assert_eq!(status_of(&report, altered), Some(EventStatus::Altered));
    assert_eq!(status_of(&report, deleted), Some(EventStatus::Missing));
    assert_eq!(
        status_of(&report, &forged.cursor),
        Some(EventStatus::Forged)
    );
    assert_eq!(
        status_of(&report, &cursors[11]),
        Some(EventStatus::Verified)
    );
    assert!(!report.ok());
    assert!(report.log.is_empty(), "{:?}", report.log);
    // The forged event has no proof, and says why.
    let (status, body) = json_of(
        api.get(&token, &format!("/audit/events/{}/proof", forged.cursor))
            .await,
    )
    .await;
    assert_eq!(status, 404, "{body}");

    // After its `expiresAt`, the deleted event is expired, not missing.
    let after_expiry = Utc::now().timestamp_millis() + 400 * 86_400_000;
    let report = run_verifier(&api, &token, &[], after_expiry).await;
    assert_eq!(status_of(&report, deleted), Some(EventStatus::Expired));
}

/// A stored checkpoint rewritten (its size, its root) no longer verifies,
/// and the verifier names it.
#[tokio::test]
async fn a_rewritten_checkpoint_is_named() {
    let (api, token, _) = sealed_log().await;
    let stored = partition(&api, &format!("{CHECKPOINT_PREFIX}acme")).await;
    let mut rewritten = stored[0].clone();
    let note = rewritten["note"].as_s().unwrap().clone();
    let root = rewritten["rootHash"].as_s().unwrap().clone();
    let other_root = audit_core::integrity::encode_hash(&[9u8; 32]);
    rewritten.insert(
        "note".into(),
        AttributeValue::S(note.replace(&root, &other_root)),
    );
    rewritten.insert("rootHash".into(), AttributeValue::S(other_root));
    api.env
        .direct
        .put_item()
        .table_name(&api.env.config.table_name)
        .set_item(Some(rewritten.clone()))
        .send()
        .await
        .unwrap();
    let report = run_verifier(&api, &token, &[], Utc::now().timestamp_millis()).await;
    let size: u64 = rewritten["treeSize"].as_n().unwrap().parse().unwrap();
    assert!(
        report
            .log
            .iter()
            .any(|f| f.problem == "bad_signature" && f.tree_size == Some(size)),
        "{:?}",
        report.log
    );
    assert!(!report.ok());
}

/// The newest checkpoints deleted: the log serves an older tree than one a
/// subscriber holds from the bus.
#[tokio::test]
async fn a_rolled_back_tree_is_named_against_a_checkpoint_seen_earlier() {
    let (api, token, _) = sealed_log().await;
    let held: CheckpointRecord =
        serde_json::from_value(get_ok(&api, &token, "/audit/checkpoint").await).unwrap();
    let mut stored = partition(&api, &format!("{CHECKPOINT_PREFIX}acme")).await;
    stored.sort_by_key(|i| i[SORT_KEY].as_s().unwrap().clone());
    for item in &stored[1..] {
        delete_key(&api, &item[PARTITION_KEY], &item[SORT_KEY]).await;
    }
    let served: CheckpointRecord =
        serde_json::from_value(get_ok(&api, &token, "/audit/checkpoint").await).unwrap();
    assert!(served.tree_size < held.tree_size);
    let report = run_verifier(
        &api,
        &token,
        std::slice::from_ref(&held.note),
        Utc::now().timestamp_millis(),
    )
    .await;
    assert!(
        report
            .log
            .iter()
            .any(|f| f.problem == "rolled_back" && f.tree_size == Some(held.tree_size)),
        "{:?}",
        report.log
    );
    assert!(!report.ok());
}

/// The newest leaves cut off: newest events, tiles and checkpoints removed
/// so the log is a consistent shorter tree. A checkpoint held from the bus
/// names the truncation.
#[tokio::test]
async fn truncated_newest_leaves_are_named_against_a_checkpoint_seen_earlier() {
    use audit_core::integrity::tiles::{TileId, TILE_HEIGHT, TILE_WIDTH};
    let (api, token, _) = sealed_log().await;
    let held: CheckpointRecord =
        serde_json::from_value(get_ok(&api, &token, "/audit/checkpoint").await).unwrap();
    let mut stored = partition(&api, &format!("{CHECKPOINT_PREFIX}acme")).await;
    stored.sort_by_key(|i| i[SORT_KEY].as_s().unwrap().clone());
    let first: CheckpointRecord = serde_json::from_value(json!({
        "note": stored[0]["note"].as_s().unwrap(),
        "treeSize": stored[0]["treeSize"].as_n().unwrap().parse::<u64>().unwrap(),
        "rootHash": stored[0]["rootHash"].as_s().unwrap(),
        "origin": stored[0]["origin"].as_s().unwrap(),
        "timestamp": stored[0]["timestamp"].as_s().unwrap(),
        "lastCursor": stored[0]["lastCursor"].as_s().unwrap(),
    }))
    .unwrap();
    let size = first.tree_size;
    // The tiles of the tree of `size` leaves, and nothing else.
    let mut keep = std::collections::BTreeSet::new();
    for level in 0u8..4 {
        let at_level = size >> (TILE_HEIGHT * u32::from(level));
        for index in 0..at_level.div_ceil(TILE_WIDTH) {
            let id = TileId::hashes(level, index);
            keep.insert(id.path(id.width_at(size)));
            if level == 0 {
                let entries = TileId::entries(index);
                keep.insert(entries.path(entries.width_at(size)));
            }
        }
    }
    for tile in partition(&api, &format!("{}acme", table::LOG_TILE_PREFIX)).await {
        if !keep.contains(tile[SORT_KEY].as_s().unwrap()) {
            delete_key(&api, &tile[PARTITION_KEY], &tile[SORT_KEY]).await;
        }
    }
    for item in &stored[1..] {
        delete_key(&api, &item[PARTITION_KEY], &item[SORT_KEY]).await;
    }
    let last = first.last_cursor.clone().unwrap();
    for item in partition(&api, "acme").await {
        if item[SORT_KEY].as_s().unwrap() > &last {
            delete_key(&api, &item[PARTITION_KEY], &item[SORT_KEY]).await;
        }
    }
    // Without the held checkpoint, the shorter log is self-consistent...
    let report = run_verifier(&api, &token, &[], Utc::now().timestamp_millis()).await;
    assert!(report.ok(), "{:?}", report.log);
    assert_eq!(report.verified_tree_size, size);
    // ...and with it, the truncation is named.
    let report = run_verifier(
        &api,
        &token,
        std::slice::from_ref(&held.note),
        Utc::now().timestamp_millis(),
    )
    .await;
    assert!(
        report
            .log
            .iter()
            .any(|f| f.problem == "truncated" && f.tree_size == Some(held.tree_size)),
        "{:?}",
        report.log
    );
    assert!(!report.ok());
}

async fn checkpoint_count(api: &Api) -> usize {
    partition(api, &format!("{CHECKPOINT_PREFIX}acme"))
        .await
        .len()
}

/// A tenant without new events still gets a checkpoint once its last one
/// is a heartbeat old (so dropping the newest events can't hide behind
/// silence), of the same tree; sooner than that, none.
#[tokio::test]
async fn a_quiet_tenant_gets_a_heartbeat_checkpoint() {
    let api = Api::start().await;
    let token = api.token("acme");
    ingest(&api, &token, 5, "quiet").await;
    seal_now(&api).await;
    let before = checkpoint_count(&api).await;
    let first: CheckpointRecord =
        serde_json::from_value(get_ok(&api, &token, "/audit/checkpoint").await).unwrap();
    // The reads above are events too: seal them, then nothing is new.
    seal_now(&api).await;
    let settled = checkpoint_count(&api).await;
    assert!(settled >= before);
    let latest_size = partition(&api, &format!("{CHECKPOINT_PREFIX}acme"))
        .await
        .into_iter()
        .map(|i| i["treeSize"].as_n().unwrap().parse::<u64>().unwrap())
        .max()
        .unwrap();
    assert!(latest_size >= first.tree_size);
    // A run within the heartbeat adds nothing.
    let horizon = chrono::Duration::from_std(api.env.config.settle_horizon).unwrap();
    let soon = Utc::now() + horizon + chrono::Duration::seconds(1);
    let within = sealer(&api).run(soon).await.unwrap();
    assert!(within.checkpoints.is_empty(), "{within:?}");
    let quiet = checkpoint_count(&api).await;
    assert_eq!(quiet, settled, "nothing new within the heartbeat");
    // A run a heartbeat later writes a checkpoint of the same tree.
    let heartbeat = chrono::Duration::from_std(api.env.config.checkpoint_heartbeat).unwrap();
    let report = sealer(&api).run(soon + heartbeat).await.unwrap();
    assert_eq!(
        checkpoint_count(&api).await,
        quiet + 1,
        "one heartbeat checkpoint"
    );
    let beat = &report.checkpoints[0];
    assert_eq!(beat.tree_size, latest_size, "the same tree, signed again");
    verifier_key(&api, &token).await.open(&beat.note).unwrap();
}

/// The pivot query `eventType eq user.login`, followed to its end: cursors.
async fn logins(api: &Api, token: &str) -> Vec<String> {
    let body = json!({"and": [{"field": "eventType", "operator": "eq", "value": "user.login"}]});
    let mut url = format!("{}/audit/query?limit=1000", api.base);
    let mut found = Vec::new();
    for _ in 0..100 {
        let response = api
            .http
            .post(&url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let (status, page) = json_of(response).await;
        assert_eq!(status, 200, "{page}");
        found.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["cursor"].as_str().unwrap().to_string()),
        );
        match page["next"].as_str() {
            Some(next) => url = next.to_string(),
            None => return found,
        }
    }
    panic!("the query never ended");
}

/// A quiet tenant's postings wait for a batch of settled events (counted by
/// its log, without reading them) or for the oldest to reach the lag; until
/// then pivot queries find the waiting events in the tail, and the tenant
/// stays queued for them even when nothing new is written.
#[tokio::test]
async fn a_quiet_tenants_postings_wait_for_a_batch_or_the_lag() {
    let api = Api::configured(|config| {
        config.posting_batch = 40;
        config.posting_max_lag = std::time::Duration::from_secs(600);
    })
    .await;
    let token = api.token("acme");
    let store = DynamoStore::new(api.env.direct.clone(), &api.env.config.table_name);
    let mark = || async {
        audit_core::EventStore::posted_mark(&store, "acme")
            .await
            .unwrap()
    };
    let settle = chrono::Duration::from_std(api.env.config.settle_horizon).unwrap();
    // `seal_now` seals as if the horizon were a second from now: events
    // written before the clock gets there would be under the mark unposted.
    let pass_the_mark = || tokio::time::sleep(std::time::Duration::from_millis(1100));
    let mut written = ingest(&api, &token, 10, "first").await;
    seal_now(&api).await;
    pass_the_mark().await;
    let first = mark()
        .await
        .expect("a tenant's first postings are always due");
    assert!(first.log_size.is_some(), "{first:?}");

    written.extend(ingest(&api, &token, 10, "few").await);
    let report = {
        let later = Utc::now() + settle + chrono::Duration::seconds(1);
        sealer(&api).run(later).await.unwrap()
    };
    pass_the_mark().await;
    assert_eq!(
        mark().await.as_ref(),
        Some(&first),
        "10 waiting of 40: not due"
    );
    assert!(
        report.checkpoints.iter().any(|c| c.tree_size > 10),
        "the log is sealed meanwhile"
    );
    written.reverse();
    assert_eq!(
        logins(&api, &token).await,
        written,
        "waiting events come from the tail"
    );
    written.reverse();

    written.extend(ingest(&api, &token, 40, "batch").await);
    seal_now(&api).await;
    pass_the_mark().await;
    let batch = mark().await.unwrap();
    assert!(batch.through > first.through, "a batch waiting is due");

    written.extend(ingest(&api, &token, 1, "late").await);
    seal_now(&api).await;
    assert_eq!(mark().await.as_ref(), Some(&batch), "one waiting, not old");
    // Nothing new is written, and the heartbeat (an hour) is not due: the
    // tenant is checked again only because its postings wait.
    let quiet = Utc::now() + settle + chrono::Duration::seconds(300);
    sealer(&api).run(quiet).await.unwrap();
    assert_eq!(
        mark().await.as_ref(),
        Some(&batch),
        "past its writes' dirty marks, not old enough"
    );
    let lagging = Utc::now() + settle + chrono::Duration::seconds(700);
    sealer(&api).run(lagging).await.unwrap();
    let late = mark().await.unwrap();
    assert!(late.through > batch.through, "the lag makes it due");
    pass_the_mark().await;
    written.reverse();
    assert_eq!(logins(&api, &token).await, written);
}

/// Postings that wait don't keep a tenant in every run: once its log is
/// sealed and its heartbeat written, the next run passes it by until it
/// writes again or its postings fall due.
#[tokio::test]
async fn waiting_postings_do_not_repeat_heartbeats() {
    let api = Api::configured(|config| {
        config.posting_batch = 40;
        config.posting_max_lag = std::time::Duration::from_secs(3600);
        config.checkpoint_heartbeat = std::time::Duration::from_secs(60);
    })
    .await;
    let token = api.token("acme");
    let settle = chrono::Duration::from_std(api.env.config.settle_horizon).unwrap();
    ingest(&api, &token, 10, "first").await;
    seal_now(&api).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    ingest(&api, &token, 5, "waiting").await;
    let start = Utc::now() + settle;
    let sealed = sealer(&api)
        .run(start + chrono::Duration::seconds(200))
        .await
        .unwrap();
    assert_eq!(sealed.checkpoints.len(), 1, "the waiting events are sealed");
    assert_eq!(sealed.events_posted, 0, "5 waiting of 40");
    let next = sealer(&api)
        .run(start + chrono::Duration::seconds(210))
        .await
        .unwrap();
    assert_eq!(next.tenants_checked, 0, "{next:?}");
    assert!(next.checkpoints.is_empty(), "{next:?}");
    let beat = sealer(&api)
        .run(start + chrono::Duration::seconds(270))
        .await
        .unwrap();
    assert_eq!(beat.checkpoints.len(), 1, "one heartbeat a minute later");
    assert_eq!(beat.events_posted, 0);
    let due = sealer(&api)
        .run(start + chrono::Duration::seconds(3700))
        .await
        .unwrap();
    assert_eq!(due.events_posted, 5, "{due:?}");
}

/// A budget that is spent once it has been asked `asks` times. (The sealer
/// asks before each tenant and before each page after a tenant's first.)
fn budget_of_asks(asks: usize) -> SealBudget {
    let asked = std::sync::atomic::AtomicUsize::new(0);
    SealBudget::when(move || asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= asks)
}

fn store_of(api: &Api) -> DynamoStore {
    DynamoStore::new(api.env.direct.clone(), &api.env.config.table_name)
}

async fn tree_size(api: &Api, tenant: &str) -> Option<u64> {
    store_of(api)
        .latest_checkpoint(tenant)
        .await
        .unwrap()
        .map(|c| c.tree_size)
}

/// A run whose budget is spent leaves the tenants it did not reach queued,
/// says how many, and the next run takes them before a tenant it sealed,
/// even one that has written again since: no tenant waits behind others
/// that keep writing, as one run after another runs out of time.
#[tokio::test]
async fn tenants_a_run_had_no_time_for_go_first_in_the_next() {
    let api = Api::start().await;
    for tenant in ["alpha", "bravo", "charlie"] {
        ingest(&api, &api.token(tenant), 3, tenant).await;
    }
    let later = Utc::now()
        + chrono::Duration::from_std(api.env.config.settle_horizon).unwrap()
        + chrono::Duration::seconds(1);
    let first = sealer(&api)
        .run_within(later, &budget_of_asks(1))
        .await
        .unwrap();
    assert_eq!(
        (first.tenants_checked, first.tenants_deferred),
        (1, 2),
        "{first:?}"
    );
    assert_eq!(tree_size(&api, "alpha").await, Some(3));
    assert_eq!(tree_size(&api, "bravo").await, None);
    assert_eq!(tree_size(&api, "charlie").await, None);
    // alpha writes again: in name order it would be sealed first again.
    ingest(&api, &api.token("alpha"), 2, "again").await;
    store_of(&api)
        .mark_dirty(
            "alpha",
            (later + chrono::Duration::hours(1)).timestamp_millis(),
        )
        .await
        .unwrap();
    let later = later + chrono::Duration::seconds(5);
    let second = sealer(&api)
        .run_within(later, &budget_of_asks(1))
        .await
        .unwrap();
    assert_eq!(
        (second.tenants_checked, second.tenants_deferred),
        (1, 2),
        "{second:?}"
    );
    assert_eq!(
        tree_size(&api, "bravo").await,
        Some(3),
        "the longest waiting first"
    );
    assert_eq!(tree_size(&api, "alpha").await, Some(3));
    let rest = sealer(&api).run(later).await.unwrap();
    assert_eq!(rest.tenants_deferred, 0, "{rest:?}");
    assert_eq!(tree_size(&api, "charlie").await, Some(3));
    assert_eq!(tree_size(&api, "alpha").await, Some(5));
}

/// A tenant whose log the budget stops after a page keeps the leaves of
/// that page, stays queued, and the next run goes on from there: every
/// event is sealed once, in order, and every pivot query finds every
/// event.
#[tokio::test]
async fn a_tenant_the_budget_cut_short_goes_on_where_it_stopped() {
    let api = Api::start().await;
    let token = api.token("acme");
    let mut cursors = Vec::new();
    for batch in 0..3 {
        cursors.extend(ingest(&api, &token, 700, &format!("b{batch}")).await);
    }
    // Past the writes' dirty marks (two seal intervals): only the tenant's
    // own unsealed mark can keep it queued after the cut run.
    let later = Utc::now()
        + chrono::Duration::from_std(
            api.env.config.settle_horizon + api.env.config.seal_interval * 2,
        )
        .unwrap()
        + chrono::Duration::seconds(1);
    // The first ask lets the tenant start; the second, after its first
    // page of leaves, is refused. (The postings' asks are let through, so
    // only the log's mark can keep the tenant queued.)
    let asked = std::sync::atomic::AtomicUsize::new(0);
    let log_cut =
        SealBudget::when(move || asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1);
    let cut = sealer(&api).run_within(later, &log_cut).await.unwrap();
    assert_eq!(cut.leaves_added, 1000, "{cut:?}");
    assert_eq!(cut.events_posted, 2100, "{cut:?}");
    assert_eq!(cut.tenants_deferred, 1, "{cut:?}");
    let cut_checkpoint = cut.checkpoints[0].clone();
    assert_eq!(cut_checkpoint.tree_size, 1000);
    let queue = store_of(&api).seal_queue().await.unwrap();
    let still_queued = queue.iter().any(|m| {
        m.tenant == "acme"
            && audit_core::integrity::seal::waiting_since(
                m,
                later.timestamp_millis(),
                api.env.config.checkpoint_heartbeat,
            )
            .is_some()
    });
    assert!(still_queued, "the tenant is still queued: {queue:?}");
    let rest = sealer(&api).run(later).await.unwrap();
    assert_eq!(rest.leaves_added, 1100, "{rest:?}");
    assert_eq!(rest.tenants_deferred, 0, "{rest:?}");
    // The log holds each event once, in cursor order, and extends the cut
    // run's tree.
    let (checkpoints, entries, _) = evidence(&api, &token).await;
    let sealed: Vec<String> = entries.iter().map(|e| e.cursor.clone()).collect();
    assert_eq!(&sealed[..cursors.len()], &cursors[..]);
    let report = run_verifier(
        &api,
        &token,
        &[cut_checkpoint.note],
        Utc::now().timestamp_millis(),
    )
    .await;
    assert!(report.ok(), "{:?}", report.log);
    assert!(checkpoints.iter().any(|c| c.tree_size >= 2100));
    let mut found = logins(&api, &token).await;
    found.sort();
    cursors.sort();
    assert_eq!(found, cursors, "every event by its pivot");
}

/// A tenant whose log a run finishes but whose postings the budget cuts
/// short is reported deferred, its postings fall due at once, and the
/// next run posts the rest: every pivot query finds every event.
#[tokio::test]
async fn postings_the_budget_cut_short_are_due_at_the_next_run() {
    let api = Api::start().await;
    let token = api.token("acme");
    let mut cursors = Vec::new();
    for batch in 0..3 {
        cursors.extend(ingest(&api, &token, 700, &format!("b{batch}")).await);
    }
    let later = Utc::now()
        + chrono::Duration::from_std(api.env.config.settle_horizon).unwrap()
        + chrono::Duration::seconds(1);
    // Asks: the tenant, the log's pages 2 and 3, then the postings' page 2.
    let cut = sealer(&api)
        .run_within(later, &budget_of_asks(3))
        .await
        .unwrap();
    assert_eq!(
        (cut.leaves_added, cut.events_posted, cut.tenants_deferred),
        (2100, 1000, 1),
        "{cut:?}"
    );
    let queue = store_of(&api).seal_queue().await.unwrap();
    let mark = queue.iter().find(|m| m.tenant == "acme").unwrap();
    assert_eq!(
        mark.postings_due_at_ms,
        Some(later.timestamp_millis()),
        "{mark:?}"
    );
    let rest = sealer(&api)
        .run(later + chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(rest.events_posted, 1100, "{rest:?}");
    let mut found = logins(&api, &token).await;
    found.sort();
    cursors.sort();
    assert_eq!(found, cursors, "every event by its pivot");
}

/// Writers whose commits land late and out of cursor order, and sealing
/// runs at the real time all the while: every acknowledged event ends up
/// sealed (verified, none forged or missing) and found by a pivot query
/// (in a posting or in the tail above them, never between), once a last
/// run passes the horizon.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sealing_while_commits_land_late_leaves_no_event_out() {
    fn timing(config: &mut audit_core::Config) {
        config.write_deadline = std::time::Duration::from_millis(1000);
        config.attempt_timeout = std::time::Duration::from_millis(1000);
        config.operation_timeout = std::time::Duration::from_millis(10_000);
        config.settle_horizon = std::time::Duration::from_millis(2500);
        config.posting_batch = 20;
    }
    let api = Arc::new(
        Api::from_env(
            audit_infra::testkit::TestEnv::start_with(audit_infra::testkit::EnvOptions {
                with_proxy: true,
                without_stream: true,
                configure: Some(timing),
                ..Default::default()
            })
            .await,
        )
        .await,
    );
    api.proxy().set(audit_infra::proxy::Faults {
        write_delay_ms: Some((0, 250)),
        ..Default::default()
    });
    let token = api.token("acme");
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sealing = {
        let (api, done) = (Arc::clone(&api), Arc::clone(&done));
        tokio::spawn(async move {
            let mut runs = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                // A run that lost a race with another may fail; the next goes on.
                let _ = sealer(&api).run(Utc::now()).await;
                runs += 1;
                tokio::time::sleep(std::time::Duration::from_millis(150)).await;
            }
            runs
        })
    };
    let mut writers = Vec::new();
    for writer in 0..4 {
        let (api, token) = (Arc::clone(&api), token.clone());
        writers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for round in 0..8 {
                let n = 1 + (writer * 5 + round * 3) % 9;
                let events: Vec<Value> = (0..n)
                    .map(|i| json!({"eventType": "user.login", "serviceName": "idp", "userId": format!("w{writer}-{round}-{i}")}))
                    .collect();
                let (_, answer) = json_of(
                    api.post_json(&token, "/audit/events", &json!({ "events": events }))
                        .await,
                )
                .await;
                for result in answer["results"].as_array().into_iter().flatten() {
                    if result["status"] == "stored" {
                        acknowledged.push(result["cursor"].as_str().unwrap().to_string());
                    }
                }
            }
            acknowledged
        }));
    }
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let runs = sealing.await.unwrap();
    assert!(runs > 1, "sealing ran while the writers wrote");
    assert!(
        acknowledged.len() > 40,
        "the writers wrote ({})",
        acknowledged.len()
    );
    api.proxy().set(audit_infra::proxy::Faults::default());
    seal_now(&api).await;
    let report = run_verifier(&api, &token, &[], Utc::now().timestamp_millis()).await;
    assert!(report.ok(), "{:?}", report.log);
    for cursor in &acknowledged {
        assert_eq!(
            status_of(&report, cursor),
            Some(EventStatus::Verified),
            "{cursor}"
        );
    }
    let found: std::collections::HashSet<String> = logins(&api, &token).await.into_iter().collect();
    let missed: Vec<&String> = acknowledged
        .iter()
        .filter(|c| !found.contains(*c))
        .collect();
    assert!(missed.is_empty(), "pivot query missed {missed:?}");
}

/// `audit-local` refuses to serve when its clock is behind what the stored
/// log has sealed, as after a restart with the clock stepped back: events
/// written then got cursors the sealer had passed, were never sealed, and
/// `audit verify` called them forged. With the clock ahead of it, it serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_local_refuses_to_serve_with_its_clock_behind_the_sealed_log() {
    let api = Api::start().await;
    let token = api.token("acme");
    api.store_all(&token, &[json!({"eventType": "a", "serviceName": "b"})])
        .await;
    // The store answers from this process: the child is waited for
    // without blocking it.
    let serve = |api: &Api| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        tokio::process::Command::new(env!("CARGO_BIN_EXE_audit-local"))
            .args([
                "serve",
                "--no-relay",
                "--no-seal",
                "--port",
                &port.to_string(),
            ])
            .args([
                "--endpoint",
                api.env
                    .config
                    .dynamodb_endpoint
                    .as_deref()
                    .unwrap_or_default(),
            ])
            .args(["--table", &api.env.config.table_name])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("audit-local starts")
    };
    // Sealed as at the real time: the clock is ahead of the log, it serves.
    sealer(&api)
        .run(Utc::now() + chrono::Duration::seconds(1))
        .await
        .expect("a run");
    let mut serving = serve(&api);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let ended = serving.try_wait().expect("status");
    let _ = serving.start_kill();
    let output = serving.wait_with_output().await.expect("output");
    assert!(
        ended.is_none(),
        "it serves: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Sealed through an hour from now, as a clock an hour ahead left it.
    sealer(&api)
        .run(Utc::now() + chrono::Duration::hours(1))
        .await
        .expect("a run");
    let refused = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        serve(&api).wait_with_output(),
    )
    .await
    .expect("it ends")
    .expect("its output");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("behind what the stored log has sealed"),
        "{stderr}"
    );
    assert!(stderr.contains("--clock-behind-ok"), "{stderr}");
}
