//! Queries mean what the docs say on every plan: a differential test runs
//! random queries over random events with the planner free to pick an index
//! and forced to read the time range, and checks both against a plain
//! in-memory oracle of the documented semantics. Runs on both stores.

mod common;

use std::sync::Arc;

use audit_core::integrity::seal::Poster;
use audit_core::pivot::{PostingsBuilder, PIVOT_INDEXES};
use audit_core::query::{Plan, Query};
use audit_core::read::TrailReader;
use audit_core::EventStore;
use audit_dynamo::DynamoStore;
use chrono::{DateTime, Duration, Utc};
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use ulid::Ulid;

const USER_IDS: &[&str] = &[
    // Shaped like another pivot's posting key: `acme#u#e#login` must not
    // be `acme#e#login`'s.
    "e#login",
    "u-1",
    "u-2",
    "2026-03-01T10:00:00Z",
    "2026-03-01T10:00:00+00:00",
    "2026-03-01T11:00:00+01:00",
];
const TYPES: &[&str] = &["login", "logout", "2026-03-01T10:00:00Z"];
const SERVICES: &[&str] = &["idp", "iam"];
const TRACES: &[&str] = &["t-1", "t-2", "t-3"];
const WORDS: &[&str] = &[
    "a",
    "b",
    "ab",
    "2026-03-01T10:00:00Z",
    "2026-03-01T10:00:00.000Z",
];

fn pick<'a>(rng: &mut StdRng, list: &[&'a str]) -> &'a str {
    list[rng.random_range(0..list.len())]
}

fn random_event(rng: &mut StdRng) -> Value {
    let mut event = json!({"eventType": pick(rng, TYPES), "serviceName": pick(rng, SERVICES)});
    if rng.random_bool(0.8) {
        event["userId"] = json!(pick(rng, USER_IDS));
    }
    if rng.random_bool(0.5) {
        event["traceId"] = json!(pick(rng, TRACES));
    }
    if rng.random_bool(0.5) {
        event["occurredAt"] = json!(pick(rng, &USER_IDS[3..]));
    }
    let mut data = json!({});
    if rng.random_bool(0.7) {
        data["n"] = json!(rng.random_range(-3..4));
    }
    if rng.random_bool(0.3) {
        data["n"] = json!(rng.random_range(-3..4) as f64 + 0.5);
    }
    if rng.random_bool(0.7) {
        data["s"] = json!(pick(rng, WORDS));
    }
    if rng.random_bool(0.5) {
        let tags: Vec<Value> = (0..rng.random_range(0..3))
            .map(|_| match rng.random_range(0..3) {
                0 => json!(pick(rng, WORDS)),
                1 => json!(rng.random_range(0..3)),
                _ => json!(rng.random_bool(0.5)),
            })
            .collect();
        data["tags"] = Value::Array(tags);
    }
    if rng.random_bool(0.3) {
        data["k8s.pod"] = json!(pick(rng, WORDS));
    }
    event["data"] = data;
    if rng.random_bool(0.3) {
        event["indexedData"] = json!({"region": pick(rng, WORDS)});
    }
    event
}

fn random_condition(rng: &mut StdRng) -> Value {
    let string_ops = [
        "eq",
        "ne",
        "in",
        "startsWith",
        "contains",
        "exists",
        "gt",
        "lt",
    ];
    match rng.random_range(0..10) {
        0 | 1 => {
            let field = pick(rng, &["userId", "eventType", "serviceName", "traceId"]);
            let list = match field {
                "userId" => USER_IDS,
                "eventType" => TYPES,
                "serviceName" => SERVICES,
                _ => TRACES,
            };
            let op = if rng.random_bool(0.6) {
                "eq"
            } else {
                pick(rng, &string_ops)
            };
            let value = match op {
                "in" => json!([pick(rng, list), pick(rng, list)]),
                "exists" => json!(rng.random_bool(0.5)),
                _ => json!(pick(rng, list)),
            };
            json!({"field": field, "operator": op, "value": value})
        }
        2 => {
            let op = pick(rng, &["eq", "ne", "gt", "gte", "lt", "lte", "exists"]);
            let value = if op == "exists" {
                json!(true)
            } else {
                json!(pick(rng, &USER_IDS[3..]))
            };
            json!({"field": "occurredAt", "operator": op, "value": value})
        }
        3 | 4 => {
            let op = pick(rng, &["eq", "ne", "in", "gt", "gte", "lt", "lte", "exists"]);
            let value = match op {
                "in" => json!([
                    rng.random_range(-3..4),
                    rng.random_range(-3..4) as f64 + 0.5
                ]),
                "exists" => json!(rng.random_bool(0.5)),
                _ => json!(rng.random_range(-3..4)),
            };
            json!({"field": "data.n", "operator": op, "value": value})
        }
        5 => {
            let op = pick(rng, &string_ops);
            let value = match op {
                "in" => json!([pick(rng, WORDS), pick(rng, WORDS)]),
                "exists" => json!(rng.random_bool(0.5)),
                _ => json!(pick(rng, WORDS)),
            };
            json!({"field": "data.s", "operator": op, "value": value})
        }
        6 => {
            let value = match rng.random_range(0..3) {
                0 => json!(pick(rng, WORDS)),
                1 => json!(rng.random_range(0..3)),
                _ => json!(rng.random_bool(0.5)),
            };
            json!({"field": "data.tags", "operator": "contains", "value": value})
        }
        7 => {
            let op = pick(rng, &["eq", "startsWith", "exists"]);
            let value = if op == "exists" {
                json!(rng.random_bool(0.5))
            } else {
                json!(pick(rng, WORDS))
            };
            json!({"field": "data[\"k8s.pod\"]", "operator": op, "value": value})
        }
        8 => {
            json!({"field": "indexedData.region", "operator": pick(rng, &["eq", "ne", "startsWith"]), "value": pick(rng, WORDS)})
        }
        _ => {
            json!({"field": "timestamp", "operator": pick(rng, &["gte", "lt"]), "value": "2026-03-01T10:00:00Z"})
        }
    }
}

/// The documented semantics, written plainly: what the API must return.
fn oracle_matches(condition: &Value, event: &Value) -> Option<bool> {
    let field = condition["field"].as_str()?;
    let op = condition["operator"].as_str()?;
    let wanted = &condition["value"];
    let found = match field {
        "data[\"k8s.pod\"]" => event["data"].get("k8s.pod"),
        f if f.starts_with("data.") => event["data"].get(&f[5..]),
        f if f.starts_with("indexedData.") => event["indexedData"].get(&f[12..]),
        f => event.get(f),
    }
    .filter(|v| !v.is_null());
    let time = matches!(field, "timestamp" | "occurredAt" | "expiresAt");
    let cmp = |a: &Value, b: &Value| -> Option<std::cmp::Ordering> {
        match (a, b) {
            (Value::String(x), Value::String(y)) if time => Some(
                DateTime::parse_from_rfc3339(x)
                    .ok()?
                    .cmp(&DateTime::parse_from_rfc3339(y).ok()?),
            ),
            (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
            (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
            (Value::Bool(x), Value::Bool(y)) if x == y => Some(std::cmp::Ordering::Equal),
            _ => None,
        }
    };
    let eq = |a: &Value, b: &Value| cmp(a, b) == Some(std::cmp::Ordering::Equal);
    use std::cmp::Ordering::*;
    Some(match op {
        "exists" => found.is_some() == wanted.as_bool()?,
        "eq" => found.is_some_and(|v| eq(v, wanted)),
        "ne" => !found.is_some_and(|v| eq(v, wanted)),
        "in" => found.is_some_and(|v| {
            wanted
                .as_array()
                .is_some_and(|l| l.iter().any(|w| eq(v, w)))
        }),
        "startsWith" => found
            .and_then(Value::as_str)
            .is_some_and(|s| s.starts_with(wanted.as_str().unwrap_or("\u{0}"))),
        "contains" => match found {
            Some(Value::String(s)) => wanted.as_str().is_some_and(|w| s.contains(w)),
            Some(Value::Array(items)) => items.iter().any(|i| eq(i, wanted)),
            _ => false,
        },
        "gt" => found.and_then(|v| cmp(v, wanted)) == Some(Greater),
        "gte" => matches!(found.and_then(|v| cmp(v, wanted)), Some(Greater | Equal)),
        "lt" => found.and_then(|v| cmp(v, wanted)) == Some(Less),
        "lte" => matches!(found.and_then(|v| cmp(v, wanted)), Some(Less | Equal)),
        _ => return None,
    })
}

async fn all_pages(
    reader: &TrailReader<DynamoStore>,
    query: &Query,
    plan: Plan,
    limit: usize,
) -> Vec<Value> {
    let mut cursors = Vec::new();
    let mut next = None;
    for _ in 0..1000 {
        let page = reader
            .query_with_plan("acme", query, next.take(), limit, plan.clone())
            .await
            .expect("query page");
        // Whole events: an index read fetches them by key, and must return
        // them exactly as the table's own range does.
        cursors.extend(
            page.events
                .into_iter()
                .map(|e| serde_json::to_value(e).expect("json")),
        );
        match page.next {
            Some(token) => {
                next = Some(reader.verify_cursor(&token, "acme", query).expect("cursor"))
            }
            None => return cursors,
        }
    }
    panic!("the query did not finish");
}

#[tokio::test]
async fn random_queries_mean_the_same_on_every_plan_and_match_the_oracle() {
    let seed: u64 = std::env::var("QUERY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("QUERY_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let api = Api::start().await;
    let token = api.token("acme");
    // Batches: many events share a millisecond, and batches span several.
    for _ in 0..4 {
        let events: Vec<Value> = (0..60).map(|_| random_event(&mut rng)).collect();
        api.store_all(&token, &events).await;
    }
    let store = Arc::new(DynamoStore::new(
        api.env.client.clone(),
        api.env.config.table_name.clone(),
    ));
    let reader = TrailReader::new(Arc::clone(&store), api.env.config.clone());
    let everything = Query::parse(&json!({}), Utc::now() + Duration::seconds(1)).expect("query");
    let all = reader
        .query_with_plan("acme", &everything, None, 1000, Plan::whole_range())
        .await
        .expect("all");
    let stored: Vec<Value> = all
        .events
        .iter()
        .map(|e| serde_json::to_value(e).expect("json"))
        .collect();
    assert_eq!(stored.len(), 240);
    let timestamps: Vec<String> = stored
        .iter()
        .map(|e| e["timestamp"].as_str().unwrap_or_default().to_string())
        .collect();

    // Pivot reads go through postings up to the posted-through mark and the
    // tail above it: the cases run with nothing posted, then with the mark
    // in the middle (and postings beyond it, as a run that wrote them but
    // died before moving the mark leaves), then with everything posted.
    let poster = Poster::new(Arc::clone(&store), &api.env.config);
    let settle = Duration::from_std(api.env.config.settle_horizon).expect("settle");
    let mut oldest_first: Vec<&Value> = stored.iter().collect();
    oldest_first.sort_by_key(|e| e["cursor"].as_str().unwrap_or_default().to_string());
    let time_of = |e: &Value| {
        DateTime::parse_from_rfc3339(e["timestamp"].as_str().unwrap_or_default())
            .expect("a timestamp")
            .with_timezone(&Utc)
    };
    for case in 0..150 {
        if case == 50 {
            let (posted, _) = poster
                .post_tenant("acme", time_of(oldest_first[120]) + settle)
                .await
                .expect("postings up to the middle");
            assert!(posted > 0 && posted <= 120, "posted {posted}");
            let mark = store.posted_through("acme").await.expect("mark");
            let mut died = PostingsBuilder::default();
            for event in &oldest_first[..200] {
                let cursor = Ulid::from_string(event["cursor"].as_str().unwrap_or_default())
                    .expect("a cursor");
                let values = PIVOT_INDEXES
                    .iter()
                    .enumerate()
                    .filter_map(|(n, index)| event[index.field].as_str().map(|v| (n, v)));
                died.add(cursor, i64::MAX, values);
            }
            let through = mark.expect("a mark");
            store
                .put_postings(
                    "acme",
                    &died.finish(),
                    &audit_core::store::PostedMark {
                        through: through.clone(),
                        log_size: None,
                    },
                )
                .await
                .expect("postings beyond the mark");
            assert_eq!(
                store.posted_through("acme").await.expect("mark"),
                Some(through),
                "the mark never moves back"
            );
        }
        if case == 100 {
            let (posted, complete) = poster
                .post_tenant("acme", Utc::now() + settle + Duration::seconds(1))
                .await
                .expect("postings of everything");
            assert!(posted > 0 && complete);
            // Events come by key only from postings: the pivot read them.
            let probe = Query::parse(
                &json!({"and": [{"field": "serviceName", "operator": "eq", "value": "idp"}]}),
                Utc::now(),
            )
            .expect("a query");
            let page = reader
                .query("acme", &probe, None, 1000)
                .await
                .expect("a page");
            assert!(page.items_fetched > 0 && !page.events.is_empty());
        }
        let conditions: Vec<Value> = (0..rng.random_range(1..3))
            .map(|_| random_condition(&mut rng))
            .collect();
        let mut body = json!({ "and": conditions });
        // Windows on event timestamps, from == to included.
        let from = timestamps[rng.random_range(0..timestamps.len())].clone();
        let to = match rng.random_range(0..4) {
            0 => from.clone(),
            1 => timestamps[rng.random_range(0..timestamps.len())].clone(),
            _ => (Utc::now() + Duration::seconds(1)).to_rfc3339(),
        };
        let (from, to) = if from <= to { (from, to) } else { (to, from) };
        body["from"] = json!(from);
        body["to"] = json!(to);
        let query = Query::parse(&body, Utc::now()).expect("a valid query");
        let limit = [7, 50, 1000][rng.random_range(0..3)];
        let free = all_pages(&reader, &query, Plan::for_query(&query), limit).await;
        let forced = all_pages(&reader, &query, Plan::whole_range(), limit).await;
        let expected: Vec<String> = stored
            .iter()
            .filter(|e| {
                let ts = e["timestamp"].as_str().unwrap_or_default();
                ts >= from.as_str() && ts < to.as_str()
            })
            .filter(|e| {
                body["and"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().all(|c| oracle_matches(c, e) == Some(true)))
            })
            .map(|e| e["cursor"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(
            free, forced,
            "case {case} (seed {seed}): plans differ for {body}"
        );
        let free: Vec<String> = free
            .iter()
            .map(|e| e["cursor"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(
            free, expected,
            "case {case} (seed {seed}): not the documented result for {body}"
        );
    }
}

/// `from` = `to` = an event's timestamp is empty (`to` is exclusive);
/// `to` one millisecond later holds every event of that millisecond.
#[tokio::test]
async fn the_window_is_on_timestamp_from_inclusive_to_exclusive() {
    let api = Api::start().await;
    let token = api.token("acme");
    let events: Vec<Value> = (0..200)
        .map(|i| json!({"eventType": "t", "serviceName": "s", "data": {"i": i}}))
        .collect();
    let (status, answer) = json_of(
        api.post_json(&token, "/audit/events", &json!({ "events": events }))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().cloned().unwrap_or_default();
    for result in results.iter().step_by(37) {
        let ts = result["timestamp"].as_str().unwrap_or_default();
        let at = DateTime::parse_from_rfc3339(ts).expect("time");
        let same_ms = results.iter().filter(|r| r["timestamp"] == ts).count();
        let query = |from: String, to: String| {
            let api = &api;
            let token = token.clone();
            async move {
                let (status, page) = json_of(
                    api.post_json(&token, "/audit/query", &json!({"from": from, "to": to}))
                        .await,
                )
                .await;
                assert_eq!(status, 200, "{page}");
                page["data"].as_array().map(Vec::len).unwrap_or(0)
            }
        };
        assert_eq!(query(ts.to_string(), ts.to_string()).await, 0);
        let next_ms = (at + Duration::milliseconds(1)).to_rfc3339();
        assert_eq!(
            query(ts.to_string(), next_ms.clone()).await,
            same_ms,
            "{ts}"
        );
        // Sub-millisecond bounds: a `from` just after the millisecond excludes it.
        let just_after = (at + Duration::microseconds(1)).to_rfc3339();
        assert_eq!(query(just_after, next_ms).await, 0);
    }
}
