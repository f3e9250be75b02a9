use std::sync::Arc;
use std::time::{Instant, SystemTime};

use audit_core::config::DEVELOPMENT_CHECKPOINT_KEY;
use audit_core::integrity::seal::SealBudget;
use lambda_runtime::{service_fn, LambdaEvent};
use seal::{answer_custom_resource, is_custom_resource, run_budget, SealHandler};
use serde_json::Value;
use stream::eventbridge::EventBridgePublisher;

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

/// The handler, once the configuration and the signing secret are read.
async fn start(
) -> Result<SealHandler<audit_dynamo::DynamoStore, EventBridgePublisher>, lambda_runtime::Error> {
    let (mut config, store) = audit_http::runtime::start().await?;
    let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    match config.checkpoint_key_secret_arn.clone() {
        Some(arn) => config.checkpoint_signing_key = signing_secret(&shared, &arn).await?,
        _ if config.checkpoint_signing_key == DEVELOPMENT_CHECKPOINT_KEY => {
            tracing::warn!("no checkpoint-signing key configured: using the development key")
        }
        _ => {}
    }
    let publisher = EventBridgePublisher::new(
        aws_sdk_eventbridge::Client::new(&shared),
        config.event_bus_name.clone(),
    );
    let source = config.event_source.clone();
    Ok(SealHandler::new(store, &config, publisher, source))
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let handler = match start().await {
        Ok(handler) => Arc::new(handler),
        Err(err) => {
            // Keep answering: a deploy's custom resource request is told
            // FAILED with the reason at once, and a scheduled run fails.
            let why = err.to_string();
            tracing::error!(error = %why, "the seal function could not start");
            return lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
                let why = why.clone();
                async move {
                    if is_custom_resource(&event.payload) {
                        answer_custom_resource(&event.payload, Err(&why)).await?;
                        return Ok::<_, lambda_runtime::Error>(Value::Null);
                    }
                    Err(why.into())
                }
            }))
            .await;
        }
    };
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let handler = Arc::clone(&handler);
        async move {
            if is_custom_resource(&event.payload) {
                handler.answer_custom_resource(&event.payload).await?;
                return Ok::<_, lambda_runtime::Error>(Value::Null);
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
