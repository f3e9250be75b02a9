use std::sync::Arc;

use audit_http::telemetry;
use aws_lambda_events::dynamodb::Event as StreamEvent;
use lambda_runtime::{service_fn, LambdaEvent};
use stream::eventbridge::EventBridgePublisher;
use stream::StreamHandler;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let bus = std::env::var("EVENT_BUS_NAME").unwrap_or_else(|_| "default".into());
    let source = std::env::var("EVENT_SOURCE").unwrap_or_else(|_| "audit-trail".into());
    let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let publisher = EventBridgePublisher::new(aws_sdk_eventbridge::Client::new(&shared), bus);
    let handler = Arc::new(StreamHandler::new(publisher, source));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<StreamEvent>| {
        let handler = Arc::clone(&handler);
        async move { Ok::<_, lambda_runtime::Error>(handler.handle(event.payload).await) }
    }))
    .await
}
