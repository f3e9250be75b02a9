use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use audit_core::config::DEVELOPMENT_CHECKPOINT_KEY;
use audit_core::integrity::seal::SealBudget;
use lambda_runtime::{service_fn, LambdaEvent};
use seal::{answer_custom_resource, is_custom_resource, run_budget, SealHandler};
use serde_json::Value;
use stream::eventbridge::EventBridgePublisher;
use tokio::sync::OnceCell;

/// Reads the checkpoint-signing secret once per cold start.
async fn signing_secret(
    shared: &aws_config::SdkConfig,
    arn: &str,
) -> Result<String, lambda_runtime::Error> {
    let secrets = aws_sdk_secretsmanager::Client::new(shared);
    let secret = secrets.get_secret_value().secret_id(arn).send().await?;
    secret
        .secret_string
        .filter(|key| key.len() >= 32)
        .ok_or_else(|| {
            "the checkpoint-signing secret is missing or shorter than 32 characters".into()
        })
}

/// The handler, once the signing secret is read. A failure here may pass
/// (a throttled read, a key grant still propagating), so it is tried again
/// by the next invocation rather than kept for the environment's life.
async fn handler_of(
    config: &audit_core::Config,
    store: &Arc<audit_dynamo::DynamoStore>,
    shared: &aws_config::SdkConfig,
) -> Result<SealHandler<audit_dynamo::DynamoStore, EventBridgePublisher>, lambda_runtime::Error> {
    let mut config = config.clone();
    match config.checkpoint_key_secret_arn.clone() {
        Some(arn) => config.checkpoint_signing_key = signing_secret(shared, &arn).await?,
        _ if config.checkpoint_signing_key == DEVELOPMENT_CHECKPOINT_KEY => {
            tracing::warn!("no checkpoint-signing key configured: using the development key")
        }
        _ => {}
    }
    let publisher = EventBridgePublisher::new(
        aws_sdk_eventbridge::Client::new(shared),
        config.event_bus_name.clone(),
    );
    let source = config.event_source.clone();
    Ok(SealHandler::new(
        Arc::clone(store),
        &config,
        publisher,
        source,
    ))
}

/// Attempts at the handler a deploy's request makes before it is told
/// FAILED, and the pause before each retry.
const CUSTOM_RESOURCE_ATTEMPTS: u32 = 3;
const START_RETRY_PAUSE: Duration = Duration::from_secs(2);
/// How long one attempt may take: three, with their pauses and the
/// answer's PUT, fit well inside the function's 300 s.
const START_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    // The configuration is read once: a bad one does not mend itself.
    let base = audit_http::runtime::start()
        .await
        .map_err(|err| err.to_string());
    let shared = Arc::new(aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await);
    let started = Arc::new(OnceCell::new());
    if let Ok((config, store)) = &base {
        // In init, with its full CPU; a failure is tried again below.
        if let Err(err) = started
            .get_or_try_init(|| handler_of(config, store, &shared))
            .await
        {
            tracing::error!(error = %err, "the seal function could not start; the next invocation tries again");
        }
    }
    let base = Arc::new(base);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let (base, shared, started) =
            (Arc::clone(&base), Arc::clone(&shared), Arc::clone(&started));
        async move {
            let custom_resource = is_custom_resource(&event.payload);
            if custom_resource && event.payload["RequestType"] == "Delete" {
                // Nothing to remove, and no reason to wait for a start.
                match started.get() {
                    Some(handler) => handler.answer_custom_resource(&event.payload).await?,
                    None => answer_custom_resource(&event.payload, Err("not started")).await?,
                }
                return Ok(Value::Null);
            }
            let attempts = if custom_resource {
                CUSTOM_RESOURCE_ATTEMPTS
            } else {
                1
            };
            let mut outcome = Err("not started".to_string());
            for attempt in 0..attempts {
                if attempt > 0 {
                    tokio::time::sleep(START_RETRY_PAUSE * attempt).await;
                }
                outcome = match base.as_ref() {
                    Ok((config, store)) => tokio::time::timeout(
                        START_ATTEMPT_TIMEOUT,
                        started.get_or_try_init(|| handler_of(config, store, &shared)),
                    )
                    .await
                    .map_err(|_| "reading the signing secret timed out".to_string())
                    .and_then(|started| started.map_err(|err| err.to_string())),
                    Err(why) => Err(why.clone()),
                };
                if outcome.is_ok() || base.is_err() {
                    break;
                }
            }
            let handler = match outcome {
                Ok(handler) => handler,
                Err(why) => {
                    tracing::error!(error = %why, "the seal function could not start");
                    if custom_resource {
                        // A deploy is told why, not left to time out (a
                        // Delete still succeeds, so the stack can go).
                        answer_custom_resource(&event.payload, Err(&why)).await?;
                        return Ok::<_, lambda_runtime::Error>(Value::Null);
                    }
                    return Err(why.into());
                }
            };
            if custom_resource {
                handler.answer_custom_resource(&event.payload).await?;
                return Ok(Value::Null);
            }
            // The run stops starting work before the invocation times out.
            let remaining = event
                .context
                .deadline()
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            let budget = SealBudget::until(Instant::now() + run_budget(remaining));
            let report = handler.run_within(chrono::Utc::now(), &budget).await?;
            Ok(serde_json::json!({
                "checkpoints": report.checkpoints.len(),
                "leaves": report.leaves_added,
                "deferred": report.tenants_deferred,
            }))
        }
    }))
    .await
}
