#![allow(dead_code)]

use audit_core::Config;
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
    pub async fn start() -> Self {
        Self::from_env(TestEnv::start().await).await
    }

    /// An API over a fresh table, with the configuration adjusted first.
    pub async fn configured(configure: fn(&mut Config)) -> Self {
        Self::from_env(
            TestEnv::start_with(EnvOptions {
                configure: Some(configure),
                ..Default::default()
            })
            .await,
        )
        .await
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
