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

/// Characters that show nothing, as inclusive ranges: controls, every kind
/// of space and line break, and every character Unicode calls default
/// ignorable (zero-width, joining, filler and direction marks, variation
/// selectors, tags; DerivedCoreProperties.txt, `Default_Ignorable_Code_Point`)
/// with the other format controls that show nothing alone (interlinear
/// annotation, Egyptian hieroglyph, shorthand and musical format controls).
/// A required name needs a character outside them; the OpenAPI document's
/// `Name` pattern is built from this table (a test holds it to it).
pub const INVISIBLE_CHARACTERS: &[(char, char)] = &[
    ('\u{0}', ' '),
    ('\u{7f}', '\u{a0}'),
    ('\u{ad}', '\u{ad}'),
    // combining grapheme joiner, Arabic letter mark, Hangul fillers,
    // Khmer inherent vowels, Mongolian vowel separator
    ('\u{34f}', '\u{34f}'),
    ('\u{61c}', '\u{61c}'),
    ('\u{115f}', '\u{1160}'),
    ('\u{1680}', '\u{1680}'),
    ('\u{17b4}', '\u{17b5}'),
    // Mongolian free variation selectors and vowel separator
    ('\u{180b}', '\u{180f}'),
    ('\u{2000}', '\u{200f}'),
    ('\u{2028}', '\u{202f}'),
    ('\u{205f}', '\u{206f}'),
    // Braille blank
    ('\u{2800}', '\u{2800}'),
    ('\u{3000}', '\u{3000}'),
    ('\u{3164}', '\u{3164}'),
    // variation selectors
    ('\u{fe00}', '\u{fe0f}'),
    ('\u{feff}', '\u{feff}'),
    ('\u{ffa0}', '\u{ffa0}'),
    // reserved default ignorables, interlinear annotation controls
    ('\u{fff0}', '\u{fffb}'),
    // Egyptian hieroglyph format controls
    ('\u{13430}', '\u{1343f}'),
    // shorthand format controls
    ('\u{1bca0}', '\u{1bca3}'),
    // musical symbol format controls
    ('\u{1d173}', '\u{1d17a}'),
    // tags, variation selectors supplement, reserved default ignorables
    ('\u{e0000}', '\u{e0fff}'),
];

/// The JSON Schema pattern of a name with a visible character. Characters
/// past U+FFFF are written as themselves (openapi.yaml writes them as YAML
/// `\U` escapes): `\uXXXX` holds four digits, and Python's `re`
/// (schemathesis) does not read `\u{...}`. So the pattern needs a regex
/// engine that reads code points: Python, Rust's `regex`, ECMA-262 with
/// the `u` flag (ajv's default); ECMA-262 without it refuses the class.
pub fn visible_text_pattern() -> String {
    let shown = |c: char| {
        if u32::from(c) > 0xffff {
            c.to_string()
        } else {
            format!("\\u{:04x}", u32::from(c))
        }
    };
    let ranges: String = INVISIBLE_CHARACTERS
        .iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                shown(lo)
            } else {
                format!("{}-{}", shown(lo), shown(hi))
            }
        })
        .collect();
    format!("[^{ranges}]")
}

/// The `serviceName` of every self-audit record. Producers may not use it
/// (a reader leaving the API's records out would not see theirs, and they
/// would pass for the API's), nor anything that reads as it: other case,
/// spaces or invisible marks, another dash.
pub const SELF_AUDIT_SERVICE: &str = "audit-api";

/// Reads as [`SELF_AUDIT_SERVICE`] to a person or a case-blind filter:
/// in any case; in compatibility forms (full-width `ａｕｄｉｔ`,
/// mathematical `𝐚𝐮𝐝𝐢𝐭`, circled `ⓐⓤⓓⓘⓣ`); with accents (`audit-apí`);
/// in letters of other scripts that are drawn the same (Cyrillic `а`: the
/// confusables skeleton of Unicode's UTS #39); with its two words apart by
/// any dash or connector (Unicode's Pd and Pc: `‐`, `⸺`, `_`, `‿`), space
/// or invisible mark (`audit api`, `Audit - Api`, `audit\u{3164}api`), or
/// with spaces and invisible marks inside a word (`aud\u{200a}it-api`).
/// `auditapi` reads as another word.
pub fn names_the_api(name: &str) -> bool {
    // Lower case before the skeleton (`Audit-Api`), and after it: the
    // skeleton draws a capital I as `l`, so `AUDlT-AP1` reads as
    // `AUDIT-API` only when the letters are drawn first.
    [Case::LowerFirst, Case::DrawnFirst]
        .into_iter()
        .any(|case| {
            let (words, squeezed) = reading(name, case);
            [
                SELF_AUDIT_SERVICE.to_string(),
                SELF_AUDIT_SERVICE.to_uppercase(),
            ]
            .iter()
            .any(|api| {
                let (api, _) = reading(api, case);
                words == api || squeezed == api
            })
        })
}

/// When a reading lowers the case: before or after each character is drawn.
#[derive(Clone, Copy)]
enum Case {
    LowerFirst,
    DrawnFirst,
}

/// What a name reads as: its words split at every dash, connector, space
/// or invisible mark (`audit api`), and its text with those dropped and
/// dashes kept (`aud it-api`), each folded as [`names_the_api`] says.
fn reading(name: &str, case: Case) -> (String, String) {
    use unicode_general_category::{get_general_category, GeneralCategory};
    use unicode_normalization::char::is_combining_mark;
    use unicode_normalization::UnicodeNormalization;
    // Compatibility forms to their letters, accents dropped, lower case,
    // then (below) each character to the one it is drawn as. Blanks
    // first: normalising turns some (U+3164) into other marks.
    let letters: String = name
        .chars()
        .map(|c| if is_invisible(c) { ' ' } else { c })
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(|c| match case {
            Case::LowerFirst => c.to_lowercase().collect::<Vec<_>>(),
            Case::DrawnFirst => vec![c],
        })
        .collect();
    let dash = |c: char| {
        c == '\u{2212}'
            || matches!(
                get_general_category(c),
                GeneralCategory::DashPunctuation | GeneralCategory::ConnectorPunctuation
            )
    };
    let mut words: Vec<String> = vec![String::new()];
    let mut squeezed = String::new();
    for c in letters.chars() {
        // Told apart before the skeleton, which draws some dashes as
        // letters (`—` as `ー`).
        if dash(c) {
            words.push(String::new());
            squeezed.push('-');
        } else if c.is_whitespace() || is_invisible(c) {
            words.push(String::new());
        } else {
            let mut buffer = [0u8; 4];
            let drawn =
                unicode_security::confusable_detection::skeleton(c.encode_utf8(&mut buffer))
                    .filter(|c| !is_combining_mark(*c))
                    .flat_map(char::to_lowercase);
            for d in drawn {
                if let Some(word) = words.last_mut() {
                    word.push(d);
                }
                squeezed.push(d);
            }
        }
    }
    words.retain(|word| !word.is_empty());
    (words.join("-"), squeezed)
}

/// Shows nothing: in [`INVISIBLE_CHARACTERS`].
pub fn is_invisible(c: char) -> bool {
    INVISIBLE_CHARACTERS
        .iter()
        .any(|&(lo, hi)| (lo..=hi).contains(&c))
}

/// Holds a character that shows something.
pub fn has_visible_text(s: &str) -> bool {
    s.chars().any(|c| !is_invisible(c))
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
