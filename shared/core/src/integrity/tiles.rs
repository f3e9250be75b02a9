//! The log's state as immutable tiles, in the C2SP tlog-tiles layout:
//! a tile at level `L` holds up to 256 hashes of tree level `8·L`; full
//! tiles are `tile/<L>/<N>`, partial ones `tile/<L>/<N>.p/<W>`. Entry tiles
//! (`tile/entries/<N>[.p/<W>]`) hold each leaf's entry record: its cursor
//! and its `expiresAt`, so proofs outlive the events' TTL. The leaf hash of
//! entry `i` is hash `i` of the level-0 tiles.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use ulid::Ulid;

use super::merkle::{complete_root, Hash, NodeSource};

/// Hashes (or entries) per full tile.
pub const TILE_WIDTH: u64 = 256;
/// Tree levels per tile level.
pub const TILE_HEIGHT: u32 = 8;
/// Bytes of one encoded entry record: the cursor (16) and `expiresAt` in
/// milliseconds since the epoch (8, big-endian).
pub const ENTRY_BYTES: usize = 24;

/// Which tile: a hash tile at `level`, or the entry tile (`level` = None).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TileId {
    pub level: Option<u8>,
    pub index: u64,
}

impl TileId {
    pub fn hashes(level: u8, index: u64) -> Self {
        Self {
            level: Some(level),
            index,
        }
    }

    pub fn entries(index: u64) -> Self {
        Self { level: None, index }
    }

    /// How many items this tile holds in a tree of `size` leaves (0: none
    /// yet; 256: full).
    pub fn width_at(self, size: u64) -> u64 {
        let at_level = size >> (TILE_HEIGHT * u32::from(self.level.unwrap_or(0)));
        at_level
            .saturating_sub(self.index * TILE_WIDTH)
            .min(TILE_WIDTH)
    }

    /// The C2SP path of this tile with `width` items.
    pub fn path(self, width: u64) -> String {
        let level = match self.level {
            Some(level) => level.to_string(),
            None => "entries".to_string(),
        };
        let mut path = format!("tile/{level}/{}", index_path(self.index));
        if width < TILE_WIDTH {
            path.push_str(&format!(".p/{width}"));
        }
        path
    }
}

/// `N` as C2SP writes it: groups of three digits, all but the last with an
/// `x` prefix (`1234067` → `x001/x234/067`).
pub fn index_path(index: u64) -> String {
    let digits = format!("{index}");
    let padded = format!("{digits:0>width$}", width = digits.len().div_ceil(3) * 3);
    let groups: Vec<&str> = (0..padded.len() / 3)
        .map(|i| &padded[i * 3..i * 3 + 3])
        .collect();
    let last = groups.len() - 1;
    groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            if i == last {
                g.to_string()
            } else {
                format!("x{g}")
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// One leaf's entry record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRecord {
    pub cursor: Ulid,
    /// `expiresAt` in milliseconds since the epoch.
    pub expires_at_ms: i64,
}

impl EntryRecord {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.cursor.to_bytes());
        out.extend_from_slice(&self.expires_at_ms.to_be_bytes());
    }

    pub fn decode_all(bytes: &[u8]) -> Option<Vec<EntryRecord>> {
        if !bytes.len().is_multiple_of(ENTRY_BYTES) {
            return None;
        }
        bytes
            .chunks_exact(ENTRY_BYTES)
            .map(|chunk| {
                let cursor = Ulid::from_bytes(chunk[..16].try_into().ok()?);
                let expires_at_ms = i64::from_be_bytes(chunk[16..].try_into().ok()?);
                Some(EntryRecord {
                    cursor,
                    expires_at_ms,
                })
            })
            .collect()
    }
}

/// Hashes of a tile, concatenated.
pub fn encode_hashes(hashes: &[Hash]) -> Vec<u8> {
    hashes.iter().flat_map(|h| h.iter().copied()).collect()
}

pub fn decode_hashes(bytes: &[u8]) -> Option<Vec<Hash>> {
    if !bytes.len().is_multiple_of(32) {
        return None;
    }
    bytes
        .chunks_exact(32)
        .map(|chunk| chunk.try_into().ok())
        .collect()
}

/// Hash tiles loaded from the store, as a [`NodeSource`]. A node whose tile
/// is not loaded reads as zeros and is noted in [`TileSet::missing`]: load
/// those and compute again.
#[derive(Debug, Default)]
pub struct TileSet {
    tiles: BTreeMap<(u8, u64), Vec<Hash>>,
    missing: RefCell<BTreeSet<(u8, u64)>>,
}

impl TileSet {
    pub fn insert(&mut self, level: u8, index: u64, hashes: Vec<Hash>) {
        self.tiles.insert((level, index), hashes);
    }

    pub fn has(&self, level: u8, index: u64) -> bool {
        self.tiles.contains_key(&(level, index))
    }

    /// The tiles a computation needed and did not find; cleared.
    pub fn take_missing(&self) -> Vec<TileId> {
        std::mem::take(&mut *self.missing.borrow_mut())
            .into_iter()
            .map(|(level, index)| TileId::hashes(level, index))
            .collect()
    }

    pub fn hashes(&self, level: u8, index: u64) -> Option<&[Hash]> {
        self.tiles.get(&(level, index)).map(Vec::as_slice)
    }
}

impl NodeSource for TileSet {
    fn node(&self, level: u32, index: u64) -> Hash {
        let tile_level = level / TILE_HEIGHT;
        let within = level % TILE_HEIGHT;
        // The node covers 2^within hashes of tile level `tile_level`.
        let first = index << within;
        let (tile_index, offset) = (first / TILE_WIDTH, (first % TILE_WIDTH) as usize);
        let count = 1usize << within;
        let key = (tile_level as u8, tile_index);
        match self.tiles.get(&key) {
            Some(hashes) if hashes.len() >= offset + count => {
                complete_root(&hashes[offset..offset + count])
            }
            _ => {
                self.missing.borrow_mut().insert(key);
                [0; 32]
            }
        }
    }
}

/// The right edge of a tree: for each tile level, the hashes of its last,
/// incomplete tile. New leaves are appended here; completed tiles roll up
/// into the level above.
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    pub size: u64,
    /// Per tile level: the partial tile's hashes (empty when it is full or
    /// not started).
    pub partial: Vec<Vec<Hash>>,
    /// Entry records of the partial entry tile.
    pub partial_entries: Vec<EntryRecord>,
}

/// A tile to write: its id, its width and its bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct TileWrite {
    pub id: TileId,
    pub width: u64,
    pub bytes: Vec<u8>,
}

impl TileWrite {
    pub fn path(&self) -> String {
        self.id.path(self.width)
    }
}

/// The tile levels a tree of `size` leaves has partial tiles at.
pub fn frontier_tiles(size: u64) -> Vec<TileId> {
    let mut ids = Vec::new();
    let mut level = 0u8;
    loop {
        let at_level = size >> (TILE_HEIGHT * u32::from(level));
        if at_level == 0 {
            break;
        }
        if !at_level.is_multiple_of(TILE_WIDTH) {
            ids.push(TileId::hashes(level, at_level / TILE_WIDTH));
        }
        level += 1;
    }
    if !size.is_multiple_of(TILE_WIDTH) {
        ids.push(TileId::entries(size / TILE_WIDTH));
    }
    ids
}

impl Frontier {
    /// Appends leaves (hash and entry record each); returns every tile to
    /// write: the tiles completed, then the new partial tiles.
    pub fn append(&mut self, leaves: &[(Hash, EntryRecord)]) -> Vec<TileWrite> {
        let mut writes = Vec::new();
        if leaves.is_empty() {
            return writes;
        }
        let start = self.size;
        for (hash, entry) in leaves {
            self.partial_entries.push(*entry);
            if self.partial_entries.len() as u64 == TILE_WIDTH {
                let index = self.size / TILE_WIDTH;
                let mut bytes = Vec::with_capacity(ENTRY_BYTES * TILE_WIDTH as usize);
                for entry in self.partial_entries.drain(..) {
                    entry.encode(&mut bytes);
                }
                writes.push(TileWrite {
                    id: TileId::entries(index),
                    width: TILE_WIDTH,
                    bytes,
                });
            }
            self.push_hash(0, *hash, &mut writes);
            self.size += 1;
        }
        // Every partial tile of the new frontier, changed or not: a partial
        // tile lives a week unless written again, and one this append did
        // not change (level 1 changes once per 256 leaves) is still read.
        // Only those it changed were written, so a tenant that gained a
        // leaf every hour (no heartbeat) lost its level-1 tile to TTL, and
        // its log could be neither extended nor proved again.
        writes.extend(self.partial_tiles());
        debug_assert!(self.size > start);
        writes
    }

    fn push_hash(&mut self, level: usize, hash: Hash, writes: &mut Vec<TileWrite>) {
        if self.partial.len() <= level {
            self.partial.resize(level + 1, Vec::new());
        }
        self.partial[level].push(hash);
        if self.partial[level].len() as u64 == TILE_WIDTH {
            let full = std::mem::take(&mut self.partial[level]);
            // The index of the tile just completed, counted at this level.
            let completed_at_level = (self.size + 1) >> (TILE_HEIGHT * level as u32);
            let index = completed_at_level / TILE_WIDTH - 1;
            let up = complete_root(&full);
            writes.push(TileWrite {
                id: TileId::hashes(level as u8, index),
                width: TILE_WIDTH,
                bytes: encode_hashes(&full),
            });
            self.push_hash(level + 1, up, writes);
        }
    }

    /// The partial tiles of the frontier as writes (to keep them alive: a
    /// partial tile is dropped by TTL unless written again, see
    /// `audit_dynamo`'s log items).
    pub fn partial_tiles(&self) -> Vec<TileWrite> {
        let mut writes = Vec::new();
        if !self.partial_entries.is_empty() {
            let mut bytes = Vec::with_capacity(ENTRY_BYTES * self.partial_entries.len());
            for entry in &self.partial_entries {
                entry.encode(&mut bytes);
            }
            writes.push(TileWrite {
                id: TileId::entries(self.size / TILE_WIDTH),
                width: self.partial_entries.len() as u64,
                bytes,
            });
        }
        for (level, hashes) in self.partial.iter().enumerate() {
            if !hashes.is_empty() {
                let at_level = self.size >> (TILE_HEIGHT * level as u32);
                writes.push(TileWrite {
                    id: TileId::hashes(level as u8, at_level / TILE_WIDTH),
                    width: hashes.len() as u64,
                    bytes: encode_hashes(hashes),
                });
            }
        }
        writes
    }

    /// The tree's tiles as a node source: the partial tiles of the frontier
    /// (all a root needs).
    pub fn tile_set(&self) -> TileSet {
        let mut set = TileSet::default();
        for (level, hashes) in self.partial.iter().enumerate() {
            if !hashes.is_empty() {
                let at_level = self.size >> (TILE_HEIGHT * level as u32);
                set.insert(level as u8, at_level / TILE_WIDTH, hashes.clone());
            }
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::super::merkle::{leaf_hash, root, RootBuilder};
    use super::*;

    #[test]
    fn paths_follow_c2sp() {
        assert_eq!(index_path(0), "000");
        assert_eq!(index_path(67), "067");
        assert_eq!(index_path(1234067), "x001/x234/067");
        assert_eq!(TileId::hashes(0, 1234067).path(256), "tile/0/x001/x234/067");
        assert_eq!(TileId::hashes(1, 0).path(7), "tile/1/000.p/7");
        assert_eq!(TileId::entries(3).path(256), "tile/entries/003");
    }

    fn leaf(i: u64) -> (Hash, EntryRecord) {
        (
            leaf_hash(&i.to_be_bytes()),
            EntryRecord {
                cursor: Ulid::from_parts(i, 0),
                expires_at_ms: i as i64,
            },
        )
    }

    /// Appending in any chunks gives the tiles and the root of the whole.
    #[test]
    fn appends_in_chunks_build_the_same_tree() {
        for (total, chunk) in [(1u64, 1usize), (300, 7), (70_000, 4096), (65_536, 256)] {
            let all: Vec<_> = (0..total).map(leaf).collect();
            let mut frontier = Frontier::default();
            let mut store = TileSet::default();
            let mut entries: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
            let mut reference = RootBuilder::default();
            for part in all.chunks(chunk) {
                for (hash, _) in part {
                    reference.push(*hash);
                }
                for write in frontier.append(part) {
                    match write.id.level {
                        Some(level) => store.insert(
                            level,
                            write.id.index,
                            decode_hashes(&write.bytes).unwrap(),
                        ),
                        None => {
                            entries.insert(write.id.index, write.bytes);
                        }
                    }
                }
                // The frontier alone gives the root of the tree so far, and
                // so do the stored tiles; both are RFC 6962's root.
                let size = frontier.size;
                let from_frontier = root(&frontier.tile_set(), size);
                assert!(frontier.tile_set().take_missing().is_empty());
                let from_store = root(&store, size);
                assert!(store.take_missing().is_empty(), "size {size}");
                assert_eq!(from_frontier, from_store, "size {size}");
                assert_eq!(from_store, reference.root(), "size {size}");
            }
            assert_eq!(frontier.size, total);
            let decoded: Vec<EntryRecord> = entries
                .values()
                .flat_map(|b| EntryRecord::decode_all(b).unwrap())
                .collect();
            assert_eq!(decoded.len() as u64, total);
            assert!(decoded
                .iter()
                .enumerate()
                .all(|(i, e)| e.cursor == Ulid::from_parts(i as u64, 0)));
        }
    }

    /// Every append writes every partial tile of the new frontier, so each
    /// one read is kept alive (a partial tile lives a week unless written
    /// again): appending one leaf to a tree of 300 writes the level-1
    /// partial tile it did not change, beside the level-0 and entry ones.
    #[test]
    fn an_append_keeps_every_partial_tile_alive() {
        let leaf = |i: u64| {
            (
                [i as u8; 32],
                EntryRecord {
                    cursor: Ulid::from_parts(i, 0),
                    expires_at_ms: 0,
                },
            )
        };
        for size in [1u64, 255, 256, 257, 300, 65_535, 65_536, 65_800] {
            let mut frontier = Frontier::default();
            let leaves: Vec<_> = (0..size).map(leaf).collect();
            frontier.append(&leaves);
            let writes = frontier.append(&[leaf(size)]);
            let written: Vec<TileId> = writes.iter().map(|w| w.id).collect();
            for id in frontier_tiles(size + 1) {
                assert!(
                    written.contains(&id),
                    "size {size}: {id:?} not rewritten in {written:?}"
                );
            }
        }
    }

    #[test]
    fn frontier_tiles_name_the_partial_tiles() {
        assert!(frontier_tiles(0).is_empty());
        assert_eq!(
            frontier_tiles(257),
            vec![
                TileId::hashes(0, 1),
                TileId::hashes(1, 0),
                TileId::entries(1)
            ]
        );
        assert_eq!(frontier_tiles(256), vec![TileId::hashes(1, 0)]);
    }
}
