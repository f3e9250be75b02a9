//! Sealing: appending each tenant's newly settled events to its log and
//! publishing a signed checkpoint; and the dirty marks that tell the sealer
//! which tenants have new events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ulid::Ulid;

use super::merkle::{self, Hash};
use super::note::{Checkpoint, NoteSigner};
use super::tiles::{decode_hashes, frontier_tiles, EntryRecord, Frontier, TileId};
use super::{encode_hash, event_leaf_hash, CheckpointRecord, LogStore, SealMark};
use crate::config::Config;
use crate::error::StoreError;
use crate::event::MAX_PARTITION_KEY_BYTES;
use crate::event::{format_time, PageEvent};
use crate::pivot::{pivot_key, PostingsBuilder, PIVOT_INDEXES};
use crate::store::{EventStore, PostedMark, RangeRead};

/// Most leaves one tenant gains in one run; the rest wait for the next.
const MAX_LEAVES_PER_RUN: usize = 200_000;
/// Most events one tenant's postings gain in one run; the rest wait.
const MAX_POSTED_PER_RUN: usize = 200_000;
/// Events read per `Query` while sealing.
const READ_PAGE: usize = 1000;

/// Writers mark a tenant for sealing at most once per interval per process.
pub struct DirtyMarks {
    interval: Duration,
    marked: Mutex<HashMap<String, Instant>>,
}

impl DirtyMarks {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            marked: Mutex::new(HashMap::new()),
        }
    }

    /// As events of `tenant` are written: the mark says events may be
    /// written until two intervals from now, so a write between marks is
    /// always covered. A failed mark is logged and retried by the next write.
    pub async fn before_write<S: EventStore + ?Sized>(&self, store: &S, tenant: &str) {
        let due = {
            let Ok(mut marked) = self.marked.lock() else {
                return;
            };
            match marked.get(tenant) {
                Some(at) if at.elapsed() < self.interval => false,
                _ => {
                    marked.insert(tenant.to_string(), Instant::now());
                    true
                }
            }
        };
        if !due {
            return;
        }
        // Timed by the clock cursors are timed by, so the mark covers them
        // even after the system clock stepped back.
        let now: DateTime<Utc> = crate::cursor::now().into();
        let until = now + chrono::Duration::from_std(self.interval * 2).unwrap_or_default();
        if let Err(err) = store.mark_dirty(tenant, until.timestamp_millis()).await {
            tracing::warn!(error = %err, "the sealing mark was not written; the next write retries");
            if let Ok(mut marked) = self.marked.lock() {
                marked.remove(tenant);
            }
        }
    }
}

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

/// How long a run may go on starting work. A scheduled run must end before
/// its invocation times out: one cut off mid-run would begin again at the
/// same tenants, and those after them would never be reached.
pub struct SealBudget {
    spent: Box<dyn Fn() -> bool + Send + Sync>,
}

impl SealBudget {
    pub fn unlimited() -> Self {
        Self::when(|| false)
    }

    /// Spent at `deadline`.
    pub fn until(deadline: Instant) -> Self {
        Self::when(move || Instant::now() >= deadline)
    }

    /// Spent once `spent` says so; it is asked before each tenant and
    /// before each page of events read after a tenant's first.
    pub fn when(spent: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Self {
            spent: Box::new(spent),
        }
    }

    fn is_spent(&self) -> bool {
        (self.spent)()
    }
}

/// Since when (epoch ms) the tenant of `mark` has had work waiting: new
/// settled events, a heartbeat checkpoint or postings due. `None` when it
/// has none. A run takes the longest waiting first, so a tenant that one
/// run's budget did not reach (its mark unchanged) goes before those that
/// run sealed.
pub fn waiting_since(mark: &SealMark, now_ms: i64, heartbeat: Duration) -> Option<i64> {
    let dirty = (mark.dirty_until_ms > mark.sealed_through_ms).then_some(mark.sealed_through_ms);
    let checkpoint_due = mark.checkpoint_at_ms + heartbeat.as_millis() as i64;
    let heartbeat_due = (now_ms >= checkpoint_due).then_some(checkpoint_due);
    let postings_due = mark.postings_due_at_ms.filter(|at| now_ms >= *at);
    [dirty, heartbeat_due, postings_due]
        .into_iter()
        .flatten()
        .min()
}

pub struct Sealer<S> {
    store: Arc<S>,
    signer: NoteSigner,
    origin: String,
    settle_horizon: Duration,
    heartbeat: Duration,
    cadence: PostingCadence,
}

/// When the sealer writes a tenant's pivot postings (docs/KEY-DESIGN.md,
/// "Posting cadence"): a posting item costs a write unit however few
/// cursors it lists, so a quiet tenant's are written in batches; its tail
/// above the mark, which pivot reads scan, stays within about `batch`
/// events or `max_lag`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PostingCadence {
    /// Settled events waiting that make a tenant due.
    pub batch: u64,
    /// Age of the oldest of them that makes a tenant due.
    pub max_lag: Duration,
}

impl PostingCadence {
    pub fn from_config(config: &Config) -> Self {
        Self {
            batch: config.posting_batch,
            max_lag: config.posting_max_lag,
        }
    }

    /// `None` when [`Self::due`]; else the horizon (epoch ms) at which the
    /// lag makes the tenant due.
    pub fn due_at(
        &self,
        mark: Option<&PostedMark>,
        log_size: Option<u64>,
        top: Ulid,
    ) -> Option<i64> {
        if self.due(mark, log_size, top) {
            return None;
        }
        let through = mark.and_then(|m| Ulid::from_string(&m.through).ok())?;
        Some(through.timestamp_ms() as i64 + self.max_lag.as_millis() as i64)
    }

    /// Whether a tenant whose postings reach `mark`, and whose log now holds
    /// `log_size` leaves, is due at the settle horizon `top`. What can't be
    /// told (no mark, a size unknown) is due.
    pub fn due(&self, mark: Option<&PostedMark>, log_size: Option<u64>, top: Ulid) -> bool {
        let Some(mark) = mark else {
            return true;
        };
        let Ok(through) = Ulid::from_string(&mark.through) else {
            return true;
        };
        let lag_ms = top.timestamp_ms().saturating_sub(through.timestamp_ms());
        if u128::from(lag_ms) >= self.max_lag.as_millis() {
            return true;
        }
        match (log_size, mark.log_size) {
            // The log holds the same settled events: those it gained since
            // the mark moved are the ones waiting.
            (Some(now), Some(then)) => now.saturating_sub(then) >= self.batch,
            _ => true,
        }
    }
}

/// The first cursor not yet settled at `now`.
fn horizon(now: DateTime<Utc>, settle: Duration) -> Ulid {
    let ms = now.timestamp_millis() - settle.as_millis() as i64;
    Ulid::from_parts(ms.max(0) as u64, 0)
}

impl<S: EventStore + LogStore> Sealer<S> {
    pub fn new(store: Arc<S>, config: &Config) -> Self {
        Self {
            store,
            signer: NoteSigner::from_secret(
                &config.checkpoint_origin,
                &config.checkpoint_signing_key,
            ),
            origin: config.checkpoint_origin.clone(),
            settle_horizon: config.settle_horizon,
            heartbeat: config.checkpoint_heartbeat,
            cadence: PostingCadence::from_config(config),
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

    /// Writes the tenant's postings if they are due ([`PostingCadence`]).
    /// Returns the events posted; if some still wait, when they fall due
    /// (epoch ms); and whether the run wrote all that were due (else a cap
    /// or the budget cut it short, and the rest are due at once).
    async fn post_when_due(
        &self,
        tenant: &str,
        now: DateTime<Utc>,
        log_size: Option<u64>,
        budget: &SealBudget,
    ) -> Result<(u64, Option<i64>, bool), StoreError> {
        let mark = self.store.posted_mark(tenant).await?;
        let top = horizon(now, self.settle_horizon);
        if let Some(due_at) = self.cadence.due_at(mark.as_ref(), log_size, top) {
            // The lag will make them due once the horizon passes it.
            let settle_ms = self.settle_horizon.as_millis() as i64;
            return Ok((0, Some(due_at + settle_ms), true));
        }
        let (posted, complete) = self
            .post_from(tenant, mark.as_ref(), now, log_size, budget)
            .await?;
        // A run that stopped short continues at the next.
        Ok((
            posted,
            (!complete).then(|| now.timestamp_millis()),
            complete,
        ))
    }

    /// Writes the pivot postings of the tenant's settled events that have
    /// none yet (docs/KEY-DESIGN.md, "Pivot postings"): one item per pivot
    /// value per run listing its cursors, then the posted-through mark.
    /// Returns the events posted and whether it reached the horizon.
    pub async fn post_tenant(
        &self,
        tenant: &str,
        now: DateTime<Utc>,
    ) -> Result<(u64, bool), StoreError> {
        let mark = self.store.posted_mark(tenant).await?;
        self.post_from(tenant, mark.as_ref(), now, None, &SealBudget::unlimited())
            .await
    }

    /// Posts from `mark` to the horizon; the new mark records `log_size`
    /// when this run reaches the horizon.
    async fn post_from(
        &self,
        tenant: &str,
        mark: Option<&PostedMark>,
        now: DateTime<Utc>,
        log_size: Option<u64>,
        budget: &SealBudget,
    ) -> Result<(u64, bool), StoreError> {
        let top = horizon(now, self.settle_horizon);
        if top == Ulid::nil() {
            return Ok((0, true));
        }
        let mut lo = match mark {
            Some(mark) => Ulid(parse_cursor(&mark.through)?.0.saturating_add(1)),
            None => Ulid::nil(),
        };
        let hi = Ulid(top.0 - 1);
        let mut builder = PostingsBuilder::default();
        let mut posted = 0usize;
        let mut through = None;
        let mut complete = true;
        while lo <= hi {
            if posted >= MAX_POSTED_PER_RUN || (posted > 0 && budget.is_spent()) {
                complete = false;
                break;
            }
            // Only the top-level fields are read.
            let limit = READ_PAGE.min(MAX_POSTED_PER_RUN - posted);
            let page = self
                .store
                .read_range(&settled_read(tenant, (lo, hi), limit, true))
                .await?;
            for PageEvent { event, .. } in &page.events {
                let expires_at_ms = DateTime::parse_from_rfc3339(&event.expires_at)
                    .map(|t| t.timestamp_millis())
                    .unwrap_or(i64::MAX);
                // Ingest refuses a value too long to key a posting; one
                // stored otherwise is left out rather than stop the tenant's
                // postings (a query for it reads nothing, as ingest promises).
                let values = PIVOT_INDEXES.iter().enumerate().filter_map(|(n, index)| {
                    event
                        .text_field(index.field)
                        .filter(|v| pivot_key(tenant, index, v).len() <= MAX_PARTITION_KEY_BYTES)
                        .map(|v| (n, v))
                });
                builder.add(parse_cursor(&event.cursor)?, expires_at_ms, values);
                posted += 1;
            }
            match (page.last_cursor, page.more) {
                (Some(last), true) => {
                    lo = Ulid(parse_cursor(&last)?.0.saturating_add(1));
                    through = Some(last);
                }
                // The whole range is read: everything below the horizon is posted.
                (_, false) => {
                    through = Some(hi.to_string());
                    break;
                }
                // More, but nowhere to resume: post what was read, no further.
                (None, true) => {
                    complete = false;
                    break;
                }
            }
        }
        match through {
            Some(through) if posted > 0 => {
                let mark = PostedMark {
                    through,
                    log_size: log_size.filter(|_| complete),
                };
                self.store
                    .put_postings(tenant, &builder.finish(), &mark)
                    .await?;
                Ok((posted as u64, complete))
            }
            _ => Ok((0, complete)),
        }
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

/// One page of a tenant's settled events, oldest first. Strongly
/// consistent: an event the sealer misses it would never seal or post.
fn settled_read(
    tenant: &str,
    (lo, hi): (Ulid, Ulid),
    limit: usize,
    data_as_text: bool,
) -> RangeRead {
    RangeRead {
        tenant: tenant.to_string(),
        pivot: None,
        lo: lo.to_string(),
        hi: hi.to_string(),
        newest_first: false,
        limit,
        scan_limit: limit,
        consistent: true,
        data_as_text,
    }
}

fn parse_cursor(cursor: &str) -> Result<Ulid, StoreError> {
    Ulid::from_string(cursor).map_err(|_| StoreError::Corrupt(format!("stored cursor {cursor}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_horizon_is_settle_before_now() {
        let now = DateTime::from_timestamp_millis(1_000_000).unwrap_or_default();
        assert_eq!(
            horizon(now, Duration::from_secs(10)),
            Ulid::from_parts(990_000, 0)
        );
    }

    fn mark_at(ms: u64, log_size: Option<u64>) -> PostedMark {
        PostedMark {
            through: Ulid::from_parts(ms, u128::MAX).to_string(),
            log_size,
        }
    }

    #[test]
    fn postings_are_due_for_a_batch_the_lag_or_what_cannot_be_told() {
        let cadence = PostingCadence {
            batch: 100,
            max_lag: Duration::from_secs(60),
        };
        let top = Ulid::from_parts(1_000_000, 0);
        let recent = mark_at(990_000, Some(500));
        assert!(cadence.due(None, Some(0), top), "nothing posted yet");
        assert!(!cadence.due(Some(&recent), Some(599), top), "99 waiting");
        assert!(cadence.due(Some(&recent), Some(600), top), "100 waiting");
        assert!(
            cadence.due(Some(&recent), None, top),
            "the log's size unknown"
        );
        assert!(
            cadence.due(Some(&mark_at(990_000, None)), Some(501), top),
            "the mark's size unknown"
        );
        assert!(!cadence.due(Some(&mark_at(940_001, Some(500))), Some(501), top));
        assert!(
            cadence.due(Some(&mark_at(940_000, Some(500))), Some(501), top),
            "the oldest waiting is a minute old"
        );
        let every_run = PostingCadence {
            max_lag: Duration::ZERO,
            ..cadence
        };
        assert!(every_run.due(Some(&recent), Some(500), top));
    }

    /// The default cadence waits for a batch even from a tenant of one event
    /// an hour (a week's 168 events, 1000 hours' 1000), so its postings list
    /// as many cursors as a busy tenant's (docs/KEY-DESIGN.md).
    #[test]
    fn by_default_a_slow_tenant_is_posted_a_batch_at_a_time() {
        let cadence = PostingCadence::from_config(&Config::defaults());
        let hour_ms = 3_600_000;
        let posted_at = 10 * hour_ms;
        let mark = mark_at(posted_at, Some(0));
        let after = |hours: u64| Ulid::from_parts(posted_at + hours * hour_ms, 0);
        assert!(!cadence.due(Some(&mark), Some(168), after(168)), "a week");
        assert!(!cadence.due(Some(&mark), Some(999), after(999)));
        assert!(cadence.due(Some(&mark), Some(1000), after(1000)), "a batch");
        let due_at = cadence.due_at(Some(&mark), Some(999), after(999));
        let years = |ms: i64| (ms - posted_at as i64) / (365 * 24 * hour_ms as i64);
        assert_eq!(
            due_at.map(years),
            Some(10),
            "the lag: the longest retention"
        );
    }

    #[test]
    fn work_waits_since_the_tenant_was_last_sealed_its_heartbeat_or_postings_fell_due() {
        let heartbeat = Duration::from_secs(60);
        let mark = SealMark {
            tenant: "t".into(),
            dirty_until_ms: 0,
            sealed_through_ms: 500_000,
            checkpoint_at_ms: 480_000,
            postings_due_at_ms: None,
        };
        assert_eq!(
            waiting_since(&mark, 530_000, heartbeat),
            None,
            "nothing to do"
        );
        assert_eq!(
            waiting_since(&mark, 540_000, heartbeat),
            Some(540_000),
            "a heartbeat due"
        );
        let dirty = SealMark {
            dirty_until_ms: 600_000,
            ..mark.clone()
        };
        assert_eq!(waiting_since(&dirty, 530_000, heartbeat), Some(500_000));
        let posting = SealMark {
            postings_due_at_ms: Some(520_000),
            ..mark.clone()
        };
        assert_eq!(waiting_since(&posting, 519_999, heartbeat), None);
        assert_eq!(waiting_since(&posting, 530_000, heartbeat), Some(520_000));
        let never_sealed = SealMark {
            dirty_until_ms: 600_000,
            sealed_through_ms: 0,
            checkpoint_at_ms: 0,
            ..mark
        };
        assert_eq!(waiting_since(&never_sealed, 530_000, heartbeat), Some(0));
    }
}
