use audit_http::runtime;
use cursor::CursorHandler;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let (config, store) = runtime::start().await?;
    runtime::serve(CursorHandler::new(store, &config)).await
}
