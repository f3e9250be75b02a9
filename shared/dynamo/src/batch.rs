//! Keyless events in batches: `BatchWriteItem`, 25 a call, each event
//! answered on its own.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use audit_core::error::StoreError;
use audit_core::event::Event;
use aws_sdk_dynamodb::types::{PutRequest, ReturnConsumedCapacity, WriteRequest};

use crate::items::{cursor_of, event_to_item};
use crate::retry::{classify, RetryPolicy};
use crate::store::DynamoStore;

impl DynamoStore {
    /// [`audit_core::store::EventStore::put_events`].
    pub(crate) async fn put_batch(
        &self,
        events: &[Event],
        deadline: Instant,
    ) -> Vec<Result<(), StoreError>> {
        let mut results: Vec<Option<Result<(), StoreError>>> =
            (0..events.len()).map(|_| None).collect();
        let mut pending: HashMap<String, usize> = HashMap::new();
        let mut requests = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            match event_to_item(event).and_then(|item| {
                PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .map_err(|e| StoreError::Other(e.to_string()))
            }) {
                Ok(put) => {
                    pending.insert(event.cursor.clone(), i);
                    requests.push(WriteRequest::builder().put_request(put).build());
                }
                Err(err) => results[i] = Some(Err(err)),
            }
        }
        let mut settle = |requests: &[WriteRequest],
                          outcome: &dyn Fn() -> Result<(), StoreError>| {
            for request in requests {
                if let Some(i) = cursor_of(request).and_then(|c| pending.get(&c)) {
                    results[*i] = Some(outcome());
                }
            }
        };
        // Groups still to write. A group DynamoDB refuses as invalid is split
        // in halves until the one item it refuses is alone: its neighbours
        // are stored, and only it is reported.
        let mut groups: Vec<Vec<WriteRequest>> = vec![requests];
        let mut retry = RetryPolicy::until(deadline);
        let mut started = false;
        while let Some(group) = groups.pop() {
            if group.is_empty() {
                continue;
            }
            // Halves and retries begin before the deadline, like every write.
            if started && Instant::now() >= deadline {
                settle(&group, &|| {
                    Err(StoreError::Unavailable("the write deadline passed".into()))
                });
                continue;
            }
            started = true;
            let sent = self
                .client
                .batch_write_item()
                .request_items(&self.table, group.clone())
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .customize()
                .config_override(self.bounded_by(deadline))
                .send()
                .await;
            let unprocessed = match sent.map_err(classify) {
                Ok(output) => {
                    let unprocessed = output
                        .unprocessed_items
                        .and_then(|mut map| map.remove(&self.table))
                        .unwrap_or_default();
                    let still: HashSet<String> = unprocessed.iter().filter_map(cursor_of).collect();
                    let done: Vec<WriteRequest> = group
                        .into_iter()
                        .filter(|r| cursor_of(r).is_some_and(|c| !still.contains(&c)))
                        .collect();
                    settle(&done, &|| Ok(()));
                    unprocessed
                }
                Err(StoreError::Rejected(reason)) if group.len() == 1 => {
                    settle(&group, &|| Err(StoreError::Rejected(reason.clone())));
                    continue;
                }
                Err(StoreError::Rejected(_)) => {
                    let mut first = group;
                    let second = first.split_off(first.len() / 2);
                    groups.push(second);
                    groups.push(first);
                    continue;
                }
                Err(StoreError::Throttled) => group,
                // The SDK's own attempts failed (a 500, a timeout, a dropped
                // connection). The puts are unconditional and carry their
                // cursors, so a repeat of one that did land rewrites the same
                // item: try again while the deadline allows.
                Err(StoreError::Unavailable(reason)) => {
                    tracing::warn!(%reason, items = group.len(), "a batch write failed; retrying");
                    if retry.pause().await {
                        groups.push(group);
                    } else {
                        settle(&group, &|| Err(StoreError::Unavailable(reason.clone())));
                    }
                    continue;
                }
                // Nothing in this call is known to be stored.
                Err(other) => {
                    tracing::warn!(error = %other, items = group.len(), "a batch write failed");
                    let reason = other.to_string();
                    settle(&group, &|| Err(StoreError::Unavailable(reason.clone())));
                    continue;
                }
            };
            if unprocessed.is_empty() {
                continue;
            }
            if !retry.pause().await {
                settle(&unprocessed, &|| Err(StoreError::Throttled));
                continue;
            }
            groups.push(unprocessed);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(StoreError::Unavailable("not attempted".into()))))
            .collect()
    }
}
