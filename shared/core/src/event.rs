//! The audit event: as producers send it, as the trail stores and returns it.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use ulid::Ulid;

use crate::error::ApiError;

/// Most JSON one event may take, as sent.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;
/// Most bytes one ingest request may take.
pub const MAX_REQUEST_BYTES: usize = 6 * 1024 * 1024;
/// Most events one ingest request may carry.
pub const MAX_EVENTS_PER_REQUEST: usize = 1000;
/// Longest accepted string field (ids, names, emails, messages have their own cap).
const MAX_FIELD_CHARS: usize = 1024;
const MAX_MESSAGE_CHARS: usize = 8192;
/// Longest `userId` / `traceId`: they are pivot index keys, `<tenant>#<value>`
/// of at most 2048 bytes. A tenant takes at most 128 bytes and a character at
/// most 4, so any value of this many characters fits every tenant's key.
pub const MAX_PIVOT_CHARS: usize = (MAX_PARTITION_KEY_BYTES - 128 - 1) / 4;
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
    pub data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indexed_data: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub may_have_more_data: Option<bool>,
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

/// A producer's event after validation, before the service assigns its ids.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The tenant named in the event, if any (only platform producers may
    /// name another tenant than their own).
    pub account_id: Option<String>,
    /// The producer's fields, validated; `accountId` removed.
    pub fields: Map<String, Value>,
}

impl NewEvent {
    pub fn message_id(&self) -> Option<&str> {
        self.fields.get("messageId").and_then(Value::as_str)
    }

    /// Validates one event object as sent. `path` prefixes field names in
    /// errors (`events[3].userId`).
    pub fn parse(value: Value, path: &str) -> Result<Self, ApiError> {
        let at = |field: &str| {
            if path.is_empty() {
                field.to_string()
            } else {
                format!("{path}.{field}")
            }
        };
        let Value::Object(mut fields) = value else {
            return Err(ApiError::bad_request(
                if path.is_empty() { "body" } else { path },
                "an event must be a JSON object",
            ));
        };
        let size = serde_json::to_vec(&fields).map(|b| b.len()).unwrap_or(0);
        if size > MAX_EVENT_BYTES {
            return Err(ApiError::PayloadTooLarge(format!(
                "{} is {size} bytes; an event may take at most {MAX_EVENT_BYTES} bytes (64 KiB)",
                if path.is_empty() { "the event" } else { path }
            )));
        }
        let assigned: Vec<&str> = EVENT_FIELDS
            .iter()
            .filter(|f| is_assigned(f) && fields.contains_key(f.name))
            .map(|f| f.name)
            .collect();
        if !assigned.is_empty() {
            return Err(ApiError::bad_request(
                at(assigned[0]),
                format!(
                    "{} assigned by the service and may not be sent: {}",
                    if assigned.len() == 1 {
                        "this field is"
                    } else {
                        "these fields are"
                    },
                    assigned.join(", ")
                ),
            ));
        }
        let unknown: Vec<&String> = fields
            .keys()
            .filter(|k| {
                !EVENT_FIELDS
                    .iter()
                    .any(|f| !is_assigned(f) && f.name == k.as_str())
            })
            .collect();
        if !unknown.is_empty() {
            let names: Vec<&str> = unknown.iter().map(|s| s.as_str()).collect();
            return Err(ApiError::bad_request(
                at(names[0]),
                format!(
                    "unknown field(s): {}; free-form content belongs in `data` (searchable strings in `indexedData`)",
                    names.join(", ")
                ),
            ));
        }
        for (required, max) in EVENT_FIELDS.iter().filter_map(|f| match f.rule {
            FieldRule::RequiredText { max } => Some((f.name, max)),
            _ => None,
        }) {
            match fields.get(required) {
                Some(Value::String(s)) if has_visible_text(s) => {
                    check_length(&at(required), s, max)?
                }
                Some(Value::String(_)) => {
                    return Err(ApiError::bad_request(
                        at(required),
                        format!(
                            "`{required}` may not be empty or only spaces, tabs and line breaks"
                        ),
                    ))
                }
                Some(_) => {
                    return Err(ApiError::bad_request(
                        at(required),
                        format!("`{required}` must be a string"),
                    ))
                }
                None => {
                    return Err(ApiError::bad_request(
                        at(required),
                        format!("`{required}` is required"),
                    ))
                }
            }
        }
        for (field, max) in EVENT_FIELDS.iter().filter_map(|f| match f.rule {
            FieldRule::OptionalText { max } => Some((f.name, max)),
            _ => None,
        }) {
            match fields.get(field) {
                None | Some(Value::Null) => {
                    fields.remove(field);
                }
                Some(Value::String(s)) => {
                    check_length(&at(field), s, max)?;
                    // An empty key would make every keyless retry a duplicate.
                    if field == "messageId" && s.is_empty() {
                        return Err(ApiError::bad_request(
                            at(field),
                            "`messageId` may not be empty",
                        ));
                    }
                }
                Some(_) => {
                    return Err(ApiError::bad_request(
                        at(field),
                        format!("`{field}` must be a string"),
                    ))
                }
            }
        }
        match fields.get("sandbox") {
            None | Some(Value::Bool(_)) => {}
            Some(Value::Null) => {
                fields.remove("sandbox");
            }
            Some(_) => {
                return Err(ApiError::bad_request(
                    at("sandbox"),
                    "`sandbox` must be a boolean",
                ))
            }
        }
        match fields.get("occurredAt") {
            None => {}
            Some(Value::Null) => {
                fields.remove("occurredAt");
            }
            Some(Value::String(s)) => {
                let parsed = DateTime::parse_from_rfc3339(s).map_err(|_| {
                    ApiError::bad_request(
                        at("occurredAt"),
                        "`occurredAt` must be an RFC 3339 time, e.g. 2026-01-31T12:00:00Z",
                    )
                })?;
                fields.insert(
                    "occurredAt".into(),
                    Value::String(format_time(parsed.with_timezone(&Utc))),
                );
            }
            Some(_) => {
                return Err(ApiError::bad_request(
                    at("occurredAt"),
                    "`occurredAt` must be an RFC 3339 time string",
                ))
            }
        }
        match fields.get("indexedData") {
            None => {}
            Some(Value::Null) => {
                fields.remove("indexedData");
            }
            Some(Value::Object(map)) => {
                if map.len() > 50 {
                    return Err(ApiError::bad_request(
                        at("indexedData"),
                        "`indexedData` may hold at most 50 keys",
                    ));
                }
                for (key, value) in map {
                    if key.is_empty() || key.chars().count() > 128 {
                        return Err(ApiError::bad_request(
                            at("indexedData"),
                            "`indexedData` keys must be 1-128 characters",
                        ));
                    }
                    let Value::String(s) = value else {
                        return Err(ApiError::bad_request(
                            format!("{}.{key}", at("indexedData")),
                            "`indexedData` values must be strings",
                        ));
                    };
                    check_length(&format!("{}.{key}", at("indexedData")), s, MAX_FIELD_CHARS)?;
                }
            }
            Some(_) => {
                return Err(ApiError::bad_request(
                    at("indexedData"),
                    "`indexedData` must be an object of strings",
                ))
            }
        }
        if let Some(Value::Null) = fields.get("data") {
            fields.remove("data");
        }
        if let Some(data) = fields.get("data") {
            let mut data_path = at("data");
            check_storable(&mut data_path, data, 1)?;
        }
        let account_id = match fields.remove("accountId") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if crate::auth::is_valid_tenant(&s) => Some(s),
            Some(_) => {
                return Err(ApiError::bad_request(
                    at("accountId"),
                    "`accountId` must be a tenant id (letters, digits, - _ . : @)",
                ))
            }
        };
        Ok(NewEvent { account_id, fields })
    }

    /// The stored event, once the service has assigned its cursor. The
    /// event's `timestamp` is its cursor's time, so a window on `timestamp`
    /// and a read of the cursor range mean exactly the same events. `path`
    /// prefixes field names in errors.
    pub fn into_event(
        self,
        cursor: Ulid,
        account_id: String,
        retention_days: u32,
        path: &str,
    ) -> Result<Event, ApiError> {
        let recorded_at = cursor_time(cursor);
        let mut fields = self.fields;
        fields.insert("cursor".into(), Value::String(cursor.to_string()));
        fields.insert("accountId".into(), Value::String(account_id));
        fields.insert("timestamp".into(), Value::String(format_time(recorded_at)));
        fields.insert(
            "expiresAt".into(),
            Value::String(format_time(
                recorded_at + Duration::days(i64::from(retention_days)),
            )),
        );
        let event: Event = serde_json::from_value(Value::Object(fields)).map_err(|err| {
            tracing::error!(error = %err, "validated event did not convert");
            ApiError::Internal
        })?;
        check_key_sizes(&event, path)?;
        Ok(event)
    }
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

/// What DynamoDB would refuse in `data`, refused here with the path instead:
/// nesting deeper than 32 levels, empty map keys, and numbers outside
/// 1e-130..1e126 in magnitude. (Numbers that can't be kept exactly are
/// refused by the strict JSON reader, which still sees their text.)
fn check_storable(path: &mut String, value: &Value, depth: usize) -> Result<(), ApiError> {
    let too_deep = || {
        ApiError::bad_request(
            path.clone(),
            format!("`{path}` nests lists and objects deeper than {MAX_DATA_DEPTH} levels, the most the table can store"),
        )
    };
    match value {
        Value::Number(n) => {
            let magnitude = n.as_f64().map(f64::abs).unwrap_or(0.0);
            if magnitude != 0.0 && !(1e-130..1e126).contains(&magnitude) {
                return Err(ApiError::bad_request(path.clone(), format!("`{path}` holds {n}, outside the storable range (1e-130 to 1e126); send it as a string")));
            }
            Ok(())
        }
        Value::Array(items) => {
            if depth > MAX_DATA_DEPTH {
                return Err(too_deep());
            }
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                check_storable(path, item, depth + 1)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Object(map) => {
            if depth > MAX_DATA_DEPTH {
                return Err(too_deep());
            }
            for (key, item) in map {
                let len = path.len();
                crate::json::push_key(path, key);
                if key.is_empty() {
                    return Err(ApiError::bad_request(
                        path.clone(),
                        format!("`{path}`: an object key may not be empty"),
                    ));
                }
                check_storable(path, item, depth + 1)?;
                path.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Pivot index keys are `<tenant>#<value>`: DynamoDB refuses one over 2048
/// bytes, so such a value is refused here, naming the field.
fn check_key_sizes(event: &Event, path: &str) -> Result<(), ApiError> {
    for index in crate::store::PIVOT_INDEXES {
        let Some(value) = event.text_field(index.field) else {
            continue;
        };
        let bytes = crate::store::pivot_key(&event.account_id, value).len();
        if bytes > MAX_PARTITION_KEY_BYTES {
            let field = if path.is_empty() {
                index.field.to_string()
            } else {
                format!("{path}.{}", index.field)
            };
            return Err(ApiError::bad_request(
                field.clone(),
                format!("`{field}` is too long to index: with the tenant id it takes {bytes} bytes of UTF-8, and an index key holds at most {MAX_PARTITION_KEY_BYTES}"),
            ));
        }
    }
    Ok(())
}

/// Not empty and not only spaces, tabs and line breaks (the same rule as the
/// OpenAPI document's pattern `[^ \t\n\r]`).
fn has_visible_text(s: &str) -> bool {
    s.chars().any(|c| !matches!(c, ' ' | '\t' | '\n' | '\r'))
}

fn check_length(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.chars().count() > max {
        Err(ApiError::bad_request(
            field,
            format!("`{field}` may be at most {max} characters"),
        ))
    } else {
        Ok(())
    }
}

/// RFC 3339, UTC, millisecond precision: sorts as text.
pub fn format_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The field table and the struct that is stored and returned name the
    /// same fields.
    #[test]
    fn the_field_table_names_every_field_of_the_event() {
        let text = Some(String::from("x"));
        let event = Event {
            cursor: "c".into(),
            account_id: "a".into(),
            organization_id: text.clone(),
            timestamp: "t".into(),
            occurred_at: text.clone(),
            expires_at: "e".into(),
            service_name: "s".into(),
            event_type: "k".into(),
            message: text.clone(),
            sandbox: Some(true),
            user_id: text.clone(),
            user_email: text.clone(),
            client_id: text.clone(),
            jwt_id: text.clone(),
            message_id: text.clone(),
            reference_id: text.clone(),
            trace_id: text.clone(),
            ip_address: text.clone(),
            user_agent: text,
            data: Some(Value::Null),
            indexed_data: Some(BTreeMap::new()),
            may_have_more_data: Some(true),
        };
        let Ok(Value::Object(serialised)) = serde_json::to_value(&event) else {
            panic!("an event serialises to an object");
        };
        let struct_names: std::collections::BTreeSet<&str> =
            serialised.keys().map(String::as_str).collect();
        let table_names: std::collections::BTreeSet<&str> =
            EVENT_FIELDS.iter().map(|f| f.name).collect();
        assert_eq!(table_names.len(), EVENT_FIELDS.len(), "no name twice");
        assert_eq!(struct_names, table_names);
    }
    use serde_json::json;

    fn field_of(err: ApiError) -> String {
        err.field().unwrap_or_default().to_string()
    }

    #[test]
    fn a_minimal_event_is_accepted_and_ids_are_assigned() {
        let parsed =
            NewEvent::parse(json!({"eventType": "user.login", "serviceName": "idp"}), "").unwrap();
        let cursor = Ulid::new();
        let now = cursor_time(cursor);
        let event = parsed.into_event(cursor, "acme".into(), 90, "").unwrap();
        assert_eq!(event.timestamp, format_time(now));
        assert_eq!(event.account_id, "acme");
        assert_eq!(event.expires_at, format_time(now + Duration::days(90)));
        assert!(!event.is_expired(now));
        assert!(event.is_expired(now + Duration::days(91)));
    }

    #[test]
    fn required_fields_unknown_fields_and_types_are_named() {
        let missing = NewEvent::parse(json!({"serviceName": "idp"}), "").unwrap_err();
        assert_eq!(field_of(missing), "eventType");
        let unknown = NewEvent::parse(
            json!({"eventType": "a", "serviceName": "b", "colour": 1}),
            "events[2]",
        )
        .unwrap_err();
        assert_eq!(field_of(unknown.clone()), "events[2].colour");
        assert!(unknown.to_string().contains("colour"));
        let wrong = NewEvent::parse(
            json!({"eventType": "a", "serviceName": "b", "sandbox": "yes"}),
            "",
        )
        .unwrap_err();
        assert_eq!(field_of(wrong), "sandbox");
        let indexed = NewEvent::parse(
            json!({"eventType": "a", "serviceName": "b", "indexedData": {"k": 1}}),
            "",
        )
        .unwrap_err();
        assert_eq!(field_of(indexed), "indexedData.k");
        let time = NewEvent::parse(
            json!({"eventType": "a", "serviceName": "b", "occurredAt": "yesterday"}),
            "",
        )
        .unwrap_err();
        assert_eq!(field_of(time), "occurredAt");
    }

    #[test]
    fn assigned_fields_are_refused() {
        for field in ["cursor", "timestamp", "expiresAt"] {
            let mut body = json!({"eventType": "a", "serviceName": "b"});
            body[field] = json!("x");
            let err = NewEvent::parse(body, "").unwrap_err();
            assert_eq!(err.code(), "invalid_request");
            assert_eq!(field_of(err), field);
        }
    }

    #[test]
    fn unstorable_numbers_are_refused() {
        let tiny = NewEvent::parse(
            json!({"eventType": "a", "serviceName": "b", "data": {"x": [1, 5.7e-224]}}),
            "",
        )
        .unwrap_err();
        assert_eq!(field_of(tiny), "data.x[1]");
        let huge = NewEvent::parse(
            json!({"eventType": "a", "serviceName": "b", "data": 1e200}),
            "",
        )
        .unwrap_err();
        assert_eq!(field_of(huge), "data");
        assert!(NewEvent::parse(
            json!({"eventType": "a", "serviceName": "b", "data": {"x": 0.0, "y": -1.5e100}}),
            ""
        )
        .is_ok());
    }

    #[test]
    fn oversize_events_are_413() {
        let body = json!({"eventType": "a", "serviceName": "b", "data": {"blob": "x".repeat(MAX_EVENT_BYTES)}});
        assert_eq!(
            NewEvent::parse(body, "").unwrap_err().code(),
            "payload_too_large"
        );
    }
}
