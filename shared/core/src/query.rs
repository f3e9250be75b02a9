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
use crate::event::queryable_fields;
use crate::store::{PivotIndex, PIVOT_INDEXES};

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

/// Longest field name a condition may use.
const MAX_FIELD_NAME_CHARS: usize = 2048;
/// Most levels a `data` path may name (the table stores 31).
const MAX_PATH_SEGMENTS: usize = 32;

/// The keys of `.a["b c"][0]`; `None` if it is not such a path.
fn parse_segments(mut rest: &str) -> Option<Vec<String>> {
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
            segments.push(key.to_string());
            rest = &after[end..];
        } else if rest.starts_with("[\"") {
            // A JSON string up to its closing quote, then `]`.
            let quoted = &rest[1..];
            let mut stream = serde_json::Deserializer::from_str(quoted).into_iter::<String>();
            let key = stream.next()?.ok()?;
            let used = stream.byte_offset();
            rest = quoted.get(used..)?.strip_prefix(']')?;
            segments.push(key);
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            let digits = &after[..end];
            if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            segments.push(digits.to_string());
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
    pub segments: Vec<String>,
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
                segments: vec![name.into()],
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
                vec![key.to_string()]
            }
            _ => parse_segments(rest)?,
        };
        if keys.is_empty() || (root == "indexedData" && keys.len() != 1) {
            return None;
        }
        let mut segments = vec![root.to_string()];
        segments.extend(keys);
        Some(FieldPath {
            name: name.into(),
            segments,
            field_type,
        })
    }

    fn lookup<'a>(&self, event: &'a Value) -> Option<&'a Value> {
        let mut current = event;
        for segment in &self.segments {
            current = match current {
                Value::Object(map) => map.get(segment)?,
                Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        (!current.is_null()).then_some(current)
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

fn parse_time(field: &str, value: &Value) -> Result<Option<DateTime<Utc>>, ApiError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| {
                ApiError::bad_request(field, format!("`{field}` must be an RFC 3339 time"))
            }),
        _ => Err(ApiError::bad_request(
            field,
            format!("`{field}` must be an RFC 3339 time string"),
        )),
    }
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
        let to = parse_time("to", map.get("to").unwrap_or(&Value::Null))?.unwrap_or(now);
        let from = parse_time("from", map.get("from").unwrap_or(&Value::Null))?
            .unwrap_or(to - Duration::days(DEFAULT_WINDOW_DAYS));
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
            .is_some_and(|s| DateTime::parse_from_rfc3339(s).is_ok()),
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
            _ => wrong(&format!("an array of {expected} values")),
        },
        // `contains` on a `data` array looks for an element of any scalar type.
        Operator::Contains if field.field_type == FieldType::Any && scalar_ok(value) => Ok(()),
        Operator::StartsWith | Operator::Contains if !value.is_string() => wrong("a string value"),
        Operator::StartsWith | Operator::Contains => Ok(()),
        Operator::Gt | Operator::Gte | Operator::Lt | Operator::Lte => {
            let ok = match field.field_type {
                FieldType::Any => value.is_string() || value.is_number(),
                _ => scalar_ok(value),
            };
            if ok {
                Ok(())
            } else {
                wrong(&format!("{expected} value"))
            }
        }
        Operator::Eq | Operator::Ne if scalar_ok(value) => Ok(()),
        Operator::Eq | Operator::Ne => wrong(&format!("{expected} value")),
    }
}

impl Condition {
    pub fn matches(&self, event: &Value) -> bool {
        let found = self.field.lookup(event);
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
            let x = DateTime::parse_from_rfc3339(x).ok()?;
            let y = DateTime::parse_from_rfc3339(y).ok()?;
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

/// Which index a query reads, and with which key values.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// `None`: the tenant's own partition of the base table.
    pub index: Option<&'static PivotIndex>,
    /// The pivot values to read (one index query each); empty for the base table.
    pub values: Vec<String>,
}

/// Most selective first: trace ids and user ids name few events; event
/// types and services many.
const PIVOT_PREFERENCE: &[&str] = &["traceId", "userId", "eventType", "serviceName"];

impl Plan {
    /// Read the tenant's time range and evaluate every condition.
    pub fn whole_range() -> Plan {
        Plan {
            index: None,
            values: Vec::new(),
        }
    }

    pub fn for_query(query: &Query) -> Plan {
        for field in PIVOT_PREFERENCE {
            let candidates = query
                .conditions
                .iter()
                .filter(|c| c.field.segments.len() == 1 && c.field.name == *field);
            let mut best: Option<Vec<String>> = None;
            for condition in candidates {
                let values: Vec<String> = match (condition.operator, &condition.value) {
                    (Operator::Eq, Value::String(s)) => vec![s.clone()],
                    (Operator::In, Value::Array(list)) => list
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect(),
                    _ => continue,
                };
                if best.as_ref().is_none_or(|b| values.len() < b.len()) {
                    best = Some(values);
                }
            }
            if let Some(mut values) = best {
                values.sort();
                values.dedup();
                let index = PIVOT_INDEXES.iter().find(|i| i.field == *field);
                return Plan { index, values };
            }
        }
        Plan {
            index: None,
            values: Vec::new(),
        }
    }
}

/// The opaque continuation of a query: signed, bound to the tenant, the
/// query body and the resolved window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryCursor {
    #[serde(rename = "t")]
    pub tenant: String,
    #[serde(rename = "q")]
    pub fingerprint: String,
    /// Everything at or above this cursor has been considered.
    #[serde(rename = "p")]
    pub position: String,
    #[serde(rename = "f")]
    pub from_ms: i64,
    #[serde(rename = "o")]
    pub to_ms: i64,
}

type HmacSha256 = Hmac<Sha256>;

pub struct CursorSigner {
    key: Vec<u8>,
}

impl CursorSigner {
    pub fn new(key: &[u8]) -> Self {
        Self { key: key.to_vec() }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length.
        HmacSha256::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("hmac accepts any key length"))
    }

    pub fn sign(&self, cursor: &QueryCursor) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(cursor).unwrap_or_default());
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        format!(
            "{payload}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    /// Verifies a cursor from `next` for this tenant and query; 400 otherwise.
    pub fn verify(
        &self,
        token: &str,
        tenant: &str,
        fingerprint: &str,
    ) -> Result<QueryCursor, ApiError> {
        let invalid = || {
            ApiError::bad_request("cursor", "`cursor` is not a cursor this query handed out; take it from `next`, unchanged, with the same query body")
        };
        let (payload, signature) = token.split_once('.').ok_or_else(invalid)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| invalid())?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        mac.verify_slice(&signature).map_err(|_| invalid())?;
        let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid())?;
        let cursor: QueryCursor = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        if cursor.tenant != tenant || cursor.fingerprint != fingerprint {
            return Err(invalid());
        }
        Ok(cursor)
    }
}

/// JSON with object keys sorted, so equal bodies hash equally.
fn canonical_json(value: &Value) -> String {
    fn sort(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut sorted = Map::new();
                for key in keys {
                    sorted.insert(key.clone(), sort(&map[key]));
                }
                Value::Object(sorted)
            }
            Value::Array(items) => Value::Array(items.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    sort(value).to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn query(body: Value) -> Result<Query, ApiError> {
        Query::parse(&body, Utc::now())
    }

    #[test]
    fn defaults_window_to_thirty_days_before_to() {
        let q = query(json!({})).unwrap();
        assert_eq!(q.to - q.from, Duration::days(30));
        let q = query(json!({"to": "2026-01-31T00:00:00Z"})).unwrap();
        assert_eq!(q.from.to_rfc3339(), "2026-01-01T00:00:00+00:00");
        // `from` after `to`: an empty window, as the OpenAPI document allows.
        assert!(
            query(json!({"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"})).is_ok()
        );
    }

    #[test]
    fn bad_conditions_are_named() {
        let cases = [
            (
                json!({"and": [{"field": "colour", "operator": "eq", "value": "x"}]}),
                "colour",
            ),
            (
                json!({"and": [{"field": "userId", "operator": "like", "value": "x"}]}),
                "like",
            ),
            (
                json!({"and": [{"field": "userId", "operator": "eq", "value": 5}]}),
                "userId",
            ),
            (
                json!({"and": [{"field": "sandbox", "operator": "startsWith", "value": "t"}]}),
                "startsWith",
            ),
            (
                json!({"and": [{"field": "userId", "operator": "in", "value": (0..101).map(|i| i.to_string()).collect::<Vec<_>>()}]}),
                "100",
            ),
            (
                json!({"and": [{"field": "timestamp", "operator": "gt", "value": "yesterday"}]}),
                "timestamp",
            ),
        ];
        for (body, named) in cases {
            let err = query(body.clone()).unwrap_err();
            assert_eq!(err.code(), "invalid_request", "{body}");
            assert!(err.to_string().contains(named), "{err} should name {named}");
            assert_eq!(err.field(), Some("and[0]"));
        }
        let many: Vec<Value> = (0..21)
            .map(|_| json!({"field": "userId", "operator": "exists", "value": true}))
            .collect();
        assert_eq!(
            query(json!({"and": many})).unwrap_err().field(),
            Some("and")
        );
    }

    #[test]
    fn every_operator_evaluates() {
        let event = json!({"userId": "u-17", "sandbox": false, "timestamp": "2026-01-02T00:00:00.000Z",
            "data": {"n": 5, "tags": ["a", "b"], "user": {"role": "admin"}}, "indexedData": {"region": "eu-west"}});
        let check = |field: &str, op: &str, value: Value| {
            query(json!({"and": [{"field": field, "operator": op, "value": value}]}))
                .unwrap()
                .matches(&event)
        };
        assert!(check("userId", "eq", json!("u-17")));
        assert!(!check("userId", "eq", json!("u-1")));
        assert!(check("userId", "ne", json!("u-1")));
        assert!(
            check("message", "ne", json!("x")),
            "a missing field is not equal"
        );
        assert!(check("userId", "in", json!(["u-1", "u-17"])));
        assert!(check("userId", "startsWith", json!("u-1")));
        assert!(check("userId", "contains", json!("-1")));
        assert!(check("data.tags", "contains", json!("b")));
        assert!(check("data.user.role", "eq", json!("admin")));
        assert!(check("data.tags.0", "eq", json!("a")));
        assert!(check("indexedData.region", "startsWith", json!("eu")));
        assert!(check("userEmail", "exists", json!(false)));
        assert!(check("data.n", "gt", json!(4)));
        assert!(check("data.n", "gte", json!(5)));
        assert!(!check("data.n", "lt", json!(5)));
        assert!(check("data.n", "lte", json!(5.0)));
        assert!(!check(
            "timestamp",
            "gt",
            json!("2026-01-01T23:00:00-02:00")
        ));
        assert!(check("timestamp", "lt", json!("2026-01-02T01:00:00+00:00")));
        assert!(check("sandbox", "eq", json!(false)));
    }

    #[test]
    fn the_plan_picks_the_most_selective_pivot() {
        let q = query(json!({"and": [
            {"field": "eventType", "operator": "eq", "value": "login"},
            {"field": "userId", "operator": "in", "value": ["b", "a"]},
        ]}))
        .unwrap();
        let plan = Plan::for_query(&q);
        assert_eq!(plan.index.map(|i| i.name), Some("byUserId"));
        assert_eq!(plan.values, vec!["a", "b"]);
        let unindexed =
            query(json!({"and": [{"field": "data.x", "operator": "eq", "value": 1}]})).unwrap();
        assert_eq!(Plan::for_query(&unindexed).index, None);
    }

    #[test]
    fn cursors_are_bound_to_tenant_and_query_and_tamper_proof() {
        let signer = CursorSigner::new(b"key");
        let cursor = QueryCursor {
            tenant: "acme".into(),
            fingerprint: "f1".into(),
            position: "01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
            from_ms: 1,
            to_ms: 2,
        };
        let token = signer.sign(&cursor);
        assert_eq!(signer.verify(&token, "acme", "f1").unwrap(), cursor);
        assert!(signer.verify(&token, "globex", "f1").is_err());
        assert!(signer.verify(&token, "acme", "f2").is_err());
        assert!(CursorSigner::new(b"other")
            .verify(&token, "acme", "f1")
            .is_err());
        let mut tampered = token.clone().into_bytes();
        tampered[3] ^= 1;
        assert!(signer
            .verify(&String::from_utf8_lossy(&tampered), "acme", "f1")
            .is_err());
    }
}
