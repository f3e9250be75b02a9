//! The store the domain talks to (the port). One real implementation:
//! `audit_dynamo::DynamoStore`.

use std::time::Instant;

use async_trait::async_trait;

use crate::error::StoreError;
use crate::event::{Event, PageEvent};
use crate::metadata::ObservedProperty;
use crate::pivot::{PivotIndex, Posting};

/// One read over a cursor range of a tenant's events: of its partition, or
/// of one pivot value (its postings, then its events not yet posted).
#[derive(Debug, Clone)]
pub struct RangeRead {
    pub tenant: String,
    /// The pivot index and the value to read (`None`: the tenant's partition).
    pub pivot: Option<(&'static PivotIndex, String)>,
    /// Inclusive cursor bounds.
    pub lo: String,
    pub hi: String,
    pub newest_first: bool,
    /// Most items to read (DynamoDB may return fewer: 1 MB per call).
    pub limit: usize,
    /// Most items a filtered scan may evaluate to find `limit` matches (a
    /// pivot read's not-yet-posted tail): the caller's read budget left.
    pub scan_limit: usize,
    /// A strongly consistent read (the sealer's: what it misses it never
    /// seals or posts).
    pub consistent: bool,
    /// Leave each event's `data` as its stored JSON text
    /// ([`PageEvent::data_text`]): for a page that only prints it.
    pub data_as_text: bool,
    /// About the most bytes the events fetched by key from postings may
    /// print to ([`PageEvent::estimated_len`]; at least one batch is
    /// fetched): a page is cut to `MAX_PAGE_BYTES` anyway, and `limit` large
    /// events would be read to print a few hundred.
    pub max_bytes: usize,
    /// The `data` a page prints of each event, at most (`LIST_DATA_MAX_BYTES`).
    pub data_max_bytes: usize,
}

#[derive(Debug, Clone, Default)]
pub struct RangePage {
    pub events: Vec<PageEvent>,
    /// The cursor of the last item read, returned or not.
    pub last_cursor: Option<String>,
    /// DynamoDB has more items in the range.
    pub more: bool,
    /// Items the range itself held (on a pivot: the cursors its postings
    /// listed, and the events of the not-yet-posted tail it scanned).
    pub items_read: usize,
    /// Events read by key after postings gave their cursors.
    pub items_fetched: usize,
    pub read_units: f64,
}

/// An idempotency key and whose it is. Keys are scoped to the tenant
/// written to and, for a platform producer writing into another tenant, to
/// the producer's tenant too: a tenant's own writer cannot use a key first
/// and so suppress the platform's event (it was answered `duplicate`,
/// naming the tenant's event, and never stored).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    /// As the producer sent it (`messageId` or `Idempotency-Key`).
    pub key: String,
    /// The tenant whose token wrote the event, when it is not the tenant
    /// written to.
    pub producer: Option<String>,
}

impl IdempotencyKey {
    /// The key's namespace for events of `tenant`: the tenant, or
    /// `<tenant>/<producer>`. A tenant id holds neither `/` nor `#`, so the
    /// two never meet, and no other item type's key (postings are
    /// `<tenant>#u#<value>`) is ever one of these.
    pub fn scope(&self, tenant: &str) -> String {
        match &self.producer {
            Some(producer) => format!("{tenant}/{producer}"),
            None => tenant.to_string(),
        }
    }
}

/// What an idempotent write found.
#[derive(Debug, Clone, PartialEq)]
pub enum IdempotentPut {
    Stored,
    /// The key was used before: the original event's ids.
    Duplicate {
        cursor: String,
        timestamp: String,
        expires_at: String,
    },
}

#[async_trait]
pub trait EventStore: Send + Sync {
    /// Writes a new event; never overwrites an existing one. No attempt
    /// starts after `deadline`.
    async fn put_event(&self, event: &Event, deadline: Instant) -> Result<(), StoreError>;

    /// Writes each event and its idempotency marker atomically, or reports
    /// the event its key already names; one result per event, in order. The
    /// events are written together where the store can (one transaction per
    /// group), yet each is answered on its own: one event never fails
    /// another. No attempt starts after `deadline`.
    async fn put_events_once(
        &self,
        events: &[(Event, IdempotencyKey)],
        deadline: Instant,
    ) -> Vec<Result<IdempotentPut, StoreError>>;

    /// Writes up to 25 fresh events in one batch, retrying what DynamoDB
    /// leaves unprocessed until `deadline`; one result per event, in order.
    async fn put_events(&self, events: &[Event], deadline: Instant) -> Vec<Result<(), StoreError>>;

    /// One page of a cursor range, in cursor order.
    async fn read_range(&self, read: &RangeRead) -> Result<RangePage, StoreError>;

    /// The tenant's settings item, if it has one.
    async fn get_settings(&self, tenant: &str) -> Result<Option<TenantSettings>, StoreError>;

    /// Writes `settings` and `record`, the audit event of the change, in one
    /// transaction: both or neither. Only if the stored settings are still
    /// `expected` (`None`: none are stored) and `settings.change_cursor` is
    /// above the stored one; `false` when not. Two concurrent changes must
    /// not both record a change from the same value, nor their records read
    /// out of order, and no change may land unrecorded.
    async fn replace_settings(
        &self,
        tenant: &str,
        settings: &TenantSettings,
        expected: Option<&TenantSettings>,
        record: &Event,
    ) -> Result<bool, StoreError>;

    /// The tenant's settings item read strongly consistent (after a write
    /// whose answer was lost: did it land?).
    async fn get_settings_consistent(
        &self,
        tenant: &str,
    ) -> Result<Option<TenantSettings>, StoreError>;

    /// Records observed properties (idempotent).
    async fn put_properties(
        &self,
        sightings: &[(String, ObservedProperty)],
    ) -> Result<(), StoreError>;

    /// The tenant's observed properties, optionally of one service (and
    /// event type), in key order: at most
    /// [`crate::metadata::MAX_LISTED_PROPERTIES`] + 1, so the caller can
    /// tell there were more.
    async fn read_properties(
        &self,
        tenant: &str,
        service_name: Option<&str>,
        event_type: Option<&str>,
    ) -> Result<Vec<ObservedProperty>, StoreError>;

    /// One event of one tenant, expired or not.
    async fn get_event(&self, tenant: &str, cursor: &str) -> Result<Option<Event>, StoreError>;

    /// The tenant's posted-through mark (`None`: nothing posted yet). It
    /// only grows, so an older answer is still true: it only leaves more of
    /// the tail to scan.
    async fn posted_mark(&self, tenant: &str) -> Result<Option<PostedMark>, StoreError>;

    /// The last cursor whose pivot postings are all written.
    async fn posted_through(&self, tenant: &str) -> Result<Option<String>, StoreError> {
        Ok(self.posted_mark(tenant).await?.map(|mark| mark.through))
    }

    /// [`Self::posted_through`] as this process recently read it, for a
    /// read (the mark only grows, so an older answer is still true).
    async fn posted_through_for_read(&self, tenant: &str) -> Result<Option<String>, StoreError> {
        self.posted_through(tenant).await
    }

    /// Writes one run's postings, then moves the tenant's posted-through
    /// mark to `mark.through`. Writing the same run again is harmless.
    async fn put_postings(
        &self,
        tenant: &str,
        postings: &[Posting],
        mark: &PostedMark,
    ) -> Result<(), StoreError>;

    /// Puts the tenant in the sealing queue: it may have events written
    /// until `until_ms` (epoch ms). A later mark never moves it back.
    async fn mark_dirty(&self, tenant: &str, until_ms: i64) -> Result<(), StoreError>;
}

/// How far a tenant's pivot postings go.
#[derive(Debug, Clone, PartialEq)]
pub struct PostedMark {
    /// The last cursor whose postings are all written.
    pub through: String,
    /// The tenant's log size when they were (`None`: not known), so the
    /// sealer can tell how many settled events wait without reading them.
    pub log_size: Option<u64>,
}

/// A tenant's own settings, as stored (validated by the `settings` module).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantSettings {
    pub retention_days: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
    /// The cursor of the audit record of the last change. Each change's
    /// cursor is above the one before, so the records read in cursor order
    /// are the changes in the order they were made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_cursor: Option<String>,
}
