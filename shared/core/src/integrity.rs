//! Proof of integrity: each tenant's events, once settled, are the leaves of
//! an RFC 6962 Merkle tree, kept as immutable tiles, with signed C2SP
//! checkpoints. See docs/INTEGRITY.md.

pub mod merkle;
pub mod note;
pub mod proofs;
pub mod seal;
pub mod tiles;
pub mod verify;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::event::Event;
use merkle::Hash;

/// The bytes a leaf hashes: RFC 8785 (JCS) canonical JSON of the event
/// exactly as the single-event lookup returns it, `mayHaveMoreData` never.
pub fn leaf_bytes(event: &Event) -> Vec<u8> {
    // An `Event` always serialises (string keys, exact numbers). Copied
    // only when it carries the page-only flag (the verifier's hot path).
    if event.may_have_more_data.is_none() {
        return serde_json_canonicalizer::to_vec(event).unwrap_or_default();
    }
    let mut whole = event.clone();
    whole.may_have_more_data = None;
    serde_json_canonicalizer::to_vec(&whole).unwrap_or_default()
}

/// `SHA-256(0x00 ‖ JCS(event))`.
pub fn event_leaf_hash(event: &Event) -> Hash {
    merkle::leaf_hash(&leaf_bytes(event))
}

pub fn encode_hash(hash: &Hash) -> String {
    STANDARD.encode(hash)
}

pub fn decode_hash(text: &str) -> Option<Hash> {
    STANDARD.decode(text).ok()?.try_into().ok()
}

/// A published checkpoint as the API returns it and the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointRecord {
    /// The signed note, exact text.
    pub note: String,
    pub tree_size: u64,
    /// Base64.
    pub root_hash: String,
    pub origin: String,
    pub timestamp: String,
    /// The cursor of the last leaf (absent for the empty tree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_cursor: Option<String>,
}

/// One leaf's entry record, as the API lists them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryView {
    pub leaf_index: u64,
    pub cursor: String,
    pub expires_at: String,
    /// Base64.
    pub leaf_hash: String,
}

/// A tenant in the sealing queue: when events may last have been written
/// (`dirty_until`, epoch ms), how far its log is sealed (`sealed_through`:
/// every event older than this is a leaf), its last checkpoint's time, and
/// when its waiting pivot postings fall due (`None`: none wait).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SealMark {
    pub tenant: String,
    pub dirty_until_ms: i64,
    pub sealed_through_ms: i64,
    pub checkpoint_at_ms: i64,
    pub postings_due_at_ms: Option<i64>,
}

/// The store of the integrity log (the port; `audit_dynamo::DynamoStore`
/// implements it beside [`crate::store::EventStore`]).
#[async_trait::async_trait]
pub trait LogStore: Send + Sync {
    /// Tiles of the tenant's log, each at the width asked; a tile that is
    /// not stored is left out.
    async fn get_tiles(
        &self,
        tenant: &str,
        tiles: &[(tiles::TileId, u64)],
    ) -> Result<Vec<(tiles::TileId, Vec<u8>)>, StoreError>;

    /// Writes tiles. Tiles are immutable: writing one again writes the same
    /// bytes. A full entry tile is also indexed by its last cursor.
    async fn put_tiles(&self, tenant: &str, tiles: &[tiles::TileWrite]) -> Result<(), StoreError>;

    /// The full entry tile that holds `cursor` if any does: the first whose
    /// last cursor is at or after it.
    async fn entry_tile_for(&self, tenant: &str, cursor: &str) -> Result<Option<u64>, StoreError>;

    /// Records the tree of `size` leaves with its root (base64).
    /// `ConditionFailed` when another root of that size is recorded: two
    /// trees of one size are never published.
    async fn put_tree_head(&self, tenant: &str, size: u64, root: &str) -> Result<(), StoreError>;

    /// Keeps a checkpoint (every one is kept).
    async fn put_checkpoint(
        &self,
        tenant: &str,
        checkpoint: &CheckpointRecord,
    ) -> Result<(), StoreError>;

    /// Checkpoints of `from_size` leaves or more, oldest first; with
    /// `after` (a timestamp), only those after the one of `from_size`
    /// leaves at that time.
    async fn checkpoints(
        &self,
        tenant: &str,
        from_size: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<CheckpointRecord>, StoreError>;

    /// The newest checkpoint (largest tree, latest time).
    async fn latest_checkpoint(&self, tenant: &str)
        -> Result<Option<CheckpointRecord>, StoreError>;

    /// The newest checkpoint of exactly `size` leaves.
    async fn checkpoint_of_size(
        &self,
        tenant: &str,
        size: u64,
    ) -> Result<Option<CheckpointRecord>, StoreError>;

    /// Every tenant with events: the sealing queue.
    async fn seal_queue(&self) -> Result<Vec<SealMark>, StoreError>;

    /// Records how far a tenant is sealed (`dirty_until` is left alone).
    async fn put_sealed(&self, mark: &SealMark) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One event's leaf, with its RFC 8785 bytes and hash written out (both
    /// computed by Python's `json.dumps(sort_keys=True, separators=(",",
    /// ":"), ensure_ascii=False)` and `hashlib`, not by this crate): keys
    /// sorted at every level, `null` inside `data` kept, non-ASCII and
    /// U+2028 written as themselves.
    #[test]
    fn a_golden_events_leaf_is_its_canonical_json_hashed() {
        let event: Event = serde_json::from_value(serde_json::json!({
            "cursor": "01KB0000000000000000000001", "accountId": "acme",
            "timestamp": "2026-01-01T00:00:00.000Z", "expiresAt": "2026-04-01T00:00:00.000Z",
            "serviceName": "idp", "eventType": "user.login", "userId": "ünï ✓",
            "sandbox": false,
            "data": {"z": [1, 2.5, "x"], "a": {"b": null, "é": "\u{2028}"}},
            "indexedData": {"k": "v"},
            "mayHaveMoreData": true
        }))
        .expect("an event");
        let expected = "{\"accountId\":\"acme\",\"cursor\":\"01KB0000000000000000000001\",\"data\":{\"a\":{\"b\":null,\"é\":\"\u{2028}\"},\"z\":[1,2.5,\"x\"]},\"eventType\":\"user.login\",\"expiresAt\":\"2026-04-01T00:00:00.000Z\",\"indexedData\":{\"k\":\"v\"},\"sandbox\":false,\"serviceName\":\"idp\",\"timestamp\":\"2026-01-01T00:00:00.000Z\",\"userId\":\"ünï ✓\"}";
        assert_eq!(String::from_utf8(leaf_bytes(&event)).unwrap(), expected);
        let hex: String = event_leaf_hash(&event)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "94e91d5d681beb7de60406ed7106bbc1384f54c99ec504bd64bbb8ce9fa837e1"
        );
    }
}
