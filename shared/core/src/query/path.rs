//! A condition's field: a top-level event field, `data.<path>` or
//! `indexedData.<key>`, in the syntax metadata lists names in.

use serde_json::Value;

use crate::event::queryable_fields;
use crate::query::FieldType;

/// Longest field name a condition may use: the longest key an event can
/// hold (it is at most 64 KiB), written as metadata lists it. (It was 2048,
/// and a longer `data` key was stored but could not be queried.) Not more:
/// a name past it must stay well inside a 6 MB body, or the API would
/// answer 413 for a name the contract refuses with a 400 (the contract
/// test generates such names; at 6 x 64 KiB it met a 413).
pub const MAX_FIELD_NAME_CHARS: usize = crate::event::MAX_EVENT_BYTES + 16;
/// Most levels a `data` path may name (the table stores 31).
const MAX_PATH_SEGMENTS: usize = 32;

/// One step of a field path: an object key (`.key`, `["any key"]`) or an
/// array position (`[2]`). Kept apart so `[0]` never names a key "0" and
/// `.0` never names a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// The steps of `.a["b c"][0]`; `None` if it is not such a path.
fn parse_segments(mut rest: &str) -> Option<Vec<Segment>> {
    let mut segments = Vec::new();
    while !rest.is_empty() {
        if segments.len() >= MAX_PATH_SEGMENTS {
            return None;
        }
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let key = &after[..end];
            let plain = !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '@' | '$'));
            if !plain {
                return None;
            }
            segments.push(Segment::Key(key.to_string()));
            rest = &after[end..];
        } else if rest.starts_with("[\"") {
            // A JSON string up to its closing quote, then `]`.
            let quoted = &rest[1..];
            let mut stream = serde_json::Deserializer::from_str(quoted).into_iter::<String>();
            let key = stream.next()?.ok()?;
            let used = stream.byte_offset();
            rest = quoted.get(used..)?.strip_prefix(']')?;
            segments.push(Segment::Key(key));
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            let digits = &after[..end];
            // One name per position: `[01]` is not `[1]` written again.
            let leading_zero = digits.len() > 1 && digits.starts_with('0');
            if digits.is_empty()
                || digits.len() > 9
                || leading_zero
                || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            segments.push(Segment::Index(digits.parse().ok()?));
            rest = &after[end + 1..];
        } else {
            return None;
        }
    }
    Some(segments)
}

/// Where a field's value lives in an event's JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldPath {
    pub name: String,
    /// The root (`userId`, `data`, `indexedData`) first, as a key.
    pub segments: Vec<Segment>,
    pub field_type: FieldType,
}

impl FieldPath {
    /// A top-level field (`userId`), or a path into `data` or `indexedData`:
    /// `.key` for keys of letters, digits and `_-:@$`, `["any key"]` (a JSON
    /// string) for any other key, `[2]` for an array position
    /// (`data.user.role`, `data["k8s.pod"]`, `data.tags[0]`,
    /// `indexedData["display name"]`). Metadata lists names in this syntax.
    pub fn parse(name: &str) -> Option<FieldPath> {
        if let Some((_, field_type)) = queryable_fields().find(|(f, _)| *f == name) {
            return Some(FieldPath {
                name: name.into(),
                segments: vec![Segment::Key(name.into())],
                field_type,
            });
        }
        if name.chars().count() > MAX_FIELD_NAME_CHARS {
            return None;
        }
        let (root, rest, field_type) = if let Some(rest) = name.strip_prefix("data") {
            ("data", rest, FieldType::Any)
        } else if let Some(rest) = name.strip_prefix("indexedData") {
            ("indexedData", rest, FieldType::String)
        } else {
            return None;
        };
        let keys = match (root, rest.strip_prefix('.')) {
            // An indexedData key is one level: `indexedData.k8s.pod` names "k8s.pod".
            ("indexedData", Some(key)) if !key.is_empty() && !key.contains(['[', ']']) => {
                vec![Segment::Key(key.to_string())]
            }
            _ => parse_segments(rest)?,
        };
        // indexedData is a flat map of strings: one key, never a position.
        let indexed_key = matches!(keys.as_slice(), [Segment::Key(_)]);
        if keys.is_empty() || (root == "indexedData" && !indexed_key) {
            return None;
        }
        let mut segments = vec![Segment::Key(root.to_string())];
        segments.extend(keys);
        Some(FieldPath {
            name: name.into(),
            segments,
            field_type,
        })
    }

    /// The value at this path in an event's JSON; `None` when absent or null.
    pub fn value_in<'a>(&self, event: &'a Value) -> Option<&'a Value> {
        let mut current = event;
        for segment in &self.segments {
            current = match (current, segment) {
                (Value::Object(map), Segment::Key(key)) => map.get(key)?,
                (Value::Array(items), Segment::Index(position)) => items.get(*position)?,
                _ => return None,
            };
        }
        (!current.is_null()).then_some(current)
    }
}
