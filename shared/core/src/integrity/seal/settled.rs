//! Reading a tenant's settled events, as the log and the postings both do.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ulid::Ulid;

use crate::error::StoreError;
use crate::store::RangeRead;

/// Events read per `Query` while sealing.
pub(super) const READ_PAGE: usize = 1000;

/// The first cursor not yet settled at `now`.
pub(super) fn horizon(now: DateTime<Utc>, settle: Duration) -> Ulid {
    let ms = now.timestamp_millis() - settle.as_millis() as i64;
    Ulid::from_parts(ms.max(0) as u64, 0)
}

/// One page of a tenant's settled events, oldest first. Strongly
/// consistent: an event the sealer misses it would never seal or post.
pub(super) fn settled_read(
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
        // The sealer reads every event; its pages are bounded by `limit`.
        max_bytes: usize::MAX,
        data_max_bytes: usize::MAX,
    }
}

pub(super) fn parse_cursor(cursor: &str) -> Result<Ulid, StoreError> {
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
}
