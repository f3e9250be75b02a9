//! What every HTTP function's `main` does, written once: JSON logs, the
//! typed configuration, one DynamoDB client per process, then one handler
//! serving every request.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use lambda_http::{service_fn, Body, Request, Response};

use audit_core::config::Config;
use audit_core::error::ApiError;
use audit_dynamo::DynamoStore;

use crate::response::error_response;

/// A function's request handler. It answers every request, errors included,
/// so the runtime never sees a failed invocation for bad input.
/// (Plain futures, not boxed ones: nothing is allocated per request.)
pub trait HttpHandler: Send + Sync + 'static {
    /// The answer to one request, or the domain error that is its answer.
    fn respond(
        &self,
        request: Request,
    ) -> impl Future<Output = Result<Response<Body>, ApiError>> + Send;

    /// The response to one request: a domain error becomes its response here.
    fn handle(&self, request: Request) -> impl Future<Output = Response<Body>> + Send {
        let answer = self.respond(request);
        async move { answer.await.unwrap_or_else(|err| error_response(&err)) }
    }
}

/// Logs, configuration and the store, once per cold start. An invalid
/// setting stops the process here, with a message naming it.
pub async fn start() -> Result<(Config, Arc<DynamoStore>), lambda_http::Error> {
    crate::telemetry::init();
    let config =
        Config::from_env().inspect_err(|err| tracing::error!(%err, "refusing to start"))?;
    let client = audit_dynamo::client(&config).await;
    let store = Arc::new(DynamoStore::new(client, &config.table_name));
    if config.warm_in_init {
        store.warm().await;
    }
    Ok((config, store))
}

/// Serves Lambda invocations with `handler` until the runtime stops.
pub async fn serve(handler: impl HttpHandler) -> Result<(), lambda_http::Error> {
    let handler = Arc::new(handler);
    lambda_http::run(service_fn(move |request: Request| {
        let handler = Arc::clone(&handler);
        async move { Ok::<_, Infallible>(handler.handle(request).await) }
    }))
    .await
}
