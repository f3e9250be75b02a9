//! The audit event: as producers send it, as the trail stores and returns it.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use ulid::Ulid;

use crate::error::ApiError;

/// Most JSON one event may take, measured as the producer's fields are
/// stored: compact, escapes as their characters, numbers as written back,
/// before the service adds its own fields.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;
/// Most bytes one ingest request may take.
pub const MAX_REQUEST_BYTES: usize = 6 * 1024 * 1024;
/// Most events one ingest request may carry.
pub const MAX_EVENTS_PER_REQUEST: usize = 1000;
/// Longest accepted string field (ids, names, emails, messages have their own cap).
const MAX_FIELD_CHARS: usize = 1024;
const MAX_MESSAGE_CHARS: usize = 8192;
/// Longest `userId` / `traceId`: they key pivot postings, `<tenant>#<tag>#<value>`
/// of at most 2048 bytes. A tenant takes at most 128 bytes and a character at
/// most 4, so any value of this many characters fits every tenant's key.
pub const MAX_PIVOT_CHARS: usize = (MAX_PARTITION_KEY_BYTES - 128 - 3) / 4;
/// Longest idempotency key: it becomes part of a DynamoDB key.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 256;

/// An event as the API returns it. Absent optional fields are omitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub cursor: String,
    pub account_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    pub timestamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<String>,
    pub expires_at: String,
    pub service_name: String,
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indexed_data: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub may_have_more_data: Option<bool>,
    /// Last, so that a page can print it from the stored text after the
    /// rest ([`PageEvent`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl Event {
    /// A top-level string field by its JSON name (the pivot fields).
    pub fn text_field(&self, name: &str) -> Option<&str> {
        match name {
            "userId" => self.user_id.as_deref(),
            "traceId" => self.trace_id.as_deref(),
            "eventType" => Some(self.event_type.as_str()),
            "serviceName" => Some(self.service_name.as_str()),
            _ => None,
        }
    }

    /// Past `expiresAt`: hidden from every read, even before TTL removes it.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        DateTime::parse_from_rfc3339(&self.expires_at)
            .map(|at| at.with_timezone(&Utc) <= now)
            .unwrap_or(false)
    }
}

/// How queries compare a field's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    String,
    Time,
    Boolean,
    /// `data.*`: any JSON value.
    Any,
}

impl FieldType {
    pub fn name(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Time => "time",
            FieldType::Boolean => "boolean",
            FieldType::Any => "any",
        }
    }
}

/// How a top-level field is sent and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldRule {
    /// Assigned by the service; a producer that sends it gets a 400.
    Assigned,
    /// Required text with a visible character, at most `max` characters.
    RequiredText { max: usize },
    /// Optional text of at most `max` characters (`null` = absent).
    OptionalText { max: usize },
    /// Sent by producers and checked by its own rule in [`NewEvent::parse`].
    Own,
}

/// One top-level event field.
#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    pub name: &'static str,
    pub rule: FieldRule,
    /// How queries compare it; `None` where only paths into it are queried
    /// (`data`, `indexedData`) or it is never queried (`mayHaveMoreData`).
    pub query_type: Option<FieldType>,
}

const fn field(name: &'static str, rule: FieldRule, query_type: Option<FieldType>) -> FieldSpec {
    FieldSpec {
        name,
        rule,
        query_type,
    }
}

const fn text(name: &'static str, max: usize) -> FieldSpec {
    field(
        name,
        FieldRule::OptionalText { max },
        Some(FieldType::String),
    )
}

/// The event's fields, in the order metadata lists them: the one table that
/// parsing, the query's field list and metadata's `event` target read. (The
/// stored and returned JSON is the [`Event`] struct, whose serde names are
/// checked against this table by a test.)
pub const EVENT_FIELDS: &[FieldSpec] = &[
    field("cursor", FieldRule::Assigned, Some(FieldType::String)),
    field("accountId", FieldRule::Own, Some(FieldType::String)),
    text("organizationId", MAX_FIELD_CHARS),
    field("timestamp", FieldRule::Assigned, Some(FieldType::Time)),
    field("occurredAt", FieldRule::Own, Some(FieldType::Time)),
    field("expiresAt", FieldRule::Assigned, Some(FieldType::Time)),
    field(
        "serviceName",
        FieldRule::RequiredText { max: 256 },
        Some(FieldType::String),
    ),
    field(
        "eventType",
        FieldRule::RequiredText { max: 256 },
        Some(FieldType::String),
    ),
    text("message", MAX_MESSAGE_CHARS),
    field("sandbox", FieldRule::Own, Some(FieldType::Boolean)),
    text("userId", MAX_PIVOT_CHARS),
    text("userEmail", MAX_FIELD_CHARS),
    text("clientId", MAX_FIELD_CHARS),
    text("jwtId", MAX_FIELD_CHARS),
    text("messageId", MAX_IDEMPOTENCY_KEY_CHARS),
    text("referenceId", MAX_FIELD_CHARS),
    text("traceId", MAX_PIVOT_CHARS),
    text("ipAddress", MAX_FIELD_CHARS),
    text("userAgent", MAX_FIELD_CHARS),
    field("data", FieldRule::Own, None),
    field("indexedData", FieldRule::Own, None),
    field("mayHaveMoreData", FieldRule::Assigned, None),
];

/// The top-level fields a query can name, with their types.
pub fn queryable_fields() -> impl Iterator<Item = (&'static str, FieldType)> {
    EVENT_FIELDS
        .iter()
        .filter_map(|f| f.query_type.map(|t| (f.name, t)))
}

fn is_assigned(spec: &FieldSpec) -> bool {
    spec.rule == FieldRule::Assigned
}

/// The time a cursor was drawn at (millisecond precision).
pub fn cursor_time(cursor: Ulid) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(cursor.timestamp_ms() as i64).unwrap_or_default()
}

/// Deepest nesting of lists and maps DynamoDB stores in `data` (`data`
/// itself is the first level). DynamoDB's limit is 32 levels, the item
/// itself counting as the first: both DynamoDB Local and the embedded store
/// refuse 32 nested lists in one attribute and store 31
/// (`infra/tests/limits.rs`).
pub const MAX_DATA_DEPTH: usize = 31;
/// DynamoDB's key size limits, in UTF-8 bytes.
pub const MAX_PARTITION_KEY_BYTES: usize = 2048;
pub const MAX_SORT_KEY_BYTES: usize = 1024;

/// RFC 3339, UTC, millisecond precision: sorts as text.
pub fn format_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A producer's time (`occurredAt`) in UTC with every digit it was sent
/// with: to the millisecond as [`format_time`] writes it, and to the
/// microsecond or nanosecond when it has them, so a query with the value
/// sent finds it (it was cut to the millisecond, and `eq` with the value
/// sent matched nothing).
pub fn format_time_exactly(at: DateTime<Utc>) -> String {
    let nanos = at.timestamp_subsec_nanos();
    let digits = if nanos.is_multiple_of(1_000_000) {
        SecondsFormat::Millis
    } else if nanos.is_multiple_of(1_000) {
        SecondsFormat::Micros
    } else {
        SecondsFormat::Nanos
    };
    at.to_rfc3339_opts(digits, true)
}

/// Whether `text`'s fraction of a second has digits past the nanosecond
/// that are not zero: no time the API keeps holds them, and cutting them
/// would store another instant than the one sent.
pub fn finer_than_nanoseconds(text: &str) -> bool {
    let Some(dot) = text.find('.') else {
        return false;
    };
    text[dot + 1..]
        .chars()
        .take_while(char::is_ascii_digit)
        .skip(9)
        .any(|digit| digit != '0')
}

/// A time as the API takes one (`occurredAt`, query bounds and values,
/// paging marks): RFC 3339 with any offset, `None` unless it names an
/// instant [`format_time`] can write back. So a leap second (`:60`) is
/// refused: chrono keeps it, but it would print as `23:59:60` in UTC, a
/// time most readers refuse (and any minute's `:60` parses). So is a time
/// an offset carries out of the years 0000-9999.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let at = DateTime::parse_from_rfc3339(text).ok()?.with_timezone(&Utc);
    let leap_second = at.timestamp_subsec_nanos() >= 1_000_000_000;
    (!leap_second && (0..=9999).contains(&chrono::Datelike::year(&at))).then_some(at)
}

/// `at`, or the next millisecond when it falls inside one.
pub fn up_to_millisecond(at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match at.timestamp_subsec_nanos() % 1_000_000 {
        0 => Some(at),
        sub_ms => {
            at.checked_add_signed(chrono::Duration::nanoseconds(i64::from(1_000_000 - sub_ms)))
        }
    }
}

/// A time window's bound as the API takes it: [`parse_time`], a bound
/// inside a millisecond taken at the next (events are timed to the
/// millisecond, so the same events either way), still within 0000-9999.
/// The query's `from`/`to` and the CLI's `--from`/`--to` both read it here.
pub fn parse_bound(text: &str) -> Option<DateTime<Utc>> {
    up_to_millisecond(parse_time(text)?).filter(|at| chrono::Datelike::year(at) <= 9999)
}

mod names;
mod page;
mod parse;
pub use names::{
    has_visible_text, is_invisible, names_the_api, visible_text_pattern, INVISIBLE_CHARACTERS,
    SELF_AUDIT_SERVICE,
};
pub use page::PageEvent;
pub use parse::NewEvent;

#[cfg(test)]
mod tests;
