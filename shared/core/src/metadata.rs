//! What can be queried: the properties seen per tenant, service and event
//! type. Recorded by ingest only when a process sees a combination for the
//! first time, so steady-state ingest adds no writes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::Event;

/// Sightings one store call writes (the store splits them into
/// `BatchWriteItem`s of 25), and how many such calls are in flight at once.
const SIGHTINGS_PER_WRITE: usize = 100;
const CONCURRENT_SIGHTING_WRITES: usize = 4;

/// Most `data` paths recorded per event (deep or wide `data` is cut off here).
const MAX_PROPERTIES_PER_EVENT: usize = 64;
const MAX_DEPTH: usize = 6;
/// Most combinations one process remembers before it stops recording new
/// ones (bounds its memory).
const MAX_REMEMBERED: usize = 100_000;
/// Most `data` and `indexedData` properties one process records for one
/// kind of event (tenant, service, event type): `data` keyed by ids gives
/// every event new names, and would otherwise cost a write per name and
/// fill the process's memory for every tenant.
pub const MAX_PROPERTIES_PER_KIND: usize = 1000;
/// Most properties a metadata answer lists: its read and its answer stay
/// bounded however many were recorded (an answer cut here says
/// `"truncated": true`). A name may take up to 1 KB, so 2000 of them stay
/// well inside Lambda's 6 MB answer.
pub const MAX_LISTED_PROPERTIES: usize = 2000;

/// One observed property of one kind of event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedProperty {
    pub service_name: String,
    pub event_type: String,
    /// As a query field: `userId`, `data.user.role`, `indexedData.region`.
    pub name: String,
    /// JSON type: string, number, boolean, object, array.
    #[serde(rename = "type")]
    pub json_type: String,
}

impl ObservedProperty {
    pub fn target(&self) -> &str {
        if self.name.starts_with("data.") || self.name.starts_with("data[") {
            "data"
        } else if self.name.starts_with("indexedData.") || self.name.starts_with("indexedData[") {
            "indexedData"
        } else {
            "event"
        }
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "boolean",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
        Value::Null => "null",
    }
}

/// The properties of one event: top-level fields, `indexedData` keys, and
/// (when `extended`) the leaf paths of `data`.
pub fn properties_of(event: &Event, extended: bool) -> Vec<ObservedProperty> {
    let mut found: BTreeMap<String, &'static str> = BTreeMap::new();
    let as_json = serde_json::to_value(event).unwrap_or(Value::Null);
    if let Value::Object(map) = &as_json {
        for (key, value) in map {
            match key.as_str() {
                "data" | "indexedData" | "mayHaveMoreData" => {}
                _ => {
                    found.insert(key.clone(), json_type(value));
                }
            }
        }
    }
    if let Some(indexed) = &event.indexed_data {
        for key in indexed.keys() {
            let mut name = "indexedData".to_string();
            crate::json::push_key(&mut name, key);
            found.insert(name, "string");
        }
    }
    // The cap is on `data`'s paths: the top-level fields and `indexedData`
    // (at most 50 keys) are few and always recorded; cutting the sorted
    // whole cut every field that sorts after `data` (`eventType`, `userId`,
    // `indexedData.*`) from an event with wide `data`.
    let mut data_paths: BTreeMap<String, &'static str> = BTreeMap::new();
    if extended {
        if let Some(data) = &event.data {
            walk("data", data, 0, &mut data_paths);
        }
    }
    found
        .into_iter()
        .chain(data_paths.into_iter().take(MAX_PROPERTIES_PER_EVENT))
        .map(|(name, kind)| ObservedProperty {
            service_name: event.service_name.clone(),
            event_type: event.event_type.clone(),
            name,
            json_type: kind.to_string(),
        })
        .collect()
}

fn walk(path: &str, value: &Value, depth: usize, found: &mut BTreeMap<String, &'static str>) {
    match value {
        Value::Object(map) if depth < MAX_DEPTH && !map.is_empty() => {
            for (key, child) in map {
                if found.len() >= MAX_PROPERTIES_PER_EVENT * 2 {
                    return;
                }
                let mut child_path = path.to_string();
                crate::json::push_key(&mut child_path, key);
                walk(&child_path, child, depth + 1, found);
            }
        }
        Value::Null => {}
        other if path != "data" => {
            found.insert(path.to_string(), json_type(other));
        }
        _ => {}
    }
}

/// The combinations this process has already recorded.
#[derive(Default)]
pub struct SeenProperties {
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    sightings: HashSet<(String, ObservedProperty)>,
    /// `data`/`indexedData` properties recorded per (tenant, service, event type).
    per_kind: HashMap<(String, String, String), usize>,
}

impl SeenProperties {
    /// The properties of `events` this process hasn't recorded yet; marks them seen.
    pub fn first_sightings<'a>(
        &self,
        events: impl Iterator<Item = &'a Event>,
        extended: bool,
    ) -> Vec<(String, ObservedProperty)> {
        let Ok(mut seen) = self.seen.lock() else {
            return Vec::new();
        };
        let seen = &mut *seen;
        let mut new = Vec::new();
        for event in events {
            for property in properties_of(event, extended) {
                if seen.sightings.len() >= MAX_REMEMBERED {
                    return new;
                }
                let key = (event.account_id.clone(), property);
                if seen.sightings.contains(&key) {
                    continue;
                }
                if key.1.target() != "event" {
                    let kind = (
                        key.0.clone(),
                        key.1.service_name.clone(),
                        key.1.event_type.clone(),
                    );
                    let recorded = seen.per_kind.entry(kind).or_default();
                    if *recorded >= MAX_PROPERTIES_PER_KIND {
                        continue;
                    }
                    *recorded += 1;
                }
                seen.sightings.insert(key.clone());
                new.push(key);
            }
        }
        new
    }

    /// Writes first sightings, several calls at once, until `deadline`;
    /// what is not written by then, or failed, is forgotten so a later
    /// event retries it. The events are stored already: metadata never
    /// holds their answer past the deadline (a batch of a thousand new
    /// event types took thousands of calls one after another, past the
    /// function's timeout). `write` is the store's `put_properties` (taken
    /// as a function, so metadata does not import the store port, which
    /// imports metadata's types). How many were written.
    pub async fn record<'a, W, Written>(
        &self,
        sightings: &'a [(String, ObservedProperty)],
        deadline: Instant,
        write: W,
    ) -> usize
    where
        W: Fn(&'a [(String, ObservedProperty)]) -> Written,
        Written: std::future::Future<Output = Result<(), crate::error::StoreError>>,
    {
        let chunks: Vec<&[(String, ObservedProperty)]> =
            sightings.chunks(SIGHTINGS_PER_WRITE).collect();
        let mut written = vec![false; chunks.len()];
        let mut failure = None;
        let mut timed_out = false;
        {
            // The futures are made here, not in a stream's closure: one
            // taking a borrowed chunk is not `Send` enough for a handler.
            let pending: Vec<_> = chunks
                .iter()
                .copied()
                .enumerate()
                .map(|(n, chunk)| {
                    let written = write(chunk);
                    async move { (n, written.await) }
                })
                .collect();
            let mut writes = stream::iter(pending).buffer_unordered(CONCURRENT_SIGHTING_WRITES);
            let until = tokio::time::Instant::from_std(deadline);
            loop {
                match tokio::time::timeout_at(until, writes.next()).await {
                    Ok(Some((n, Ok(())))) => written[n] = true,
                    Ok(Some((_, Err(err)))) => failure = Some(err),
                    Ok(None) => break,
                    Err(_) => {
                        timed_out = true;
                        break;
                    }
                }
            }
        }
        let unwritten: Vec<(String, ObservedProperty)> = chunks
            .iter()
            .zip(&written)
            .filter(|(_, done)| !**done)
            .flat_map(|(chunk, _)| chunk.iter().cloned())
            .collect();
        if !unwritten.is_empty() {
            tracing::warn!(
                unwritten = unwritten.len(),
                timed_out,
                error = failure.map(|e| e.to_string()),
                "metadata not all recorded; a later event will retry"
            );
            self.forget(&unwritten);
        }
        sightings.len() - unwritten.len()
    }

    /// Forgets a sighting whose write failed, so a later event retries it.
    pub fn forget(&self, sightings: &[(String, ObservedProperty)]) {
        if let Ok(mut seen) = self.seen.lock() {
            for sighting in sightings {
                if seen.sightings.remove(sighting) && sighting.1.target() != "event" {
                    let kind = (
                        sighting.0.clone(),
                        sighting.1.service_name.clone(),
                        sighting.1.event_type.clone(),
                    );
                    if let Some(recorded) = seen.per_kind.get_mut(&kind) {
                        *recorded = recorded.saturating_sub(1);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wide `data` is cut at `MAX_PROPERTIES_PER_EVENT` paths, and never
    /// cuts a top-level field or an `indexedData` key (which sort after
    /// `data`).
    #[test]
    fn wide_data_never_pushes_out_the_fields_or_indexed_data() {
        let data: serde_json::Map<String, Value> = (0..100)
            .map(|i| (format!("k{i:03}"), Value::from(i)))
            .collect();
        let event: Event = serde_json::from_value(serde_json::json!({
            "cursor": "01JDQ6Z8K4M0Y6P3N2R5T7V9WX", "accountId": "acme",
            "timestamp": "2026-11-22T10:00:00.000Z", "expiresAt": "2027-01-01T00:00:00.000Z",
            "serviceName": "s", "eventType": "e", "userId": "u-1",
            "data": data, "indexedData": {"ix": "v"}
        }))
        .expect("an event");
        let names: Vec<String> = properties_of(&event, true)
            .into_iter()
            .map(|p| p.name)
            .collect();
        for field in [
            "eventType",
            "serviceName",
            "userId",
            "timestamp",
            "indexedData.ix",
        ] {
            assert!(names.iter().any(|n| n == field), "{field} in {names:?}");
        }
        let data_paths = names.iter().filter(|n| n.starts_with("data.")).count();
        assert_eq!(data_paths, MAX_PROPERTIES_PER_EVENT);
    }
}
