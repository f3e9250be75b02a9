//! Metadata for building queries, self-auditing of reads, per-tenant retention.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use audit_core::{Config, Event};
use audit_dynamo::item_to_event;
use audit_dynamo::table;
use audit_infra::proxy::Faults;
use audit_infra::testkit::{EnvOptions, TestEnv};
use common::*;
use serde_json::{json, Value};

fn no_retention_cache(config: &mut Config) {
    config.retention_cache = Duration::ZERO;
    config.settle_horizon = Duration::from_millis(200);
}

async fn api() -> Api {
    Api::configured(no_retention_cache).await
}

/// The items of one partition, straight from the table.
async fn items_in_partition(api: &Api, partition: &str) -> Vec<audit_dynamo::Item> {
    api.env
        .all_items()
        .await
        .into_iter()
        .filter(|item| {
            item.get(table::PARTITION_KEY)
                .and_then(|v| v.as_s().ok())
                .is_some_and(|p| p == partition)
        })
        .collect()
}

/// The tenant's events straight from the table, oldest first.
async fn stored_events(api: &Api, tenant: &str) -> Vec<Event> {
    let mut events: Vec<Event> = items_in_partition(api, tenant)
        .await
        .into_iter()
        .map(|item| item_to_event(item).unwrap())
        .collect();
    events.sort_by(|a, b| a.cursor.cmp(&b.cursor));
    events
}

async fn seed(api: &Api, token: &str) {
    let body = json!({"events": [
        {"eventType": "user.login", "serviceName": "idp", "userId": "u-1", "data": {"user": {"role": "admin", "attempts": 2}, "mfa": true}},
        {"eventType": "user.login", "serviceName": "idp", "data": {"user": {"role": "viewer"}, "methods": ["otp"]}},
        {"eventType": "user.logout", "serviceName": "idp"},
        {"eventType": "role.granted", "serviceName": "iam", "indexedData": {"region": "eu"}, "data": {"role": "admin"}},
    ]});
    let (status, answer) = json_of(api.post_json(token, "/audit/events", &body).await).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn metadata_lists_kinds_fields_and_nested_properties_per_tenant() {
    let api = api().await;
    let token = api.token("acme");
    seed(&api, &token).await;
    let (status, meta) = json_of(api.get(&token, "/audit/metadata").await).await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["extended"], true);
    let services: Vec<(String, Vec<String>)> = meta["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["serviceName"].as_str().unwrap().to_string(),
                s["eventTypes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    assert!(
        services.contains(&(
            "idp".into(),
            vec!["user.login".into(), "user.logout".into()]
        )),
        "{services:?}"
    );
    assert!(services.contains(&("iam".into(), vec!["role.granted".into()])));
    let target = |name: &str| {
        meta["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["target"] == name)
            .cloned()
            .unwrap()
    };
    let event_fields = target("event")["fields"].as_array().unwrap().clone();
    let user_id = event_fields.iter().find(|f| f["name"] == "userId").unwrap();
    assert_eq!(user_id["indexed"], true);
    assert!(user_id["operators"]
        .as_array()
        .unwrap()
        .contains(&json!("eq")));
    let data_fields: BTreeSet<String> = target("data")["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{}:{}",
                f["name"].as_str().unwrap(),
                f["type"].as_str().unwrap()
            )
        })
        .collect();
    for expected in [
        "data.user.role:string",
        "data.user.attempts:number",
        "data.mfa:boolean",
        "data.methods:array",
        "data.role:string",
    ] {
        assert!(
            data_fields.contains(expected),
            "{expected} in {data_fields:?}"
        );
    }
    assert_eq!(
        target("indexedData")["fields"][0]["name"],
        "indexedData.region"
    );

    let (status, props) = json_of(
        api.get(
            &token,
            "/audit/metadata/properties?target=data&serviceName=idp&eventType=user.login",
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{props}");
    let names: BTreeSet<String> = props["properties"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "data.methods",
            "data.mfa",
            "data.user.attempts",
            "data.user.role"
        ]
        .into_iter()
        .map(String::from)
        .collect()
    );
    let (_, all_idp) = json_of(
        api.get(
            &token,
            "/audit/metadata/properties?target=event&serviceName=idp",
        )
        .await,
    )
    .await;
    assert!(all_idp["properties"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "userId"));
    let (status, none) = json_of(
        api.get(
            &token,
            "/audit/metadata/properties?target=data&serviceName=nope&eventType=x",
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, none["properties"].as_array().unwrap().len()),
        (200, 0)
    );
    for (query, field) in [
        ("serviceName=idp", "target"),
        ("target=data", "serviceName"),
        ("target=colour&serviceName=idp", "target"),
        ("target=data&serviceName=", "serviceName"),
        ("target=data&serviceName=idp&eventType=", "eventType"),
    ] {
        let (status, err) = json_of(
            api.get(&token, &format!("/audit/metadata/properties?{query}"))
                .await,
        )
        .await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(err["error"]["field"], field);
    }

    // another tenant sees none of it
    let (_, other) = json_of(api.get(&api.token("globex"), "/audit/metadata").await).await;
    assert!(!other["services"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["serviceName"] == "idp"));
    let (_, other_props) = json_of(
        api.get(
            &api.token("globex"),
            "/audit/metadata/properties?target=data&serviceName=idp",
        )
        .await,
    )
    .await;
    assert!(other_props["properties"].as_array().unwrap().is_empty());

    // a query built from metadata alone works
    let role = target("data")["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "data.user.role")
        .unwrap()
        .clone();
    let query = json!({"and": [
        {"field": "serviceName", "operator": "eq", "value": services.iter().find(|s| s.0 == "idp").unwrap().0},
        {"field": role["name"], "operator": role["operators"][0], "value": "admin"}
    ]});
    let (status, found) = json_of(api.post_json(&token, "/audit/query", &query).await).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn every_read_route_records_itself_and_ingest_does_not() {
    let api = api().await;
    let token = api.token("acme");
    seed(&api, &token).await;
    assert!(
        stored_events(&api, "acme")
            .await
            .iter()
            .all(|e| e.service_name != "audit-api"),
        "ingest records nothing about itself"
    );
    let cursor = stored_events(&api, "acme").await[0].cursor.clone();
    let reads = [
        ("GET", "/audit?limit=5".to_string(), "audit.list"),
        ("POST", "/audit/query".to_string(), "audit.query"),
        ("GET", format!("/audit/events/{cursor}"), "audit.lookup"),
        ("GET", "/audit/metadata".to_string(), "audit.metadata"),
        (
            "GET",
            "/audit/metadata/properties?target=data&serviceName=idp".to_string(),
            "audit.metadata.properties",
        ),
    ];
    for (method, path, _) in &reads {
        let request = if *method == "GET" {
            api.http.get(format!("{}{path}", api.base))
        } else {
            api.http
                .post(format!("{}{path}", api.base))
                .json(&json!({}))
        };
        let response = request
            .bearer_auth(&token)
            .header("user-agent", "siem-poller/1.0")
            .header("referer", "https://siem.example")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
    let records: Vec<Event> = stored_events(&api, "acme")
        .await
        .into_iter()
        .filter(|e| e.service_name == "audit-api")
        .collect();
    let kinds: Vec<&str> = records.iter().map(|e| e.event_type.as_str()).collect();
    for (_, path, kind) in &reads {
        let record = records
            .iter()
            .find(|e| e.event_type == *kind)
            .unwrap_or_else(|| panic!("no {kind} record in {kinds:?}"));
        let data = record.data.as_ref().unwrap();
        let (path_only, query) = path.split_once('?').unwrap_or((path, ""));
        assert_eq!(data["path"], path_only);
        assert_eq!(data["queryString"], query);
        assert_eq!(data["userAgent"], "siem-poller/1.0");
        assert_eq!(data["referer"], "https://siem.example");
        assert_eq!(data["sourceIp"], "127.0.0.1");
        assert_eq!(data["subject"], "dev-user@acme");
        assert_eq!(data["clientId"], "audit-local-dev");
        assert_eq!(record.account_id, "acme");
    }
    assert_eq!(records.len(), reads.len(), "one record per read: {kinds:?}");
    // reading the records creates one record about that read, not more
    let (_, page) = json_of(api.get(&token, "/audit?limit=1000").await).await;
    let listed = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["serviceName"] == "audit-api")
        .count();
    assert!(listed <= reads.len());
    let after: Vec<Event> = stored_events(&api, "acme")
        .await
        .into_iter()
        .filter(|e| e.service_name == "audit-api")
        .collect();
    assert_eq!(after.len(), reads.len() + 1);
}

#[tokio::test]
async fn a_poller_can_leave_out_self_audit_records() {
    let api = api().await;
    // The poller's token as README says to mint one locally.
    let minted = std::process::Command::new(env!("CARGO_BIN_EXE_audit-local"))
        .args(["token", "--tenant", "acme", "--scope", RW])
        .args(["--client", "siem", "--subject", "siem-bot"])
        .env("AUDIT_LOCAL_JWT_SECRET", "test-secret")
        .output()
        .expect("audit-local token runs");
    assert!(minted.status.success(), "{minted:?}");
    let poller = String::from_utf8_lossy(&minted.stdout).trim().to_string();
    let analyst = api.token("acme"); // client audit-local-dev
    seed(&api, &analyst).await;
    for token in [&poller, &poller, &analyst] {
        json_of(api.get(token, "/audit/metadata").await).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let count = |page: &Value, client: Option<&str>| {
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                e["serviceName"] == "audit-api" && client.is_none_or(|c| e["clientId"] == c)
            })
            .count()
    };
    let (_, all) = json_of(api.get(&poller, "/audit?limit=1000").await).await;
    assert_eq!(count(&all, None), 3, "included by default");
    let (_, excluded) = json_of(
        api.get(&poller, "/audit?limit=1000&selfAudit=exclude")
            .await,
    )
    .await;
    assert_eq!(count(&excluded, None), 0);
    assert_eq!(excluded["events"].as_array().unwrap().len(), 4);
    assert!(excluded["_links"]["next"]["href"]
        .as_str()
        .unwrap()
        .contains("selfAudit=exclude"));
    let (_, others) = json_of(api.get(&poller, "/audit?limit=1000&selfAudit=others").await).await;
    assert_eq!(
        (
            count(&others, Some("siem")),
            count(&others, Some("audit-local-dev"))
        ),
        (0, 1),
        "only the poller's own records are left out"
    );
    let (status, _) = json_of(api.get(&poller, "/audit?selfAudit=maybe").await).await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_self_audit_record_does_not_fail_the_read_unless_required() {
    for required in [false, true] {
        let env = TestEnv::start_with(EnvOptions {
            with_proxy: true,
            configure: Some(if required {
                |c: &mut Config| c.self_audit_required = true
            } else {
                |_: &mut Config| {}
            }),
            ..Default::default()
        })
        .await;
        let api = Api::from_env(env).await;
        let token = api.token("acme");
        api.env.proxy.as_ref().unwrap().set(Faults {
            throttle_writes: true,
            ..Default::default()
        });
        let response = api.get(&token, "/audit/metadata").await;
        let status = response.status().as_u16();
        if required {
            assert_eq!(status, 503);
            assert!(response.headers().contains_key("retry-after"));
        } else {
            assert_eq!(status, 200, "the read answers although its record failed");
        }
        assert!(api.env.all_items().await.is_empty(), "nothing was recorded");
    }
}

/// Metadata never holds an ingest answer past the write deadline: the
/// events are stored, and what is not recorded by then is recorded by a
/// later event. (A batch of many new event types wrote its thousands of
/// sightings one call after another before answering, past the function's
/// timeout on AWS, for events already stored.)
#[tokio::test]
async fn metadata_writes_stop_at_the_write_deadline_and_resume_later() {
    let env = TestEnv::start_with(EnvOptions {
        with_proxy: true,
        write_deadline: Some(Duration::from_millis(800)),
        ..Default::default()
    })
    .await;
    let api = Api::from_env(env).await;
    let token = api.token("acme");
    // Every metadata write is slow; event writes are not.
    api.env.proxy.as_ref().unwrap().set(Faults {
        delay_writes_containing: Some((table::METADATA_PREFIX.to_string(), 400)),
        ..Default::default()
    });
    let batch = |round: usize| {
        let events: Vec<Value> = (0..40)
            .map(|kind| {
                let data: serde_json::Map<String, Value> = (0..20)
                    .map(|k| (format!("field{k}"), json!(round)))
                    .collect();
                json!({"eventType": format!("kind.{kind}"), "serviceName": "svc", "data": data})
            })
            .collect();
        json!({ "events": events })
    };
    let (status, answer) = json_of(api.post_json(&token, "/audit/events", &batch(0)).await).await;
    assert_eq!(status, 200, "{answer}");
    let stored = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "stored")
        .count();
    assert_eq!(stored, 40, "{answer}");
    // 40 kinds of 20 `data` fields: 800 properties and the kinds' own,
    // hundreds of slow calls. The answer came before them.
    let listed = items_in_partition(&api, &format!("{}acme", table::METADATA_PREFIX))
        .await
        .len();
    assert!(
        listed < 40 * 20,
        "every sighting was written before the answer: {listed} items"
    );
    // What was not written is retried by the next events that show it,
    // each batch recording more, until every property is listed (a slow
    // store may need more than one batch within the deadline).
    api.env.proxy.as_ref().unwrap().set(Faults::default());
    tokio::time::sleep(Duration::from_millis(600)).await;
    let recorded = |items: &[audit_dynamo::Item]| {
        (0..40)
            .flat_map(|kind| (0..20).map(move |k| (kind, k)))
            .filter(|(kind, k)| {
                let name = format!("data.field{k}");
                let event_type = format!("kind.{kind}");
                items.iter().any(|item| {
                    item.get("name").and_then(|v| v.as_s().ok()) == Some(&name)
                        && item.get("eventType").and_then(|v| v.as_s().ok()) == Some(&event_type)
                })
            })
            .count()
    };
    let mut before =
        recorded(&items_in_partition(&api, &format!("{}acme", table::METADATA_PREFIX)).await);
    for round in 1..=20 {
        let (status, answer) =
            json_of(api.post_json(&token, "/audit/events", &batch(round)).await).await;
        assert_eq!(status, 200, "{answer}");
        let now =
            recorded(&items_in_partition(&api, &format!("{}acme", table::METADATA_PREFIX)).await);
        if now == 40 * 20 {
            return;
        }
        before = now;
    }
    panic!("800 properties never all recorded ({before}; {listed} at first)");
}

/// The property names of a tenant's metadata, straight from the table.
async fn property_names(api: &Api, tenant: &str) -> BTreeSet<String> {
    items_in_partition(api, &format!("{}{tenant}", table::METADATA_PREFIX))
        .await
        .into_iter()
        .filter_map(|item| item.get("name").and_then(|v| v.as_s().ok()).cloned())
        .collect()
}

/// A read writes no sightings for its own record (it would be a third call
/// in series on a process's first read): metadata lists a read record's
/// properties from the record's schema, and they are exactly those of the
/// records reads store, whatever the route.
#[tokio::test]
async fn read_records_are_listed_from_their_schema_without_sightings() {
    let api = api().await;
    // Reads of every scope: the settings are read with `audit:admin`.
    let token = api.env.token("acme", "audit:read audit:admin");
    // One read of each function that serves reads.
    let reads = [
        ("/audit?limit=1", "audit.list"),
        ("/audit/metadata", "audit.metadata"),
        ("/audit/verifier-key", "audit.verifier-key"),
        ("/audit/settings", "audit.settings.read"),
    ];
    for (path, _) in reads {
        let response = api
            .http
            .get(format!("{}{path}", api.base))
            .bearer_auth(&token)
            .header("user-agent", "siem-poller/1.0")
            .header("referer", "https://siem.example")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
    assert_eq!(
        property_names(&api, "acme").await,
        BTreeSet::new(),
        "reads wrote property items"
    );
    let records = stored_events(&api, "acme").await;
    for (_, kind) in reads {
        let record = records
            .iter()
            .find(|e| e.event_type == kind)
            .unwrap_or_else(|| panic!("no {kind} record"));
        let mut stored: BTreeSet<String> = record
            .data
            .as_ref()
            .and_then(Value::as_object)
            .unwrap()
            .keys()
            .map(|key| format!("data.{key}"))
            .collect();
        let top_level = serde_json::to_value(record).unwrap();
        stored.extend(
            top_level
                .as_object()
                .unwrap()
                .keys()
                .filter(|key| !["data", "indexedData", "mayHaveMoreData"].contains(&key.as_str()))
                .cloned(),
        );
        let mut listed = BTreeSet::new();
        for target in ["event", "data"] {
            let url = format!(
                "/audit/metadata/properties?target={target}&serviceName=audit-api&eventType={kind}"
            );
            let (status, body) = json_of(api.get(&token, &url).await).await;
            assert_eq!(status, 200, "{url}: {body}");
            listed.extend(
                body["properties"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["name"].as_str().unwrap().to_string()),
            );
        }
        assert_eq!(listed, stored, "{kind}: listed against stored");
    }
    // A change's record holds the change: its properties are recorded once stored.
    let admin = api.env.token("acme", "audit:read audit:admin");
    let (status, body) = json_of(
        api.http
            .put(format!("{}/audit/settings", api.base))
            .bearer_auth(&admin)
            .json(&json!({"retentionDays": 30}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(property_names(&api, "acme")
        .await
        .contains("data.retentionDays.to"));
    let (_, everything) = json_of(api.get(&token, "/audit/metadata").await).await;
    let data_fields: Vec<&str> = everything["targets"][1]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert!(data_fields.contains(&"data.queryString"), "{data_fields:?}");
}

#[tokio::test]
async fn retention_is_per_tenant_bounded_admin_only_and_audited() {
    let api = api().await;
    let admin = api.env.token("acme", "audit:read audit:write audit:admin");
    let (status, settings) = json_of(api.get(&admin, "/audit/settings").await).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            settings["retentionDays"].as_u64(),
            settings["default"].as_bool()
        ),
        (Some(90), Some(true))
    );
    let (_, before) = json_of(
        api.post_json(&admin, "/audit/events", &event("before"))
            .await,
    )
    .await;

    let put = |token: String, body: Value| {
        let (http, url) = (api.http.clone(), format!("{}/audit/settings", api.base));
        async move {
            json_of(
                http.put(url)
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    for bad in [
        json!({"retentionDays": 0}),
        json!({"retentionDays": 3651}),
        json!({"retentionDays": "30"}),
        json!({"retentionDays": 1.5}),
        json!({"days": 30}),
        json!({}),
    ] {
        let (status, answer) = put(admin.clone(), bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {answer}");
    }
    let writer = api.token("acme");
    let (status, _) = put(writer.clone(), json!({"retentionDays": 30})).await;
    assert_eq!(status, 403, "settings need audit:admin");
    let (status, _) = json_of(api.get(&writer, "/audit/settings").await).await;
    assert_eq!(status, 403);

    let (status, updated) = put(admin.clone(), json!({"retentionDays": 30})).await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["retentionDays"], 30);
    let (_, after) = json_of(
        api.post_json(&admin, "/audit/events", &event("after"))
            .await,
    )
    .await;
    let days = |answer: &Value| {
        let t =
            chrono::DateTime::parse_from_rfc3339(answer["timestamp"].as_str().unwrap()).unwrap();
        let e =
            chrono::DateTime::parse_from_rfc3339(answer["expiresAt"].as_str().unwrap()).unwrap();
        (e - t).num_days()
    };
    assert_eq!(days(&before), 90);
    assert_eq!(days(&after), 30, "new events get the tenant's retention");
    // stored events are never rewritten
    let (_, old) = json_of(
        api.get(
            &admin,
            &format!("/audit/events/{}", before["cursor"].as_str().unwrap()),
        )
        .await,
    )
    .await;
    assert_eq!(old["expiresAt"], before["expiresAt"]);
    // other tenants keep the default
    let (_, other) = json_of(
        api.post_json(&api.token("globex"), "/audit/events", &event("x"))
            .await,
    )
    .await;
    assert_eq!(days(&other), 90);
    // the change is itself an audit event
    let change = stored_events(&api, "acme")
        .await
        .into_iter()
        .find(|e| e.event_type == "audit.settings.updated")
        .expect("a settings event");
    assert_eq!(
        change.data.unwrap()["retentionDays"],
        json!({"from": 90, "to": 30})
    );
    // and, shortening retention, is kept as long as the events it shortened
    let change_days = chrono::DateTime::parse_from_rfc3339(&change.expires_at).unwrap()
        - chrono::DateTime::parse_from_rfc3339(&change.timestamp).unwrap();
    assert_eq!(change_days.num_days(), 90);
    let (_, settings) = json_of(api.get(&admin, "/audit/settings").await).await;
    assert_eq!(
        (
            settings["retentionDays"].as_u64(),
            settings["default"].as_bool()
        ),
        (Some(30), Some(false))
    );
}

/// `PUT /audit/settings` with `retentionDays`; the status and the body.
async fn set_retention(api: &Api, token: &str, days: u32) -> (u16, Value) {
    json_of(
        api.http
            .put(format!("{}/audit/settings", api.base))
            .bearer_auth(token)
            .json(&json!({"retentionDays": days}))
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// Concurrent changes of the retention each record the value they really
/// replaced: read in cursor order, the records chain from the first value
/// to the one the settings hold, each `from` the previous `to`, each
/// value replaced once, and each record kept at least for the longer of its
/// two retentions. (Before, racing changes read the same value and several
/// recorded a change from it, with its retention.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_settings_changes_record_a_true_chain() {
    let api = Api::start().await;
    let admin = api.env.token("acme", "audit:read audit:write audit:admin");
    let put = |days: u32| set_retention(&api, &admin, days);
    assert_eq!(put(10).await.0, 200);
    let values: Vec<u32> = (0..24).map(|i| 100 + i).collect();
    let answers = futures::future::join_all(values.iter().map(|days| put(*days))).await;
    for (status, answer) in &answers {
        assert_eq!(*status, 200, "{answer}");
    }
    let mut changes: Vec<Event> = stored_events(&api, "acme")
        .await
        .into_iter()
        .filter(|e| e.event_type == "audit.settings.updated")
        .collect();
    changes.sort_by(|a, b| a.cursor.cmp(&b.cursor));
    assert_eq!(changes.len(), values.len() + 1);
    let chain: Vec<(u64, u64)> = changes
        .iter()
        .map(|change| {
            let days = &change.data.as_ref().unwrap()["retentionDays"];
            (days["from"].as_u64().unwrap(), days["to"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(chain[0], (90, 10));
    for pair in chain.windows(2) {
        assert_eq!(
            pair[1].0, pair[0].1,
            "a change from a value it did not replace: {chain:?}"
        );
    }
    let (_, settings) = json_of(api.get(&admin, "/audit/settings").await).await;
    assert_eq!(
        settings["retentionDays"].as_u64(),
        Some(chain.last().unwrap().1)
    );
    for (change, (from, to)) in changes.iter().zip(&chain) {
        let kept = chrono::DateTime::parse_from_rfc3339(&change.expires_at).unwrap()
            - chrono::DateTime::parse_from_rfc3339(&change.timestamp).unwrap();
        // (Or the tenant's retention when it is written, if longer still:
        // a record is an event of its time.)
        assert!(
            kept.num_days() as u64 >= *from.max(to),
            "{from} -> {to}: {kept}"
        );
    }
}

/// A settings change whose answer DynamoDB lost (the write landed; the
/// SDK's retry of it is then refused by the write itself) is a success,
/// recorded once with the value it replaced. (It was taken for a change
/// that lost a race: read again, written again, and recorded `from` its
/// own value, the real change unrecorded.) The change and its record are
/// one transaction, so a write that failed outright leaves neither.
#[tokio::test]
async fn a_settings_change_whose_answer_was_lost_is_recorded_once_and_truly() {
    let api = Api::with_faults(Faults::default()).await;
    let admin = api.env.token("acme", "audit:read audit:write audit:admin");
    let put = |days: u32| set_retention(&api, &admin, days);
    assert_eq!(put(10).await.0, 200);
    // Every attempt the SDK makes (4) lands or is refused by the first, and
    // no answer of a landed one comes back: only a read can tell.
    api.proxy().lose_next_write_answers(4);
    let (status, answer) = put(20).await;
    assert_eq!(status, 200, "{answer}");
    api.proxy().lose_next_write_answers(0);
    // A write that fails outright changes nothing and records nothing.
    api.proxy().fail_next_writes(8);
    let (status, answer) = put(30).await;
    assert_eq!(status, 503, "{answer}");
    api.proxy().fail_next_writes(0);
    let mut changes: Vec<Event> = stored_events(&api, "acme")
        .await
        .into_iter()
        .filter(|e| e.event_type == "audit.settings.updated")
        .collect();
    changes.sort_by(|a, b| a.cursor.cmp(&b.cursor));
    let chain: Vec<Value> = changes
        .iter()
        .map(|change| change.data.as_ref().unwrap()["retentionDays"].clone())
        .collect();
    assert_eq!(
        chain,
        [json!({"from": 90, "to": 10}), json!({"from": 10, "to": 20})]
    );
    let (_, settings) = json_of(api.get(&admin, "/audit/settings").await).await;
    assert_eq!(settings["retentionDays"], 20);
    assert_eq!(
        settings["changeCursor"].as_str(),
        Some(changes[1].cursor.as_str())
    );
}

/// A value of the listed type for a condition with the listed operator.
fn value_for(field_type: &str, operator: &str) -> Value {
    let scalar = match field_type {
        "number" => json!(1),
        "boolean" => json!(true),
        "time" => json!("2026-01-01T00:00:00Z"),
        _ => json!("x"),
    };
    match operator {
        "exists" => json!(true),
        "in" => json!([scalar]),
        _ => scalar,
    }
}

/// Every property either metadata route lists is queryable with every
/// operator it lists, under the same name and type in both routes: keys with
/// dots, spaces, quotes and non-ASCII letters, arrays of mixed scalars, the
/// API's own records, and a key longer than a metadata item's key can
/// hold (it was left out; it is listed under a digest of its name now).
#[tokio::test]
async fn every_listed_property_is_queryable_with_every_listed_operator() {
    let api = api().await;
    let token = api.token("acme");
    let long_key = "k".repeat(1100);
    let body = json!({"events": [{
        "eventType": "pod.started", "serviceName": "k8s", "userId": "2026-03-01T10:00:00Z",
        "data": {
            "k8s.pod": "p-1", "display name": "Ann", "tags": [1, true, "x"],
            "quote\"key": "q", "ünï": "u", "nested": {"a.b": {"c d": 5}},
            long_key.clone(): "long", "short": "kept"
        },
        "indexedData": {"display name": "x", "k.v": "y"}
    }]});
    let (status, answer) = json_of(api.post_json(&token, "/audit/events", &body).await).await;
    assert_eq!(status, 200, "{answer}");
    // a read, so that the API's own record lists its properties too
    let (status, _) = json_of(api.get(&token, "/audit?limit=1").await).await;
    assert_eq!(status, 200);

    let (status, meta) = json_of(api.get(&token, "/audit/metadata").await).await;
    assert_eq!(status, 200, "{meta}");
    let mut listed: Vec<(String, String, Vec<String>)> = Vec::new();
    let mut types: std::collections::BTreeMap<String, String> = Default::default();
    let mut record = |field: &Value, listed: &mut Vec<(String, String, Vec<String>)>| {
        let name = field["name"].as_str().unwrap().to_string();
        let field_type = field["type"].as_str().unwrap().to_string();
        if let Some(earlier) = types.insert(name.clone(), field_type.clone()) {
            assert_eq!(earlier, field_type, "{name} has one type in both routes");
        }
        let operators = field["operators"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o.as_str().unwrap().to_string())
            .collect();
        listed.push((name, field_type, operators));
    };
    for target in meta["targets"].as_array().unwrap() {
        for field in target["fields"].as_array().unwrap() {
            record(field, &mut listed);
        }
    }
    for service in meta["services"].as_array().unwrap() {
        let service_name = service["serviceName"].as_str().unwrap();
        for event_type in service["eventTypes"].as_array().unwrap() {
            for target in ["event", "data", "indexedData"] {
                let url = format!(
                    "/audit/metadata/properties?target={target}&serviceName={service_name}&eventType={}",
                    event_type.as_str().unwrap()
                );
                let (status, props) = json_of(api.get(&token, &url).await).await;
                assert_eq!(status, 200, "{url}: {props}");
                for field in props["properties"].as_array().unwrap() {
                    record(field, &mut listed);
                }
            }
        }
    }
    let names: BTreeSet<&str> = listed.iter().map(|(n, _, _)| n.as_str()).collect();
    for expected in [
        r#"data["k8s.pod"]"#,
        r#"data["display name"]"#,
        r#"data["quote\"key"]"#,
        r#"data["ünï"]"#,
        r#"data.nested["a.b"]["c d"]"#,
        "data.tags",
        "data.short",
        r#"indexedData["display name"]"#,
        r#"indexedData["k.v"]"#,
        "timestamp",
    ] {
        assert!(names.contains(expected), "{expected} in {names:?}");
    }
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("data.path") || n.starts_with("data.method")),
        "the API's own records list their properties: {names:?}"
    );
    assert!(
        names.contains(format!("data.{long_key}").as_str()),
        "{names:?}"
    );
    assert_eq!(types["timestamp"], "time");

    // each distinct (name, type, operator) once: both routes list the same fields
    let distinct: BTreeSet<(String, String, String)> = listed
        .iter()
        .flat_map(|(name, field_type, operators)| {
            operators
                .iter()
                .map(move |operator| (name.clone(), field_type.clone(), operator.clone()))
        })
        .collect();
    for (name, field_type, operator) in &distinct {
        let query = json!({"and": [{"field": name, "operator": operator,
            "value": value_for(field_type, operator)}]});
        let (status, found) = json_of(api.post_json(&token, "/audit/query", &query).await).await;
        assert_eq!(status, 200, "{query}: {found}");
    }
    // Every name listed for the event's kind names something in it:
    // `exists` finds the event (a 200 alone would pass a name that
    // resolves to nothing).
    for target in ["data", "indexedData"] {
        let url = format!(
            "/audit/metadata/properties?target={target}&serviceName=k8s&eventType=pod.started"
        );
        let (status, props) = json_of(api.get(&token, &url).await).await;
        assert_eq!(status, 200, "{props}");
        let props = props["properties"].as_array().unwrap().clone();
        assert!(props.len() >= 2, "{target}: {props:?}");
        for property in props {
            let name = property["name"].as_str().unwrap();
            let query = json!({"and": [{"field": name, "operator": "exists", "value": true}]});
            let (status, found) =
                json_of(api.post_json(&token, "/audit/query", &query).await).await;
            assert_eq!(status, 200, "{query}: {found}");
            let hits = found["data"].as_array().unwrap();
            assert_eq!(hits.len(), 1, "{name}: {found}");
            assert_eq!(hits[0]["eventType"], "pod.started");
        }
    }
    // and the names find what they name
    for (field, operator, value) in [
        (r#"data["k8s.pod"]"#, "eq", json!("p-1")),
        (r#"data["display name"]"#, "eq", json!("Ann")),
        (r#"data["quote\"key"]"#, "eq", json!("q")),
        (r#"data["ünï"]"#, "startsWith", json!("u")),
        (r#"data.nested["a.b"]["c d"]"#, "gte", json!(5)),
        ("data.tags", "contains", json!(1)),
        ("data.tags", "contains", json!(true)),
        ("data.tags", "contains", json!("x")),
        (r#"indexedData["k.v"]"#, "eq", json!("y")),
        ("userId", "eq", json!("2026-03-01T10:00:00Z")),
        ("data.short", "eq", json!("kept")),
    ] {
        let query = json!({"and": [{"field": field, "operator": operator, "value": value}]});
        let (status, found) = json_of(api.post_json(&token, "/audit/query", &query).await).await;
        assert_eq!(status, 200, "{found}");
        let hits = found["data"].as_array().unwrap();
        assert_eq!(hits.len(), 1, "{query}: {found}");
        assert_eq!(hits[0]["eventType"], "pod.started");
    }
}

/// `data` keyed by ids gives every event new property names. A process
/// records at most `MAX_PROPERTIES_PER_KIND` of them per kind of event, and
/// another kind (another tenant's, another service's) is still recorded
/// after it; an answer lists at most `MAX_LISTED_PROPERTIES` and says it is
/// cut.
#[tokio::test]
async fn data_keyed_by_ids_neither_floods_metadata_nor_crowds_out_others() {
    use audit_core::metadata::{ObservedProperty, MAX_LISTED_PROPERTIES, MAX_PROPERTIES_PER_KIND};
    use audit_core::EventStore;
    let api = api().await;
    let token = api.token("acme");
    let keyed: Vec<Value> = (0..MAX_PROPERTIES_PER_KIND + 200)
        .map(|i| json!({"eventType": "keyed", "serviceName": "ids", "data": {format!("id-{i:05}"): i}}))
        .collect();
    for chunk in keyed.chunks(500) {
        api.store_all(&token, chunk).await;
    }
    api.store_all(
        &token,
        &[json!({"eventType": "plain", "serviceName": "other", "data": {"x": 1}})],
    )
    .await;
    let names = property_names(&api, "acme").await;
    let keyed_names = names.iter().filter(|n| n.starts_with("data.id-")).count();
    assert_eq!(
        keyed_names, MAX_PROPERTIES_PER_KIND,
        "one kind's data properties"
    );
    assert!(names.contains("data.x"), "another kind is still recorded");

    // More recorded than an answer lists (as many processes would record):
    // the answer is cut and says so.
    let store = audit_dynamo::DynamoStore::new(api.env.client.clone(), &api.env.config.table_name);
    let many: Vec<(String, ObservedProperty)> = (0..MAX_LISTED_PROPERTIES + 1)
        .map(|i| {
            (
                "acme".to_string(),
                ObservedProperty {
                    service_name: "bulk".into(),
                    event_type: "many".into(),
                    name: format!("data.k{i:06}"),
                    json_type: "number".into(),
                },
            )
        })
        .collect();
    for chunk in many.chunks(1000) {
        store.put_properties(chunk).await.expect("recorded");
    }
    for path in [
        "/audit/metadata",
        "/audit/metadata/properties?target=data&serviceName=bulk",
    ] {
        let (status, body) = json_of(api.get(&token, path).await).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(body["truncated"], true, "{path}");
        let listed = body["properties"]
            .as_array()
            .map(Vec::len)
            .unwrap_or_else(|| {
                body["targets"][1]["fields"]
                    .as_array()
                    .map(Vec::len)
                    .unwrap_or(0)
            });
        assert!(
            listed <= MAX_LISTED_PROPERTIES + 100,
            "{path}: {listed} listed"
        );
    }
    let (_, body) = json_of(
        api.get(
            &token,
            "/audit/metadata/properties?target=data&serviceName=other",
        )
        .await,
    )
    .await;
    assert_eq!(body["truncated"], false);
}

/// Names as long as the limits allow, in characters of 3 and 4 bytes, are
/// listed like any other: the service with its event type, and the
/// properties under both filters. Their key would have passed DynamoDB's
/// 1024-byte sort key, so they were left out (the embedded store takes
/// longer keys: every metadata key is checked against the limit here).
#[tokio::test]
async fn services_kinds_and_properties_with_long_names_are_listed() {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    let api = api().await;
    let token = api.token("wide-names");
    let service = format!("{}{}", "監査サービス".repeat(16), "監査サ");
    let kind = "ユーザーログイン".repeat(30);
    let emoji_service = format!("S{}", "😀".repeat(255));
    let long_key = "k".repeat(1000);
    let body = json!({"events": [
        {"eventType": kind, "serviceName": service, "data": {"i": 1, long_key.clone(): true}},
        {"eventType": "x", "serviceName": emoji_service, "data": {"i": 2}},
    ]});
    let (status, answer) = json_of(api.post_json(&token, "/audit/events", &body).await).await;
    assert_eq!(status, 200, "{answer}");
    let (status, meta) = json_of(api.get(&token, "/audit/metadata").await).await;
    assert_eq!(status, 200, "{meta}");
    let services = meta["services"].as_array().unwrap();
    let listed = |name: &str| services.iter().find(|s| s["serviceName"] == name).cloned();
    assert_eq!(
        listed(&service).expect("the long service")["eventTypes"],
        json!([kind])
    );
    assert!(listed(&emoji_service).is_some(), "{meta}");
    let encoded = |text: &str| utf8_percent_encode(text, NON_ALPHANUMERIC).to_string();
    let (status, properties) = json_of(
        api.get(
            &token,
            &format!(
                "/audit/metadata/properties?target=data&serviceName={}&eventType={}",
                encoded(&service),
                encoded(&kind)
            ),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{properties}");
    let names: BTreeSet<String> = properties["properties"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    assert!(names.contains(&format!("data.{long_key}")), "{names:?}");
    assert!(names.contains("data.i"), "{names:?}");
    // Written before: a name of 300 bytes of JSON under its JSON text, the
    // whole key within 1024 bytes. Filtered listings still find it.
    let old_service = "o".repeat(298);
    let old_key = format!("[{},\"k\",\"data.old\",\"string\"]", json!(old_service));
    let mut old_item: audit_dynamo::Item = serde_dynamo::to_item(json!({
        "serviceName": old_service, "eventType": "k", "name": "data.old", "type": "string"
    }))
    .unwrap();
    old_item.insert(
        table::PARTITION_KEY.into(),
        aws_sdk_dynamodb::types::AttributeValue::S(format!("{}wide-names", table::METADATA_PREFIX)),
    );
    old_item.insert(
        table::SORT_KEY.into(),
        aws_sdk_dynamodb::types::AttributeValue::S(old_key),
    );
    api.env
        .direct
        .put_item()
        .table_name(&api.env.config.table_name)
        .set_item(Some(old_item))
        .send()
        .await
        .unwrap();
    let (status, properties) = json_of(
        api.get(
            &token,
            &format!(
                "/audit/metadata/properties?target=data&serviceName={}&eventType=k",
                old_service
            ),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{properties}");
    assert_eq!(
        properties["properties"][0]["name"], "data.old",
        "{properties}"
    );
    for item in items_in_partition(&api, &format!("{}wide-names", table::METADATA_PREFIX)).await {
        let key = item[table::SORT_KEY].as_s().unwrap();
        assert!(key.len() <= 1024, "a sort key of {} bytes", key.len());
    }
}
