//! The sealer's second task: the pivot postings of each tenant's settled
//! events, written in batches ([`PostingCadence`]).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ulid::Ulid;

use super::schedule::SealBudget;
use super::settled::{horizon, parse_cursor, settled_read, READ_PAGE};
use crate::config::Config;
use crate::error::StoreError;
use crate::event::{PageEvent, MAX_PARTITION_KEY_BYTES};
use crate::pivot::{pivot_key, PostingsBuilder, PIVOT_INDEXES};
use crate::store::{EventStore, PostedMark};

/// Most events one tenant's postings gain in one run; the rest wait.
const MAX_POSTED_PER_RUN: usize = 200_000;

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

/// Writes each tenant's pivot postings when its [`PostingCadence`] says.
pub struct Poster<S> {
    store: Arc<S>,
    cadence: PostingCadence,
    settle_horizon: Duration,
}

impl<S: EventStore> Poster<S> {
    pub fn new(store: Arc<S>, config: &Config) -> Self {
        Self {
            store,
            cadence: PostingCadence::from_config(config),
            settle_horizon: config.settle_horizon,
        }
    }

    /// Writes the tenant's postings if they are due ([`PostingCadence`]).
    /// Returns the events posted; if some still wait, when they fall due
    /// (epoch ms); and whether the run wrote all that were due (else a cap
    /// or the budget cut it short, and the rest are due at once).
    pub async fn post_when_due(
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
