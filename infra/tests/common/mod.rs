#![allow(dead_code)]

use audit_core::Config;
use audit_infra::proxy::{FaultProxy, Faults};
use audit_infra::testkit::{EnvOptions, TestEnv};
use reqwest::{Client, Response};
use serde_json::Value;

pub const RW: &str = "audit:read audit:write";

pub struct Api {
    pub env: TestEnv,
    pub base: String,
    pub http: Client,
}

impl Api {
    /// An API over a fresh table without a stream (see
    /// `EnvOptions::without_stream`); [`Api::streaming`] for the relay's tests.
    pub async fn start() -> Self {
        Self::over(EnvOptions {
            without_stream: true,
            ..Default::default()
        })
        .await
    }

    /// An API over a fresh table with the configuration adjusted first.
    pub async fn configured(configure: fn(&mut Config)) -> Self {
        Self::over(EnvOptions {
            configure: Some(configure),
            without_stream: true,
            ..Default::default()
        })
        .await
    }

    /// An API over a table with the deployment's stream, as the relay reads.
    pub async fn streaming(configure: Option<fn(&mut Config)>) -> Self {
        Self::over(EnvOptions {
            configure,
            ..Default::default()
        })
        .await
    }

    /// An API whose store sits behind the fault proxy, with `faults` set.
    pub async fn with_faults(faults: Faults) -> Self {
        let api = Self::over(EnvOptions {
            with_proxy: true,
            without_stream: true,
            ..Default::default()
        })
        .await;
        api.proxy().set(faults);
        api
    }

    async fn over(options: EnvOptions) -> Self {
        Self::from_env(TestEnv::start_with(options).await).await
    }

    /// The fault proxy of an API made by [`Api::with_faults`].
    pub fn proxy(&self) -> &FaultProxy {
        self.env
            .proxy
            .as_ref()
            .expect("the API was started with the proxy")
    }

    pub async fn from_env(env: TestEnv) -> Self {
        // Warnings (a store fault, a retry) are shown with a failing test's output.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("warn")
            .try_init();
        let base = env.serve().await;
        Api {
            env,
            base,
            http: Client::new(),
        }
    }

    pub fn token(&self, tenant: &str) -> String {
        self.env.token(tenant, RW)
    }

    pub async fn post_json(&self, token: &str, path: &str, body: &Value) -> Response {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// Stores a batch as a client following the contract does: events
    /// answered `failed` (the store was unavailable) are sent again, the
    /// rest never. For tests whose subject is reading, not a store that
    /// stalls: DynamoDB Local on two busy cores can pause for seconds.
    /// Each event without a `messageId` is given one, as the contract asks
    /// of a client that retries: a write that timed out may still land, and
    /// sending a keyless event again would then store it twice.
    /// The cursors, in request order; panics on anything but stored.
    pub async fn store_all(&self, token: &str, events: &[Value]) -> Vec<String> {
        let run = ulid::Ulid::new();
        let events: Vec<Value> = events
            .iter()
            .enumerate()
            .map(|(index, event)| {
                let mut event = event.clone();
                if let Some(fields) = event.as_object_mut() {
                    fields
                        .entry("messageId")
                        .or_insert_with(|| Value::String(format!("store-all-{run}-{index}")));
                }
                event
            })
            .collect();
        let mut cursors: Vec<Option<String>> = vec![None; events.len()];
        for attempt in 0..10 {
            let pending: Vec<usize> = (0..events.len())
                .filter(|i| cursors[*i].is_none())
                .collect();
            if pending.is_empty() {
                break;
            }
            let batch: Vec<&Value> = pending.iter().map(|i| &events[*i]).collect();
            let (status, body) = json_of(
                self.post_json(
                    token,
                    "/audit/events",
                    &serde_json::json!({ "events": batch }),
                )
                .await,
            )
            .await;
            assert!(status == 200 || status == 503, "{status} {body}");
            let results = body["results"].as_array().expect("results");
            for (index, result) in pending.iter().zip(results) {
                match result["status"].as_str() {
                    // A duplicate is a retried write that had landed.
                    Some("stored" | "duplicate") => {
                        cursors[*index] = result["cursor"].as_str().map(str::to_string)
                    }
                    Some("failed") => {}
                    other => panic!("event {index} answered {other:?}: {body}"),
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(500 * (attempt + 1))).await;
        }
        cursors
            .into_iter()
            .map(|c| c.expect("every event stored within ten attempts"))
            .collect()
    }

    pub async fn get(&self, token: &str, path: &str) -> Response {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }
}

/// Status and JSON body.
pub async fn json_of(response: Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, body)
}

/// Asserts the SPEC's error shape and returns the code.
pub fn error_code(body: &Value) -> String {
    let error = body
        .get("error")
        .unwrap_or_else(|| panic!("no error object in {body}"));
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error without message: {body}"
    );
    error["code"].as_str().unwrap_or_default().to_string()
}

pub fn event(event_type: &str) -> Value {
    serde_json::json!({"eventType": event_type, "serviceName": "test-service", "userId": "u-1"})
}
