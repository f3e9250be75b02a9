//! The verifier: from events, the log's entry records, its checkpoints and a
//! trusted verifier key, the status of every event and every checkpoint.
//! Pure computation; `audit verify` feeds it from files or from the API.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use ulid::Ulid;

use super::merkle::{Hash, RootBuilder};
use super::note::{Checkpoint, NoteVerifier};
use super::{decode_hash, encode_hash, event_leaf_hash, EntryView};
use crate::event::Event;

/// What the verifier says of one event (or of one sealed leaf).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventStatus {
    /// Its leaf is in the log and matches.
    Verified,
    /// Its leaf is in the log and does not match: the event was changed.
    Altered,
    /// A sealed leaf whose event is absent before its `expiresAt`.
    Missing,
    /// A sealed leaf whose event is absent after its `expiresAt`: retention.
    Expired,
    /// Newer than the log's last leaf: not sealed yet.
    Unsealed,
    /// Within the sealed range but no leaf: inserted behind the API.
    Forged,
}

impl EventStatus {
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Altered | Self::Missing | Self::Forged)
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventFinding {
    pub cursor: String,
    pub status: EventStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaf_index: Option<u64>,
}

/// A problem with a checkpoint or with the log as a whole.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogFinding {
    /// `bad_signature`, `root_mismatch`, `truncated`, `rolled_back`,
    /// `out_of_order`, `wrong_origin`, `bad_entry`.
    pub problem: &'static str,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tree_size: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub events: Vec<EventFinding>,
    pub log: Vec<LogFinding>,
    pub counts: BTreeMap<String, u64>,
    /// The largest tree a verified checkpoint covers.
    pub verified_tree_size: u64,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.log.is_empty() && !self.events.iter().any(|e| e.status.is_failure())
    }
}

/// What the verifier is given.
pub struct Evidence<'a> {
    pub key: &'a NoteVerifier,
    /// `<origin>/<tenant>` every checkpoint must carry (None: any).
    pub origin: Option<&'a str>,
    /// The log's entry records, in leaf order.
    pub entries: &'a [EntryView],
    /// The log's own checkpoints (signed notes).
    pub checkpoints: &'a [String],
    /// Checkpoints the user holds from elsewhere (the bus, a SIEM): the log
    /// must still contain them.
    pub trusted: &'a [String],
    /// Milliseconds since the epoch, for `expiresAt`.
    pub now_ms: i64,
}

type Sizes<'a> = std::iter::Peekable<std::collections::btree_map::Iter<'a, u64, Vec<Checkpoint>>>;

/// Checks the checkpoints of the tree `builder` has reached.
fn check_roots(builder: &RootBuilder, report: &mut Report, sizes: &mut Sizes) {
    while let Some((size, checkpoints)) = sizes.peek() {
        if **size != builder.size() {
            break;
        }
        let root = builder.root();
        for checkpoint in checkpoints.iter() {
            if checkpoint.root == root {
                report.verified_tree_size = report.verified_tree_size.max(**size);
            } else {
                report.log.push(LogFinding {
                    problem: "root_mismatch",
                    detail: format!(
                        "the checkpoint of {} at {} names root {}, the log's leaves give {}",
                        size,
                        checkpoint.timestamp,
                        encode_hash(&checkpoint.root),
                        encode_hash(&root)
                    ),
                    tree_size: Some(**size),
                });
            }
        }
        sizes.next();
    }
}

/// Verifies `events` (any order) against the evidence.
pub fn verify(evidence: &Evidence, events: impl IntoIterator<Item = Event>) -> Report {
    let mut report = Report::default();
    let mut by_size: BTreeMap<u64, Vec<Checkpoint>> = BTreeMap::new();
    let mut served = 0u64;
    let mut held = 0u64;
    let notes = evidence
        .checkpoints
        .iter()
        .map(|n| (n, false))
        .chain(evidence.trusted.iter().map(|n| (n, true)));
    for (note, is_trusted) in notes {
        match evidence.key.open(note) {
            Ok(checkpoint) => {
                if evidence.origin.is_some_and(|o| o != checkpoint.origin) {
                    report.log.push(LogFinding {
                        problem: "wrong_origin",
                        detail: format!("a checkpoint of {} is not this log's", checkpoint.origin),
                        tree_size: Some(checkpoint.size),
                    });
                    continue;
                }
                if is_trusted {
                    held = held.max(checkpoint.size);
                } else {
                    served = served.max(checkpoint.size);
                }
                by_size.entry(checkpoint.size).or_default().push(checkpoint);
            }
            Err(err) => report.log.push(LogFinding {
                problem: "bad_signature",
                detail: format!(
                    "{err}: {}",
                    note.lines().take(2).collect::<Vec<_>>().join(" ")
                ),
                tree_size: note.lines().nth(1).and_then(|l| l.parse().ok()),
            }),
        }
    }
    // Every checkpoint's root must be the root of that many leaves of the
    // one sequence: that is consistency between all of them at once.
    let mut builder = RootBuilder::default();
    let mut leaves: Vec<(Ulid, Hash, i64)> = Vec::with_capacity(evidence.entries.len());
    let mut previous: Option<Ulid> = None;
    let mut sizes = by_size.iter().peekable();
    check_roots(&builder, &mut report, &mut sizes);
    for (position, entry) in evidence.entries.iter().enumerate() {
        let parsed = (
            Ulid::from_string(&entry.cursor).ok(),
            decode_hash(&entry.leaf_hash),
            chrono::DateTime::parse_from_rfc3339(&entry.expires_at).ok(),
        );
        let (Some(cursor), Some(hash), Some(expires)) = parsed else {
            report.log.push(LogFinding {
                problem: "bad_entry",
                detail: format!("entry record {position} is malformed"),
                tree_size: None,
            });
            continue;
        };
        if entry.leaf_index != position as u64 || previous.is_some_and(|p| p >= cursor) {
            report.log.push(LogFinding {
                problem: "out_of_order",
                detail: format!("entry record {position} ({cursor}) is out of order"),
                tree_size: None,
            });
        }
        previous = Some(cursor);
        builder.push(hash);
        leaves.push((cursor, hash, expires.timestamp_millis()));
        check_roots(&builder, &mut report, &mut sizes);
    }
    for (size, checkpoints) in sizes {
        for checkpoint in checkpoints {
            report.log.push(LogFinding {
                problem: "truncated",
                detail: format!(
                    "a checkpoint of {} leaves (at {}) covers more than the log's {} leaves: the newest were removed or the log was rolled back",
                    size, checkpoint.timestamp, builder.size()
                ),
                tree_size: Some(*size),
            });
        }
    }
    if held > served {
        report.log.push(LogFinding {
            problem: "rolled_back",
            detail: format!(
                "the log's newest checkpoint is of {served} leaves, but you hold one of {held}: it was rolled back"
            ),
            tree_size: Some(held),
        });
    }
    // The sealed range is what the largest verified checkpoint covers.
    let covered = report.verified_tree_size as usize;
    let last_sealed = covered
        .checked_sub(1)
        .and_then(|i| leaves.get(i))
        .map(|(cursor, _, _)| *cursor);
    let mut present: HashMap<Ulid, Event> = HashMap::new();
    let mut unreadable = Vec::new();
    for event in events {
        match Ulid::from_string(&event.cursor) {
            Ok(cursor) => {
                present.insert(cursor, event);
            }
            Err(_) => unreadable.push(event.cursor),
        }
    }
    for (index, (cursor, hash, expires_ms)) in leaves.iter().enumerate().take(covered) {
        let status = match present.remove(cursor) {
            Some(event) if event_leaf_hash(&event) == *hash => EventStatus::Verified,
            Some(_) => EventStatus::Altered,
            None if *expires_ms <= evidence.now_ms => EventStatus::Expired,
            None => EventStatus::Missing,
        };
        report.events.push(EventFinding {
            cursor: cursor.to_string(),
            status,
            leaf_index: Some(index as u64),
        });
    }
    let mut rest: Vec<Ulid> = present.into_keys().collect();
    rest.sort();
    for cursor in rest {
        let status = match last_sealed {
            Some(last) if cursor <= last => EventStatus::Forged,
            _ => EventStatus::Unsealed,
        };
        report.events.push(EventFinding {
            cursor: cursor.to_string(),
            status,
            leaf_index: None,
        });
    }
    for cursor in unreadable {
        report.events.push(EventFinding {
            cursor,
            status: EventStatus::Forged,
            leaf_index: None,
        });
    }
    for finding in &report.events {
        let name = serde_json::to_value(finding.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        *report.counts.entry(name).or_default() += 1;
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::note::{Checkpoint, NoteSigner};

    fn event(i: u64) -> Event {
        serde_json::from_value(serde_json::json!({
            "cursor": ulid::Ulid::from_parts(1_700_000_000_000 + i, u128::from(i)).to_string(),
            "accountId": "t", "timestamp": "2026-11-27T09:00:00.000Z",
            "expiresAt": "2099-01-01T00:00:00.000Z", "serviceName": "billing",
            "eventType": "invoice.paid", "userId": format!("u-{}", i % 50),
            "data": {"n": i, "path": "/v1/invoices", "pad": "x".repeat(700)},
        }))
        .unwrap()
    }

    /// Events verified per second on this thread (a measurement, not a
    /// target: `cargo test --release -p audit-core -- --ignored --nocapture
    /// verifier_throughput`; `audit-bench integrity` reports the same).
    #[test]
    #[ignore]
    fn verifier_throughput() {
        let count = 100_000u64;
        let signer = NoteSigner::from_secret("bench", "bench");
        let mut builder = RootBuilder::default();
        let mut entries = Vec::new();
        let events: Vec<Event> = (0..count).map(event).collect();
        for (i, e) in events.iter().enumerate() {
            let leaf = event_leaf_hash(e);
            builder.push(leaf);
            entries.push(EntryView {
                leaf_index: i as u64,
                cursor: e.cursor.clone(),
                expires_at: e.expires_at.clone(),
                leaf_hash: encode_hash(&leaf),
            });
        }
        let note = signer.sign(&Checkpoint {
            origin: "bench/t".into(),
            size: count,
            root: builder.root(),
            timestamp: "2026-11-27T09:00:00.000Z".into(),
        });
        let key = signer.verifier();
        let started = std::time::Instant::now();
        let report = verify(
            &Evidence {
                key: &key,
                origin: None,
                entries: &entries,
                checkpoints: std::slice::from_ref(&note),
                trusted: &[],
                now_ms: 0,
            },
            events,
        );
        let rate = count as f64 / started.elapsed().as_secs_f64();
        assert!(report.ok());
        assert_eq!(report.counts.get("verified"), Some(&count));
        println!("verifier: {rate:.0} events/s on one thread ({count} events)");
    }
}
