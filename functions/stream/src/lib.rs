//! The table's stream → subscribers. Each INSERT of an event item becomes
//! one `AuditEvent` entry (the same JSON the API returns); TTL removals and
//! other item types are not forwarded. Only records that could not be
//! delivered are reported back, so Lambda retries from them.

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
}

impl<P: Publisher> StreamHandler<P> {
    pub fn new(publisher: P, source: impl Into<String>) -> Self {
        Self {
            publisher,
            source: source.into(),
            max_entry_bytes: MAX_ENTRY_BYTES,
        }
    }

    pub fn publisher(&self) -> &P {
        &self.publisher
    }

    /// Publishes the batch's event inserts in stream order and stops at the
    /// first record it cannot deliver (or read), reporting only that one:
    /// Lambda retries from it, so no record before it is sent again, and
    /// none after it was sent yet (but those that shared its `PutEvents`
    /// call and were taken).
    pub async fn handle(&self, event: StreamEvent) -> DynamoDbEventResponse {
        let mut entries = Vec::new();
        let mut first_failed: Option<String> = None;
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
                    // A poison record: report it, so bisecting and the
                    // on-failure destination keep it instead of losing it;
                    // the records after it wait for the retry.
                    tracing::error!(error = %err, record = %id, "stream record is not a readable event");
                    first_failed = Some(id);
                    break;
                }
            }
        }
        for call in calls(entries, self.max_entry_bytes) {
            // Every entry precedes a poison record, so one undelivered
            // here is the first failure.
            if let Some(undelivered) = self.deliver(call).await.into_iter().next() {
                first_failed = Some(undelivered);
                break;
            }
        }
        let mut response = DynamoDbEventResponse::default();
        if let Some(id) = first_failed {
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
