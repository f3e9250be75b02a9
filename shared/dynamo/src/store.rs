//! [`EventStore`] over DynamoDB through `aws-sdk-dynamodb`.

use std::collections::HashMap;
use std::time::Instant;

use async_trait::async_trait;
use audit_core::error::StoreError;
use audit_core::event::{Event, PageEvent};
use audit_core::metadata::ObservedProperty;
use audit_core::pivot::Posting;
use audit_core::store::{
    EventStore, IdempotencyKey, IdempotentPut, PostedMark, RangePage, RangeRead, TenantSettings,
};
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, PutRequest, ReturnConsumedCapacity, TransactWriteItem, WriteRequest,
};
use aws_sdk_dynamodb::Client;

use crate::items::{event_to_item, item_to_event, item_to_page_event, Item};
use crate::retry::{classify, RetryPolicy};
use crate::table::{PARTITION_KEY, SETTINGS_PREFIX, SETTINGS_SORT_KEY, SORT_KEY};

/// Connections opened in init (`DynamoStore::warm`).
const WARM_CONNECTIONS: usize = 3;

pub(crate) fn event_key(tenant: &str, cursor: &str) -> Item {
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

/// Write units some kind of write consumed, in thousandths (as DynamoDB
/// reports them), summed across the store's clones.
#[derive(Clone, Default)]
pub(crate) struct UnitCounter(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl UnitCounter {
    pub(crate) fn add(&self, units: f64) {
        self.0.fetch_add(
            (units * 1000.0).round() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    pub(crate) fn add_consumed(&self, consumed: &[aws_sdk_dynamodb::types::ConsumedCapacity]) {
        self.add(consumed.iter().filter_map(|c| c.capacity_units).sum());
    }

    fn total(&self) -> f64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1000.0
    }
}

/// The tenants' posted-through marks as this process last read them, and
/// when (`None`: the tenant has none).
pub(crate) type PostedMarks =
    std::sync::Arc<std::sync::Mutex<HashMap<String, (Option<ulid::Ulid>, Instant)>>>;

#[derive(Clone)]
pub struct DynamoStore {
    pub(crate) client: Client,
    pub(crate) table: String,
    /// The integrity log's writes: what a sealing run costs.
    pub(crate) log_units: UnitCounter,
    /// The pivot postings' writes.
    pub(crate) posting_units: UnitCounter,
    pub(crate) posted_marks: PostedMarks,
}

impl DynamoStore {
    /// The tenant's settings item, if it has one.
    async fn read_settings(
        &self,
        tenant: &str,
        consistent: bool,
    ) -> Result<Option<TenantSettings>, StoreError> {
        let partition = format!("{SETTINGS_PREFIX}{tenant}");
        self.get_item(&partition, SETTINGS_SORT_KEY, consistent)
            .await?
            .map(|item| {
                serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .transpose()
    }

    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            log_units: UnitCounter::default(),
            posting_units: UnitCounter::default(),
            posted_marks: PostedMarks::default(),
        }
    }

    /// Write units consumed by the pivot postings' writes so far.
    pub fn posting_write_units(&self) -> f64 {
        self.posting_units.total()
    }

    /// Write units consumed by the integrity log's writes so far.
    pub fn log_write_units(&self) -> f64 {
        self.log_units.total()
    }

    /// Opens connections to the table's endpoint (DNS, TCP, TLS) with the
    /// cheapest call there is: a read of a key no item has. Run in init,
    /// where Lambda gives a full vCPU and bills the time anyway, so the
    /// first request doesn't pay the handshake. Failure is only logged: the
    /// first request then connects as it would have.
    pub async fn warm(&self) {
        let started = std::time::Instant::now();
        // Three at once, so the pool holds three connections: a process's
        // first read makes three calls at once (the read, its self-audit
        // record, the tenant's sealing mark), as ingest does with its keyed
        // events, its other events and its mark.
        let warmed = futures::future::join_all(
            (0..WARM_CONNECTIONS).map(|_| self.get_item(WARM_PARTITION, WARM_PARTITION, false)),
        )
        .await;
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            ok = warmed.iter().all(Result::is_ok),
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
        events: &[(Event, IdempotencyKey)],
        deadline: Instant,
    ) -> Vec<Result<IdempotentPut, StoreError>> {
        self.put_keyed(events, deadline).await
    }

    async fn put_events(&self, events: &[Event], deadline: Instant) -> Vec<Result<(), StoreError>> {
        self.put_batch(events, deadline).await
    }

    async fn read_range(&self, read: &RangeRead) -> Result<RangePage, StoreError> {
        if let Some((index, value)) = &read.pivot {
            return self.read_pivot(read, index, value).await;
        }
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND #sk BETWEEN :lo AND :hi")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#sk", SORT_KEY)
            .expression_attribute_values(":pk", AttributeValue::S(read.tenant.clone()))
            .expression_attribute_values(":lo", AttributeValue::S(read.lo.clone()))
            .expression_attribute_values(":hi", AttributeValue::S(read.hi.clone()))
            .scan_index_forward(!read.newest_first)
            .limit(read.limit.clamp(1, 10_000) as i32)
            .consistent_read(read.consistent)
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
        self.push_events(items, read.data_as_text, &mut page);
        Ok(page)
    }

    async fn get_settings(&self, tenant: &str) -> Result<Option<TenantSettings>, StoreError> {
        self.read_settings(tenant, false).await
    }

    async fn get_settings_consistent(
        &self,
        tenant: &str,
    ) -> Result<Option<TenantSettings>, StoreError> {
        self.read_settings(tenant, true).await
    }

    async fn replace_settings(
        &self,
        tenant: &str,
        settings: &TenantSettings,
        expected: Option<&TenantSettings>,
        record: &Event,
    ) -> Result<bool, StoreError> {
        let mut item: Item =
            serde_dynamo::to_item(settings).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        item.insert(
            PARTITION_KEY.into(),
            AttributeValue::S(format!("{SETTINGS_PREFIX}{tenant}")),
        );
        item.insert(SORT_KEY.into(), AttributeValue::S(SETTINGS_SORT_KEY.into()));
        let mut names = HashMap::from([("#pk".to_string(), PARTITION_KEY.to_string())]);
        let mut values = HashMap::new();
        let condition = match expected {
            None => "attribute_not_exists(#pk)".to_string(),
            // The value and the time it was set: a later change sets a new
            // time, so the same pair is the same state.
            Some(before) => {
                names.insert("#days".into(), "retentionDays".into());
                names.insert("#at".into(), "updatedAt".into());
                values.insert(
                    ":days".to_string(),
                    AttributeValue::N(before.retention_days.to_string()),
                );
                let at = match &before.updated_at {
                    Some(at) => {
                        values.insert(":at".to_string(), AttributeValue::S(at.clone()));
                        "#at = :at"
                    }
                    None => "attribute_not_exists(#at)",
                };
                // The new record's cursor must be above the last one's.
                let order = match &settings.change_cursor {
                    Some(cursor) => {
                        names.insert("#cc".into(), "changeCursor".into());
                        values.insert(":cc".to_string(), AttributeValue::S(cursor.clone()));
                        " AND (attribute_not_exists(#cc) OR #cc < :cc)"
                    }
                    None => "",
                };
                // (`#pk` keeps the names map the same in both branches.)
                format!("attribute_exists(#pk) AND #days = :days AND {at}{order}")
            }
        };
        let put_settings = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values((!values.is_empty()).then_some(values))
            .build()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let put_record = Put::builder()
            .table_name(&self.table)
            .set_item(Some(event_to_item(record)?))
            .condition_expression("attribute_not_exists(#sk)")
            .expression_attribute_names("#sk", SORT_KEY)
            .build()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let sent = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put_settings).build())
            .transact_items(TransactWriteItem::builder().put(put_record).build())
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(err) => {
                let settings_refused = err.as_service_error().is_some_and(|e| match e {
                    aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => c
                        .cancellation_reasons()
                        .first()
                        .and_then(|reason| reason.code())
                        == Some("ConditionalCheckFailed"),
                    _ => false,
                });
                if settings_refused {
                    Ok(false)
                } else {
                    Err(classify(err))
                }
            }
        }
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

    async fn posted_mark(&self, tenant: &str) -> Result<Option<PostedMark>, StoreError> {
        self.read_posted_mark(tenant).await
    }

    async fn posted_through_for_read(&self, tenant: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .posted_through_cached(tenant)
            .await?
            .map(|through| through.to_string()))
    }

    async fn put_postings(
        &self,
        tenant: &str,
        postings: &[Posting],
        mark: &PostedMark,
    ) -> Result<(), StoreError> {
        self.write_postings(tenant, postings, mark).await
    }

    async fn mark_dirty(&self, tenant: &str, until_ms: i64) -> Result<(), StoreError> {
        self.put_dirty_mark(tenant, until_ms).await
    }

    async fn get_event(&self, tenant: &str, cursor: &str) -> Result<Option<Event>, StoreError> {
        self.get_event_item(tenant, cursor).await
    }
}

impl DynamoStore {
    /// Timeouts for a write that must not start after `deadline`: the SDK's
    /// own retries included, the call ends by the deadline plus one attempt.
    /// The settle horizon is computed from that bound (a write can commit
    /// no later), so no retry the SDK makes may start after the deadline.
    pub(crate) fn bounded_by(&self, deadline: Instant) -> aws_sdk_dynamodb::config::Builder {
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

    /// Appends the events of `items` to the page; one unreadable item is
    /// logged and skipped, never the page.
    pub(crate) fn push_events(&self, items: Vec<Item>, data_as_text: bool, page: &mut RangePage) {
        page.events.reserve(items.len());
        for item in items {
            let event = if data_as_text {
                item_to_page_event(item)
            } else {
                item_to_event(item).map(PageEvent::parsed)
            };
            match event {
                Ok(event) => page.events.push(event),
                // One unreadable item must not stop the trail; it is logged for operators.
                Err(err) => tracing::error!(error = %err, "skipping an unreadable event item"),
            }
        }
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
}
