//! When the sealer runs and on what: the dirty marks writers leave, a
//! run's budget, and which tenant has waited longest.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::integrity::SealMark;
use crate::store::EventStore;

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

    pub(crate) fn is_spent(&self) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

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
