use audit_http::runtime;
use ingest::IngestHandler;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let (config, store) = runtime::start().await?;
    runtime::serve(IngestHandler::new(store, config)).await
}
