//! [`Publisher`] over EventBridge `PutEvents`.

use async_trait::async_trait;
use audit_core::publish::{BusEntry, Publisher};
use aws_sdk_eventbridge::types::PutEventsRequestEntry;

pub struct EventBridgePublisher {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

impl EventBridgePublisher {
    pub fn new(client: aws_sdk_eventbridge::Client, bus: impl Into<String>) -> Self {
        Self {
            client,
            bus: bus.into(),
        }
    }
}

#[async_trait]
impl Publisher for EventBridgePublisher {
    async fn publish(&self, entries: &[BusEntry]) -> Result<Vec<bool>, String> {
        let mut request = self.client.put_events();
        for entry in entries {
            request = request.entries(
                PutEventsRequestEntry::builder()
                    .event_bus_name(&self.bus)
                    .source(&entry.source)
                    .detail_type(&entry.detail_type)
                    .detail(&entry.detail)
                    .build(),
            );
        }
        let output = request
            .send()
            .await
            .map_err(|e| format!("{}", aws_sdk_eventbridge::Error::from(e)))?;
        // Results are in request order; an entry with an error code failed.
        let results = output.entries();
        Ok((0..entries.len())
            .map(|i| results.get(i).is_some_and(|r| r.error_code().is_none()))
            .collect())
    }
}
