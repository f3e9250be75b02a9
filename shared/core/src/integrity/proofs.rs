//! Reading the log: checkpoints, inclusion and consistency proofs, entry
//! records. Tiles are read as of the latest checkpoint (they exist for it)
//! and only the ones a proof needs.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use ulid::Ulid;

use super::merkle::{self, Hash};
use super::tiles::{decode_hashes, EntryRecord, TileId, TileSet, TILE_WIDTH};
use super::{encode_hash, CheckpointRecord, EntryView, LogStore};
use crate::error::StoreError;
use crate::event::format_time;

/// Most hashes fetched rounds for one proof (each round loads the tiles the
/// last one lacked; a proof needs at most one tile per level).
const MAX_ROUNDS: usize = 8;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InclusionProof {
    pub leaf_index: u64,
    pub tree_size: u64,
    pub leaf_hash: String,
    pub inclusion: Vec<String>,
    pub checkpoint: CheckpointRecord,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsistencyProof {
    pub from: u64,
    pub to: u64,
    pub proof: Vec<String>,
}

/// Where a cursor stands in the log.
pub enum Placement {
    /// A leaf: its index and entry record.
    Leaf(u64, EntryRecord),
    /// After the last sealed leaf: it will be sealed later.
    NotSealedYet,
    /// Within the sealed range, but not a leaf.
    Absent,
}

pub struct ProofReader<S> {
    store: Arc<S>,
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

impl<S: LogStore> ProofReader<S> {
    pub fn new(store: Arc<S>) -> Self {
        Self { store }
    }

    pub async fn latest(&self, tenant: &str) -> Result<Option<CheckpointRecord>, StoreError> {
        self.store.latest_checkpoint(tenant).await
    }

    pub async fn checkpoint_of_size(
        &self,
        tenant: &str,
        size: u64,
    ) -> Result<Option<CheckpointRecord>, StoreError> {
        self.store.checkpoint_of_size(tenant, size).await
    }

    pub async fn checkpoints(
        &self,
        tenant: &str,
        from_size: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<CheckpointRecord>, StoreError> {
        self.store
            .checkpoints(tenant, from_size, after, limit)
            .await
    }

    /// Runs `compute` over the tiles it needs, loading them (as of the
    /// tree of `current` leaves) until nothing is missing.
    async fn with_tiles<T>(
        &self,
        tenant: &str,
        current: u64,
        compute: impl Fn(&TileSet) -> T,
    ) -> Result<T, StoreError> {
        let mut tiles = TileSet::default();
        for _ in 0..MAX_ROUNDS {
            let result = compute(&tiles);
            let missing = tiles.take_missing();
            if missing.is_empty() {
                return Ok(result);
            }
            let wanted: Vec<(TileId, u64)> = missing
                .into_iter()
                .map(|id| (id, id.width_at(current)))
                .filter(|(_, width)| *width > 0)
                .collect();
            let found = self.store.get_tiles(tenant, &wanted).await?;
            if found.len() != wanted.len() {
                return Err(corrupt("the log lacks a tile a proof needs"));
            }
            for (id, bytes) in found {
                let hashes = decode_hashes(&bytes).ok_or_else(|| corrupt("malformed tile"))?;
                tiles.insert(id.level.unwrap_or(0), id.index, hashes);
            }
        }
        Err(corrupt("a proof needed more tiles than a tree has levels"))
    }

    /// Entry records `start..start+limit` of a tree of `current` leaves.
    async fn entry_records(
        &self,
        tenant: &str,
        current: u64,
        start: u64,
        limit: u64,
    ) -> Result<Vec<EntryRecord>, StoreError> {
        // Saturating: `start` comes from the request and may be near 2^64.
        let end = start.saturating_add(limit).min(current);
        if start >= end {
            return Ok(Vec::new());
        }
        let first_tile = start / TILE_WIDTH;
        let last_tile = (end - 1) / TILE_WIDTH;
        let wanted: Vec<(TileId, u64)> = (first_tile..=last_tile)
            .map(|n| {
                let id = TileId::entries(n);
                (id, id.width_at(current))
            })
            .collect();
        let found = self.store.get_tiles(tenant, &wanted).await?;
        let mut records = Vec::new();
        for (id, _) in &wanted {
            let bytes = found
                .iter()
                .find(|(f, _)| f == id)
                .map(|(_, b)| b.as_slice())
                .ok_or_else(|| corrupt("the log lacks an entry tile"))?;
            let tile =
                EntryRecord::decode_all(bytes).ok_or_else(|| corrupt("malformed entry tile"))?;
            let base = id.index * TILE_WIDTH;
            records.extend(
                tile.into_iter()
                    .enumerate()
                    .filter(|(i, _)| (start..end).contains(&(base + *i as u64)))
                    .map(|(_, r)| r),
            );
        }
        Ok(records)
    }

    /// Where `cursor` stands in the tenant's log as of `latest`.
    pub async fn place(
        &self,
        tenant: &str,
        cursor: Ulid,
        latest: &CheckpointRecord,
    ) -> Result<Placement, StoreError> {
        let sealed_to = latest
            .last_cursor
            .as_deref()
            .and_then(|c| Ulid::from_string(c).ok());
        if sealed_to.is_none_or(|last| cursor > last) {
            return Ok(Placement::NotSealedYet);
        }
        let size = latest.tree_size;
        let tile = match self
            .store
            .entry_tile_for(tenant, &cursor.to_string())
            .await?
        {
            Some(tile) => tile,
            // After every full tile: the partial one.
            None => size / TILE_WIDTH,
        };
        let start = tile * TILE_WIDTH;
        let records = self.entry_records(tenant, size, start, TILE_WIDTH).await?;
        Ok(match records.binary_search_by(|r| r.cursor.cmp(&cursor)) {
            Ok(i) => Placement::Leaf(start + i as u64, records[i]),
            Err(_) => Placement::Absent,
        })
    }

    /// The inclusion proof of leaf `index` against the checkpoint `at`.
    pub async fn inclusion(
        &self,
        tenant: &str,
        index: u64,
        at: CheckpointRecord,
        current: u64,
    ) -> Result<InclusionProof, StoreError> {
        let size = at.tree_size;
        let (proof, leaf) = self
            .with_tiles(tenant, current, |tiles| {
                (
                    merkle::inclusion_proof(tiles, index, size),
                    tiles_leaf(tiles, index),
                )
            })
            .await?;
        Ok(InclusionProof {
            leaf_index: index,
            tree_size: size,
            leaf_hash: encode_hash(&leaf),
            inclusion: proof.iter().map(encode_hash).collect(),
            checkpoint: at,
        })
    }

    /// The consistency proof between the trees of `from` and `to` leaves
    /// (both at most `current`).
    pub async fn consistency(
        &self,
        tenant: &str,
        from: u64,
        to: u64,
        current: u64,
    ) -> Result<ConsistencyProof, StoreError> {
        let proof = self
            .with_tiles(tenant, current, |tiles| {
                merkle::consistency_proof(tiles, from, to)
            })
            .await?;
        Ok(ConsistencyProof {
            from,
            to,
            proof: proof.iter().map(encode_hash).collect(),
        })
    }

    /// Entry records with their leaf hashes, `start..start+limit`.
    pub async fn entries(
        &self,
        tenant: &str,
        start: u64,
        limit: u64,
        current: u64,
    ) -> Result<Vec<EntryView>, StoreError> {
        let records = self.entry_records(tenant, current, start, limit).await?;
        let count = records.len() as u64;
        let hashes = self
            .with_tiles(tenant, current, |tiles| {
                (start..start + count)
                    .map(|i| tiles_leaf(tiles, i))
                    .collect::<Vec<_>>()
            })
            .await?;
        Ok(records
            .into_iter()
            .zip(hashes)
            .enumerate()
            .map(|(i, (record, hash))| EntryView {
                leaf_index: start + i as u64,
                cursor: record.cursor.to_string(),
                expires_at: DateTime::<Utc>::from_timestamp_millis(record.expires_at_ms)
                    .map(format_time)
                    .unwrap_or_default(),
                leaf_hash: encode_hash(&hash),
            })
            .collect())
    }
}

/// Leaf `index`'s hash from the level-0 tiles.
fn tiles_leaf(tiles: &TileSet, index: u64) -> Hash {
    use super::merkle::NodeSource;
    tiles.node(0, index)
}

/// The seconds until an event of `cursor` is sealed: the settle horizon
/// plus one sealing interval after its time (at least 1).
pub fn seconds_until_sealed(
    cursor: Ulid,
    now: DateTime<Utc>,
    settle: std::time::Duration,
    interval: std::time::Duration,
) -> u64 {
    let due = cursor.timestamp_ms() as i64 + (settle + interval).as_millis() as i64;
    let wait_ms = (due - now.timestamp_millis()).max(1000);
    (wait_ms as u64).div_ceil(1000)
}
