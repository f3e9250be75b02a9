//! The table's stream → subscribers. Each INSERT of an event item becomes
//! one `AuditEvent` entry (the same JSON the API returns); TTL removals and
//! other item types are not forwarded. The first record that could not be
//! delivered is reported back, so Lambda retries from it.

use std::time::Duration;

use audit_core::publish::{calls, entry_for, BusEntry, Publisher, MAX_ENTRY_BYTES};
use audit_dynamo::stream::{event_from_image, TTL_PRINCIPAL};
use aws_lambda_events::dynamodb::Event as StreamEvent;
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};

pub mod eventbridge;

/// Attempts per PutEvents call before a record is reported as failed.
const ATTEMPTS: u32 = 3;

pub struct StreamHandler<P> {
    publisher: P,
    source: String,
    max_entry_bytes: usize,
    /// Counts a record that is not a readable event (a metric on Lambda).
    on_unreadable: fn(),
}

impl<P: Publisher> StreamHandler<P> {
    pub fn new(publisher: P, source: impl Into<String>) -> Self {
        Self {
            publisher,
            source: source.into(),
            max_entry_bytes: MAX_ENTRY_BYTES,
            on_unreadable: || {},
        }
    }

    /// Calls `count` for each record that is not a readable event.
    pub fn counting_unreadable_with(mut self, count: fn()) -> Self {
        self.on_unreadable = count;
        self
    }

    pub fn publisher(&self) -> &P {
        &self.publisher
    }

    /// Publishes the batch's event inserts in stream order and reports the
    /// first record it could not deliver, if any: Lambda retries from it.
    /// A record that is not a readable event is logged and counted, never
    /// reported: no retry can read it, and Lambda gives up the whole rest
    /// of a batch whose retries are spent, so reporting it would lose the
    /// good records behind it.
    pub async fn handle(&self, event: StreamEvent) -> DynamoDbEventResponse {
        let mut entries = Vec::new();
        for record in event.records {
            let id = record
                .change
                .sequence_number
                .clone()
                .unwrap_or_else(|| record.event_id.clone());
            let by_ttl = record
                .user_identity
                .as_ref()
                .is_some_and(|u| u.principal_id == TTL_PRINCIPAL);
            // Events are only ever inserted; a REMOVE is a TTL expiry (or an
            // operator's action), never a user event.
            if record.event_name != "INSERT" || by_ttl {
                continue;
            }
            match event_from_image(record.change.new_image) {
                None => {}
                Some(Ok(event)) => {
                    entries.push(entry_for(&event, &self.source, &id, self.max_entry_bytes))
                }
                Some(Err(err)) => {
                    tracing::error!(error = %err, record = %id, "stream record is not a readable event: skipped");
                    (self.on_unreadable)();
                }
            }
        }
        let mut first_undelivered: Option<String> = None;
        for call in calls(entries, self.max_entry_bytes) {
            // Later calls are still sent: what Lambda retries from the first
            // undelivered record on goes again (at least once), but nothing
            // is given up that a retry could deliver.
            let undelivered = self.deliver(call).await;
            if first_undelivered.is_none() {
                first_undelivered = undelivered.into_iter().next();
            }
        }
        let mut response = DynamoDbEventResponse::default();
        if let Some(id) = first_undelivered {
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = Some(id);
            response.batch_item_failures.push(failure);
        }
        response
    }

    /// Sends one call, retrying only the entries that failed; returns the
    /// records still undelivered.
    async fn deliver(&self, mut pending: Vec<BusEntry>) -> Vec<String> {
        for attempt in 0..ATTEMPTS {
            let accepted = match self.publisher.publish(&pending).await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, attempt, "publish failed");
                    vec![false; pending.len()]
                }
            };
            pending = pending
                .into_iter()
                .zip(accepted)
                .filter(|(_, ok)| !ok)
                .map(|(entry, _)| entry)
                .collect();
            if pending.is_empty() {
                return Vec::new();
            }
            tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
        }
        tracing::warn!(
            records = pending.len(),
            "entries not delivered; Lambda will retry them"
        );
        pending.into_iter().map(|e| e.record_id).collect()
    }
}
