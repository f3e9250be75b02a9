//! Reading the trail: the gap-free tail (`GET /audit`) and bounded queries
//! (`POST /audit/query`) that read pivot postings or the time range.
//! What a page prints, and how much of it, is `read/page.rs`.

mod page;

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::Value;
use ulid::Ulid;

use crate::config::Config;
use crate::error::{ApiError, StoreError};
use crate::event::{Event, PageEvent, MAX_PARTITION_KEY_BYTES};
use crate::pivot::pivot_key;
use crate::query::{CursorSigner, Plan, Query, QueryCursor, Segment};
use crate::store::{EventStore, RangeRead};

pub use page::MAX_PAGE_BYTES;

pub const MAX_PAGE: usize = 1000;
pub const DEFAULT_TAIL_PAGE: usize = 100;
pub const DEFAULT_QUERY_PAGE: usize = 1000;

/// Where a tail page starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Start {
    Beginning,
    /// Inclusive.
    From(Ulid),
    /// Exclusive.
    After(Ulid),
}

#[derive(Debug, Clone)]
pub struct TailPage {
    /// As the page prints them ([`page::fit_page`]): `data` as its
    /// stored text, shortened when large, within [`MAX_PAGE_BYTES`].
    pub events: Vec<PageEvent>,
    /// Where the next page starts (inclusive): `from=` of the `next` link.
    pub next_from: Ulid,
    /// The page stopped at the settle horizon: the poller is caught up.
    pub caught_up: bool,
    pub items_read: usize,
}

#[derive(Debug, Clone)]
pub struct QueryPage {
    /// As the page prints them ([`page::fit_page`]); `data` as its
    /// stored text unless a condition looked into it.
    pub events: Vec<PageEvent>,
    /// The signed continuation, if anything is left.
    pub next: Option<String>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Range items read (on a pivot: the cursors its postings listed and
    /// the tail events it scanned).
    pub items_read: usize,
    /// Events then read by key (the postings list cursors only).
    pub items_fetched: usize,
    pub read_units: f64,
}

pub struct TrailReader<S> {
    store: Arc<S>,
    config: Config,
    signer: CursorSigner,
}

fn smallest_at(ms: i64) -> Ulid {
    Ulid::from_parts(ms.max(0) as u64, 0)
}

/// The first whole millisecond at or after `at`.
fn ceil_millis(at: DateTime<Utc>) -> i64 {
    let ms = at.timestamp_millis();
    if at.timestamp_subsec_nanos().is_multiple_of(1_000_000) {
        ms
    } else {
        ms + 1
    }
}

/// Where a query page's read of one pivot value (or of the time range)
/// stands.
struct PivotRead {
    /// `None`: the tenant's partition, every condition evaluated here.
    pivot: Option<String>,
    /// Where this read ends (its part of the range starts here).
    floor: Ulid,
    /// Everything above it has been read.
    upper: Ulid,
    /// Read before the others: the not-yet-posted tail of an `in` list.
    first: bool,
    found: usize,
    /// About the bytes its matches print to ([`PageEvent::estimated_len`]).
    found_bytes: usize,
    state: PivotState,
}

impl PivotRead {
    /// It found a page's worth, in events or in bytes: what it would find
    /// below lies past the page (the page is cut to `MAX_PAGE_BYTES`).
    fn found_a_page(&self, limit: usize) -> bool {
        self.found >= limit || self.found_bytes > MAX_PAGE_BYTES
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PivotState {
    /// More to read, if the budget allows.
    Open,
    /// The page's worth found: below `upper` is for the next page.
    Full,
    /// Read down to the range's start.
    Finished,
}

fn step_up(cursor: Ulid) -> Ulid {
    Ulid(cursor.0.saturating_add(1))
}

fn step_down(cursor: Ulid) -> Ulid {
    Ulid(cursor.0.saturating_sub(1))
}

fn parse_stored(cursor: &str) -> Result<Ulid, StoreError> {
    Ulid::from_string(cursor).map_err(|_| StoreError::Corrupt(format!("stored cursor {cursor}")))
}

impl<S: EventStore> TrailReader<S> {
    pub fn new(store: Arc<S>, config: Config) -> Self {
        let signer = CursorSigner::new(config.cursor_signing_key.as_bytes());
        Self {
            store,
            config,
            signer,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The first cursor that is not yet settled: everything below it has
    /// committed (or never will).
    pub fn horizon(&self, now: DateTime<Utc>) -> Ulid {
        smallest_at(now.timestamp_millis() - self.config.settle_horizon.as_millis() as i64)
    }

    /// One page of the tenant's trail, oldest first, up to the settle horizon.
    pub async fn tail(
        &self,
        tenant: &str,
        start: Start,
        limit: usize,
        now: DateTime<Utc>,
        keep: impl Fn(&Event) -> bool,
    ) -> Result<TailPage, ApiError> {
        let horizon = self.horizon(now);
        let first = match start {
            Start::Beginning => Ulid::nil(),
            Start::From(cursor) => cursor,
            Start::After(cursor) => step_up(cursor),
        };
        let mut page = TailPage {
            events: Vec::with_capacity(limit + 1),
            next_from: first.max(horizon),
            caught_up: true,
            items_read: 0,
        };
        if first >= horizon {
            return Ok(page);
        }
        let mut lo = first;
        let hi = step_down(horizon);
        // Expired events are skipped, so a page may need more than one read;
        // bound the work all the same.
        let read_budget = limit * 4 + 1000;
        // About the bytes the events read so far print to: reading stops
        // once past what one page holds, so large events are not read in
        // their thousands to be cut to a few hundred.
        let mut read_bytes = 0;
        loop {
            let want = limit + 1 - page.events.len();
            let read = RangeRead {
                tenant: tenant.to_string(),
                pivot: None,
                lo: lo.to_string(),
                hi: hi.to_string(),
                newest_first: false,
                limit: want.min(read_budget - page.items_read),
                scan_limit: read_budget - page.items_read,
                consistent: false,
                data_as_text: true,
                max_bytes: MAX_PAGE_BYTES,
                data_max_bytes: self.config.list_data_max_bytes,
            };
            let chunk = self.store.read_range(&read).await?;
            page.items_read += chunk.items_read;
            let kept = chunk
                .events
                .into_iter()
                .filter(|e| !e.event.is_expired(now) && keep(&e.event));
            for event in kept {
                read_bytes += event.estimated_len(self.config.list_data_max_bytes);
                page.events.push(event);
            }
            if page.events.len() > limit {
                // One beyond the page: it starts the next one.
                let next = page.events.split_off(limit);
                page.next_from = parse_stored(&next[0].event.cursor)?;
                page.caught_up = false;
                return self.fit_tail(page);
            }
            let Some(last) = chunk.last_cursor else { break };
            if !chunk.more {
                break;
            }
            lo = step_up(parse_stored(&last)?);
            // The read budget is spent, or more was read than a page can
            // print (it is cut to MAX_PAGE_BYTES below): the next page
            // starts after what was read, or where the cut falls.
            if page.items_read >= read_budget || read_bytes > MAX_PAGE_BYTES {
                page.next_from = lo;
                page.caught_up = false;
                return self.fit_tail(page);
            }
        }
        self.fit_tail(page)
    }

    /// The tail page's events as a page prints them, within
    /// [`MAX_PAGE_BYTES`]: cut short, the next page starts at the first
    /// event left out.
    fn fit_tail(&self, mut page: TailPage) -> Result<TailPage, ApiError> {
        let (kept, left_out) = page::fit_page(
            self.config.list_data_max_bytes,
            std::mem::take(&mut page.events),
        );
        page.events = kept;
        if let Some(first_left_out) = left_out {
            page.next_from = parse_stored(&first_left_out)?;
            page.caught_up = false;
        }
        Ok(page)
    }

    /// Checks a continuation cursor from `next` against the tenant and query.
    pub fn verify_cursor(
        &self,
        token: &str,
        tenant: &str,
        query: &Query,
    ) -> Result<QueryCursor, ApiError> {
        self.signer.verify(token, tenant, &query.fingerprint)
    }

    /// One page of a query, newest first, within the read budget.
    pub async fn query(
        &self,
        tenant: &str,
        query: &Query,
        cursor: Option<QueryCursor>,
        limit: usize,
    ) -> Result<QueryPage, ApiError> {
        self.query_with_plan(tenant, query, cursor, limit, Plan::for_query(query))
            .await
    }

    /// [`Self::query`] reading what `plan` says: the planner's choice, or
    /// (to prove every plan means the same) the tenant's whole time range.
    pub async fn query_with_plan(
        &self,
        tenant: &str,
        query: &Query,
        cursor: Option<QueryCursor>,
        limit: usize,
        plan: Plan,
    ) -> Result<QueryPage, ApiError> {
        let started = Instant::now();
        let now = Utc::now();
        let (from, to, position) = match cursor {
            Some(c) => {
                let from = DateTime::from_timestamp_millis(c.from_ms).unwrap_or(query.from);
                let to = DateTime::from_timestamp_millis(c.to_ms).unwrap_or(query.to);
                let position = Ulid::from_string(&c.position)
                    .map_err(|_| ApiError::bad_request("cursor", "`cursor` is malformed"))?;
                (from, to, Some(position))
            }
            None => (query.from, query.to, None),
        };
        // `timestamp` is the cursor's millisecond: `from` inclusive and `to`
        // exclusive are exactly the cursors from the first of from's
        // millisecond (rounded up) to just below the first of to's.
        let (from_ms, to_ms) = (ceil_millis(from), ceil_millis(to));
        let lo = smallest_at(from_ms);
        let mut hi = step_down(smallest_at(to_ms));
        if let Some(position) = position {
            hi = hi.min(step_down(position));
        }
        let pivots: Vec<Option<String>> = if plan.index.is_some() {
            // A value too long to key a posting names no stored event
            // (ingest refuses it), and DynamoDB would refuse the read.
            plan.values
                .iter()
                .filter(|v| {
                    plan.index
                        .is_some_and(|i| pivot_key(tenant, i, v).len() <= MAX_PARTITION_KEY_BYTES)
                })
                .cloned()
                .map(Some)
                .collect()
        } else {
            vec![None]
        };
        let budget = self.config.query_read_budget;
        // `data` is parsed only for a condition on it; a page only prints it.
        let data_in_conditions = query.conditions.iter().any(
            |c| matches!(c.field.segments.first(), Some(Segment::Key(root)) if root == "data"),
        );

        let mut matched: Vec<PageEvent> = Vec::new();
        let mut items_read = 0;
        let mut items_fetched = 0;
        let mut read_units = 0.0;
        let many_values = pivots.len() > 1;
        let mut reads: Vec<PivotRead> = pivots
            .into_iter()
            .map(|pivot| PivotRead {
                pivot,
                floor: lo,
                upper: hi,
                found: 0,
                found_bytes: 0,
                first: false,
                state: PivotState::Open,
            })
            .collect();
        if many_values {
            // Each value's own read would scan the not-yet-posted tail for
            // itself, so an `in` of n values would read it n times. The tail
            // is read once instead, as a range, every condition evaluated
            // here; the values read their postings below it.
            let posted = self
                .store
                .posted_through_for_read(tenant)
                .await?
                .map(|through| parse_stored(&through))
                .transpose()?;
            if posted.is_none_or(|p| p < hi) {
                let floor = posted.map_or(lo, |p| lo.max(step_up(p)));
                for value_read in &mut reads {
                    value_read.upper = posted.map_or(Ulid::nil(), |p| p.min(hi));
                    if posted.is_none_or(|p| p < lo) {
                        value_read.state = PivotState::Finished;
                    }
                }
                reads.insert(
                    0,
                    PivotRead {
                        pivot: None,
                        floor,
                        upper: hi,
                        found: 0,
                        found_bytes: 0,
                        first: true,
                        state: PivotState::Open,
                    },
                );
            }
        }
        // The budget is shared in rounds: each round splits what is left
        // among the values still open, so a value that matches little (an
        // `in` list of a hundred names, most of them absent) leaves its
        // share to those that match, instead of holding each to 1/n of it.
        loop {
            let mut open: Vec<usize> = (0..reads.len())
                .filter(|&i| reads[i].state == PivotState::Open)
                .collect();
            if open.iter().any(|&i| reads[i].first) {
                open.retain(|&i| reads[i].first);
            }
            // The tail read filled the page (whether it stopped there or read
            // the whole tail): what the values would find lies below it, for
            // the next page. (It looked for `Full` only, and a tail read
            // whole with more matches than the page holds went on to read
            // every value's postings.)
            if reads.iter().any(|r| r.first && r.found_a_page(limit)) {
                break;
            }
            let remaining = budget.saturating_sub(items_read);
            if open.is_empty()
                || remaining == 0
                || started.elapsed() >= self.config.query_time_budget
            {
                break;
            }
            let share = (remaining / open.len()).max(1);
            for index in open {
                let pivot_read = &mut reads[index];
                let mut read_here = 0;
                loop {
                    if pivot_read.upper < pivot_read.floor {
                        pivot_read.state = PivotState::Finished;
                        break;
                    }
                    if pivot_read.found_a_page(limit) {
                        pivot_read.state = PivotState::Full;
                        break;
                    }
                    if read_here >= share || started.elapsed() >= self.config.query_time_budget {
                        break;
                    }
                    let wanted = limit - pivot_read.found;
                    // The range read holds only events the pivot condition
                    // matches: other conditions are evaluated here.
                    let residual_filters =
                        query.conditions.len() > usize::from(pivot_read.pivot.is_some());
                    let chunk_size = if residual_filters {
                        (wanted * 2).clamp(100, MAX_PAGE)
                    } else {
                        wanted
                    };
                    let read = RangeRead {
                        tenant: tenant.to_string(),
                        pivot: plan.index.zip(pivot_read.pivot.clone()),
                        lo: pivot_read.floor.to_string(),
                        hi: pivot_read.upper.to_string(),
                        newest_first: true,
                        limit: chunk_size.min(share - read_here),
                        scan_limit: share - read_here,
                        consistent: false,
                        data_as_text: !data_in_conditions,
                        max_bytes: MAX_PAGE_BYTES.saturating_sub(pivot_read.found_bytes),
                        data_max_bytes: self.config.list_data_max_bytes,
                    };
                    let chunk = self.store.read_range(&read).await?;
                    read_here += chunk.items_read;
                    items_fetched += chunk.items_fetched;
                    read_units += chunk.read_units;
                    for page_event in chunk.events {
                        if page_event.event.is_expired(now) {
                            continue;
                        }
                        if residual_filters {
                            let as_json =
                                serde_json::to_value(&page_event.event).unwrap_or(Value::Null);
                            if !query.matches(&as_json) {
                                continue;
                            }
                        }
                        pivot_read.found += 1;
                        pivot_read.found_bytes +=
                            page_event.estimated_len(self.config.list_data_max_bytes);
                        matched.push(page_event);
                    }
                    match chunk.last_cursor {
                        Some(last) if chunk.more => {
                            pivot_read.upper = step_down(parse_stored(&last)?)
                        }
                        Some(last) => {
                            pivot_read.upper = step_down(parse_stored(&last)?);
                            pivot_read.state = PivotState::Finished;
                            break;
                        }
                        None => {
                            pivot_read.state = PivotState::Finished;
                            break;
                        }
                    }
                }
                items_read += read_here;
            }
        }
        // The lowest cursor read by a pivot that is not finished: below it,
        // unknown. Everything above `upper` in such a pivot was considered.
        let boundary: Option<Ulid> = reads
            .iter()
            .filter(|r| r.state != PivotState::Finished)
            .map(|r| step_up(r.upper))
            .max();
        matched.sort_by(|a, b| b.event.cursor.cmp(&a.event.cursor));
        if let Some(boundary) = boundary {
            let boundary = boundary.to_string();
            matched.retain(|e| e.event.cursor >= boundary);
        }
        // More matches than fit: the next page starts below the last one
        // returned. Otherwise it starts below what was considered.
        let mut next_position = if matched.len() > limit {
            matched.truncate(limit);
            matched.last().map(|e| e.event.cursor.clone())
        } else {
            boundary.map(|b| b.to_string())
        };
        // Too many bytes for one answer: the next page starts below the
        // last one that fit.
        let (matched, left_out) = page::fit_page(self.config.list_data_max_bytes, matched);
        if left_out.is_some() {
            next_position = matched.last().map(|e| e.event.cursor.clone());
        }
        let next = next_position
            .filter(|p| p.as_str() > lo.to_string().as_str())
            .map(|position| {
                self.signer.sign(&QueryCursor {
                    tenant: tenant.to_string(),
                    fingerprint: query.fingerprint.clone(),
                    position,
                    from_ms,
                    to_ms,
                })
            });
        tracing::info!(
            items_read,
            items_fetched,
            returned = matched.len(),
            index = plan.index.map(|i| i.name).unwrap_or("table"),
            "query page"
        );
        Ok(QueryPage {
            events: matched,
            next,
            from,
            to,
            items_read,
            items_fetched,
            read_units,
        })
    }
}
