use std::sync::Arc;

use audit_core::config::Config;
use audit_http::telemetry;
use aws_lambda_events::dynamodb::Event as StreamEvent;
use lambda_runtime::{service_fn, LambdaEvent};
use stream::eventbridge::EventBridgePublisher;
use stream::StreamHandler;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    // Every setting is read and checked in one place; an invalid one stops
    // the process here, as it does the other functions.
    let config = Config::from_env()?;
    let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let publisher = EventBridgePublisher::new(
        aws_sdk_eventbridge::Client::new(&shared),
        config.event_bus_name,
    );
    let handler = Arc::new(
        StreamHandler::new(publisher, config.event_source)
            .counting_unreadable_with(telemetry::count_unreadable_stream_record),
    );
    lambda_runtime::run(service_fn(move |event: LambdaEvent<StreamEvent>| {
        let handler = Arc::clone(&handler);
        async move { Ok::<_, lambda_runtime::Error>(handler.handle(event.payload).await) }
    }))
    .await
}
