use std::convert::Infallible;
use std::sync::Arc;

use audit_shared::dynamo::{self, DynamoStore};
use audit_shared::{telemetry, Config};
use lambda_http::{service_fn, Request};
use list::ListHandler;

/// Reads the cursor-signing key from Secrets Manager once per cold start.
async fn signing_key(secret_arn: &str) -> Result<String, lambda_http::Error> {
    let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let secrets = aws_sdk_secretsmanager::Client::new(&shared);
    let secret = secrets
        .get_secret_value()
        .secret_id(secret_arn)
        .send()
        .await?;
    secret
        .secret_string
        .filter(|key| key.len() >= 32)
        .ok_or_else(|| "the cursor-signing secret is missing or shorter than 32 characters".into())
}

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let mut config =
        Config::from_env().inspect_err(|err| tracing::error!(%err, "refusing to start"))?;
    match std::env::var("CURSOR_SIGNING_KEY_SECRET_ARN") {
        Ok(arn) if !arn.is_empty() => config.cursor_signing_key = signing_key(&arn).await?,
        _ if config.cursor_signing_key == audit_shared::config::DEVELOPMENT_SIGNING_KEY => {
            tracing::warn!("no cursor-signing key configured: using the development key")
        }
        _ => {}
    }
    let client = dynamo::client(&config).await;
    let store = Arc::new(DynamoStore::new(client, &config.table_name));
    let handler = Arc::new(ListHandler::new(store, config));
    lambda_http::run(service_fn(move |request: Request| {
        let handler = Arc::clone(&handler);
        async move { Ok::<_, Infallible>(handler.handle(request).await) }
    }))
    .await
}
