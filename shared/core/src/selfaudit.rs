//! Reads of the audit trail are audit events too: every call of a read
//! route records one in the caller's tenant, written concurrently with the
//! read itself.

use std::future::Future;
use std::sync::Arc;

use serde_json::json;

use crate::auth::Caller;
use crate::cursor::CursorGenerator;
use crate::error::{ApiError, StoreError};
use crate::event::{format_time, Event};
use crate::integrity::seal::DirtyMarks;
use crate::metadata::{properties_of, ObservedProperty};
use crate::settings::RetentionCache;

/// How long a change's answer may wait for its record's metadata (a few
/// dozen properties at most: one or two calls).
const CHANGE_METADATA_TIME: std::time::Duration = std::time::Duration::from_secs(2);
use crate::store::EventStore;

/// The `serviceName` of every self-audit record (reserved: ingest refuses
/// it, [`crate::event::names_the_api`]).
pub use crate::event::SELF_AUDIT_SERVICE;
// The `eventType`s it records are in the route table:
// [`crate::routes::self_audit_event_types`].

/// What a read request looked like, for its record (the edge reads them
/// from the request: `audit_http::request::facts`).
#[derive(Debug, Clone)]
pub struct RequestFacts {
    pub event_type: &'static str,
    pub path: String,
    pub method: String,
    pub query_string: String,
    pub user_agent: Option<String>,
    pub referer: Option<String>,
    pub source_ip: Option<String>,
}

pub struct SelfAuditor<S> {
    store: Arc<S>,
    retention: Arc<RetentionCache<S>>,
    cursors: CursorGenerator,
    required: bool,
    seen: crate::metadata::SeenProperties,
    /// Counts a record that could not be written (the edge's metric).
    on_failure: fn(&'static str),
    marks: DirtyMarks,
    /// How long after its cursor is assigned a record may still be written.
    write_deadline: std::time::Duration,
}

impl<S: EventStore> SelfAuditor<S> {
    pub fn new(
        store: Arc<S>,
        retention: Arc<RetentionCache<S>>,
        required: bool,
        seal_interval: std::time::Duration,
        write_deadline: std::time::Duration,
    ) -> Self {
        Self {
            store,
            retention,
            cursors: CursorGenerator::default(),
            required,
            seen: Default::default(),
            marks: DirtyMarks::new(seal_interval),
            on_failure: |_| {},
            write_deadline,
        }
    }

    /// Counts each record that could not be written, by its `eventType`.
    pub fn counting_failures_with(mut self, on_failure: fn(&'static str)) -> Self {
        self.on_failure = on_failure;
        self
    }

    /// An auditor with its own retention cache, as a read function needs.
    pub fn for_config(store: Arc<S>, config: &crate::config::Config) -> Self {
        let retention = Arc::new(RetentionCache::new(
            Arc::clone(&store),
            config.default_retention_days,
            config.retention_cache,
        ));
        Self::new(
            store,
            retention,
            config.self_audit_required,
            config.seal_interval,
            config.write_deadline,
        )
    }

    pub fn retention(&self) -> &RetentionCache<S> {
        &self.retention
    }

    /// The record of a change made through the API (e.g. settings), to be
    /// written with the change itself (in one transaction), under a fresh
    /// cursor. Its tenant is marked for sealing first, as for every
    /// record.
    ///
    /// The record is kept for at least `kept_days_at_least` days: a change
    /// that shortens retention is kept as long as the events it shortened,
    /// not only as long as the new retention.
    pub async fn change_record(
        &self,
        caller: &Caller,
        facts: &RequestFacts,
        data: serde_json::Value,
        kept_days_at_least: u32,
    ) -> Result<Event, StoreError> {
        let record = self
            .record_of(caller, facts, data, kept_days_at_least, self.cursors.next())
            .await?;
        self.marks.before_write(&*self.store, &caller.tenant).await;
        Ok(record)
    }

    /// After a change's record is stored: a change's `data` is its own, so
    /// metadata lists its properties once a record of it is stored (first
    /// sighting per process only).
    pub async fn change_recorded(&self, record: &Event) {
        let sightings = self.seen.first_sightings(std::iter::once(record), true);
        if !sightings.is_empty() {
            let deadline = std::time::Instant::now() + CHANGE_METADATA_TIME;
            self.seen
                .record(&sightings, deadline, |chunk| {
                    self.store.put_properties(chunk)
                })
                .await;
        }
    }

    /// Runs `read` and writes its record at the same time. A failed record
    /// is logged and counted; it fails the read only when the deployment
    /// requires records (then 503).
    pub async fn around<T>(
        &self,
        caller: &Caller,
        facts: RequestFacts,
        read: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        let (result, recorded) = futures::join!(read, self.record(caller, &facts));
        if let Err(err) = recorded {
            tracing::error!(error = %err, route = facts.event_type, "self-audit record not written");
            (self.on_failure)(facts.event_type);
            if self.required {
                return Err(ApiError::Unavailable {
                    retry_after_seconds: 1,
                });
            }
        }
        result
    }

    async fn record(&self, caller: &Caller, facts: &RequestFacts) -> Result<(), StoreError> {
        let event = self
            .record_of(
                caller,
                facts,
                read_record_data(caller, facts),
                0,
                self.cursors.next(),
            )
            .await?;
        // No sightings: a read's record has the properties every read's
        // record has, which metadata lists from `record_properties`.
        self.put(&caller.tenant, &event).await
    }

    /// The record, with the tenant's retention (or `kept_days_at_least`,
    /// if longer), under `cursor`.
    async fn record_of(
        &self,
        caller: &Caller,
        facts: &RequestFacts,
        data: serde_json::Value,
        kept_days_at_least: u32,
        cursor: ulid::Ulid,
    ) -> Result<Event, StoreError> {
        let retention = self
            .retention
            .retention_days(&caller.tenant)
            .await?
            .max(kept_days_at_least);
        Ok(record_event(caller, facts, data, cursor, retention))
    }

    async fn put(&self, tenant: &str, event: &Event) -> Result<(), StoreError> {
        // Marked alongside the write, so a record is never left unsealed.
        let (_, written) = futures::join!(
            self.marks.before_write(&*self.store, tenant),
            self.store
                .put_event(event, std::time::Instant::now() + self.write_deadline)
        );
        written
    }
}

/// The record a read by `caller` with `facts` writes under `cursor`, kept
/// `retention_days` (the benchmark's raw function writes the same one).
pub fn read_record(
    caller: &Caller,
    facts: &RequestFacts,
    cursor: ulid::Ulid,
    retention_days: u32,
) -> Event {
    record_event(
        caller,
        facts,
        read_record_data(caller, facts),
        cursor,
        retention_days,
    )
}

/// What a read's record holds in `data`.
fn read_record_data(caller: &Caller, facts: &RequestFacts) -> serde_json::Value {
    let cut = |text: &str| cut_to(text, MAX_RECORD_DATA_CHARS);
    let cut_some = |text: &Option<String>| text.as_deref().map(cut);
    json!({
        "path": cut(&facts.path),
        "method": cut(&facts.method),
        "queryString": cut(&facts.query_string),
        "userAgent": cut_some(&facts.user_agent),
        "referer": cut_some(&facts.referer),
        "sourceIp": cut_some(&facts.source_ip),
        "subject": cut_some(&caller.subject),
        "clientId": cut_some(&caller.client_id),
    })
}

/// The most characters a record keeps of each fact in `data`: eight of
/// them stay well inside an event's 64 KiB.
const MAX_RECORD_DATA_CHARS: usize = 4096;

/// `text`'s first `max` characters.
fn cut_to(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// A record's top-level field holds no more than the field table lets a
/// producer send (a `userId` of 2100 characters could key no posting, so no
/// `userId` query found its record); the whole fact is in `data`, up to
/// its own limit.
fn within_field_limit(field: &str, value: Option<&String>) -> Option<String> {
    let max = crate::event::EVENT_FIELDS
        .iter()
        .find_map(|spec| match spec.rule {
            crate::event::FieldRule::OptionalText { max } if spec.name == field => Some(max),
            _ => None,
        })
        .unwrap_or(MAX_RECORD_DATA_CHARS);
    value.map(|text| cut_to(text, max))
}

/// A record of `facts` in the caller's tenant.
fn record_event(
    caller: &Caller,
    facts: &RequestFacts,
    data: serde_json::Value,
    cursor: ulid::Ulid,
    retention_days: u32,
) -> Event {
    // As for every event, the timestamp is the cursor's time.
    let now = crate::event::cursor_time(cursor);
    Event {
        cursor: cursor.to_string(),
        account_id: caller.tenant.clone(),
        organization_id: None,
        timestamp: format_time(now),
        occurred_at: None,
        expires_at: format_time(now + chrono::Duration::days(i64::from(retention_days))),
        service_name: SELF_AUDIT_SERVICE.into(),
        event_type: facts.event_type.into(),
        message: within_field_limit("message", Some(&format!("{} {}", facts.method, facts.path))),
        sandbox: None,
        user_id: within_field_limit("userId", caller.subject.as_ref()),
        user_email: None,
        client_id: within_field_limit("clientId", caller.client_id.as_ref()),
        jwt_id: None,
        message_id: None,
        reference_id: None,
        trace_id: None,
        ip_address: within_field_limit("ipAddress", facts.source_ip.as_ref()),
        user_agent: within_field_limit("userAgent", facts.user_agent.as_ref()),
        data: Some(data),
        indexed_data: None,
        may_have_more_data: None,
    }
}

/// The properties a read's record of `event_type` can have, as metadata
/// lists them: those of a record built as every read builds one, with every
/// optional fact present. They are the API's own and the same in every
/// tenant, so reads write no sightings for them (a first read in a process
/// then makes no third call in series).
pub fn record_properties(event_type: &'static str) -> Vec<ObservedProperty> {
    let caller = Caller {
        tenant: String::new(),
        scopes: Default::default(),
        subject: Some(String::new()),
        client_id: Some(String::new()),
    };
    let facts = RequestFacts {
        event_type,
        path: String::new(),
        method: String::new(),
        query_string: String::new(),
        user_agent: Some(String::new()),
        referer: Some(String::new()),
        source_ip: Some(String::new()),
    };
    let data = read_record_data(&caller, &facts);
    let record = record_event(&caller, &facts, data, ulid::Ulid::nil(), 1);
    properties_of(&record, true)
}

/// The properties of every read's record, for the event types `wanted`
/// keeps.
pub fn read_record_properties(wanted: impl Fn(&str) -> bool) -> Vec<ObservedProperty> {
    // The same for every request: built once per process.
    static ALL: std::sync::LazyLock<Vec<ObservedProperty>> = std::sync::LazyLock::new(|| {
        crate::routes::read_record_event_types()
            .flat_map(record_properties)
            .collect()
    });
    ALL.iter()
        .filter(|property| wanted(&property.event_type))
        .cloned()
        .collect()
}

/// Whether a tail page keeps an event, per the `selfAudit` parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SelfAuditFilter {
    /// Every event (the default, as Pactflow does).
    Include,
    /// No `audit-api` records at all.
    Exclude,
    /// No `audit-api` records caused by this caller's client (or subject).
    Others,
}

impl SelfAuditFilter {
    pub fn parse(value: Option<&String>) -> Result<Self, ApiError> {
        match value.map(String::as_str) {
            None | Some("include") => Ok(Self::Include),
            Some("exclude") => Ok(Self::Exclude),
            Some("others") => Ok(Self::Others),
            Some(_) => Err(ApiError::bad_request(
                "selfAudit",
                "`selfAudit` is include, exclude or others",
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Include => "include",
            Self::Exclude => "exclude",
            Self::Others => "others",
        }
    }

    pub fn keeps(self, event: &Event, caller: &Caller) -> bool {
        if event.service_name != SELF_AUDIT_SERVICE {
            return true;
        }
        match self {
            Self::Include => true,
            Self::Exclude => false,
            Self::Others => {
                // Compared as the caller's records hold them: cut to the
                // field's limit (an uncut claim of 1100 characters never
                // matched its own records).
                let client = within_field_limit("clientId", caller.client_id.as_ref());
                let subject = within_field_limit("userId", caller.subject.as_ref());
                let same_client = client.is_some() && event.client_id == client;
                let same_subject =
                    client.is_none() && subject.is_some() && event.user_id == subject;
                !(same_client || same_subject)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `selfAudit=others` leaves out the caller's own records however long
    /// its client id or subject (records hold them cut to the field's
    /// limit), and keeps another caller's.
    #[test]
    fn others_leaves_out_the_callers_own_records_whatever_their_length() {
        let facts = RequestFacts {
            event_type: "audit.list",
            path: "/audit".into(),
            method: "GET".into(),
            query_string: String::new(),
            user_agent: None,
            referer: None,
            source_ip: None,
        };
        let caller = |client: Option<String>, subject: Option<String>| Caller {
            tenant: "acme".into(),
            scopes: Default::default(),
            subject,
            client_id: client,
        };
        for length in [10, 1024, 1100, 5000] {
            let by_client = caller(Some("c".repeat(length)), Some("s".into()));
            let by_subject = caller(None, Some("s".repeat(length)));
            for (own, other) in [
                (&by_client, caller(Some("d".repeat(length)), None)),
                (&by_subject, caller(None, Some("t".repeat(length)))),
            ] {
                let record = read_record(own, &facts, ulid::Ulid::new(), 90);
                assert!(!SelfAuditFilter::Others.keeps(&record, own), "{length}");
                assert!(SelfAuditFilter::Others.keeps(&record, &other), "{length}");
            }
        }
    }

    /// Whatever a token or a request carries, a record is an event a
    /// producer could have sent: every field within the field table's
    /// limits (so every query finds it by any field), the whole event
    /// within 64 KiB.
    #[test]
    fn a_record_keeps_every_field_within_the_tables_limits() {
        let long = |n: usize| "S".repeat(n);
        let caller = Caller {
            tenant: "acme".into(),
            scopes: Default::default(),
            subject: Some(long(2100)),
            client_id: Some(long(5000)),
        };
        let facts = RequestFacts {
            event_type: "audit.list",
            path: format!("/audit/{}", long(100_000)),
            method: "GET".into(),
            query_string: long(100_000),
            user_agent: Some(long(250_000)),
            referer: Some(long(100_000)),
            source_ip: Some("192.0.2.1".into()),
        };
        let record = record_event(
            &caller,
            &facts,
            read_record_data(&caller, &facts),
            ulid::Ulid::new(),
            90,
        );
        let as_json = serde_json::to_value(&record).expect("json");
        let parsed = crate::event::NewEvent::parse(
            serde_json::json!({
                "eventType": "x",
                "serviceName": "x",
                "userId": as_json["userId"],
                "clientId": as_json["clientId"],
                "userAgent": as_json["userAgent"],
                "ipAddress": as_json["ipAddress"],
                "message": as_json["message"],
                "data": as_json["data"],
            }),
            "",
        );
        assert!(parsed.is_ok(), "{:?}", parsed.err());
        assert!(serde_json::to_vec(&as_json).expect("bytes").len() < crate::event::MAX_EVENT_BYTES);
        assert_eq!(
            as_json["data"]["subject"],
            long(2100),
            "the whole subject is kept in data"
        );
    }
}
