//! Observed properties (what metadata lists): one item per (service, event
//! type, property, JSON type), under `meta#<tenant>`.

use std::collections::HashSet;

use audit_core::error::StoreError;
use audit_core::event::MAX_SORT_KEY_BYTES;
use audit_core::metadata::ObservedProperty;
use std::time::Instant;

use audit_core::event::Event;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnConsumedCapacity, TransactWriteItem};

use crate::items::{event_to_item, json_text, property_key, Item};
use crate::retry::classify;
use crate::store::DynamoStore;
use crate::table::{METADATA_PREFIX, PARTITION_KEY, SORT_KEY};

/// The items of these sightings, each key once (a batch or a transaction
/// refuses the same key twice); one that can't be a key is left out.
pub(crate) fn property_items(
    sightings: &[(String, ObservedProperty)],
) -> Result<Vec<Item>, StoreError> {
    let mut items = Vec::with_capacity(sightings.len());
    let mut keys = HashSet::new();
    for (tenant, property) in sightings {
        let key = property_key(property);
        if key.len() > MAX_SORT_KEY_BYTES {
            // A name this long can't be a key; the other properties are kept.
            tracing::warn!(bytes = key.len(), "a property name too long to record");
            continue;
        }
        if !keys.insert((tenant.clone(), key.clone())) {
            continue;
        }
        let mut item: Item =
            serde_dynamo::to_item(property).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        item.insert(
            PARTITION_KEY.into(),
            AttributeValue::S(format!("{METADATA_PREFIX}{tenant}")),
        );
        item.insert(SORT_KEY.into(), AttributeValue::S(key));
        items.push(item);
    }
    Ok(items)
}

/// The most actions one `TransactWriteItems` takes.
const MAX_TRANSACTION_ACTIONS: usize = 100;

impl DynamoStore {
    /// An event and its sightings in one `TransactWriteItems`: all or
    /// nothing. A cancelled or refused transaction wrote nothing, so the
    /// event then goes alone and its sightings after it, as ingest writes
    /// them (a sighting another process is writing at the same moment
    /// cancels the transaction with `TransactionConflict`). `None` when the
    /// transaction can't say: the caller writes them apart.
    pub(crate) async fn transact_event_with_properties(
        &self,
        event: &Event,
        sightings: &[(String, ObservedProperty)],
        deadline: Instant,
    ) -> Result<Option<()>, StoreError> {
        let properties = property_items(sightings)?;
        if properties.is_empty() || properties.len() + 1 > MAX_TRANSACTION_ACTIONS {
            return Ok(None);
        }
        let event_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(event_to_item(event)?))
            .condition_expression("attribute_not_exists(#sk)")
            .expression_attribute_names("#sk", SORT_KEY)
            .build()
            .map_err(|e| StoreError::Other(e.to_string()))?;
        let mut actions = vec![TransactWriteItem::builder().put(event_put).build()];
        for item in properties {
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .build()
                .map_err(|e| StoreError::Other(e.to_string()))?;
            actions.push(TransactWriteItem::builder().put(put).build());
        }
        // The SDK's retries carry the same `ClientRequestToken`, so one whose
        // answer was lost is not applied twice.
        let sent = self
            .client
            .transact_write_items()
            .set_transact_items(Some(actions))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .customize()
            .config_override(self.bounded_by(deadline))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(Some(())),
            Err(err) => {
                let cancelled = err.as_service_error().is_some_and(|e| {
                    matches!(e, TransactWriteItemsError::TransactionCanceledException(_))
                });
                match classify(err) {
                    _ if cancelled => Ok(None),
                    StoreError::Rejected(_) => Ok(None),
                    other => Err(other),
                }
            }
        }
    }

    /// Up to 25 property items in one batch; one that can't be a key is left out.
    pub(crate) async fn put_property_chunk(
        &self,
        chunk: &[(String, ObservedProperty)],
    ) -> Result<(), StoreError> {
        self.write_items(property_items(chunk)?).await?;
        Ok(())
    }

    pub(crate) async fn query_properties(
        &self,
        tenant: &str,
        service_name: Option<&str>,
        event_type: Option<&str>,
    ) -> Result<Vec<ObservedProperty>, StoreError> {
        let prefix = match (service_name, event_type) {
            (Some(service), Some(kind)) => format!("[{},{},", json_text(service), json_text(kind)),
            (Some(service), None) => format!("[{},", json_text(service)),
            _ => "[".to_string(),
        };
        let mut properties = Vec::new();
        let mut start: Option<Item> = None;
        // Metadata is bounded per tenant; 20 pages of 1 MB is far beyond it.
        for _ in 0..20 {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                .expression_attribute_names("#pk", PARTITION_KEY)
                .expression_attribute_names("#sk", SORT_KEY)
                .expression_attribute_values(
                    ":pk",
                    AttributeValue::S(format!("{METADATA_PREFIX}{tenant}")),
                )
                .expression_attribute_values(":prefix", AttributeValue::S(prefix.clone()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(classify)?;
            for item in output.items.unwrap_or_default() {
                match serde_dynamo::from_item::<_, ObservedProperty>(item) {
                    Ok(property) => properties.push(property),
                    Err(err) => {
                        tracing::error!(error = %err, "skipping an unreadable metadata item")
                    }
                }
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(properties)
    }
}
