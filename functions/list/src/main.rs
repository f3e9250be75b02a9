use audit_core::config::DEVELOPMENT_SIGNING_KEY;
use audit_http::runtime;
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
    let (mut config, store) = runtime::start().await?;
    match config.cursor_signing_key_secret_arn.clone() {
        Some(arn) => config.cursor_signing_key = signing_key(&arn).await?,
        _ if config.cursor_signing_key == DEVELOPMENT_SIGNING_KEY => {
            tracing::warn!("no cursor-signing key configured: using the development key")
        }
        _ => {}
    }
    runtime::serve(ListHandler::new(store, config)).await
}
