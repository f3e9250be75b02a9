//! The body of `POST /audit/events`: one event or a batch, read strictly,
//! with each defect charged to the event it sits in.

use std::collections::HashMap;

use serde_json::Value;

use crate::error::{defect_error, parse_json_body_lenient, ApiError};
use crate::event::{MAX_EVENTS_PER_REQUEST, MAX_IDEMPOTENCY_KEY_CHARS, MAX_REQUEST_BYTES};

/// The body of `POST /audit/events`, after JSON parsing.
#[derive(Debug)]
pub enum IngestRequest {
    Single {
        event: Value,
        idempotency_key: Option<String>,
    },
    /// Each event, or why it was refused before validation (a duplicate
    /// key or an inexact number inside it).
    Batch {
        events: Vec<Result<Value, ApiError>>,
    },
}

impl IngestRequest {
    /// Sorts a request body into one event or a batch; enforces the request limits.
    pub fn from_body(body: &[u8], idempotency_key: Option<String>) -> Result<Self, ApiError> {
        if body.len() > MAX_REQUEST_BYTES {
            return Err(ApiError::PayloadTooLarge {
                field: None,
                message: format!(
                    "the request is {} bytes; a request may take at most {MAX_REQUEST_BYTES} bytes (6 MB)",
                    body.len()
                ),
            });
        }
        let (value, mut defects) = parse_json_body_lenient(body, "an event or {\"events\":[...]}")?;
        match value {
            Value::Object(mut map) if map.contains_key("events") => {
                // A defect outside every event (`events` given twice, say)
                // is the request's, and says more than any check below.
                let (in_events, outside): (Vec<_>, Vec<_>) = defects
                    .into_iter()
                    .partition(|defect| batch_index(&defect.path).is_some());
                if let Some(defect) = outside.into_iter().next() {
                    return Err(defect_error(defect));
                }
                if map.len() > 1 {
                    let extra: Vec<&str> = map
                        .keys()
                        .map(String::as_str)
                        .filter(|k| *k != "events")
                        .collect();
                    return Err(ApiError::bad_request(
                        extra[0],
                        format!(
                            "a batch body holds only `events`; unknown field(s): {}",
                            extra.join(", ")
                        ),
                    ));
                }
                if idempotency_key.is_some() {
                    return Err(ApiError::bad_request("Idempotency-Key", "the Idempotency-Key header applies to a single event; give each event of a batch a `messageId`"));
                }
                let Some(Value::Array(events)) = map.remove("events") else {
                    return Err(ApiError::bad_request("events", "`events` must be an array"));
                };
                if events.is_empty() {
                    return Err(ApiError::bad_request("events", "`events` is empty"));
                }
                if events.len() > MAX_EVENTS_PER_REQUEST {
                    return Err(ApiError::PayloadTooLarge {
                        field: Some("events".into()),
                        message: format!(
                            "the batch holds {} events; a request may carry at most {MAX_EVENTS_PER_REQUEST}",
                            events.len()
                        ),
                    });
                }
                // A defect inside one event refuses that event alone.
                let mut refused: HashMap<usize, ApiError> = HashMap::new();
                for defect in in_events {
                    match batch_index(&defect.path) {
                        Some(index) if index < events.len() => {
                            refused.entry(index).or_insert_with(|| defect_error(defect));
                        }
                        _ => return Err(defect_error(defect)),
                    }
                }
                let events = events
                    .into_iter()
                    .enumerate()
                    .map(|(index, event)| match refused.remove(&index) {
                        Some(err) => Err(err),
                        None => Ok(event),
                    })
                    .collect();
                Ok(IngestRequest::Batch { events })
            }
            Value::Object(_) => {
                if let Some(defect) = defects.into_iter().next() {
                    return Err(defect_error(defect));
                }
                if let Some(key) = &idempotency_key {
                    if key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS {
                        return Err(ApiError::bad_request("Idempotency-Key", format!("the Idempotency-Key header must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} characters")));
                    }
                }
                Ok(IngestRequest::Single {
                    event: value,
                    idempotency_key,
                })
            }
            // A body whose own keys can't be read is null with a defect.
            _ if !defects.is_empty() => Err(defect_error(defects.swap_remove(0))),
            _ => Err(ApiError::bad_request(
                "body",
                "the body must be an event object or {\"events\":[...]}",
            )),
        }
    }
}

/// The event a defect path such as `events[3].data.n` sits in.
fn batch_index(path: &str) -> Option<usize> {
    let rest = path.strip_prefix("events[")?;
    let (digits, _) = rest.split_once(']')?;
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(events: &[&str]) -> Vec<Result<Value, ApiError>> {
        let body = format!(r#"{{"events":[{}]}}"#, events.join(","));
        match IngestRequest::from_body(body.as_bytes(), None) {
            Ok(IngestRequest::Batch { events }) => events,
            other => panic!("{body}: {other:?}"),
        }
    }

    fn field(err: &ApiError) -> String {
        serde_json::to_value(err).unwrap()["field"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Every kind of value that reads as JSON but can't be kept refuses the
    /// event it sits in, wherever that is in the batch, and no other.
    #[test]
    fn a_defect_inside_one_event_refuses_that_event_alone() {
        let good = r#"{"eventType":"a","serviceName":"s"}"#;
        let defective = [
            (r#"{"eventType":"\ud800","serviceName":"s"}"#, "eventType"),
            (
                r#"{"eventType":"a","serviceName":"s","message":"x\udc00"}"#,
                "message",
            ),
            (
                r#"{"eventType":"a","serviceName":"s","message":"\udc00\ud800"}"#,
                "message",
            ),
            (
                r#"{"eventType":"a","serviceName":"s","data":{"\ud83d":1}}"#,
                "data",
            ),
            (
                r#"{"eventType":"a","serviceName":"s","data":{"l":["ok","\uDBFF"]}}"#,
                "data.l[1]",
            ),
            (
                r#"{"eventType":"a","serviceName":"s","data":{"k":1,"k":2}}"#,
                "data.k",
            ),
            (
                r#"{"eventType":"a","serviceName":"s","data":{"n":1e400}}"#,
                "data.n",
            ),
            (
                r#"{"eventType":"a","eventType":"b","serviceName":"s"}"#,
                "eventType",
            ),
        ];
        for (event, path) in defective {
            for at in 0..3 {
                let mut events = vec![good; 3];
                events[at] = event;
                let read = batch(&events);
                for (index, result) in read.iter().enumerate() {
                    if index == at {
                        let err = result.as_ref().expect_err(event);
                        assert_eq!(field(err), format!("events[{at}].{path}"), "{event}");
                        assert!(err.to_string().contains(&format!("events[{at}]")), "{err}");
                    } else {
                        assert!(result.is_ok(), "{event} at {at} refused event {index}");
                    }
                }
            }
        }
    }

    /// A defect outside every event is the request's: it is named before
    /// anything else is judged of the batch.
    #[test]
    fn a_defect_outside_the_events_refuses_the_request_by_name() {
        let good = r#"{"eventType":"a","serviceName":"s"}"#;
        for (body, expected_field, says) in [
            (
                format!(r#"{{"events":[],"events":[{good}]}}"#),
                "events",
                "given twice",
            ),
            (
                format!(r#"{{"events":[{good}],"events":[]}}"#),
                "events",
                "given twice",
            ),
            (
                format!(r#"{{"events":[{good}],"\ud800":1}}"#),
                "body",
                "surrogate",
            ),
            (r#""\udfff""#.to_string(), "body", "surrogate"),
        ] {
            let err = IngestRequest::from_body(body.as_bytes(), None).expect_err(&body);
            assert_eq!(field(&err), expected_field, "{body}: {err}");
            assert!(err.to_string().contains(says), "{body}: {err}");
        }
        // A lone surrogate in a single event is that event's 400.
        let err = IngestRequest::from_body(br#"{"eventType":"\ud800","serviceName":"s"}"#, None)
            .expect_err("refused");
        assert_eq!(field(&err), "eventType");
    }
}
