//! Sealing: appending each tenant's newly settled events to its log and
//! publishing a signed checkpoint. When it runs and on what is in
//! `seal/schedule.rs`; the pivot postings it also writes, in `seal/postings.rs`.

mod postings;
mod schedule;
mod settled;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ulid::Ulid;

pub use postings::{Poster, PostingCadence};
pub use schedule::{waiting_since, DirtyMarks, SealBudget};
use settled::{horizon, settled_read, READ_PAGE};

use super::merkle::{self, Hash};
use super::note::{Checkpoint, NoteSigner};
use super::tiles::{decode_hashes, frontier_tiles, EntryRecord, Frontier, TileId};
use super::{encode_hash, event_leaf_hash, CheckpointRecord, LogStore, SealMark};
use crate::config::Config;
use crate::error::StoreError;
use crate::event::{format_time, PageEvent};
use crate::store::EventStore;

/// Most leaves one tenant gains in one run; the rest wait for the next.
const MAX_LEAVES_PER_RUN: usize = 200_000;

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SealReport {
    pub tenants_checked: usize,
    /// Tenants with work this run left, whole or in part, to the next: its
    /// budget was spent before them or during them, or a tenant reached a
    /// run's cap of events.
    pub tenants_deferred: usize,
    pub checkpoints: Vec<CheckpointRecord>,
    pub leaves_added: u64,
    /// Events whose pivot postings this run wrote.
    pub events_posted: u64,
    pub failures: usize,
}

pub struct Sealer<S> {
    store: Arc<S>,
    signer: NoteSigner,
    origin: String,
    settle_horizon: Duration,
    heartbeat: Duration,
    poster: Poster<S>,
}

impl<S: EventStore + LogStore> Sealer<S> {
    pub fn new(store: Arc<S>, config: &Config) -> Self {
        Self {
            poster: Poster::new(Arc::clone(&store), config),
            store,
            signer: NoteSigner::from_secret(
                &config.checkpoint_origin,
                &config.checkpoint_signing_key,
            ),
            origin: config.checkpoint_origin.clone(),
            settle_horizon: config.settle_horizon,
            heartbeat: config.checkpoint_heartbeat,
        }
    }

    pub fn signer(&self) -> &NoteSigner {
        &self.signer
    }

    /// Seals every tenant that has new settled events, and gives a fresh
    /// checkpoint to every tenant whose last one is a heartbeat old; the
    /// longest waiting first, until `budget` is spent. Every tenant a run
    /// starts gains at least a page of leaves and of postings.
    pub async fn seal_all(
        &self,
        now: DateTime<Utc>,
        budget: &SealBudget,
    ) -> Result<SealReport, StoreError> {
        let mut report = SealReport::default();
        let now_ms = now.timestamp_millis();
        let horizon_ms = now_ms - self.settle_horizon.as_millis() as i64;
        let mut queue: Vec<(i64, SealMark)> = self
            .store
            .seal_queue()
            .await?
            .into_iter()
            .filter_map(|mark| Some((waiting_since(&mark, now_ms, self.heartbeat)?, mark)))
            .collect();
        queue.sort_by(|(a, x), (b, y)| a.cmp(b).then_with(|| x.tenant.cmp(&y.tenant)));
        for (at, (_, mark)) in queue.iter().enumerate() {
            if budget.is_spent() {
                report.tenants_deferred += queue.len() - at;
                tracing::warn!(
                    deferred = queue.len() - at,
                    "the sealing run's budget is spent: the tenants left go first next run"
                );
                break;
            }
            let due = now_ms - mark.checkpoint_at_ms >= self.heartbeat.as_millis() as i64;
            report.tenants_checked += 1;
            // The log first: its size tells the postings how many settled
            // events wait for them. The two are independent: one failing
            // never stops the other.
            let sealed = self.seal_log(&mark.tenant, now, due, budget).await;
            let log_size = sealed.as_ref().ok().map(|sealed| sealed.size);
            let mut postings_complete = true;
            let postings_due_at_ms = match self
                .poster
                .post_when_due(&mark.tenant, now, log_size, budget)
                .await
            {
                Ok((posted, due_at, complete)) => {
                    report.events_posted += posted;
                    postings_complete = complete;
                    Some(due_at)
                }
                Err(err) => {
                    tracing::error!(error = %err, tenant = %mark.tenant, "posting failed");
                    report.failures += 1;
                    None
                }
            };
            match sealed {
                Ok(sealed_log) => {
                    report.leaves_added += sealed_log.added;
                    let mut sealed = mark.clone();
                    sealed.sealed_through_ms = horizon_ms;
                    if let Some(checkpoint) = sealed_log.checkpoint {
                        sealed.checkpoint_at_ms = now_ms;
                        report.checkpoints.push(checkpoint);
                    } else if sealed_log.size == 0 {
                        // No log yet, so no heartbeat to give: without this,
                        // one would look due since 1970 and go first in
                        // every run.
                        sealed.checkpoint_at_ms = now_ms;
                    }
                    // Only a complete run may say the tenant is sealed this
                    // far; postings that wait say when they fall due, so
                    // the tenant is checked again then even if it writes
                    // nothing more (postings cut short are due at once). A
                    // failed posting leaves the tenant dirty.
                    if !(sealed_log.complete && postings_complete) {
                        report.tenants_deferred += 1;
                    }
                    if let (true, Some(due_at)) = (sealed_log.complete, postings_due_at_ms) {
                        sealed.postings_due_at_ms = due_at;
                        self.store.put_sealed(&sealed).await?;
                    }
                }
                Err(err) => {
                    // One tenant's failure never stops the others.
                    tracing::error!(error = %err, tenant = %mark.tenant, "sealing failed");
                    report.failures += 1;
                }
            }
        }
        Ok(report)
    }

    /// Appends the tenant's settled events after its last leaf. Returns the
    /// new checkpoint (when there are new leaves, or `heartbeat` asks for
    /// one) and the number of leaves added.
    pub async fn seal_tenant(
        &self,
        tenant: &str,
        now: DateTime<Utc>,
        heartbeat: bool,
    ) -> Result<(Option<CheckpointRecord>, u64), StoreError> {
        let sealed = self
            .seal_log(tenant, now, heartbeat, &SealBudget::unlimited())
            .await?;
        Ok((sealed.checkpoint, sealed.added))
    }

    /// [`Self::seal_tenant`] within `budget`.
    async fn seal_log(
        &self,
        tenant: &str,
        now: DateTime<Utc>,
        heartbeat: bool,
        budget: &SealBudget,
    ) -> Result<SealedLog, StoreError> {
        let latest = self.store.latest_checkpoint(tenant).await?;
        let size = latest.as_ref().map_or(0, |c| c.tree_size);
        let mut frontier = self.load_frontier(tenant, size).await?;
        if let Some(latest) = &latest {
            // Never extend a log whose stored tiles disagree with its checkpoint.
            let root = merkle::root(&frontier.tile_set(), size);
            if encode_hash(&root) != latest.root_hash {
                return Err(StoreError::Corrupt(format!(
                    "the tiles of {tenant}'s log do not give its checkpoint's root at size {size}"
                )));
            }
        }
        let mut last_cursor = latest.as_ref().and_then(|c| c.last_cursor.clone());
        let (leaves, complete) = self
            .settled_leaves(tenant, last_cursor.as_deref(), now, budget)
            .await?;
        if leaves.is_empty() && (!heartbeat || latest.is_none()) {
            return Ok(SealedLog {
                checkpoint: None,
                added: 0,
                size,
                complete,
            });
        }
        if let Some((_, entry, _)) = leaves.last() {
            last_cursor = Some(entry.cursor.to_string());
        }
        let added = leaves.len() as u64;
        let pairs: Vec<(Hash, EntryRecord)> = leaves.iter().map(|(h, e, _)| (*h, *e)).collect();
        let writes = if pairs.is_empty() {
            // A heartbeat: the partial tiles are written again, so they
            // outlive their TTL while they are the newest.
            frontier.partial_tiles()
        } else {
            frontier.append(&pairs)
        };
        self.store.put_tiles(tenant, &writes).await?;
        let root = merkle::root(&frontier.tile_set(), frontier.size);
        let root_text = encode_hash(&root);
        self.store
            .put_tree_head(tenant, frontier.size, &root_text)
            .await?;
        let checkpoint = Checkpoint {
            origin: format!("{}/{tenant}", self.origin),
            size: frontier.size,
            root,
            timestamp: format_time(now),
        };
        let record = CheckpointRecord {
            note: self.signer.sign(&checkpoint),
            tree_size: checkpoint.size,
            root_hash: root_text,
            origin: checkpoint.origin.clone(),
            timestamp: checkpoint.timestamp.clone(),
            last_cursor,
        };
        self.store.put_checkpoint(tenant, &record).await?;
        Ok(SealedLog {
            checkpoint: Some(record),
            added,
            size: frontier.size,
            complete,
        })
    }

    /// The right edge of the tenant's tree of `size` leaves, from its tiles.
    async fn load_frontier(&self, tenant: &str, size: u64) -> Result<Frontier, StoreError> {
        let wanted: Vec<(TileId, u64)> = frontier_tiles(size)
            .into_iter()
            .map(|id| (id, id.width_at(size)))
            .collect();
        let found = self.store.get_tiles(tenant, &wanted).await?;
        let mut frontier = Frontier {
            size,
            ..Frontier::default()
        };
        for (id, _) in &wanted {
            let bytes = found
                .iter()
                .find(|(f, _)| f == id)
                .map(|(_, b)| b.as_slice())
                .ok_or_else(|| StoreError::Corrupt(format!("{tenant}'s log lacks a tile")))?;
            let corrupt = || StoreError::Corrupt(format!("{tenant}'s log has a malformed tile"));
            match id.level {
                Some(level) => {
                    let hashes = decode_hashes(bytes).ok_or_else(corrupt)?;
                    let level = usize::from(level);
                    if frontier.partial.len() <= level {
                        frontier.partial.resize(level + 1, Vec::new());
                    }
                    frontier.partial[level] = hashes;
                }
                None => {
                    frontier.partial_entries = EntryRecord::decode_all(bytes).ok_or_else(corrupt)?
                }
            }
        }
        Ok(frontier)
    }

    /// The tenant's events after `after`, up to the settle horizon, as leaves.
    async fn settled_leaves(
        &self,
        tenant: &str,
        after: Option<&str>,
        now: DateTime<Utc>,
        budget: &SealBudget,
    ) -> Result<(Vec<(Hash, EntryRecord, String)>, bool), StoreError> {
        let top = horizon(now, self.settle_horizon);
        if top == Ulid::nil() {
            return Ok((Vec::new(), true));
        }
        let mut lo = match after {
            Some(cursor) => {
                let last = Ulid::from_string(cursor)
                    .map_err(|_| StoreError::Corrupt(format!("stored cursor {cursor}")))?;
                Ulid(last.0.saturating_add(1))
            }
            None => Ulid::nil(),
        };
        let hi = Ulid(top.0 - 1);
        let mut leaves = Vec::new();
        while lo <= hi {
            if leaves.len() >= MAX_LEAVES_PER_RUN || (!leaves.is_empty() && budget.is_spent()) {
                return Ok((leaves, false));
            }
            // The leaf hash is of the parsed event.
            let limit = READ_PAGE.min(MAX_LEAVES_PER_RUN - leaves.len());
            let page = self
                .store
                .read_range(&settled_read(tenant, (lo, hi), limit, false))
                .await?;
            for event in page.events.into_iter().map(PageEvent::into_event) {
                let cursor = Ulid::from_string(&event.cursor)
                    .map_err(|_| StoreError::Corrupt(format!("stored cursor {}", event.cursor)))?;
                let expires_at_ms = DateTime::parse_from_rfc3339(&event.expires_at)
                    .map(|t| t.timestamp_millis())
                    .unwrap_or(i64::MAX);
                leaves.push((
                    event_leaf_hash(&event),
                    EntryRecord {
                        cursor,
                        expires_at_ms,
                    },
                    event.cursor.clone(),
                ));
            }
            // More, but nowhere to resume: the rest waits for the next run.
            let Some(last) = page.last_cursor else {
                return Ok((leaves, !page.more));
            };
            if !page.more {
                break;
            }
            let last = Ulid::from_string(&last)
                .map_err(|_| StoreError::Corrupt(format!("stored cursor {last}")))?;
            lo = Ulid(last.0.saturating_add(1));
        }
        Ok((leaves, true))
    }
}

/// What sealing one tenant's log did.
struct SealedLog {
    /// The new checkpoint, if any.
    checkpoint: Option<CheckpointRecord>,
    added: u64,
    /// The log's size after it.
    size: u64,
    /// Whether every settled event is now a leaf (else the rest wait for
    /// the next run: a cap or the budget stopped it).
    complete: bool,
}
