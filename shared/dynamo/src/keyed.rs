//! Keyed events (`messageId`, `Idempotency-Key`): each written with its
//! idempotency marker in one transaction, many events per transaction.

use std::time::Instant;

use audit_core::error::StoreError;
use audit_core::event::{format_time, Event};
use audit_core::store::{IdempotencyKey, IdempotentPut};
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnConsumedCapacity, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem,
};
use chrono::Utc;
use futures::StreamExt;

use crate::items::{
    duplicate_from_marker, event_to_item, item_size, marker_item, Item, MARKER_EXPIRES_AT,
    MARKER_SCOPED, MARKER_TIMESTAMP,
};
use crate::retry::{classify, RetryPolicy};
use crate::store::DynamoStore;
use crate::table::{IDEMPOTENCY_PREFIX, SORT_KEY};

/// A keyed event's place in the call, its two puts (the event, its
/// marker) and their size.
type KeyedActions = (usize, [TransactWriteItem; 2], usize);
/// Reads of pre-scoping markers in flight at once (platform writes only).
const LEGACY_LOOKUPS_AT_ONCE: usize = 8;
/// How old a pre-scoping marker may be and still answer a platform retry:
/// a retry comes within a day of its first attempt.
const LEGACY_RETRY_WINDOW_MS: i64 = 86_400_000;
/// Keyed events per transaction: two actions each, of DynamoDB's 100.
const EVENTS_PER_TRANSACTION: usize = 50;
/// A transaction's items, at most: DynamoDB takes 4 MB; a margin for the
/// request's own bytes.
const TRANSACTION_BYTES: usize = 3 * 1024 * 1024;

impl DynamoStore {
    /// [`audit_core::store::EventStore::put_events_once`]: the events in
    /// groups of up to [`EVENTS_PER_TRANSACTION`], each answered on its own.
    pub(crate) async fn put_keyed(
        &self,
        events: &[(Event, IdempotencyKey)],
        deadline: Instant,
    ) -> Vec<Result<IdempotentPut, StoreError>> {
        let mut results: Vec<Option<Result<IdempotentPut, StoreError>>> =
            events.iter().map(|_| None).collect();
        // A platform retry of an event written before keys were scoped to
        // their producer is answered by that event's marker.
        let looked_up = events.iter().any(|(_, key)| key.producer.is_some());
        for (i, outcome) in self.legacy_markers(events, deadline).await {
            results[i] = Some(outcome);
        }
        // Each event with its marker, or the reason it has none.
        let mut actions: Vec<KeyedActions> = Vec::new();
        for (i, (event, key)) in events.iter().enumerate() {
            if results[i].is_some() {
                continue;
            }
            match self.keyed_actions(event, key) {
                Ok((pair, size)) => actions.push((i, pair, size)),
                Err(err) => results[i] = Some(Err(err)),
            }
        }
        // One transaction per group: DynamoDB takes 100 actions and 4 MB.
        let mut groups: Vec<Vec<KeyedActions>> = Vec::new();
        let mut bytes = 0;
        for action in actions {
            let full = groups.last().is_none_or(|group| {
                group.len() >= EVENTS_PER_TRANSACTION || bytes + action.2 > TRANSACTION_BYTES
            });
            if full {
                groups.push(Vec::new());
                bytes = 0;
            }
            bytes += action.2;
            if let Some(group) = groups.last_mut() {
                group.push(action);
            }
        }
        for (n, group) in groups.into_iter().enumerate() {
            // A later group begins only before the deadline: what starts
            // after it could commit beyond the settle horizon's bound. So
            // does the first, after the reads of old markers took time.
            if (n > 0 || looked_up) && Instant::now() >= deadline {
                for (i, _, _) in group {
                    results[i] = Some(Err(StoreError::Unavailable(
                        "the write deadline passed".into(),
                    )));
                }
                continue;
            }
            for (i, outcome) in self.transact_keyed(group, events, deadline).await {
                results[i] = Some(outcome);
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(StoreError::Unavailable("not attempted".into()))))
            .collect()
    }

    /// The event's conditional put and its marker's, and their size.
    fn keyed_actions(
        &self,
        event: &Event,
        key: &IdempotencyKey,
    ) -> Result<([TransactWriteItem; 2], usize), StoreError> {
        let item = event_to_item(event)?;
        let marker = marker_item(event, key);
        let size = item_size(&item) + item_size(&marker);
        let event_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#sk)")
            .expression_attribute_names("#sk", SORT_KEY)
            .build()
            .map_err(|e| StoreError::Other(e.to_string()))?;
        // A marker whose event has expired counts as gone, to the
        // millisecond readers hide the event at (`expiresAt <= now`, both
        // written by `format_time`, so they compare as text). Its TTL, in
        // whole seconds, kept the key up to a second longer than the
        // event could be read.
        let marker_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(marker))
            .condition_expression("attribute_not_exists(#sk) OR #expires <= :now")
            .expression_attribute_names("#sk", SORT_KEY)
            .expression_attribute_names("#expires", MARKER_EXPIRES_AT)
            .expression_attribute_values(":now", AttributeValue::S(format_time(Utc::now())))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| StoreError::Other(e.to_string()))?;
        Ok((
            [
                TransactWriteItem::builder().put(event_put).build(),
                TransactWriteItem::builder().put(marker_put).build(),
            ],
            size,
        ))
    }

    /// Writes a group of keyed events in one transaction. A cancelled
    /// transaction writes nothing and names each action's reason: the events
    /// it decides (a used key, a refused item, a taken cursor) are answered,
    /// and the rest go again in a smaller transaction, so one event never
    /// fails another. A retry of the same call by the SDK carries the same
    /// `ClientRequestToken`, so one whose answer was lost is not applied twice.
    async fn transact_keyed(
        &self,
        group: Vec<KeyedActions>,
        events: &[(Event, IdempotencyKey)],
        deadline: Instant,
    ) -> Vec<(usize, Result<IdempotentPut, StoreError>)> {
        let mut outcomes = Vec::new();
        let mut groups = vec![group];
        let mut retry = RetryPolicy::until(deadline);
        let mut sent = false;
        while let Some(pending) = groups.pop() {
            if pending.is_empty() {
                continue;
            }
            // Every send but the first begins before the deadline (halves,
            // the rest of a group after some were decided), so none commits
            // later than the deadline plus one attempt.
            if sent && Instant::now() >= deadline {
                outcomes.extend(pending.iter().map(|(i, _, _)| {
                    (
                        *i,
                        Err(StoreError::Unavailable("the write deadline passed".into())),
                    )
                }));
                continue;
            }
            sent = true;
            let items: Vec<TransactWriteItem> = pending
                .iter()
                .flat_map(|(_, pair, _)| pair.iter().cloned())
                .collect();
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .customize()
                .config_override(self.bounded_by(deadline))
                .send()
                .await;
            let err = match result {
                Ok(_) => {
                    outcomes.extend(
                        pending
                            .iter()
                            .map(|(i, _, _)| (*i, Ok(IdempotentPut::Stored))),
                    );
                    continue;
                }
                Err(err) => err,
            };
            let reasons = err.as_service_error().and_then(|e| match e {
                aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => {
                    Some(c.cancellation_reasons().to_vec())
                }
                _ => None,
            });
            let Some(reasons) = reasons else {
                match classify(err) {
                    // Refused as a whole request, naming no item: halves
                    // until the one refused is alone, as a batch write does.
                    StoreError::Rejected(_) if pending.len() > 1 => {
                        let mut first = pending;
                        let second = first.split_off(first.len() / 2);
                        groups.push(second);
                        groups.push(first);
                    }
                    classified => {
                        if RetryPolicy::is_retryable(&classified) && retry.pause().await {
                            groups.push(pending);
                        } else {
                            outcomes.extend(
                                pending
                                    .iter()
                                    .map(|(i, _, _)| (*i, Err(classified.clone()))),
                            );
                        }
                    }
                }
                continue;
            };
            let code = |n: usize| reasons.get(n).and_then(|r| r.code()).unwrap_or("None");
            let decided_before = outcomes.len();
            let mut undecided = Vec::new();
            for (slot, action) in pending.into_iter().enumerate() {
                let (event_code, marker_code) = (code(2 * slot), code(2 * slot + 1));
                let i = action.0;
                if marker_code == "ConditionalCheckFailed" {
                    let (event, key) = &events[i];
                    let duplicate = match reasons
                        .get(2 * slot + 1)
                        .and_then(|r| r.item())
                        .and_then(duplicate_from_marker)
                    {
                        Some(duplicate) => Ok(duplicate),
                        None => self.read_marker(&event.account_id, key).await,
                    };
                    // The marker names this very event: an earlier send of
                    // it landed though its answer was lost.
                    let duplicate = match duplicate {
                        Ok(IdempotentPut::Duplicate { cursor, .. }) if cursor == event.cursor => {
                            Ok(IdempotentPut::Stored)
                        }
                        other => other,
                    };
                    outcomes.push((i, duplicate));
                } else if let Some(invalid) = [2 * slot, 2 * slot + 1]
                    .iter()
                    .filter_map(|n| reasons.get(*n))
                    .find(|r| r.code() == Some("ValidationError"))
                {
                    let reason = invalid.message().unwrap_or_default().to_string();
                    outcomes.push((i, Err(StoreError::Rejected(reason))));
                } else if event_code == "ConditionalCheckFailed" && marker_code == "None" {
                    // Another item holds this cursor; the client sends the
                    // event again under a new one.
                    outcomes.push((i, Err(StoreError::ConditionFailed)));
                } else {
                    let blamed = event_code != "None" || marker_code != "None";
                    undecided.push((action, blamed));
                }
            }
            if undecided.is_empty() {
                continue;
            }
            // The events the cancellation names (a conflict with another
            // transaction, throttling) held back the rest, named `None`:
            // those go again at once, on their own, and the named ones
            // after them.
            let (blamed, clean): (Vec<_>, Vec<_>) =
                undecided.into_iter().partition(|(_, blamed)| *blamed);
            let blamed: Vec<KeyedActions> = blamed.into_iter().map(|(action, _)| action).collect();
            let clean: Vec<KeyedActions> = clean.into_iter().map(|(action, _)| action).collect();
            if !blamed.is_empty() && !clean.is_empty() {
                groups.push(blamed);
                groups.push(clean);
                continue;
            }
            let undecided = if blamed.is_empty() { clean } else { blamed };
            // Nothing decided: a conflict (a concurrent retry with the same
            // key) or throttling held the whole group; go round again.
            if outcomes.len() == decided_before && !retry.pause().await {
                let throttled = reasons.iter().any(|r| {
                    matches!(
                        r.code(),
                        Some("ThrottlingError" | "ProvisionedThroughputExceeded")
                    )
                });
                let err = if throttled {
                    StoreError::Throttled
                } else {
                    StoreError::Unavailable("transaction kept conflicting".into())
                };
                outcomes.extend(undecided.iter().map(|(i, _, _)| (*i, Err(err.clone()))));
                continue;
            }
            groups.push(undecided);
        }
        outcomes
    }

    /// For each platform producer's key, the marker of the same key in the
    /// tenant's own partition written before keys were scoped (it has no
    /// `scoped` attribute) less than [`LEGACY_RETRY_WINDOW_MS`] ago, if its
    /// event has not expired: such a marker may be the producer's own, and a
    /// retry must not store its event twice. An older one is not a retry's,
    /// and honouring it would let a tenant's own key from before the
    /// upgrade keep answering the platform's new events. Read consistently
    /// (a write by the old code may have just landed), and only until the
    /// write deadline: a lookup not done by then fails its event (503), as
    /// a write not started by then does.
    async fn legacy_markers(
        &self,
        events: &[(Event, IdempotencyKey)],
        deadline: Instant,
    ) -> Vec<(usize, Result<IdempotentPut, StoreError>)> {
        let now = Utc::now();
        let now_text = format_time(now);
        let oldest = format_time(now - chrono::Duration::milliseconds(LEGACY_RETRY_WINDOW_MS));
        // Made here, not lazily in the stream: futures borrowing `events`
        // through an iterator's closures are not `Send` enough for a handler.
        let mut lookups = Vec::new();
        for (i, (event, key)) in events.iter().enumerate() {
            if key.producer.is_none() {
                continue;
            }
            lookups.push({
                let partition = format!("{IDEMPOTENCY_PREFIX}{}", event.account_id);
                let (now, oldest) = (now_text.as_str(), oldest.as_str());
                async move {
                    if Instant::now() >= deadline {
                        return Some((
                            i,
                            Err(StoreError::Unavailable("the write deadline passed".into())),
                        ));
                    }
                    let text = |marker: &Item, name: &str| {
                        marker
                            .get(name)
                            .and_then(|v| v.as_s().ok())
                            .cloned()
                            .unwrap_or_default()
                    };
                    match self
                        .get_item_by(&partition, &key.key, true, Some(deadline))
                        .await
                    {
                        Ok(Some(marker))
                            if !marker.contains_key(MARKER_SCOPED)
                                && text(&marker, MARKER_EXPIRES_AT).as_str() > now
                                && text(&marker, MARKER_TIMESTAMP).as_str() >= oldest =>
                        {
                            duplicate_from_marker(&marker).map(|found| (i, Ok(found)))
                        }
                        Ok(_) => None,
                        Err(err) => Some((i, Err(err))),
                    }
                }
            });
        }
        futures::stream::iter(lookups)
            .buffer_unordered(LEGACY_LOOKUPS_AT_ONCE)
            .filter_map(|found| async move { found })
            .collect()
            .await
    }

    async fn read_marker(
        &self,
        tenant: &str,
        key: &IdempotencyKey,
    ) -> Result<IdempotentPut, StoreError> {
        let partition = format!("{IDEMPOTENCY_PREFIX}{}", key.scope(tenant));
        self.get_item(&partition, &key.key, true)
            .await?
            .as_ref()
            .and_then(duplicate_from_marker)
            .ok_or_else(|| StoreError::Corrupt("idempotency marker vanished".into()))
    }
}
