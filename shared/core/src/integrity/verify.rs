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
    /// `out_of_order`, `wrong_origin`, `bad_entry`, `duplicate_event`,
    /// `stale`.
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
    /// Milliseconds since the epoch, for `expiresAt` and staleness: now, or
    /// when an archived bundle was saved.
    pub now_ms: i64,
    /// When the absence of an event up to each cursor was seen, for
    /// `expiresAt` (ascending cursors; a leaf takes the first at or above
    /// it): an online walk reads each page at the server's time, and a leaf
    /// missing from a page counts as expired only if it had expired then.
    /// Empty: `now_ms` for every leaf.
    pub absence_seen_at: &'a [(Ulid, i64)],
    /// How old the newest checkpoint, or an event no checkpoint covers, may
    /// be at `now_ms` (ms) before the log is `stale`: the sealer gives every
    /// tenant a checkpoint at least once a heartbeat, so an older one means
    /// the newest events (and their checkpoints) may have been removed, or
    /// the sealer has stopped. `None`: not checked.
    pub stale_after_ms: Option<i64>,
}

/// When the absence of the event at `cursor` was seen (see
/// [`Evidence::absence_seen_at`]).
fn absence_seen_at(evidence: &Evidence, cursor: &Ulid) -> i64 {
    evidence
        .absence_seen_at
        .iter()
        .find(|(upto, _)| upto >= cursor)
        .map_or(evidence.now_ms, |(_, at)| *at)
}

/// An entry's `expiresAt` is at least the shortest retention after its
/// event was written; earlier is an edited entry (a deletion passed off as
/// retention). A minute's slack for the clock between cursor and record.
const MIN_RETENTION_MS: i64 = crate::settings::MIN_RETENTION_DAYS as i64 * 86_400_000 - 60_000;

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

/// An event as the verifier was given it, with the leaf hash of exactly
/// what it was given. From JSON, every key counts: a field the event type
/// does not know (`"approvedBy": "ceo"`), or `null` where the lookup
/// leaves a field out, makes another leaf, so it can't pass as verified
/// (read into an `Event` first, serde dropped such keys before hashing).
pub struct GivenEvent {
    pub cursor: String,
    pub leaf: Hash,
}

impl GivenEvent {
    /// From the JSON a bundle line or a lookup holds. `mayHaveMoreData`
    /// is a page's flag, never hashed (as `leaf_bytes` leaves it out).
    pub fn from_json(mut value: serde_json::Value) -> Self {
        if let Some(map) = value.as_object_mut() {
            map.remove("mayHaveMoreData");
        }
        let cursor = value["cursor"].as_str().unwrap_or_default().to_string();
        let bytes = serde_json_canonicalizer::to_vec(&value).unwrap_or_default();
        Self {
            cursor,
            leaf: crate::integrity::merkle::leaf_hash(&bytes),
        }
    }
}

impl From<Event> for GivenEvent {
    fn from(event: Event) -> Self {
        Self {
            leaf: event_leaf_hash(&event),
            cursor: event.cursor,
        }
    }
}

/// Verifies `events` (any order) against the evidence.
pub fn verify<E: Into<GivenEvent>>(
    evidence: &Evidence,
    events: impl IntoIterator<Item = E>,
) -> Report {
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
        if expires.timestamp_millis() < cursor.timestamp_ms() as i64 + MIN_RETENTION_MS {
            report.log.push(LogFinding {
                problem: "bad_entry",
                detail: format!(
                    "entry record {position} ({cursor}) expires at {}, sooner than any retention allows after its event was written",
                    entry.expires_at
                ),
                tree_size: None,
            });
        }
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
    let mut present: HashMap<Ulid, GivenEvent> = HashMap::new();
    // Copies beyond the first of a cursor: the trail holds one event per
    // cursor, so a second is tampering whichever copy comes first.
    let mut copies: HashMap<Ulid, Vec<GivenEvent>> = HashMap::new();
    let mut unreadable = Vec::new();
    for event in events {
        let event: GivenEvent = event.into();
        match Ulid::from_string(&event.cursor) {
            Ok(cursor) => match present.entry(cursor) {
                std::collections::hash_map::Entry::Occupied(_) => {
                    copies.entry(cursor).or_default().push(event)
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(event);
                }
            },
            Err(_) => unreadable.push(event.cursor),
        }
    }
    let mut duplicated: Vec<&Ulid> = copies.keys().collect();
    duplicated.sort();
    for cursor in duplicated {
        report.log.push(LogFinding {
            problem: "duplicate_event",
            detail: format!("the events hold {cursor} more than once"),
            tree_size: None,
        });
    }
    for (index, (cursor, hash, expires_ms)) in leaves.iter().enumerate().take(covered) {
        let extra = copies.remove(cursor).unwrap_or_default();
        let status = match present.remove(cursor) {
            Some(event) if event.leaf == *hash && extra.iter().all(|copy| copy.leaf == *hash) => {
                EventStatus::Verified
            }
            Some(_) => EventStatus::Altered,
            None if *expires_ms <= absence_seen_at(evidence, cursor) => EventStatus::Expired,
            None => EventStatus::Missing,
        };
        report.events.push(EventFinding {
            cursor: cursor.to_string(),
            status,
            leaf_index: Some(index as u64),
        });
    }
    if let Some(stale_after_ms) = evidence.stale_after_ms {
        let oldest_allowed = evidence.now_ms.saturating_sub(stale_after_ms);
        let newest_checkpoint = by_size
            .values()
            .flatten()
            .filter_map(|c| chrono::DateTime::parse_from_rfc3339(&c.timestamp).ok())
            .map(|t| t.timestamp_millis())
            .max();
        let oldest_unsealed = present
            .keys()
            .filter(|cursor| last_sealed.is_none_or(|last| **cursor > last))
            .map(|cursor| cursor.timestamp_ms() as i64)
            .min();
        let stale_checkpoint = newest_checkpoint.filter(|at| *at < oldest_allowed);
        let stale_event = oldest_unsealed.filter(|at| *at < oldest_allowed);
        if stale_checkpoint.is_some() || stale_event.is_some() {
            let at = |ms: i64| {
                chrono::DateTime::from_timestamp_millis(ms)
                    .map(crate::event::format_time)
                    .unwrap_or_default()
            };
            report.log.push(LogFinding {
                problem: "stale",
                detail: match (stale_checkpoint, stale_event) {
                    (_, Some(event_ms)) => format!(
                        "an event written at {} is in no checkpoint, more than {} s before {}: the sealer has stopped, or newer checkpoints were removed",
                        at(event_ms), stale_after_ms / 1000, at(evidence.now_ms)
                    ),
                    (Some(checkpoint_ms), None) => format!(
                        "the newest checkpoint is of {}, more than {} s before {}: the newest events and their checkpoints may have been removed, or the sealer has stopped",
                        at(checkpoint_ms), stale_after_ms / 1000, at(evidence.now_ms)
                    ),
                    (None, None) => String::new(),
                },
                tree_size: None,
            });
        }
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
        let (key, entries, note, events) = sealed(count, "2026-11-27T09:00:00.000Z");
        let started = std::time::Instant::now();
        let report = verified(&key, &entries, std::slice::from_ref(&note), events, 0);
        let rate = count as f64 / started.elapsed().as_secs_f64();
        assert!(report.ok());
        assert_eq!(report.counts.get("verified"), Some(&count));
        println!("verifier: {rate:.0} events/s on one thread ({count} events)");
    }

    /// A log of `count` events, sealed under one checkpoint of
    /// `checkpoint_at`; its key, entries, note and events.
    fn sealed(
        count: u64,
        checkpoint_at: &str,
    ) -> (NoteVerifier, Vec<EntryView>, String, Vec<Event>) {
        let signer = NoteSigner::from_secret("test", "test");
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
            origin: "test/t".into(),
            size: count,
            root: builder.root(),
            timestamp: checkpoint_at.into(),
        });
        (signer.verifier(), entries, note, events)
    }

    /// The events' cursors are of 2023-11-14T22:13:20Z; "now" is a minute
    /// after the checkpoint unless a test says otherwise.
    const CHECKPOINT_AT: &str = "2023-11-14T23:00:00.000Z";
    const NOW_MS: i64 = 1_700_002_860_000;

    fn verified(
        key: &NoteVerifier,
        entries: &[EntryView],
        notes: &[String],
        events: Vec<Event>,
        now_ms: i64,
    ) -> Report {
        verify(
            &Evidence {
                key,
                origin: None,
                entries,
                checkpoints: notes,
                trusted: &[],
                now_ms,
                absence_seen_at: &[],
                stale_after_ms: Some(2 * 3_600_000),
            },
            events,
        )
    }

    fn problems(report: &Report) -> Vec<&'static str> {
        report.log.iter().map(|f| f.problem).collect()
    }

    #[test]
    fn a_second_copy_of_a_cursor_is_named_whichever_comes_first() {
        let (key, entries, note, events) = sealed(5, CHECKPOINT_AT);
        let mut tampered = events[2].clone();
        tampered.user_id = Some("TAMPERED".into());
        for tampered_first in [true, false] {
            let mut given = events.clone();
            given.insert(if tampered_first { 2 } else { 3 }, tampered.clone());
            let report = verified(&key, &entries, std::slice::from_ref(&note), given, NOW_MS);
            assert!(!report.ok(), "{report:?}");
            assert_eq!(problems(&report), ["duplicate_event"]);
            assert_eq!(report.events[2].status, EventStatus::Altered);
        }
        // An exact second copy is named too.
        let mut given = events.clone();
        given.push(events[0].clone());
        let report = verified(&key, &entries, std::slice::from_ref(&note), given, NOW_MS);
        assert_eq!(problems(&report), ["duplicate_event"]);
        let report = verified(&key, &entries, std::slice::from_ref(&note), events, NOW_MS);
        assert!(report.ok(), "{report:?}");
    }

    #[test]
    fn an_entry_expiring_sooner_than_any_retention_is_a_bad_entry() {
        let (key, mut entries, note, mut events) = sealed(5, CHECKPOINT_AT);
        // Event 3 deleted, and its entry edited to say it had expired.
        events.remove(3);
        entries[3].expires_at = "2020-01-01T00:00:00.000Z".into();
        let report = verified(
            &key,
            &entries,
            std::slice::from_ref(&note),
            events.clone(),
            NOW_MS,
        );
        assert!(!report.ok(), "{report:?}");
        assert_eq!(problems(&report), ["bad_entry"]);
        // A day after it was written is a retention the API allows.
        let written = Ulid::from_string(&entries[3].cursor)
            .unwrap()
            .timestamp_ms() as i64;
        entries[3].expires_at = chrono::DateTime::from_timestamp_millis(written + 86_400_000)
            .map(crate::event::format_time)
            .unwrap();
        // Judged two days on (an archived bundle: staleness not asked).
        let report = verify(
            &Evidence {
                key: &key,
                origin: None,
                entries: &entries,
                checkpoints: std::slice::from_ref(&note),
                trusted: &[],
                now_ms: written + 2 * 86_400_000,
                absence_seen_at: &[],
                stale_after_ms: None,
            },
            events,
        );
        assert!(report.ok(), "{report:?}");
        assert_eq!(report.counts.get("expired"), Some(&1));
    }

    /// A missing event counts as expired only if it had expired when the
    /// page that should have held it was read: judged by the server's time
    /// then, an expiry during the walk (or under a client clock behind the
    /// server's) is `expired`, and a deletion before expiry stays `missing`
    /// however late the walk ends.
    #[test]
    fn a_missing_event_is_judged_when_its_page_was_read() {
        let (key, mut entries, note, mut events) = sealed(5, CHECKPOINT_AT);
        events.remove(3);
        let cursor = Ulid::from_string(&entries[3].cursor).unwrap();
        let expires_ms = cursor.timestamp_ms() as i64 + 86_400_000;
        entries[3].expires_at = chrono::DateTime::from_timestamp_millis(expires_ms)
            .map(crate::event::format_time)
            .unwrap();
        let judge = |pages: &[(Ulid, i64)], now_ms: i64| {
            verify(
                &Evidence {
                    key: &key,
                    origin: None,
                    entries: &entries,
                    checkpoints: std::slice::from_ref(&note),
                    trusted: &[],
                    now_ms,
                    absence_seen_at: pages,
                    stale_after_ms: None,
                },
                events.clone(),
            )
            .events[3]
                .status
        };
        let before = Ulid::from_parts(cursor.timestamp_ms() - 1, 0);
        let after = Ulid::from_parts(cursor.timestamp_ms() + 1, 0);
        // Its page read after it expired: expired, whatever this clock says.
        let pages = [(before, expires_ms - 5_000), (after, expires_ms + 1_000)];
        assert_eq!(judge(&pages, expires_ms - 60_000), EventStatus::Expired);
        // Its page read before it expired: deleted early, missing, though
        // the walk ended after it would have expired.
        let pages = [
            (after, expires_ms - 1_000),
            (Ulid(u128::MAX), expires_ms + 60_000),
        ];
        assert_eq!(judge(&pages, expires_ms + 60_000), EventStatus::Missing);
        // No pages (a bundle): the evidence's time decides.
        assert_eq!(judge(&[], expires_ms), EventStatus::Expired);
        assert_eq!(judge(&[], expires_ms - 1), EventStatus::Missing);
    }

    #[test]
    fn no_checkpoint_for_longer_than_allowed_is_stale() {
        let (key, entries, note, events) = sealed(5, CHECKPOINT_AT);
        let two_hours = 2 * 3_600_000;
        // Fresh: fine.
        let report = verified(
            &key,
            &entries,
            std::slice::from_ref(&note),
            events.clone(),
            NOW_MS,
        );
        assert!(report.ok(), "{report:?}");
        // The same bundle judged three hours later: no heartbeat since.
        let later = NOW_MS + 3 * 3_600_000;
        let report = verified(
            &key,
            &entries,
            std::slice::from_ref(&note),
            events.clone(),
            later,
        );
        assert_eq!(problems(&report), ["stale"]);
        // No checkpoint and no entries at all, the events unsealed for
        // longer than allowed (an altered one among them).
        let mut altered = events.clone();
        altered[1].user_id = Some("TAMPERED".into());
        let report = verified(&key, &[], &[], altered.clone(), later);
        assert_eq!(problems(&report), ["stale"]);
        // Within the allowance, unsealed events are no finding.
        let written = Ulid::from_string(&events[0].cursor).unwrap().timestamp_ms() as i64;
        let report = verified(&key, &[], &[], altered, written + two_hours - 1000);
        assert!(report.ok(), "{report:?}");
    }
}
