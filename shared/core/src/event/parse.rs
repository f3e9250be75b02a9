//! A producer's event: parsed field by field from the field table, and
//! checked against the table's limits before it is stored.

use super::*;

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
        // Measured as stored (compact, escapes as characters, numbers as
        // written back), so the limit does not depend on how a producer's
        // serialiser spaced or escaped the event.
        let size = serde_json::to_vec(&fields).map(|b| b.len()).unwrap_or(0);
        if size > MAX_EVENT_BYTES {
            return Err(ApiError::PayloadTooLarge {
                field: (!path.is_empty()).then(|| path.to_string()),
                message: format!(
                    "the event is {size} bytes as stored (compact JSON, numbers as written back: 1e19 takes 20 digits); an event may take at most {MAX_EVENT_BYTES} bytes (64 KiB)"
                ),
            });
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
                Some(Value::String(s)) if required == "serviceName" && names_the_api(s) => {
                    return Err(ApiError::bad_request(
                        at(required),
                        format!(
                            "`{SELF_AUDIT_SERVICE}` is the API's own service: its records are written by the API alone"
                        ),
                    ))
                }
                Some(Value::String(s)) if has_visible_text(s) => {
                    check_length(&at(required), s, max)?
                }
                Some(Value::String(_)) => {
                    return Err(ApiError::bad_request(
                        at(required),
                        format!(
                            "`{required}` needs a visible character: not only spaces, line breaks, control characters or zero-width marks"
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
                let invalid = || {
                    ApiError::bad_request(
                        at("occurredAt"),
                        "`occurredAt` must be an RFC 3339 time, e.g. 2026-01-31T12:00:00Z, within the years 0000-9999 in UTC (no leap second: :60 is refused), to the nanosecond at most",
                    )
                };
                // Stored in UTC: an offset must not carry it out of the
                // four-digit years RFC 3339 can write (9999-12-31T23:00-01:00),
                // and a leap second has no UTC time to be written as.
                if super::finer_than_nanoseconds(s) {
                    return Err(invalid());
                }
                let utc = super::parse_time(s).ok_or_else(invalid)?;
                fields.insert("occurredAt".into(), Value::String(format_time_exactly(utc)));
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

/// Pivot postings are keyed `<tenant>#<tag>#<value>`: DynamoDB refuses a
/// key over 2048 bytes, so such a value is refused here, naming the field.
fn check_key_sizes(event: &Event, path: &str) -> Result<(), ApiError> {
    for index in crate::pivot::PIVOT_INDEXES {
        let Some(value) = event.text_field(index.field) else {
            continue;
        };
        let bytes = crate::pivot::pivot_key(&event.account_id, index, value).len();
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
