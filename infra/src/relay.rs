//! The local stream relay: reads the store's stream through the real
//! DynamoDB Streams API, feeds each batch to the `stream` function's handler
//! as the Lambda event source mapping would (`reader.rs`), and delivers the
//! entries to local subscribers (NDJSON on stdout, HTTP POST: here).

mod reader;
pub use reader::{lambda_record, streams_client, Relay, MAX_RETRY_ATTEMPTS, MAX_RETRY_PAUSE};

use std::collections::HashMap;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use audit_core::publish::{BusEntry, Publisher};
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum Subscriber {
    Stdout,
    Http(String),
}

impl std::str::FromStr for Subscriber {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "stdout" => Ok(Subscriber::Stdout),
            url if url.starts_with("http://") || url.starts_with("https://") => {
                Ok(Subscriber::Http(url.to_string()))
            }
            other => Err(format!(
                "a subscriber is `stdout` or an http(s) URL, not `{other}`"
            )),
        }
    }
}

/// The local stand-in for the template's `StreamFailureQueue`: what the
/// stream mapping and EventBridge give up on goes there instead of being
/// dropped. One JSON line per record, appended to a file (and logged), or
/// only logged when there is no file.
#[derive(Debug, Clone, Default)]
pub struct DeadLetters {
    path: Option<PathBuf>,
}

impl DeadLetters {
    pub fn to_file(path: impl Into<PathBuf>) -> Self {
        Self {
            path: Some(path.into()),
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Keeps one record: `reason` says why it was given up on.
    pub fn keep(&self, reason: &str, record: Value) {
        let line = json!({
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "reason": reason,
            "record": record,
        });
        let Some(path) = &self.path else {
            // No file: the log line is where it is kept.
            tracing::error!(reason, record = %line, "a stream record was given up on");
            return;
        };
        tracing::error!(reason, file = %path.display(), "a stream record was given up on; it is kept with the dead letters");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut file| writeln!(file, "{line}"));
        if let Err(err) = written {
            // The record is in the log line above, so it is not lost.
            tracing::error!(error = %err, record = %line, "could not write the dead letter");
        }
    }
}

/// How a subscriber's answer is taken, as EventBridge takes an API
/// destination's: 401, 407, 409, 429 and 5xx (and no answer at all) are
/// retried; any other status below 200 or from 300 up is final.
fn retried(status: reqwest::StatusCode) -> bool {
    matches!(status.as_u16(), 401 | 407 | 409 | 429) || status.is_server_error()
}

/// Delivers entries as EventBridge would hand them to a rule target.
pub struct LocalPublisher {
    subscribers: Vec<Subscriber>,
    http: reqwest::Client,
    dead_letters: DeadLetters,
    /// The records whose entry a subscriber could not take for now (a
    /// retried status, or no answer) at its last delivery: EventBridge
    /// would keep retrying it for a day, so the relay does not count such a
    /// failure against the record.
    out_for: Mutex<HashSet<String>>,
    /// For a record some subscriber is still out for, the subscribers (by
    /// position) that have taken its entry, or refused it for good. Each
    /// EventBridge target retries on its own, so a retry skips them.
    taken_by: Mutex<HashMap<String, HashSet<usize>>>,
    /// Whether stdout was found closed (said once).
    stdout_gone: std::sync::atomic::AtomicBool,
}

/// How long a subscriber may take to answer, as an EventBridge API
/// destination allows (5 s); then it is out, and the entry is retried.
const SUBSCRIBER_TIMEOUT: Duration = Duration::from_secs(5);

impl LocalPublisher {
    pub fn new(subscribers: Vec<Subscriber>) -> Self {
        Self {
            subscribers,
            http: reqwest::Client::builder()
                .timeout(SUBSCRIBER_TIMEOUT)
                .build()
                .unwrap_or_default(),
            dead_letters: DeadLetters::default(),
            out_for: Mutex::default(),
            taken_by: Mutex::default(),
            stdout_gone: Default::default(),
        }
    }

    /// Where entries a subscriber refuses for good are kept.
    pub fn with_dead_letters(mut self, dead_letters: DeadLetters) -> Self {
        self.dead_letters = dead_letters;
        self
    }

    /// Whether any of these records is undelivered because a subscriber
    /// was out at its last delivery.
    pub fn out_for_any(&self, records: &[String]) -> bool {
        self.out_for
            .lock()
            .is_ok_and(|out| records.iter().any(|record| out.contains(record)))
    }
}

/// The envelope EventBridge wraps a detail in, as JSON text. The detail is
/// embedded byte for byte as the stream function made it.
pub fn envelope(entry: &BusEntry) -> String {
    #[derive(serde::Serialize)]
    struct Envelope<'a> {
        version: &'a str,
        id: String,
        #[serde(rename = "detail-type")]
        detail_type: &'a str,
        source: &'a str,
        account: &'a str,
        time: String,
        region: &'a str,
        resources: [&'a str; 0],
        detail: &'a serde_json::value::RawValue,
    }
    // The stream function always makes the detail from JSON; `null` if not.
    let Ok(detail) = serde_json::value::RawValue::from_string(entry.detail.clone())
        .or_else(|_| serde_json::value::RawValue::from_string("null".into()))
    else {
        return String::new();
    };
    serde_json::to_string(&Envelope {
        version: "0",
        id: ulid::Ulid::new().to_string(),
        detail_type: &entry.detail_type,
        source: &entry.source,
        account: "000000000000",
        time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        region: "local",
        resources: [],
        detail: &detail,
    })
    .unwrap_or_default()
}

#[async_trait]
impl Publisher for LocalPublisher {
    async fn publish(&self, entries: &[BusEntry]) -> Result<Vec<bool>, String> {
        let mut accepted = Vec::with_capacity(entries.len());
        for entry in entries {
            let body = envelope(entry);
            let (mut ok, mut out) = (true, false);
            let mut taken = self
                .taken_by
                .lock()
                .ok()
                .and_then(|mut taken_by| taken_by.remove(&entry.record_id))
                .unwrap_or_default();
            for (position, subscriber) in self.subscribers.iter().enumerate() {
                if taken.contains(&position) {
                    continue;
                }
                match subscriber {
                    Subscriber::Stdout => {
                        // `println!` panicked the relay when the reader of
                        // `serve | jq` exited; a closed stdout has nobody to
                        // deliver to, so its entries are dropped, said once.
                        let mut out = std::io::stdout().lock();
                        if let Err(err) = writeln!(out, "{body}").and_then(|()| out.flush()) {
                            if !self
                                .stdout_gone
                                .swap(true, std::sync::atomic::Ordering::Relaxed)
                            {
                                tracing::warn!(error = %err, "stdout is closed: the stdout subscriber's entries are dropped");
                            }
                        }
                        taken.insert(position);
                    }
                    Subscriber::Http(url) => {
                        let answer = self
                            .http
                            .post(url)
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()
                            .await
                            .map(|response| response.status());
                        match answer {
                            Ok(status) if status.is_success() => {
                                taken.insert(position);
                            }
                            Ok(status) if !retried(status) => {
                                taken.insert(position);
                                // Final, as EventBridge takes it: the entry
                                // goes to the dead letters, and the bus has
                                // taken it (nothing is sent again).
                                self.dead_letters.keep(
                                    &format!("subscriber {url} refused the entry with HTTP {status}, which is not retried"),
                                    serde_json::from_str(&body).unwrap_or(Value::Null),
                                );
                            }
                            _ => {
                                out = true;
                                ok = false;
                            }
                        }
                    }
                }
            }
            if let Ok(mut out_for) = self.out_for.lock() {
                if out {
                    out_for.insert(entry.record_id.clone());
                } else {
                    out_for.remove(&entry.record_id);
                }
            }
            if !ok {
                if let Ok(mut taken_by) = self.taken_by.lock() {
                    taken_by.insert(entry.record_id.clone(), taken);
                }
            }
            accepted.push(ok);
        }
        Ok(accepted)
    }
}
