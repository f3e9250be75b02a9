//! The integrity log's items: tiles, the entry-tile index, tree heads,
//! checkpoints and the sealing queue (see [`crate::table`] for the keys).

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use audit_core::error::StoreError;
use audit_core::integrity::tiles::{EntryRecord, TileId, TileWrite, TILE_WIDTH};
use audit_core::integrity::{CheckpointRecord, LogStore, SealMark};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};

use crate::items::Item;
use crate::retry::classify;
use crate::store::DynamoStore;
use crate::table::{
    CHECKPOINT_PREFIX, LOG_INDEX_PREFIX, LOG_TILE_PREFIX, PARTITION_KEY, SEAL_QUEUE_KEY, SORT_KEY,
    TREE_HEAD_PREFIX, TTL_ATTRIBUTE,
};

const BYTES: &str = "bytes";
const TILE_INDEX: &str = "tile";
const ROOT: &str = "root";
const DIRTY_UNTIL: &str = "dirtyUntil";
const SEALED_THROUGH: &str = "sealedThrough";
const CHECKPOINT_AT: &str = "checkpointAt";
const POSTINGS_DUE_AT: &str = "postingsDueAt";
/// How long a partial tile lives unless written again (heartbeats rewrite
/// the newest at least hourly).
const PARTIAL_TILE_SECONDS: i64 = 7 * 86_400;
/// The sealer's own item for a tenant in the queue.
const SEALED_SUFFIX: &str = "#sealed";

fn key(partition: String, sort: String) -> Item {
    HashMap::from([
        (PARTITION_KEY.to_string(), AttributeValue::S(partition)),
        (SORT_KEY.to_string(), AttributeValue::S(sort)),
    ])
}

/// Where a page of checkpoints starts: at a sort key, or after one.
enum Start {
    From(String),
    After(String),
}

fn size_key(size: u64) -> String {
    format!("{size:020}")
}

fn number(item: &Item, name: &str) -> i64 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn corrupt(err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(err.to_string())
}

impl DynamoStore {
    async fn query_checkpoints(
        &self,
        tenant: &str,
        from: Option<Start>,
        prefix: Option<String>,
        newest_first: bool,
        limit: usize,
    ) -> Result<Vec<CheckpointRecord>, StoreError> {
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_values(
                ":pk",
                AttributeValue::S(format!("{CHECKPOINT_PREFIX}{tenant}")),
            )
            .scan_index_forward(!newest_first)
            .limit(limit.clamp(1, 1000) as i32);
        query = match (from, prefix) {
            (Some(Start::From(from)), _) => query
                .key_condition_expression("#pk = :pk AND #sk >= :sk")
                .expression_attribute_names("#sk", SORT_KEY)
                .expression_attribute_values(":sk", AttributeValue::S(from)),
            (Some(Start::After(after)), _) => query
                .key_condition_expression("#pk = :pk AND #sk > :sk")
                .expression_attribute_names("#sk", SORT_KEY)
                .expression_attribute_values(":sk", AttributeValue::S(after)),
            (None, Some(prefix)) => query
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :sk)")
                .expression_attribute_names("#sk", SORT_KEY)
                .expression_attribute_values(":sk", AttributeValue::S(prefix)),
            (None, None) => query.key_condition_expression("#pk = :pk"),
        };
        let output = query.send().await.map_err(classify)?;
        output
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|item| serde_dynamo::from_item(item).map_err(corrupt))
            .collect()
    }
}

#[async_trait]
impl LogStore for DynamoStore {
    async fn get_tiles(
        &self,
        tenant: &str,
        tiles: &[(TileId, u64)],
    ) -> Result<Vec<(TileId, Vec<u8>)>, StoreError> {
        let partition = format!("{LOG_TILE_PREFIX}{tenant}");
        let by_path: HashMap<String, TileId> = tiles
            .iter()
            .map(|(id, width)| (id.path(*width), *id))
            .collect();
        let keys: Vec<Item> = by_path
            .keys()
            .map(|path| key(partition.clone(), path.clone()))
            .collect();
        let (items, _) = self.get_items(keys, false).await?;
        let mut found = Vec::with_capacity(items.len());
        for item in items {
            let path = item.get(SORT_KEY).and_then(|v| v.as_s().ok());
            let bytes = item.get(BYTES).and_then(|v| v.as_b().ok());
            if let (Some(id), Some(bytes)) = (path.and_then(|p| by_path.get(p)), bytes) {
                found.push((*id, bytes.as_ref().to_vec()));
            }
        }
        Ok(found)
    }

    async fn put_tiles(&self, tenant: &str, tiles: &[TileWrite]) -> Result<(), StoreError> {
        let mut items = Vec::with_capacity(tiles.len());
        let partial_expiry = chrono::Utc::now().timestamp() + PARTIAL_TILE_SECONDS;
        for tile in tiles {
            let mut item = key(format!("{LOG_TILE_PREFIX}{tenant}"), tile.path());
            item.insert(
                BYTES.to_string(),
                AttributeValue::B(Blob::new(tile.bytes.clone())),
            );
            // A partial tile is read only while it is the newest of its
            // tile (proofs read tiles as of the latest tree, where the full
            // tile replaces it); TTL drops the superseded ones for free.
            // Every sealing run and heartbeat writes the newest again.
            if tile.width < TILE_WIDTH {
                item.insert(
                    TTL_ATTRIBUTE.to_string(),
                    AttributeValue::N(partial_expiry.to_string()),
                );
            }
            items.push(item);
            // A full entry tile is found by its last cursor.
            if tile.id.level.is_none() && tile.width == TILE_WIDTH {
                let last = EntryRecord::decode_all(&tile.bytes)
                    .and_then(|records| records.last().copied())
                    .ok_or_else(|| StoreError::Corrupt("malformed entry tile".into()))?;
                let mut index = key(
                    format!("{LOG_INDEX_PREFIX}{tenant}"),
                    last.cursor.to_string(),
                );
                index.insert(
                    TILE_INDEX.to_string(),
                    AttributeValue::N(tile.id.index.to_string()),
                );
                items.push(index);
            }
        }
        let units = self.write_items(items).await?;
        self.log_units.add(units);
        Ok(())
    }

    async fn entry_tile_for(&self, tenant: &str, cursor: &str) -> Result<Option<u64>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND #sk >= :cursor")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#sk", SORT_KEY)
            .expression_attribute_values(
                ":pk",
                AttributeValue::S(format!("{LOG_INDEX_PREFIX}{tenant}")),
            )
            .expression_attribute_values(":cursor", AttributeValue::S(cursor.to_string()))
            .limit(1)
            .send()
            .await
            .map_err(classify)?;
        Ok(output
            .items
            .unwrap_or_default()
            .first()
            .map(|item| number(item, TILE_INDEX) as u64))
    }

    async fn put_tree_head(&self, tenant: &str, size: u64, root: &str) -> Result<(), StoreError> {
        let mut item = key(format!("{TREE_HEAD_PREFIX}{tenant}"), size_key(size));
        item.insert(ROOT.to_string(), AttributeValue::S(root.to_string()));
        // The same root again is fine (a sealer retrying); another is a fork.
        let output = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#sk) OR #root = :root")
            .expression_attribute_names("#sk", SORT_KEY)
            .expression_attribute_names("#root", ROOT)
            .expression_attribute_values(":root", AttributeValue::S(root.to_string()))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(classify)?;
        self.log_units
            .add_consumed(output.consumed_capacity.as_slice());
        Ok(())
    }

    async fn put_checkpoint(
        &self,
        tenant: &str,
        checkpoint: &CheckpointRecord,
    ) -> Result<(), StoreError> {
        let mut item: Item = serde_dynamo::to_item(checkpoint).map_err(corrupt)?;
        item.extend(key(
            format!("{CHECKPOINT_PREFIX}{tenant}"),
            format!(
                "{}#{}",
                size_key(checkpoint.tree_size),
                checkpoint.timestamp
            ),
        ));
        let output = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#sk)")
            .expression_attribute_names("#sk", SORT_KEY)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(classify)?;
        self.log_units
            .add_consumed(output.consumed_capacity.as_slice());
        Ok(())
    }

    async fn checkpoints(
        &self,
        tenant: &str,
        from_size: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<CheckpointRecord>, StoreError> {
        let start = match after {
            Some(timestamp) => Start::After(format!("{}#{timestamp}", size_key(from_size))),
            None => Start::From(size_key(from_size)),
        };
        self.query_checkpoints(tenant, Some(start), None, false, limit)
            .await
    }

    async fn latest_checkpoint(
        &self,
        tenant: &str,
    ) -> Result<Option<CheckpointRecord>, StoreError> {
        Ok(self
            .query_checkpoints(tenant, None, None, true, 1)
            .await?
            .pop())
    }

    async fn checkpoint_of_size(
        &self,
        tenant: &str,
        size: u64,
    ) -> Result<Option<CheckpointRecord>, StoreError> {
        let prefix = format!("{}#", size_key(size));
        Ok(self
            .query_checkpoints(tenant, None, Some(prefix), true, 1)
            .await?
            .pop())
    }

    async fn seal_queue(&self) -> Result<Vec<SealMark>, StoreError> {
        // Writers' marks (`<tenant>`) and the sealer's state
        // (`<tenant>#sealed`) are separate items: each side only ever puts
        // its own, so neither needs UpdateItem.
        let mut marks: BTreeMap<String, SealMark> = BTreeMap::new();
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", PARTITION_KEY)
                .expression_attribute_values(":pk", AttributeValue::S(SEAL_QUEUE_KEY.into()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(classify)?;
            for item in output.items.unwrap_or_default() {
                let Some(key) = item.get(SORT_KEY).and_then(|v| v.as_s().ok()) else {
                    continue;
                };
                let (tenant, state) = match key.strip_suffix(SEALED_SUFFIX) {
                    Some(tenant) => (tenant, true),
                    None => (key.as_str(), false),
                };
                let mark = marks.entry(tenant.to_string()).or_insert_with(|| SealMark {
                    tenant: tenant.to_string(),
                    ..SealMark::default()
                });
                if state {
                    mark.sealed_through_ms = number(&item, SEALED_THROUGH);
                    mark.checkpoint_at_ms = number(&item, CHECKPOINT_AT);
                    mark.postings_due_at_ms = item
                        .contains_key(POSTINGS_DUE_AT)
                        .then(|| number(&item, POSTINGS_DUE_AT));
                } else {
                    mark.dirty_until_ms = number(&item, DIRTY_UNTIL);
                }
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(marks.into_values().collect())
    }

    async fn put_sealed(&self, mark: &SealMark) -> Result<(), StoreError> {
        let mut item = key(
            SEAL_QUEUE_KEY.into(),
            format!("{}{SEALED_SUFFIX}", mark.tenant),
        );
        item.insert(
            SEALED_THROUGH.to_string(),
            AttributeValue::N(mark.sealed_through_ms.to_string()),
        );
        item.insert(
            CHECKPOINT_AT.to_string(),
            AttributeValue::N(mark.checkpoint_at_ms.to_string()),
        );
        if let Some(due_at) = mark.postings_due_at_ms {
            item.insert(
                POSTINGS_DUE_AT.to_string(),
                AttributeValue::N(due_at.to_string()),
            );
        }
        let output = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(classify)?;
        self.log_units
            .add_consumed(output.consumed_capacity.as_slice());
        Ok(())
    }
}

impl DynamoStore {
    /// Moves the tenant's `dirtyUntil` forward (never back).
    pub(crate) async fn put_dirty_mark(
        &self,
        tenant: &str,
        until_ms: i64,
    ) -> Result<(), StoreError> {
        let mut item = key(SEAL_QUEUE_KEY.into(), tenant.to_string());
        item.insert(
            DIRTY_UNTIL.to_string(),
            AttributeValue::N(until_ms.to_string()),
        );
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#dirty) OR #dirty < :until")
            .expression_attribute_names("#dirty", DIRTY_UNTIL)
            .expression_attribute_values(":until", AttributeValue::N(until_ms.to_string()))
            .send()
            .await
            .map_err(classify);
        match result {
            Ok(_) | Err(StoreError::ConditionFailed) => Ok(()),
            Err(err) => Err(err),
        }
    }
}
