//! Reads by key: one item, a batch of items, and the events postings name
//! (fetched a batch at a time, within a page's bytes).

use std::collections::HashMap;

use audit_core::error::StoreError;
use audit_core::event::Event;
use audit_core::store::{RangePage, RangeRead};
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, ReturnConsumedCapacity};

use crate::items::{item_to_event, Item};
use crate::retry::{classify, RetryPolicy};
use crate::store::{event_key, DynamoStore};
use crate::table::{PARTITION_KEY, SORT_KEY};

/// Most keys one `BatchGetItem` takes.
const BATCH_GET_KEYS: usize = 100;

impl DynamoStore {
    pub(crate) async fn get_event_item(
        &self,
        tenant: &str,
        cursor: &str,
    ) -> Result<Option<Event>, StoreError> {
        self.get_item(tenant, cursor, false)
            .await?
            .map(item_to_event)
            .transpose()
    }

    /// Adds the events postings name to the page, in their order, a batch
    /// of keys at a time until they pass about `read.max_bytes` as printed
    /// (at least one batch is fetched); how many of `cursors` were asked for.
    pub(crate) async fn fetch_events(
        &self,
        read: &RangeRead,
        cursors: &[String],
        page: &mut RangePage,
    ) -> Result<usize, StoreError> {
        let mut bytes = 0;
        let mut asked = 0;
        for batch in cursors.chunks(BATCH_GET_KEYS) {
            if asked > 0 && bytes > read.max_bytes {
                break;
            }
            let items = self.fetch_batch(&read.tenant, batch, page).await?;
            let before = page.events.len();
            self.push_events(items, read.data_as_text, page);
            bytes += page.events[before..]
                .iter()
                .map(|event| event.estimated_len(read.data_max_bytes))
                .sum::<usize>();
            asked += batch.len();
        }
        Ok(asked)
    }

    /// The events of one batch of cursors, in their order. Postings are
    /// written long after their events settle, so an eventually consistent
    /// read misses one only rarely; those are asked for again, consistently.
    /// What is missing then has been removed by TTL (it had expired).
    async fn fetch_batch(
        &self,
        tenant: &str,
        cursors: &[String],
        page: &mut RangePage,
    ) -> Result<Vec<Item>, StoreError> {
        let mut found: HashMap<String, Item> = HashMap::with_capacity(cursors.len());
        for consistent in [false, true] {
            let missing: Vec<Item> = cursors
                .iter()
                .filter(|cursor| !found.contains_key(cursor.as_str()))
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
            .filter_map(|cursor| found.remove(cursor.as_str()))
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
        for chunk in keys.chunks(BATCH_GET_KEYS) {
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

    /// One item by its keys.
    pub(crate) async fn get_item(
        &self,
        partition: &str,
        sort: &str,
        consistent: bool,
    ) -> Result<Option<Item>, StoreError> {
        self.get_item_by(partition, sort, consistent, None).await
    }

    /// One item by its keys; with a deadline, by a call that ends by it
    /// plus one attempt.
    pub(crate) async fn get_item_by(
        &self,
        partition: &str,
        sort: &str,
        consistent: bool,
        deadline: Option<std::time::Instant>,
    ) -> Result<Option<Item>, StoreError> {
        let request = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PARTITION_KEY, AttributeValue::S(partition.to_string()))
            .key(SORT_KEY, AttributeValue::S(sort.to_string()))
            .consistent_read(consistent);
        let output = match deadline {
            Some(deadline) => {
                request
                    .customize()
                    .config_override(self.bounded_by(deadline))
                    .send()
                    .await
            }
            None => request.send().await,
        }
        .map_err(classify)?;
        Ok(output.item)
    }
}
