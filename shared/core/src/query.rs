//! `POST /audit/query`: conditions, their validation and evaluation, the
//! plan (which index to read), and the signed continuation cursor.

use std::cmp::Ordering;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::pivot::{PivotIndex, PIVOT_INDEXES};

pub const MAX_CONDITIONS: usize = 20;
pub const MAX_IN_VALUES: usize = 100;
pub const DEFAULT_WINDOW_DAYS: i64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Operator {
    Eq,
    Ne,
    In,
    StartsWith,
    Contains,
    Exists,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Operator {
    pub const ALL: &'static [Operator] = &[
        Operator::Eq,
        Operator::Ne,
        Operator::In,
        Operator::StartsWith,
        Operator::Contains,
        Operator::Exists,
        Operator::Gt,
        Operator::Gte,
        Operator::Lt,
        Operator::Lte,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Operator::Eq => "eq",
            Operator::Ne => "ne",
            Operator::In => "in",
            Operator::StartsWith => "startsWith",
            Operator::Contains => "contains",
            Operator::Exists => "exists",
            Operator::Gt => "gt",
            Operator::Gte => "gte",
            Operator::Lt => "lt",
            Operator::Lte => "lte",
        }
    }

    fn parse(name: &str) -> Option<Operator> {
        Operator::ALL.iter().copied().find(|op| op.name() == name)
    }
}

pub use crate::event::FieldType;

impl FieldType {
    /// The operators that make sense for the type.
    pub fn operators(self) -> &'static [Operator] {
        use Operator::*;
        match self {
            FieldType::String => &[Eq, Ne, In, StartsWith, Contains, Exists, Gt, Gte, Lt, Lte],
            FieldType::Time => &[Eq, Ne, In, Exists, Gt, Gte, Lt, Lte],
            FieldType::Boolean => &[Eq, Ne, Exists],
            FieldType::Any => Operator::ALL,
        }
    }
}

/// The operators that match anything for a value of a JSON type under
/// `data` or `indexedData` (as metadata lists them): order and `in` on
/// numbers, `contains` on arrays, `startsWith` and `contains` on strings.
pub fn operators_for_json_type(json_type: &str) -> &'static [Operator] {
    use Operator::*;
    match json_type {
        "boolean" => &[Eq, Ne, In, Exists],
        "number" => &[Eq, Ne, In, Exists, Gt, Gte, Lt, Lte],
        "array" => &[Contains, Exists],
        "object" => &[Exists],
        _ => FieldType::String.operators(),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub field: FieldPath,
    pub operator: Operator,
    pub value: Value,
}

/// A validated query: conditions and the time window.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub conditions: Vec<Condition>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Hash of the body as sent, binding continuation cursors to it.
    pub fingerprint: String,
}

fn condition_error(index: usize, message: String) -> ApiError {
    ApiError::bad_request(format!("and[{index}]"), message)
}

/// A window bound. Events are timed to the millisecond, so a bound inside a
/// millisecond is taken at the next one (`from` takes events at or after
/// it, `to` those before it: the same events either way), and the window
/// the answer echoes is the one evaluated. A bound must be a time RFC 3339
/// can write in UTC (years 0000-9999), as every echoed time is.
fn parse_time(field: &str, value: &Value) -> Result<Option<DateTime<Utc>>, ApiError> {
    let refused = || {
        ApiError::bad_request(
            field,
            format!("`{field}` must be an RFC 3339 time within the years 0000-9999 in UTC (no leap second)"),
        )
    };
    match value {
        Value::Null => Ok(None),
        Value::String(s) => crate::event::parse_bound(s).map(Some).ok_or_else(refused),
        _ => Err(ApiError::bad_request(
            field,
            format!("`{field}` must be an RFC 3339 time string"),
        )),
    }
}

/// The earliest time a window may start: 0000-01-01T00:00:00Z.
fn earliest() -> DateTime<Utc> {
    DateTime::from_timestamp(-62_167_219_200, 0).unwrap_or_default()
}

impl Query {
    /// Validates a query body. `now` fills in the default window.
    pub fn parse(body: &Value, now: DateTime<Utc>) -> Result<Query, ApiError> {
        let Value::Object(map) = body else {
            return Err(ApiError::bad_request(
                "body",
                "the body must be an object {\"and\":[...], \"from\", \"to\"}",
            ));
        };
        if let Some(unknown) = map
            .keys()
            .find(|k| !["and", "from", "to"].contains(&k.as_str()))
        {
            return Err(ApiError::bad_request(
                unknown.clone(),
                format!("unknown field `{unknown}`; a query has `and`, `from`, `to`"),
            ));
        }
        // Left out, `to` is now, at a millisecond as every bound is.
        let to = match parse_time("to", map.get("to").unwrap_or(&Value::Null))? {
            Some(to) => to,
            None => crate::event::up_to_millisecond(now).unwrap_or(now),
        };
        let from = parse_time("from", map.get("from").unwrap_or(&Value::Null))?
            .unwrap_or_else(|| (to - Duration::days(DEFAULT_WINDOW_DAYS)).max(earliest()));
        // `from` at or after `to` is an empty window, not an error.
        let raw_conditions = match map.get("and") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list.clone(),
            Some(_) => {
                return Err(ApiError::bad_request(
                    "and",
                    "`and` must be an array of conditions",
                ))
            }
        };
        if raw_conditions.len() > MAX_CONDITIONS {
            return Err(ApiError::bad_request(
                "and",
                format!("at most {MAX_CONDITIONS} conditions"),
            ));
        }
        let conditions = raw_conditions
            .iter()
            .enumerate()
            .map(|(i, c)| parse_condition(i, c))
            .collect::<Result<Vec<_>, _>>()?;
        let fingerprint = hex(&Sha256::digest(canonical_json(body).as_bytes())[..16]);
        Ok(Query {
            conditions,
            from,
            to,
            fingerprint,
        })
    }

    pub fn matches(&self, event: &Value) -> bool {
        self.conditions.iter().all(|c| c.matches(event))
    }
}

fn parse_condition(index: usize, raw: &Value) -> Result<Condition, ApiError> {
    let Value::Object(map) = raw else {
        return Err(condition_error(
            index,
            "a condition is {\"field\", \"operator\", \"value\"}".into(),
        ));
    };
    if let Some(unknown) = map
        .keys()
        .find(|k| !["field", "operator", "value"].contains(&k.as_str()))
    {
        return Err(condition_error(
            index,
            format!("unknown key `{unknown}` in a condition"),
        ));
    }
    let field_name = map
        .get("field")
        .and_then(Value::as_str)
        .ok_or_else(|| condition_error(index, "`field` is required".into()))?;
    if field_name.chars().count() > MAX_FIELD_NAME_CHARS {
        return Err(condition_error(
            index,
            format!("`field` is longer than {MAX_FIELD_NAME_CHARS} characters: no event holds such a path"),
        ));
    }
    let field = FieldPath::parse(field_name).ok_or_else(|| {
        condition_error(index, format!("unknown field `{field_name}`: use a top-level event field, data.<path> or indexedData.<key>"))
    })?;
    let operator_name = map
        .get("operator")
        .and_then(Value::as_str)
        .ok_or_else(|| condition_error(index, "`operator` is required".into()))?;
    let operator = Operator::parse(operator_name).ok_or_else(|| {
        let known: Vec<&str> = Operator::ALL.iter().map(|o| o.name()).collect();
        condition_error(
            index,
            format!(
                "unknown operator `{operator_name}` (one of {})",
                known.join(", ")
            ),
        )
    })?;
    if !field.field_type.operators().contains(&operator) {
        return Err(condition_error(
            index,
            format!(
                "operator `{operator_name}` does not apply to `{field_name}` ({})",
                field.field_type.name()
            ),
        ));
    }
    let value = map.get("value").cloned().unwrap_or(Value::Null);
    check_value(index, &field, operator, &value)?;
    Ok(Condition {
        field,
        operator,
        value,
    })
}

fn check_value(
    index: usize,
    field: &FieldPath,
    operator: Operator,
    value: &Value,
) -> Result<(), ApiError> {
    let scalar_ok = |v: &Value| match field.field_type {
        FieldType::String => v.is_string(),
        FieldType::Time => v
            .as_str()
            .is_some_and(|s| crate::event::parse_time(s).is_some()),
        FieldType::Boolean => v.is_boolean(),
        FieldType::Any => v.is_string() || v.is_number() || v.is_boolean(),
    };
    let expected = match field.field_type {
        FieldType::String => "a string",
        FieldType::Time => "an RFC 3339 time",
        FieldType::Boolean => "a boolean",
        FieldType::Any => "a string, number or boolean",
    };
    let wrong = |what: &str| {
        Err(condition_error(
            index,
            format!("`{}` with `{}` needs {what}", field.name, operator.name()),
        ))
    };
    match operator {
        Operator::Exists if !value.is_boolean() => wrong("a boolean value"),
        Operator::Exists => Ok(()),
        Operator::In => match value {
            Value::Array(list) if list.is_empty() => wrong("a non-empty array"),
            Value::Array(list) if list.len() > MAX_IN_VALUES => Err(condition_error(
                index,
                format!("`in` takes at most {MAX_IN_VALUES} values"),
            )),
            Value::Array(list) if list.iter().all(scalar_ok) => Ok(()),
            _ => wrong(&format!("an array whose every value is {expected}")),
        },
        // `contains` on a `data` array looks for an element of any scalar type.
        Operator::Contains if field.field_type == FieldType::Any => {
            if scalar_ok(value) {
                Ok(())
            } else {
                wrong("a string, number or boolean value")
            }
        }
        Operator::StartsWith | Operator::Contains if !value.is_string() => wrong("a string value"),
        Operator::StartsWith | Operator::Contains => Ok(()),
        Operator::Gt | Operator::Gte | Operator::Lt | Operator::Lte => {
            let ok = match field.field_type {
                FieldType::Any => value.is_string() || value.is_number(),
                _ => scalar_ok(value),
            };
            match field.field_type {
                _ if ok => Ok(()),
                // Booleans have no order.
                FieldType::Any => wrong("a string or number value"),
                _ => wrong(&format!("{expected} value")),
            }
        }
        Operator::Eq | Operator::Ne if scalar_ok(value) => Ok(()),
        Operator::Eq | Operator::Ne => wrong(&format!("{expected} value")),
    }
}

impl Condition {
    pub fn matches(&self, event: &Value) -> bool {
        let found = self.field.value_in(event);
        let time = self.field.field_type == FieldType::Time;
        let equal = |a: &Value, b: &Value| compare(a, b, time) == Some(Ordering::Equal);
        let ordered = |wanted: &[Ordering]| {
            found
                .and_then(|v| compare(v, &self.value, time))
                .is_some_and(|o| wanted.contains(&o))
        };
        match self.operator {
            Operator::Exists => found.is_some() == self.value.as_bool().unwrap_or(true),
            Operator::Eq => found.is_some_and(|v| equal(v, &self.value)),
            // A missing field is "not equal" too.
            Operator::Ne => !found.is_some_and(|v| equal(v, &self.value)),
            Operator::In => found.is_some_and(|v| {
                self.value
                    .as_array()
                    .is_some_and(|l| l.iter().any(|x| equal(v, x)))
            }),
            Operator::StartsWith => match (found, self.value.as_str()) {
                (Some(Value::String(s)), Some(prefix)) => s.starts_with(prefix),
                _ => false,
            },
            Operator::Contains => match (found, &self.value) {
                (Some(Value::String(s)), Value::String(part)) => s.contains(part.as_str()),
                (Some(Value::Array(items)), wanted) => items.iter().any(|i| equal(i, wanted)),
                _ => false,
            },
            Operator::Gt => ordered(&[Ordering::Greater]),
            Operator::Gte => ordered(&[Ordering::Greater, Ordering::Equal]),
            Operator::Lt => ordered(&[Ordering::Less]),
            Operator::Lte => ordered(&[Ordering::Less, Ordering::Equal]),
        }
    }
}

/// How a stored value compares with a condition's value; `None` when they
/// don't compare (different JSON types, or a time field holding a non-time).
/// Semantics by field type, the same on every plan:
/// - time fields (`timestamp`, `occurredAt`, `expiresAt`): as instants;
/// - strings everywhere else: exactly, by Unicode code point (an index
///   read matches exact strings, so evaluation must too);
/// - numbers: by value (integers exactly, others as doubles);
/// - booleans: equal or not.
fn compare(found: &Value, wanted: &Value, time: bool) -> Option<Ordering> {
    match (found, wanted) {
        (Value::String(x), Value::String(y)) if time => {
            let x = crate::event::parse_time(x)?;
            let y = crate::event::parse_time(y)?;
            Some(x.cmp(&y))
        }
        (Value::String(x), Value::String(y)) => Some(x.as_str().cmp(y.as_str())),
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y),
        (Value::Bool(x), Value::Bool(y)) if x == y => Some(Ordering::Equal),
        _ => None,
    }
}

fn compare_numbers(x: &serde_json::Number, y: &serde_json::Number) -> Option<Ordering> {
    if let (Some(a), Some(b)) = (x.as_i64(), y.as_i64()) {
        return Some(a.cmp(&b));
    }
    if let (Some(a), Some(b)) = (x.as_u64(), y.as_u64()) {
        return Some(a.cmp(&b));
    }
    x.as_f64()?.partial_cmp(&y.as_f64()?)
}

mod continuation;
mod path;
mod plan;
use continuation::{canonical_json, hex};
pub use continuation::{CursorSigner, QueryCursor};
pub use path::{FieldPath, Segment, MAX_FIELD_NAME_CHARS};
pub use plan::Plan;

#[cfg(test)]
mod tests;
