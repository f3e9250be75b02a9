//! A fault-injecting proxy between the SDK and a DynamoDB endpoint. It
//! speaks the DynamoDB JSON protocol, so the SDK sees what real DynamoDB
//! sends under pressure: `UnprocessedItems`, throttling errors, slow commits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::{HeaderMap, Request, Response, StatusCode};
use axum::Router;
use serde_json::{json, Value};

mod limiter;
use limiter::KeyLimiter;

/// What to do to requests; change it while the proxy runs.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Of each BatchWriteItem, forward only this share of the items (rounded
    /// up) and hand the rest back as `UnprocessedItems`. `None`: forward all.
    pub batch_keep_share: Option<f64>,
    /// Answer every write with `ProvisionedThroughputExceededException`.
    pub throttle_writes: bool,
    /// Hold each write this long (uniformly random in the range, ms) before
    /// forwarding it, so commits land out of cursor order.
    pub write_delay_ms: Option<(u64, u64)>,
    /// Answer a write whose request holds this text with DynamoDB's
    /// `ValidationException`, as DynamoDB does for a whole request when one
    /// of its items breaks a limit.
    pub refuse_writes_containing: Option<String>,
    /// Hold a write whose request holds this text this long (ms) before
    /// forwarding it: one kind of write made slow, the others not.
    pub delay_writes_containing: Option<(String, u64)>,
    /// Hold every partition key (the table's and each index's) to this many
    /// write units per second, as DynamoDB holds each partition to about
    /// 1000: beyond it a batch gets its throttled items back as
    /// `UnprocessedItems` (or `ProvisionedThroughputExceededException` when
    /// none could be written), a single write the exception.
    pub units_per_key_per_second: Option<f64>,
    /// Cancel a `TransactWriteItems` that puts an item holding this text,
    /// as DynamoDB does when another transaction holds that item: the
    /// reason `TransactionConflict` for each such item, `None` for the rest.
    pub conflict_transactions_containing: Option<String>,
}

#[derive(Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub throttled_requests: AtomicU64,
    pub items_returned_unprocessed: AtomicU64,
    /// Items refused by the per-key limit.
    pub items_throttled_per_key: AtomicU64,
    /// Every event a successful write committed: (epoch ms when the store
    /// answered, its cursor). A cursor's own time is when it was assigned.
    pub commits: Mutex<Vec<(i64, String)>>,
    /// Every attempt to write an event, answered or not: (epoch ms when it
    /// reached the proxy, its cursor).
    pub attempts: Mutex<Vec<(i64, String)>>,
    /// Writes still to be answered with a 500 `InternalServerError`.
    pub writes_to_fail: AtomicU64,
    /// Writes still to be applied upstream and then answered with a 500, as
    /// when DynamoDB commits a write but its answer is lost.
    pub answers_to_lose: AtomicU64,
    pub failed_requests: AtomicU64,
    /// Every request's operation (`Query`, `BatchGetItem`, ...), in the
    /// order they arrived: what a read costs in calls.
    pub operations: Mutex<Vec<String>>,
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    faults: Arc<Mutex<Faults>>,
    counters: Arc<Counters>,
    limiter: Arc<Mutex<KeyLimiter>>,
}

/// The items a single write (`PutItem`, `TransactWriteItems`) puts.
fn items_put<'a>(target: &str, request: &'a Value) -> Vec<&'a Value> {
    match target {
        "PutItem" => request.get("Item").into_iter().collect(),
        "TransactWriteItems" => request
            .get("TransactItems")
            .and_then(Value::as_array)
            .map(|list| list.iter().filter_map(|t| t.pointer("/Put/Item")).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The cursors of the events (not markers or other records) a write puts.
fn event_cursors(target: &str, body: &[u8]) -> Vec<String> {
    let request: Value = serde_json::from_slice(body).unwrap_or_default();
    let mut items = items_put(target, &request);
    if let Some(tables) = request.get("RequestItems").and_then(Value::as_object) {
        items.extend(
            tables
                .values()
                .filter_map(Value::as_array)
                .flatten()
                .filter_map(|w| w.pointer("/PutRequest/Item")),
        );
    }
    items
        .iter()
        .filter(|item| {
            item.pointer("/accountId/S")
                .and_then(Value::as_str)
                .is_some_and(|tenant| !tenant.contains('#'))
        })
        .filter_map(|item| item.pointer("/cursor/S").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

pub struct FaultProxy {
    pub endpoint: String,
    faults: Arc<Mutex<Faults>>,
    pub counters: Arc<Counters>,
}

const WRITE_TARGETS: &[&str] = &[
    "PutItem",
    "BatchWriteItem",
    "TransactWriteItems",
    "UpdateItem",
    "DeleteItem",
];

impl FaultProxy {
    pub async fn start(upstream: &str) -> std::io::Result<Self> {
        let faults = Arc::new(Mutex::new(Faults::default()));
        let counters = Arc::new(Counters::default());
        let state = ProxyState {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::new(),
            faults: Arc::clone(&faults),
            counters: Arc::clone(&counters),
            limiter: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let app = Router::new().fallback(forward).with_state(state);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            endpoint,
            faults,
            counters,
        })
    }

    pub fn set(&self, faults: Faults) {
        if let Ok(mut current) = self.faults.lock() {
            *current = faults;
        }
    }

    /// Answers the next `count` writes (of any kind, attempts each) with the
    /// 500 `InternalServerError` DynamoDB sends when a node fails mid-request.
    pub fn fail_next_writes(&self, count: u64) {
        self.counters.writes_to_fail.store(count, Ordering::SeqCst);
    }

    /// Applies the next `count` writes but answers each with a 500, so the
    /// client cannot tell they landed.
    pub fn lose_next_write_answers(&self, count: u64) {
        self.counters.answers_to_lose.store(count, Ordering::SeqCst);
    }
}

fn target_of(headers: &HeaderMap) -> String {
    headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit('.').next())
        .unwrap_or_default()
        .to_string()
}

async fn forward(State(state): State<ProxyState>, request: Request<Body>) -> Response<Body> {
    let arrived_at = chrono::Utc::now().timestamp_millis();
    state.counters.requests.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = request.into_parts();
    let Ok(body) = to_bytes(body, 64 * 1024 * 1024).await else {
        return reply(
            StatusCode::BAD_REQUEST,
            HeaderMap::new(),
            b"bad body".to_vec(),
        );
    };
    let target = target_of(&parts.headers);
    if let Ok(mut operations) = state.counters.operations.lock() {
        operations.push(target.clone());
    }
    let faults = state.faults.lock().map(|f| f.clone()).unwrap_or_default();
    let is_write = WRITE_TARGETS.contains(&target.as_str());

    if is_write {
        let cursors = event_cursors(&target, &body);
        if let Ok(mut attempts) = state.counters.attempts.lock() {
            attempts.extend(cursors.into_iter().map(|cursor| (arrived_at, cursor)));
        }
        if take_one(&state.counters.writes_to_fail) {
            return injected_failure(&state, "Internal server error (injected by the test proxy)");
        }
        if let Some((low, high)) = faults.write_delay_ms {
            let pause = if high > low {
                rand::random_range(low..=high)
            } else {
                low
            };
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        if faults.throttle_writes {
            state
                .counters
                .throttled_requests
                .fetch_add(1, Ordering::Relaxed);
            return dynamodb_error(
                StatusCode::BAD_REQUEST,
                "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                "The level of configured provisioned throughput for the table was exceeded (injected by the test proxy)",
            );
        }
    }

    if let (Some(rate), "PutItem" | "TransactWriteItems") =
        (faults.units_per_key_per_second, target.as_str())
    {
        let request: Value = serde_json::from_slice(&body).unwrap_or_default();
        let items = items_put(&target, &request);
        let admitted = state
            .limiter
            .lock()
            .map(|mut limiter| limiter.admit(&items, rate))
            .unwrap_or(true);
        if !admitted {
            state
                .counters
                .items_throttled_per_key
                .fetch_add(items.len() as u64, Ordering::Relaxed);
            return per_key_throttle();
        }
    }

    if let Some(marker) = faults.conflict_transactions_containing.as_deref() {
        if let Some(cancelled) = conflicting_transaction(&target, &body, marker) {
            return cancelled;
        }
    }

    if let Some((marker, pause)) = &faults.delay_writes_containing {
        if is_write && !marker.is_empty() && contains(&body, marker.as_bytes()) {
            tokio::time::sleep(Duration::from_millis(*pause)).await;
        }
    }
    if let Some(marker) = faults.refuse_writes_containing.as_deref() {
        if is_write && !marker.is_empty() && contains(&body, marker.as_bytes()) {
            return dynamodb_error(
                StatusCode::BAD_REQUEST,
                "com.amazon.coral.validate#ValidationException",
                "One or more parameter values were invalid (injected by the test proxy)",
            );
        }
    }

    let mut held_back: Option<(String, Vec<Value>)> = None;
    let mut body = body.to_vec();
    let splits_batches =
        faults.batch_keep_share.is_some() || faults.units_per_key_per_second.is_some();
    if splits_batches && target == "BatchWriteItem" {
        if let Ok(mut request_json) = serde_json::from_slice::<Value>(&body) {
            if let Some(tables) = request_json
                .get_mut("RequestItems")
                .and_then(Value::as_object_mut)
            {
                if let Some((table, writes)) = tables.iter_mut().next() {
                    if let Some(list) = writes.as_array_mut() {
                        let rest = match (faults.units_per_key_per_second, faults.batch_keep_share)
                        {
                            (Some(rate), _) => {
                                let Ok(mut limiter) = state.limiter.lock() else {
                                    return per_key_throttle();
                                };
                                let (kept, rest): (Vec<Value>, Vec<Value>) =
                                    list.drain(..).partition(|write| {
                                        let item = write.pointer("/PutRequest/Item");
                                        limiter.admit(&item.into_iter().collect::<Vec<_>>(), rate)
                                    });
                                *list = kept;
                                state
                                    .counters
                                    .items_throttled_per_key
                                    .fetch_add(rest.len() as u64, Ordering::Relaxed);
                                if list.is_empty() {
                                    // DynamoDB throttles a batch none of whose items it could write.
                                    return per_key_throttle();
                                }
                                rest
                            }
                            (None, share) => {
                                let keep =
                                    ((list.len() as f64) * share.unwrap_or(1.0)).ceil() as usize;
                                list.split_off(keep.min(list.len()))
                            }
                        };
                        if !rest.is_empty() {
                            state
                                .counters
                                .items_returned_unprocessed
                                .fetch_add(rest.len() as u64, Ordering::Relaxed);
                            held_back = Some((table.clone(), rest));
                        }
                    }
                }
            }
            if let Some((table, _)) = &held_back {
                let empty = request_json["RequestItems"][table]
                    .as_array()
                    .map(|a| a.is_empty())
                    .unwrap_or(true);
                if empty {
                    // Nothing to forward: DynamoDB would answer with all unprocessed.
                    let (table, rest) = held_back.take().unwrap_or_default();
                    return dynamodb_json(
                        StatusCode::OK,
                        &json!({"UnprocessedItems": {table: rest}}),
                    );
                }
            }
            body = request_json.to_string().into_bytes();
        }
    }

    let mut upstream = state
        .client
        .post(format!("{}{}", state.upstream, parts.uri.path()));
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            upstream = upstream.header(name, value);
        }
    }
    let response = match upstream.body(body.clone()).send().await {
        Ok(response) => response,
        Err(_) => {
            return reply(
                StatusCode::BAD_GATEWAY,
                HeaderMap::new(),
                b"upstream unreachable".to_vec(),
            )
        }
    };
    let status = response.status();
    if is_write && status.is_success() {
        let committed_at = chrono::Utc::now().timestamp_millis();
        let cursors: Vec<(i64, String)> = event_cursors(&target, &body)
            .into_iter()
            .map(|cursor| (committed_at, cursor))
            .collect();
        if let Ok(mut commits) = state.counters.commits.lock() {
            commits.extend(cursors);
        }
    }
    if is_write && status.is_success() && take_one(&state.counters.answers_to_lose) {
        return injected_failure(
            &state,
            "Internal server error after the write was applied (injected by the test proxy)",
        );
    }
    let mut headers = HeaderMap::new();
    for (name, value) in response.headers() {
        if name != "content-length" && name != "transfer-encoding" {
            headers.insert(name.clone(), value.clone());
        }
    }
    let mut bytes = response
        .bytes()
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    if let Some((table, rest)) = held_back {
        if let Ok(mut answer) = serde_json::from_slice::<Value>(&bytes) {
            let unprocessed = answer
                .as_object_mut()
                .map(|o| o.entry("UnprocessedItems").or_insert_with(|| json!({})));
            if let Some(Value::Object(map)) = unprocessed {
                let list = map.entry(table).or_insert_with(|| json!([]));
                if let Some(list) = list.as_array_mut() {
                    list.extend(rest);
                }
            }
            bytes = answer.to_string().into_bytes();
            headers.remove("x-amz-crc32"); // the body changed
        }
    }
    reply(
        StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
        headers,
        bytes,
    )
}

/// Takes one from a countdown of injected faults; `false` once it is at 0.
fn take_one(countdown: &AtomicU64) -> bool {
    countdown
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// DynamoDB's 500, counted.
fn injected_failure(state: &ProxyState, message: &str) -> Response<Body> {
    state
        .counters
        .failed_requests
        .fetch_add(1, Ordering::Relaxed);
    dynamodb_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "com.amazonaws.dynamodb.v20120810#InternalServerError",
        message,
    )
}

fn per_key_throttle() -> Response<Body> {
    dynamodb_error(
        StatusCode::BAD_REQUEST,
        "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
        "The partition's write throughput was exceeded (the test proxy's per-key limit)",
    )
}

/// A `TransactWriteItems` that puts an item holding `marker`, cancelled as
/// DynamoDB cancels one whose items another transaction holds.
fn conflicting_transaction(target: &str, body: &[u8], marker: &str) -> Option<Response<Body>> {
    if target != "TransactWriteItems" || marker.is_empty() {
        return None;
    }
    let request: Value = serde_json::from_slice(body).unwrap_or_default();
    let reasons: Vec<Value> = request
        .get("TransactItems")
        .and_then(Value::as_array)?
        .iter()
        .map(|action| {
            if action.to_string().contains(marker) {
                json!({"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item (injected by the test proxy)"})
            } else {
                json!({"Code": "None"})
            }
        })
        .collect();
    reasons
        .iter()
        .any(|r| r["Code"] != "None")
        .then(|| transaction_cancelled(reasons))
}

fn transaction_cancelled(reasons: Vec<Value>) -> Response<Body> {
    let codes: Vec<&str> = reasons.iter().filter_map(|r| r["Code"].as_str()).collect();
    let body = json!({
        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        "Message": format!("Transaction cancelled, please refer cancellation reasons for specific reasons [{}]", codes.join(", ")),
        "CancellationReasons": reasons,
    });
    dynamodb_json(StatusCode::BAD_REQUEST, &body)
}

fn dynamodb_error(status: StatusCode, kind: &str, message: &str) -> Response<Body> {
    dynamodb_json(status, &json!({ "__type": kind, "message": message }))
}

/// An answer as DynamoDB gives it: JSON 1.0.
fn dynamodb_json(status: StatusCode, body: &Value) -> Response<Body> {
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        "application/x-amz-json-1.0"
            .parse()
            .unwrap_or_else(|_| unreachable_header()),
    );
    reply(status, headers, body.to_string().into_bytes())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn unreachable_header() -> axum::http::HeaderValue {
    axum::http::HeaderValue::from_static("application/json")
}

fn reply(status: StatusCode, headers: HeaderMap, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}
