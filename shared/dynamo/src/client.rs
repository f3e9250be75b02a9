//! The process's one SDK client.

use std::time::Duration;

use audit_core::config::Config;
use aws_sdk_dynamodb::config::{Credentials, Region};
use aws_sdk_dynamodb::Client;

/// Builds the process's one SDK client: explicit timeouts, standard retries
/// (which handle throttling with backoff), optional endpoint override.
pub async fn client(config: &Config) -> Client {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_attempt_timeout(config.attempt_timeout)
        .operation_timeout(config.operation_timeout)
        .connect_timeout(Duration::from_secs(1))
        .build();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeouts)
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(4));
    // On Lambda the region and credentials are in the environment: name
    // those providers, so the default chains never probe profile files or
    // the instance metadata service during a cold start.
    let on_lambda = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some();
    if on_lambda {
        if let Some(region) = std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()) {
            loader = loader.region(Region::new(region));
        }
        loader = loader.credentials_provider(
            aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
        );
    }
    if let Some(endpoint) = &config.dynamodb_endpoint {
        loader = loader.endpoint_url(endpoint);
        // Local endpoints accept any credentials; don't go looking for real ones.
        if !on_lambda && std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            loader = loader
                .credentials_provider(Credentials::new("local", "local", None, None, "local"));
        }
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            loader = loader.region(Region::new("us-east-1"));
        }
    }
    Client::new(&loader.load().await)
}
