//! What the CLI's test files share: an API served on the embedded store
//! with a short settle horizon, `audit` run beside it, and a few requests.
#![allow(dead_code)]

use std::time::Duration;

use audit_core::Config;
use audit_infra::testkit::{EnvOptions, TestEnv};
use serde_json::{json, Value};

pub const AUDIT: &str = env!("CARGO_BIN_EXE_audit");

/// Events settle fast, so a test waits little.
pub fn settling_fast(config: &mut Config) {
    config.write_deadline = Duration::from_millis(400);
    config.settle_horizon = Duration::from_millis(1500);
    config.tail_max_wait = Duration::from_secs(1);
    config.poll_hint_seconds = 1;
}

/// The API, served, with events settling fast.
pub async fn served() -> (TestEnv, String) {
    served_with(settling_fast).await
}

/// The API, served, configured by `configure`.
pub async fn served_with(configure: fn(&mut Config)) -> (TestEnv, String) {
    let env = TestEnv::start_with(EnvOptions {
        configure: Some(configure),
        ..Default::default()
    })
    .await;
    let base = env.serve().await;
    (env, base)
}

/// Runs `audit` without blocking the runtime the API is served on; its exit
/// code, stdout and stderr. One that runs past 90 s fails the test.
pub async fn audit(base: &str, token: &str, args: &[&str]) -> (i32, String, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(AUDIT)
            .args(args)
            .env("AUDIT_URL", base)
            .env("AUDIT_TOKEN", token)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("audit ends")
    .expect("audit runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A sealing run once what is stored has settled (`served` settles in
/// 1.5 s), so the tail serves what the log holds.
pub async fn seal_settled(env: &TestEnv) {
    let sealer = seal::SealHandler::new(
        std::sync::Arc::new(audit_dynamo::DynamoStore::new(
            env.direct.clone(),
            &env.config.table_name,
        )),
        &env.config,
        audit_infra::relay::LocalPublisher::new(Vec::new()),
        "audit-trail.test",
    );
    tokio::time::sleep(Duration::from_millis(2000)).await;
    sealer.run(chrono::Utc::now()).await.expect("a sealing run");
}

/// GET `path` as JSON.
pub async fn get_json(base: &str, token: &str, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("an answer")
        .json()
        .await
        .expect("JSON")
}

/// Posts `events` as one batch; the cursors of those stored.
pub async fn post(base: &str, token: &str, events: Vec<Value>) -> Vec<String> {
    let response = reqwest::Client::new()
        .post(format!("{base}/audit/events"))
        .bearer_auth(token)
        .json(&json!({ "events": events }))
        .send()
        .await
        .expect("post");
    let body: Value = response.json().await.expect("json");
    body["results"]
        .as_array()
        .map(|results| {
            results
                .iter()
                .filter(|r| r["status"] == "stored")
                .filter_map(|r| r["cursor"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
