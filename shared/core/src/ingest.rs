//! Ingest: validate what producers send, assign ids, store durably, and
//! answer per item.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use futures::stream::{self, StreamExt};
use serde::Serialize;
use serde_json::Value;

use crate::auth::{Caller, SCOPE_PLATFORM, SCOPE_WRITE};
use crate::config::Config;
use crate::cursor::CursorGenerator;
use crate::error::{ApiError, StoreError};
use crate::event::{Event, NewEvent};
use crate::integrity::seal::DirtyMarks;
use crate::metadata::SeenProperties;
use crate::settings::RetentionCache;
use crate::store::{EventStore, IdempotencyKey, IdempotentPut};

mod request;
pub use request::IngestRequest;

/// BatchWriteItem's limit.
const BATCH_WRITE_SIZE: usize = 25;
/// Keyed events per store call: one transaction's worth (two actions each).
const KEYED_WRITE_SIZE: usize = 50;
/// Concurrent store calls per request.
const WRITE_CONCURRENCY: usize = 8;

/// The outcome for one event of a request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "camelCase")]
pub enum ItemResult {
    #[serde(rename_all = "camelCase")]
    Stored {
        cursor: String,
        timestamp: String,
        expires_at: String,
    },
    #[serde(rename_all = "camelCase")]
    Duplicate {
        cursor: String,
        timestamp: String,
        expires_at: String,
    },
    /// The producer's fault; retrying the same event will fail again.
    Refused { error: ApiError },
    /// The table did not confirm it in time; retry it. A write cut off by a
    /// timeout may still land, so only a retry with a `messageId` is safe.
    Failed { error: ApiError },
}

#[derive(Debug, Clone, Serialize)]
pub struct BatchSummary {
    pub stored: usize,
    pub duplicates: usize,
    pub refused: usize,
    pub failed: usize,
}

pub struct IngestService<S> {
    store: Arc<S>,
    cursors: CursorGenerator,
    config: Config,
    retention: RetentionCache<S>,
    seen: SeenProperties,
    marks: DirtyMarks,
}

/// An event ready to write, with where its result goes.
struct Pending {
    index: usize,
    /// Where the event sits in the request, for errors (`events[3]`, or `body`).
    path: String,
    event: Event,
    key: Option<IdempotencyKey>,
}

impl<S: EventStore> IngestService<S> {
    pub fn new(store: Arc<S>, config: Config) -> Self {
        let config_interval = config.seal_interval;
        let retention = RetentionCache::new(
            Arc::clone(&store),
            config.default_retention_days,
            config.retention_cache,
        );
        Self {
            store,
            cursors: CursorGenerator::default(),
            config,
            retention,
            seen: SeenProperties::default(),
            marks: DirtyMarks::new(config_interval),
        }
    }

    /// Stores a single-event request's event (`Idempotency-Key`: `key`).
    pub async fn ingest_one(
        &self,
        caller: &Caller,
        event: Value,
        key: Option<String>,
    ) -> Result<ItemResult, ApiError> {
        let mut results = self.ingest(caller, vec![Ok(event)], key, false).await?;
        results.pop().ok_or(ApiError::Internal)
    }

    /// Stores a batch's events; one result per event, in order. Each
    /// event's errors name it `events[i]`, a batch of one too.
    pub async fn ingest_batch(
        &self,
        caller: &Caller,
        events: Vec<Result<Value, ApiError>>,
    ) -> Result<Vec<ItemResult>, ApiError> {
        self.ingest(caller, events, None, true).await
    }

    async fn ingest(
        &self,
        caller: &Caller,
        events: Vec<Result<Value, ApiError>>,
        single_key: Option<String>,
        batch: bool,
    ) -> Result<Vec<ItemResult>, ApiError> {
        caller.require(SCOPE_WRITE)?;
        let started = Instant::now();
        let deadline = started + self.config.write_deadline;
        let mut results: Vec<Option<ItemResult>> = vec![None; events.len()];
        let mut pending = Vec::new();
        // (tenant, key) -> index of the first event that uses it
        let mut first_with_key: HashMap<(String, String), usize> = HashMap::new();
        let mut repeats: Vec<(usize, usize)> = Vec::new();

        for (index, value) in events.into_iter().enumerate() {
            let path = if batch {
                format!("events[{index}]")
            } else {
                String::new()
            };
            let parsed = value
                .and_then(|value| NewEvent::parse(value, &path))
                .and_then(|event| {
                    let tenant = self.tenant_for(caller, event.account_id.as_deref(), &path)?;
                    Ok((event, tenant))
                });
            let (event, tenant) = match parsed {
                Ok(ok) => ok,
                Err(err) => {
                    results[index] = Some(refused(&err));
                    continue;
                }
            };
            let sent_key = match (single_key.as_deref(), event.message_id()) {
                (Some(header), Some(message_id)) if header != message_id => {
                    let err = ApiError::bad_request(
                        "messageId",
                        "`messageId` and the Idempotency-Key header differ",
                    );
                    results[index] = Some(refused(&err));
                    continue;
                }
                (Some(header), _) => Some(header.to_string()),
                (None, message_id) => message_id.map(str::to_string),
            };
            // A platform producer writing into another tenant keys its
            // events apart from that tenant's own writers.
            let key = sent_key.map(|key| IdempotencyKey {
                key,
                producer: (tenant != caller.tenant).then(|| caller.tenant.clone()),
            });
            if let Some(key) = &key {
                if let Some(first) = first_with_key.get(&(tenant.clone(), key.key.clone())) {
                    repeats.push((index, *first));
                    continue;
                }
                first_with_key.insert((tenant.clone(), key.key.clone()), index);
            }
            let cursor = self.cursors.next();
            // Nothing is written before this loop ends, so failing here changes nothing.
            let retention = self
                .retention
                .retention_days(&tenant)
                .await
                .map_err(ApiError::from)?;
            match event.into_event(cursor, tenant, retention, &path) {
                Ok(event) => pending.push(Pending {
                    index,
                    path: if batch { path } else { "body".into() },
                    event,
                    key,
                }),
                Err(err) => results[index] = Some(refused(&err)),
            }
        }

        // Every tenant written to is marked for sealing, alongside the
        // writes (not before them: a mark must not eat the write deadline).
        // An event is sealed only once the settle horizon, which exceeds
        // any write, has passed it, by when its mark is down too.
        let tenants: std::collections::BTreeSet<String> =
            pending.iter().map(|p| p.event.account_id.clone()).collect();
        let marks = async {
            for tenant in &tenants {
                self.marks.before_write(&*self.store, tenant).await;
            }
        };
        let (keyed, fresh): (Vec<Pending>, Vec<Pending>) =
            pending.into_iter().partition(|p| p.key.is_some());
        let ((), outcomes) = futures::join!(marks, self.write(keyed, fresh, deadline));
        // Only what was stored is seen: a refused event names no property.
        let sightings = self.seen.first_sightings(
            outcomes
                .iter()
                .filter(|(_, outcome)| matches!(outcome, ItemResult::Stored { .. }))
                .map(|(p, _)| &p.event),
            self.config.metadata_extended,
        );
        if !sightings.is_empty() {
            // First sightings only: steady-state ingest writes no metadata.
            self.seen
                .record(&sightings, deadline, |chunk| {
                    self.store.put_properties(chunk)
                })
                .await;
        }
        for (p, outcome) in outcomes {
            results[p.index] = Some(outcome);
        }
        for (index, first) in repeats {
            results[index] = Some(match &results[first] {
                Some(ItemResult::Stored {
                    cursor,
                    timestamp,
                    expires_at,
                })
                | Some(ItemResult::Duplicate {
                    cursor,
                    timestamp,
                    expires_at,
                }) => ItemResult::Duplicate {
                    cursor: cursor.clone(),
                    timestamp: timestamp.clone(),
                    expires_at: expires_at.clone(),
                },
                Some(other) => other.clone(),
                None => failed(&StoreError::Unavailable("not attempted".into())),
            });
        }
        tracing::info!(
            events = results.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "ingest finished"
        );
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| failed(&StoreError::Unavailable("not attempted".into()))))
            .collect())
    }

    /// Writes the events; hands each back with its outcome.
    async fn write(
        &self,
        keyed: Vec<Pending>,
        fresh: Vec<Pending>,
        deadline: Instant,
    ) -> Vec<(Pending, ItemResult)> {
        let store = &self.store;
        let single_fresh = fresh.len() == 1 && keyed.is_empty();
        let mut outcomes = Vec::new();
        if single_fresh {
            // One event: a conditional put, so even a colliding cursor can't overwrite.
            for p in fresh {
                let result = store.put_event(&p.event, deadline).await;
                let outcome = outcome_of(&p, result);
                outcomes.push((p, outcome));
            }
        } else {
            let batch_outcomes: Vec<Vec<(Pending, ItemResult)>> =
                stream::iter(chunk(fresh, BATCH_WRITE_SIZE))
                    .map(|chunk| async move {
                        let events: Vec<Event> = chunk.iter().map(|p| p.event.clone()).collect();
                        let results = store.put_events(&events, deadline).await;
                        chunk
                            .into_iter()
                            .zip(results)
                            .map(|(p, r)| {
                                let outcome = outcome_of(&p, r);
                                (p, outcome)
                            })
                            .collect::<Vec<_>>()
                    })
                    .buffer_unordered(WRITE_CONCURRENCY)
                    .collect()
                    .await;
            outcomes.extend(batch_outcomes.into_iter().flatten());
        }
        let keyed_outcomes: Vec<Vec<(Pending, ItemResult)>> =
            stream::iter(chunk(keyed, KEYED_WRITE_SIZE))
                .map(|group| async move {
                    let events: Vec<(Event, IdempotencyKey)> = group
                        .iter()
                        .filter_map(|p| Some((p.event.clone(), p.key.clone()?)))
                        .collect();
                    let results = store.put_events_once(&events, deadline).await;
                    group
                        .into_iter()
                        .zip(results)
                        .map(|(p, result)| {
                            let outcome = match result {
                                Ok(IdempotentPut::Stored) => outcome_of(&p, Ok(())),
                                Ok(IdempotentPut::Duplicate {
                                    cursor,
                                    timestamp,
                                    expires_at,
                                }) => ItemResult::Duplicate {
                                    cursor,
                                    timestamp,
                                    expires_at,
                                },
                                Err(err) => outcome_of(&p, Err(err)),
                            };
                            (p, outcome)
                        })
                        .collect::<Vec<_>>()
                })
                .buffer_unordered(WRITE_CONCURRENCY)
                .collect()
                .await;
        let keyed_outcomes = keyed_outcomes.into_iter().flatten();
        outcomes.extend(keyed_outcomes);
        outcomes
    }

    /// The tenant an event is written to. Only platform producers may name another tenant.
    fn tenant_for(
        &self,
        caller: &Caller,
        named: Option<&str>,
        path: &str,
    ) -> Result<String, ApiError> {
        match named {
            None => Ok(caller.tenant.clone()),
            Some(tenant) if tenant == caller.tenant => Ok(caller.tenant.clone()),
            Some(tenant) if caller.has_scope(SCOPE_PLATFORM) => Ok(tenant.to_string()),
            Some(_) => Err(ApiError::Forbidden {
                field: Some(if path.is_empty() {
                    "accountId".to_string()
                } else {
                    format!("{path}.accountId")
                }),
                message: format!(
                    "a tenant token may only write to its own tenant; naming another `accountId` needs the `{SCOPE_PLATFORM}` scope"
                ),
            }),
        }
    }
}

fn outcome_of(pending: &Pending, result: Result<(), StoreError>) -> ItemResult {
    let event = &pending.event;
    match result {
        Ok(()) => ItemResult::Stored {
            cursor: event.cursor.clone(),
            timestamp: event.timestamp.clone(),
            expires_at: event.expires_at.clone(),
        },
        // DynamoDB refused this item alone (the store isolates it): the
        // producer's event can't be stored as it is, so retrying won't help.
        Err(StoreError::Rejected(reason)) => {
            tracing::warn!(%reason, cursor = %event.cursor, "the table refused an event");
            refused(&ApiError::bad_request(
                pending.path.clone(),
                "the table refused this event as it is (a limit the validation does not know); change it before sending it again",
            ))
        }
        Err(err) => {
            tracing::warn!(error = %err, cursor = %event.cursor, "event not stored");
            failed(&err)
        }
    }
}

fn refused(err: &ApiError) -> ItemResult {
    ItemResult::Refused { error: err.clone() }
}

/// Not stored for a reason that is not the event's: retrying may succeed.
fn failed(_err: &StoreError) -> ItemResult {
    ItemResult::Failed {
        error: ApiError::Unavailable {
            retry_after_seconds: 1,
        },
    }
}

fn chunk<T>(items: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut chunks = Vec::new();
    let mut current = Vec::with_capacity(size);
    for item in items {
        current.push(item);
        if current.len() == size {
            chunks.push(std::mem::replace(&mut current, Vec::with_capacity(size)));
        }
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// Counts per status, for the batch response.
pub fn summarize(results: &[ItemResult]) -> BatchSummary {
    let mut summary = BatchSummary {
        stored: 0,
        duplicates: 0,
        refused: 0,
        failed: 0,
    };
    for result in results {
        match result {
            ItemResult::Stored { .. } => summary.stored += 1,
            ItemResult::Duplicate { .. } => summary.duplicates += 1,
            ItemResult::Refused { .. } => summary.refused += 1,
            ItemResult::Failed { .. } => summary.failed += 1,
        }
    }
    summary
}
