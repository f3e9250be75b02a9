//! [`EventStore`] over DynamoDB through `aws-sdk-dynamodb`.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use async_trait::async_trait;
use audit_core::error::StoreError;
use audit_core::event::Event;
use audit_core::metadata::ObservedProperty;
use audit_core::pivot::pivot_key;
use audit_core::store::{EventStore, IdempotentPut, RangePage, RangeRead, TenantSettings};
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, Put, PutRequest, ReturnConsumedCapacity,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use chrono::Utc;

use crate::items::{
    cursor_of, duplicate_from_marker, event_to_item, item_size, item_to_event, marker_item, Item,
};
use crate::retry::{classify, RetryPolicy};
use crate::table::{
    IDEMPOTENCY_PREFIX, PARTITION_KEY, SETTINGS_PREFIX, SETTINGS_SORT_KEY, SORT_KEY, TTL_ATTRIBUTE,
};

fn event_key(tenant: &str, cursor: &str) -> Item {
    HashMap::from([
        (
            PARTITION_KEY.to_string(),
            AttributeValue::S(tenant.to_string()),
        ),
        (SORT_KEY.to_string(), AttributeValue::S(cursor.to_string())),
    ])
}

/// The key [`DynamoStore::warm`] reads: `#` is in no tenant id and no item
/// type uses this partition, so it never holds an item.
const WARM_PARTITION: &str = "warm#";
/// A keyed event's place in the call, its two puts (the event, its
/// marker) and their size.
type KeyedActions = (usize, [TransactWriteItem; 2], usize);
/// Keyed events per transaction: two actions each, of DynamoDB's 100.
const EVENTS_PER_TRANSACTION: usize = 50;
/// A transaction's items, at most: DynamoDB takes 4 MB; a margin for the
/// request's own bytes.
const TRANSACTION_BYTES: usize = 3 * 1024 * 1024;

#[derive(Clone)]
pub struct DynamoStore {
    pub(crate) client: Client,
    pub(crate) table: String,
    /// Write units the integrity log's writes consumed, in thousandths (as
    /// DynamoDB reports them): what a sealing run costs.
    pub(crate) log_write_milliunits: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            log_write_milliunits: Default::default(),
        }
    }

    /// Write units consumed by the integrity log's writes so far.
    pub fn log_write_units(&self) -> f64 {
        self.log_write_milliunits
            .load(std::sync::atomic::Ordering::Relaxed) as f64
            / 1000.0
    }

    pub(crate) fn count_log_writes(&self, consumed: &[aws_sdk_dynamodb::types::ConsumedCapacity]) {
        self.count_log_units(consumed.iter().filter_map(|c| c.capacity_units).sum());
    }

    pub(crate) fn count_log_units(&self, units: f64) {
        self.log_write_milliunits.fetch_add(
            (units * 1000.0).round() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Opens connections to the table's endpoint (DNS, TCP, TLS) with the
    /// cheapest call there is: a read of a key no item has. Run in init,
    /// where Lambda gives a full vCPU and bills the time anyway, so the
    /// first request doesn't pay the handshake. Failure is only logged: the
    /// first request then connects as it would have.
    pub async fn warm(&self) {
        let started = std::time::Instant::now();
        // Two at once, so the pool holds two connections: every read
        // writes its self-audit record while it reads, and ingest its
        // sealing mark while it writes.
        let (first, second) = futures::join!(
            self.get_item(WARM_PARTITION, WARM_PARTITION, false),
            self.get_item(WARM_PARTITION, WARM_PARTITION, false)
        );
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            ok = first.is_ok() && second.is_ok(),
            "connections to the table warmed"
        );
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }
}

#[async_trait]
impl EventStore for DynamoStore {
    async fn put_event(&self, event: &Event, deadline: Instant) -> Result<(), StoreError> {
        let item = event_to_item(event)?;
        let sent = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item.clone()))
            .condition_expression("attribute_not_exists(#sk)")
            .expression_attribute_names("#sk", SORT_KEY)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .customize()
            .config_override(self.bounded_by(deadline))
            .send()
            .await
            .map_err(classify);
        match sent {
            Ok(_) => Ok(()),
            // Cursors don't collide, so the same item already at this cursor
            // is this put's own earlier attempt, whose answer was lost and
            // which the SDK then retried.
            Err(StoreError::ConditionFailed) => {
                let landed = self
                    .get_item(&event.account_id, &event.cursor, true)
                    .await?;
                // Strings come back as written (numbers may be normalised).
                let same = landed.is_some_and(|landed| {
                    item.iter()
                        .filter(|(_, value)| matches!(value, AttributeValue::S(_)))
                        .all(|(name, value)| landed.get(name) == Some(value))
                });
                if same {
                    Ok(())
                } else {
                    Err(StoreError::ConditionFailed)
                }
            }
            Err(err) => Err(err),
        }
    }

    async fn put_events_once(
        &self,
        events: &[(Event, String)],
        deadline: Instant,
    ) -> Vec<Result<IdempotentPut, StoreError>> {
        let mut results: Vec<Option<Result<IdempotentPut, StoreError>>> =
            events.iter().map(|_| None).collect();
        // Each event with its marker, or the reason it has none.
        let mut actions: Vec<KeyedActions> = Vec::new();
        for (i, (event, key)) in events.iter().enumerate() {
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
            // after it could commit beyond the settle horizon's bound.
            if n > 0 && Instant::now() >= deadline {
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

    async fn put_events(&self, events: &[Event], deadline: Instant) -> Vec<Result<(), StoreError>> {
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

    async fn read_range(&self, read: &RangeRead) -> Result<RangePage, StoreError> {
        let (index_name, key_attribute, key_value) = match &read.pivot {
            Some((index, value)) => (
                Some(index.name),
                index.key_attribute,
                pivot_key(&read.tenant, value),
            ),
            None => (None, PARTITION_KEY, read.tenant.clone()),
        };
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .set_index_name(index_name.map(str::to_string))
            .key_condition_expression("#pk = :pk AND #sk BETWEEN :lo AND :hi")
            .expression_attribute_names("#pk", key_attribute)
            .expression_attribute_names("#sk", SORT_KEY)
            .expression_attribute_values(":pk", AttributeValue::S(key_value))
            .expression_attribute_values(":lo", AttributeValue::S(read.lo.clone()))
            .expression_attribute_values(":hi", AttributeValue::S(read.hi.clone()))
            .scan_index_forward(!read.newest_first)
            .limit(read.limit.clamp(1, 10_000) as i32)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(classify)?;
        let items = output.items.unwrap_or_default();
        let mut page = RangePage {
            items_read: items.len(),
            more: output.last_evaluated_key.is_some_and(|k| !k.is_empty()),
            read_units: output
                .consumed_capacity
                .and_then(|c| c.capacity_units)
                .unwrap_or(0.0),
            ..RangePage::default()
        };
        page.last_cursor = items
            .last()
            .and_then(|i| i.get(SORT_KEY))
            .and_then(|v| v.as_s().ok())
            .cloned();
        // The pivot indexes hold keys only: the events are read from the
        // table by key, in the index's order.
        let items = if index_name.is_some() {
            self.fetch_events(&read.tenant, &items, &mut page).await?
        } else {
            items
        };
        page.events.reserve(items.len());
        for item in items {
            match item_to_event(item) {
                Ok(event) => page.events.push(event),
                // One unreadable item must not stop the trail; it is logged for operators.
                Err(err) => tracing::error!(error = %err, "skipping an unreadable event item"),
            }
        }
        Ok(page)
    }

    async fn get_settings(&self, tenant: &str) -> Result<Option<TenantSettings>, StoreError> {
        let partition = format!("{SETTINGS_PREFIX}{tenant}");
        self.get_item(&partition, SETTINGS_SORT_KEY, false)
            .await?
            .map(|item| {
                serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .transpose()
    }

    async fn put_settings(
        &self,
        tenant: &str,
        settings: &TenantSettings,
    ) -> Result<(), StoreError> {
        let mut item: Item =
            serde_dynamo::to_item(settings).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        item.insert(
            PARTITION_KEY.into(),
            AttributeValue::S(format!("{SETTINGS_PREFIX}{tenant}")),
        );
        item.insert(SORT_KEY.into(), AttributeValue::S(SETTINGS_SORT_KEY.into()));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn put_properties(
        &self,
        sightings: &[(String, ObservedProperty)],
    ) -> Result<(), StoreError> {
        let mut failure = None;
        for chunk in sightings.chunks(25) {
            if let Err(err) = self.put_property_chunk(chunk).await {
                failure = Some(err);
            }
        }
        failure.map_or(Ok(()), Err)
    }

    async fn read_properties(
        &self,
        tenant: &str,
        service_name: Option<&str>,
        event_type: Option<&str>,
    ) -> Result<Vec<ObservedProperty>, StoreError> {
        self.query_properties(tenant, service_name, event_type)
            .await
    }

    async fn mark_dirty(&self, tenant: &str, until_ms: i64) -> Result<(), StoreError> {
        self.put_dirty_mark(tenant, until_ms).await
    }

    async fn get_event(&self, tenant: &str, cursor: &str) -> Result<Option<Event>, StoreError> {
        self.get_event_item(tenant, cursor).await
    }
}

impl DynamoStore {
    async fn get_event_item(
        &self,
        tenant: &str,
        cursor: &str,
    ) -> Result<Option<Event>, StoreError> {
        self.get_item(tenant, cursor, false)
            .await?
            .map(item_to_event)
            .transpose()
    }
}

impl DynamoStore {
    /// Timeouts for a write that must not start after `deadline`: the SDK's
    /// own retries included, the call ends by the deadline plus one attempt.
    /// The settle horizon is computed from that bound (a write can commit
    /// no later), so no retry the SDK makes may start after the deadline.
    fn bounded_by(&self, deadline: Instant) -> aws_sdk_dynamodb::config::Builder {
        let configured = self.client.config().timeout_config();
        let attempt = configured
            .and_then(|t| t.operation_attempt_timeout())
            .unwrap_or(std::time::Duration::from_secs(2));
        let bound = deadline.saturating_duration_since(Instant::now()) + attempt;
        let operation = configured
            .and_then(|t| t.operation_timeout())
            .map_or(bound, |op| op.min(bound));
        let timeouts = configured
            .map(|t| t.to_builder())
            .unwrap_or_default()
            .operation_timeout(operation)
            .build();
        aws_sdk_dynamodb::config::Builder::default().timeout_config(timeouts)
    }

    /// The events an index page names, in its order. An index entry is
    /// written after its item, so an eventually consistent read can still
    /// miss a new item; those are asked for again, consistently. What is
    /// missing then has been removed by TTL (it had expired).
    async fn fetch_events(
        &self,
        tenant: &str,
        entries: &[Item],
        page: &mut RangePage,
    ) -> Result<Vec<Item>, StoreError> {
        let cursors: Vec<&str> = entries
            .iter()
            .filter_map(|entry| entry.get(SORT_KEY).and_then(|v| v.as_s().ok()))
            .map(String::as_str)
            .collect();
        let mut found: HashMap<String, Item> = HashMap::with_capacity(cursors.len());
        for consistent in [false, true] {
            let missing: Vec<Item> = cursors
                .iter()
                .filter(|cursor| !found.contains_key(**cursor))
                .map(|cursor| event_key(tenant, cursor))
                .collect();
            if missing.is_empty() {
                break;
            }
            let (items, units) = self.get_items(missing, consistent).await?;
            page.items_fetched += items.len();
            page.read_units += units;
            for item in items {
                if let Some(cursor) = item.get(SORT_KEY).and_then(|v| v.as_s().ok()) {
                    found.insert(cursor.clone(), item);
                }
            }
        }
        Ok(cursors
            .iter()
            .filter_map(|cursor| found.remove(*cursor))
            .collect())
    }

    /// Items by key (`BatchGetItem`, 100 keys a call, unprocessed keys
    /// retried); the items found, in no order, and the read units consumed.
    pub(crate) async fn get_items(
        &self,
        keys: Vec<Item>,
        consistent: bool,
    ) -> Result<(Vec<Item>, f64), StoreError> {
        let mut found = Vec::with_capacity(keys.len());
        let mut units = 0.0;
        for chunk in keys.chunks(100) {
            let mut keys = chunk.to_vec();
            let mut retry = RetryPolicy::for_background();
            while !keys.is_empty() {
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(consistent)
                    .build()
                    .map_err(|e| StoreError::Other(e.to_string()))?;
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .return_consumed_capacity(ReturnConsumedCapacity::Total)
                    .send()
                    .await
                    .map_err(classify)?;
                units += output
                    .consumed_capacity()
                    .iter()
                    .filter_map(|c| c.capacity_units)
                    .sum::<f64>();
                found.extend(
                    output
                        .responses
                        .and_then(|mut r| r.remove(&self.table))
                        .unwrap_or_default(),
                );
                keys = output
                    .unprocessed_keys
                    .and_then(|mut m| m.remove(&self.table))
                    .map(|k| k.keys)
                    .unwrap_or_default();
                if !keys.is_empty() && !retry.pause().await {
                    return Err(StoreError::Throttled);
                }
            }
        }
        Ok((found, units))
    }

    /// Writes items in batches of 25 until every one is written (retrying
    /// what DynamoDB leaves unprocessed); the write units consumed.
    pub(crate) async fn write_items(&self, items: Vec<Item>) -> Result<f64, StoreError> {
        let mut units = 0.0;
        for chunk in items.chunks(25) {
            let mut requests: Vec<WriteRequest> = Vec::with_capacity(chunk.len());
            for item in chunk {
                let put = PutRequest::builder()
                    .set_item(Some(item.clone()))
                    .build()
                    .map_err(|e| StoreError::Other(e.to_string()))?;
                requests.push(WriteRequest::builder().put_request(put).build());
            }
            let mut retry = RetryPolicy::for_background();
            while !requests.is_empty() {
                let sent = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests.clone())
                    .return_consumed_capacity(ReturnConsumedCapacity::Total)
                    .send()
                    .await
                    .map_err(classify);
                let output = match sent {
                    Ok(output) => output,
                    // Unconditional puts: repeating one that landed is harmless.
                    Err(StoreError::Throttled | StoreError::Unavailable(_))
                        if retry.pause().await =>
                    {
                        continue
                    }
                    Err(err) => return Err(err),
                };
                units += output
                    .consumed_capacity()
                    .iter()
                    .filter_map(|c| c.capacity_units)
                    .sum::<f64>();
                requests = output
                    .unprocessed_items
                    .and_then(|mut m| m.remove(&self.table))
                    .unwrap_or_default();
                if !requests.is_empty() && !retry.pause().await {
                    return Err(StoreError::Throttled);
                }
            }
        }
        Ok(units)
    }

    /// One item by its keys.
    pub(crate) async fn get_item(
        &self,
        partition: &str,
        sort: &str,
        consistent: bool,
    ) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PARTITION_KEY, AttributeValue::S(partition.to_string()))
            .key(SORT_KEY, AttributeValue::S(sort.to_string()))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(classify)?;
        Ok(output.item)
    }

    /// The event's conditional put and its marker's, and their size.
    fn keyed_actions(
        &self,
        event: &Event,
        key: &str,
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
        // A marker past its TTL but not yet removed counts as gone.
        let marker_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(marker))
            .condition_expression("attribute_not_exists(#sk) OR #ttl < :now")
            .expression_attribute_names("#sk", SORT_KEY)
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(
                ":now",
                AttributeValue::N(Utc::now().timestamp().to_string()),
            )
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
        events: &[(Event, String)],
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

    async fn read_marker(&self, tenant: &str, key: &str) -> Result<IdempotentPut, StoreError> {
        let partition = format!("{IDEMPOTENCY_PREFIX}{tenant}");
        self.get_item(&partition, key, true)
            .await?
            .as_ref()
            .and_then(duplicate_from_marker)
            .ok_or_else(|| StoreError::Corrupt("idempotency marker vanished".into()))
    }
}
