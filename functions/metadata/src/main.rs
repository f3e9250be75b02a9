use audit_http::runtime;
use metadata::MetadataHandler;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let (config, store) = runtime::start().await?;
    runtime::serve(MetadataHandler::new(store, &config)).await
}
