use std::convert::Infallible;
use std::sync::Arc;

use audit_shared::dynamo::{self, DynamoStore};
use audit_shared::{telemetry, Config};
use lambda_http::{service_fn, Request};
use metadata::MetadataHandler;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let config =
        Config::from_env().inspect_err(|err| tracing::error!(%err, "refusing to start"))?;
    let client = dynamo::client(&config).await;
    let store = Arc::new(DynamoStore::new(client, &config.table_name));
    let handler = Arc::new(MetadataHandler::new(store, &config));
    lambda_http::run(service_fn(move |request: Request| {
        let handler = Arc::clone(&handler);
        async move { Ok::<_, Infallible>(handler.handle(request).await) }
    }))
    .await
}
