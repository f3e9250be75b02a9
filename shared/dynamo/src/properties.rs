//! Observed properties (what metadata lists): one item per (service, event
//! type, property, JSON type), under `meta#<tenant>`.

use std::collections::HashSet;

use audit_core::error::StoreError;
use audit_core::event::MAX_SORT_KEY_BYTES;
use audit_core::metadata::{ObservedProperty, MAX_LISTED_PROPERTIES};
use aws_sdk_dynamodb::types::AttributeValue;

use crate::items::{json_text, property_key, property_key_part, Item};
use crate::retry::classify;
use crate::store::DynamoStore;
use crate::table::{METADATA_PREFIX, PARTITION_KEY, SORT_KEY};

impl DynamoStore {
    /// Up to 25 property items in one batch.
    pub(crate) async fn put_property_chunk(
        &self,
        chunk: &[(String, ObservedProperty)],
    ) -> Result<(), StoreError> {
        {
            let mut requests = Vec::with_capacity(chunk.len());
            let mut keys = HashSet::new();
            for (tenant, property) in chunk {
                let key = property_key(property);
                if !keys.insert((tenant.clone(), key.clone())) {
                    continue; // BatchWriteItem refuses duplicate keys in one call
                }
                let mut item: Item = serde_dynamo::to_item(property)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                item.insert(
                    PARTITION_KEY.into(),
                    AttributeValue::S(format!("{METADATA_PREFIX}{tenant}")),
                );
                item.insert(SORT_KEY.into(), AttributeValue::S(key));
                requests.push(item);
            }
            self.write_items(requests).await?;
        }
        Ok(())
    }

    pub(crate) async fn query_properties(
        &self,
        tenant: &str,
        service_name: Option<&str>,
        event_type: Option<&str>,
    ) -> Result<Vec<ObservedProperty>, StoreError> {
        let prefix = |part: fn(&str) -> String| match (service_name, event_type) {
            (Some(service), Some(kind)) => format!("[{},{},", part(service), part(kind)),
            (Some(service), None) => format!("[{},", part(service)),
            _ => "[".to_string(),
        };
        let current = prefix(property_key_part);
        // A name whose JSON is longer than a key part now takes was written
        // as its JSON while the whole key fitted: those items are read too.
        let written_before = prefix(json_text);
        let mut prefixes = vec![current];
        if written_before != prefixes[0] && written_before.len() <= MAX_SORT_KEY_BYTES {
            prefixes.push(written_before);
        }
        let mut properties = Vec::new();
        for prefix in prefixes {
            properties.extend(self.query_property_prefix(tenant, &prefix).await?);
        }
        properties.sort();
        properties.dedup();
        Ok(properties)
    }

    /// The properties whose keys begin with `prefix`, at most one more than
    /// a listing shows, so the caller knows it is cut.
    async fn query_property_prefix(
        &self,
        tenant: &str,
        prefix: &str,
    ) -> Result<Vec<ObservedProperty>, StoreError> {
        let mut properties = Vec::new();
        let mut start: Option<Item> = None;
        let wanted = MAX_LISTED_PROPERTIES + 1;
        while properties.len() < wanted {
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
                .expression_attribute_values(":prefix", AttributeValue::S(prefix.to_string()))
                .set_exclusive_start_key(start.take())
                .limit((wanted - properties.len()).min(10_000) as i32)
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
