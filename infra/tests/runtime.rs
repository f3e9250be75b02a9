//! Each release binary answers a real Lambda Runtime API: started as Lambda
//! starts `bootstrap`, handed an event from `events/`, its response checked.
//! This proves each `main.rs` (config, SDK client, handler), not just the
//! handler. Needs `cargo build --release` first; `infra/test.sh` runs it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use audit_infra::runtime_api::{lambda_environment, run_binary};
use audit_infra::testkit::TestEnv;
use serde_json::Value;

/// A release binary, from CARGO_TARGET_DIR when one is set.
fn release_binary(name: &str) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("release")
        .join(name)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn event(name: &str) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(root().join("events").join(name)).expect("event file"),
    )
    .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the release binaries: cargo build --release"]
async fn every_release_binary_answers_the_runtime_api() {
    let env = TestEnv::start().await;
    let endpoint = env.config.dynamodb_endpoint.clone().expect("endpoint");
    let deployment = HashMap::from([
        ("TABLE_NAME".to_string(), env.config.table_name.clone()),
        ("DYNAMODB_ENDPOINT".to_string(), endpoint),
        ("EVENT_BUS_NAME".to_string(), "local".to_string()),
    ]);
    let cases = [
        ("ingest", "post-audit-events.json", 201),
        ("cursor", "get-audit-events-cursor.json", 404),
        ("list", "get-audit.json", 200),
        ("list", "post-audit-query.json", 200),
        ("metadata", "get-audit-metadata.json", 200),
    ];
    for (binary, file, want) in cases {
        let path = release_binary(binary);
        assert!(
            path.exists(),
            "{} is missing: run cargo build --release first",
            path.display()
        );
        let runs = run_binary(
            &path,
            lambda_environment("", binary, &deployment),
            vec![event(file)],
        )
        .await
        .unwrap_or_else(|e| panic!("{binary}: {e}"));
        let run = &runs[0];
        assert_eq!(run.status, 200, "{binary} {file}: {}", run.response);
        assert_eq!(
            run.response["statusCode"], want,
            "{binary} {file}: {}",
            run.response
        );
        assert!(
            run.response["body"]
                .as_str()
                .is_some_and(|b| serde_json::from_str::<Value>(b).is_ok()),
            "{binary}: JSON body"
        );
    }
    // the stream function takes a DynamoDB stream event; a TTL removal publishes nothing
    let runs = run_binary(
        &release_binary("stream"),
        lambda_environment("", "stream", &deployment),
        vec![event("dynamodb-stream-ttl-remove.json")],
    )
    .await
    .expect("stream runs");
    assert_eq!(runs[0].status, 200, "{}", runs[0].response);
    assert_eq!(runs[0].response["batchItemFailures"], serde_json::json!([]));
    // The seal function's schedule runs a sealing pass over the table the
    // ingest case wrote to (its event not yet settled: nothing to seal).
    // An hour's horizon: nothing the ingest case wrote has settled, however
    // slowly the binaries before started, so no checkpoint is put on a bus.
    let mut sealing = deployment.clone();
    sealing.insert("SETTLE_HORIZON_MS".to_string(), "3600000".to_string());
    let runs = run_binary(
        &release_binary("seal"),
        lambda_environment("", "seal", &sealing),
        vec![event("seal-schedule.json")],
    )
    .await
    .expect("seal runs");
    assert_eq!(runs[0].status, 200, "{}", runs[0].response);
    assert_eq!(runs[0].response["checkpoints"], 0, "{}", runs[0].response);
    assert!(
        runs[0].response["deferred"].is_u64(),
        "{}",
        runs[0].response
    );

    // A seal function that cannot read its signing secret keeps serving: a
    // scheduled run fails (and the next tries to start again), and a
    // deploy's custom resource request is answered FAILED with the reason
    // at once, not left to CloudFormation's timeout. (Its main exited, and
    // the request went unanswered.)
    let (url, mut answers) = audit_infra::testkit::custom_resource_answers().await;
    let mut custom_resource = event("seal-custom-resource.json");
    custom_resource["ResponseURL"] = serde_json::json!(url);
    let mut no_secret = deployment.clone();
    no_secret.insert(
        "CHECKPOINT_KEY_SECRET_ARN".to_string(),
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:nowhere".to_string(),
    );
    // Nothing answers there: the secret cannot be read.
    no_secret.insert(
        "AWS_ENDPOINT_URL_SECRETS_MANAGER".to_string(),
        "http://127.0.0.1:1".to_string(),
    );
    let runs = run_binary(
        &release_binary("seal"),
        lambda_environment("", "seal", &no_secret),
        vec![event("seal-schedule.json"), custom_resource.clone()],
    )
    .await
    .expect("seal runs");
    assert_eq!(
        runs[0].status, 500,
        "a run without its key fails: {}",
        runs[0].response
    );
    assert_eq!(runs[1].status, 200, "{}", runs[1].response);
    let answer: Value = serde_json::from_str(&answers.recv().await.expect("an answer")).unwrap();
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    assert_eq!(
        answer["RequestId"], custom_resource["RequestId"],
        "{answer}"
    );
    assert!(
        answer["Reason"]
            .as_str()
            .is_some_and(|r| r.contains("could not start")),
        "{answer}"
    );

    // A failure at start that passes is tried again by the next
    // invocation: a stand-in Secrets Manager fails its first two reads (at
    // init, and the first run's), then answers; the second run seals. (A
    // start that failed once was kept for the environment's life.)
    let reads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&reads);
    let secrets = axum::Router::new().fallback(move || {
        let counted = std::sync::Arc::clone(&counted);
        async move {
            let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let headers = [("content-type", "application/x-amz-json-1.1")];
            if n < 2 {
                return (
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    headers,
                    r#"{"__type":"InternalServiceError","message":"not yet"}"#.to_string(),
                );
            }
            let body = serde_json::json!({
                "ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:key",
                "Name": "key",
                "SecretString": "s".repeat(64),
                "VersionId": "v1",
                "VersionStages": ["AWSCURRENT"],
            });
            (axum::http::StatusCode::OK, headers, body.to_string())
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let secrets_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, secrets).await });
    let mut flaky_secret = no_secret.clone();
    flaky_secret.insert(
        "AWS_ENDPOINT_URL_SECRETS_MANAGER".to_string(),
        format!("http://127.0.0.1:{secrets_port}"),
    );
    // One request per read, so the stand-in's count is the reads'.
    flaky_secret.insert("AWS_MAX_ATTEMPTS".to_string(), "1".to_string());
    // Nothing settled to seal: no checkpoint for a bus that is not there.
    flaky_secret.insert("SETTLE_HORIZON_MS".to_string(), "3600000".to_string());
    let runs = run_binary(
        &release_binary("seal"),
        lambda_environment("", "seal", &flaky_secret),
        vec![event("seal-schedule.json"), event("seal-schedule.json")],
    )
    .await
    .expect("seal runs");
    assert_eq!(
        runs[0].status, 500,
        "the secret is not readable yet: {}",
        runs[0].response
    );
    assert_eq!(
        runs[1].status, 200,
        "started on the next run: {}",
        runs[1].response
    );
    assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), 3);
}
