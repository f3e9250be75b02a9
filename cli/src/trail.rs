//! What the CLI checks of the trail a server answers with before it writes,
//! saves a position past, or verifies anything: the API's tail only goes
//! forward, in canonical cursors, no later than its own clock, one
//! tenant's, and its links never go round. A server (or anything between)
//! that answers otherwise is not the API, and the command stops with exit 5
//! instead of skipping, repeating or mixing events: a reversed page was
//! written as its first event alone, and the state moved past the rest.

use std::collections::HashSet;

use serde_json::Value;
use ulid::Ulid;

use crate::client::{not_the_api, Client, Failure};

/// How far past the answer's `Date` a cursor may be: the API serves only
/// settled events, so none is later than its clock. `Date` has whole
/// seconds, and a margin is kept for a cursor clock that never runs back.
const CURSOR_AHEAD_OF_DATE_MS: i64 = 60_000;

/// How far ahead of this machine's clock a server's `Date` is believed (a
/// `Date` of 2100 carried cursors of 2100 into an export, whose resumes
/// then asked for events after them and found none, for good).
pub const SERVER_CLOCK_AHEAD_MS: i64 = 5 * 60_000;

/// The end of a walk that reads the trail as it stood when its first page
/// was answered: that page's `Date` (believed up to 5 minutes ahead of this
/// machine's clock, which stands in when there is none) and the rest of
/// its second.
pub fn walk_end(date_ms: Option<i64>) -> i64 {
    let local = chrono::Utc::now().timestamp_millis();
    date_ms.unwrap_or(local).min(local + SERVER_CLOCK_AHEAD_MS) + 1000
}

/// Pages in a row that neither move the walk on nor catch up: an honest
/// API gives such pages while it passes expired events not yet deleted
/// (a few thousand items a page), so this is far beyond any real trail,
/// and a server giving new links to empty pages for ever ends there.
const PAGES_WITHOUT_PROGRESS: u32 = 10_000;

/// A link read again before the walk moved on: an honest API answers the
/// same position again when its time budget ran out before it read, so a
/// few are taken; links that go round are not.
const LINK_REPEATS: u32 = 3;

/// What an event of a page is to the command reading it.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// After everything before it: write it.
    New(Ulid),
    /// At or before the position a resumed run starts from, on the page it
    /// reads again (a kill after the page was written, before its state
    /// was saved): written already.
    AlreadyWritten,
}

#[derive(Debug, Default)]
pub struct TrailOrder {
    /// The last cursor seen, written or skipped.
    last: Option<Ulid>,
    /// Until the first new event, cursors up to this were written by the
    /// run this one resumes.
    resumed_through: Option<Ulid>,
    tenant: Option<String>,
    /// Links followed since the walk last moved on.
    visited: HashSet<String>,
    /// A query's pages: newest first, each event before the one before it.
    newest_first: bool,
    /// Pages since the walk last moved on or caught up.
    pages_without_progress: u32,
    /// Links read again since the walk last moved on.
    repeats: u32,
}

/// A cursor as the API writes it: a ULID in its canonical form.
pub fn canonical_cursor(text: &str) -> Option<Ulid> {
    Ulid::from_string(text)
        .ok()
        .filter(|cursor| cursor.to_string() == text)
}

impl TrailOrder {
    /// A walk of `tenant`'s trail (None: whichever the first page names).
    pub fn new(tenant: Option<String>) -> Self {
        Self {
            tenant,
            ..Self::default()
        }
    }

    /// A query's walk: its pages go from the newest event back.
    pub fn newest_first(mut self) -> Self {
        self.newest_first = true;
        self
    }

    /// A walk that goes on after `last`: events after it only (an export
    /// resumes with `after=`).
    pub fn after(mut self, last: Option<&str>) -> Self {
        self.last = last.and_then(canonical_cursor);
        self
    }

    /// A tail resumed from a state: its first page may be the one the last
    /// run wrote (its link is kept when that run ended there), and what it
    /// wrote of it is skipped.
    pub fn resuming(mut self, last_written: Option<&str>) -> Self {
        self.resumed_through = last_written.and_then(canonical_cursor);
        self
    }

    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    fn same_tenant(&mut self, account: &str, what: &str) -> Result<(), Failure> {
        match &self.tenant {
            Some(tenant) if tenant != account => Err(not_the_api(&format!(
                "{what} of tenant {}, in tenant {}'s trail",
                crate::terminal::for_terminal(account),
                crate::terminal::for_terminal(tenant)
            ))),
            Some(_) => Ok(()),
            None => {
                self.tenant = Some(account.to_string());
                Ok(())
            }
        }
    }

    /// A page names its tenant (an older server's may not): the same one
    /// all along.
    pub fn page(&mut self, body: &Value) -> Result<(), Failure> {
        match body["accountId"].as_str() {
            Some(account) => self.same_tenant(account, "a page"),
            None => Ok(()),
        }
    }

    /// An event of a page answered at `date_ms` (its `Date`): a canonical
    /// cursor after every one before it and no later than that clock
    /// allows (believed up to 5 minutes ahead of this machine's), of the
    /// trail's tenant.
    pub fn event(&mut self, event: &Value, date_ms: Option<i64>) -> Result<Seen, Failure> {
        let text = event["cursor"].as_str().unwrap_or_default();
        let cursor = canonical_cursor(text)
            .ok_or_else(|| not_the_api("an event without a cursor of the API's form"))?;
        let in_order = |last: Ulid| match self.newest_first {
            false => cursor > last,
            true => cursor < last,
        };
        if self.last.is_some_and(|last| !in_order(last)) {
            return Err(not_the_api(&format!(
                "event {cursor} is out of order: a trail only goes forward, and a query's pages only back"
            )));
        }
        let believed = chrono::Utc::now().timestamp_millis() + SERVER_CLOCK_AHEAD_MS;
        let clock = date_ms.map_or(believed, |date| date.min(believed));
        if cursor.timestamp_ms() as i64 > clock + 1000 + CURSOR_AHEAD_OF_DATE_MS {
            return Err(not_the_api(&format!(
                "event {cursor} is later than the answer's own clock"
            )));
        }
        self.of_tenant(event)?;
        self.last = Some(cursor);
        match self.resumed_through {
            Some(through) if cursor <= through => Ok(Seen::AlreadyWritten),
            _ => {
                self.resumed_through = None;
                Ok(Seen::New(cursor))
            }
        }
    }

    /// Every event of `page`, checked before any of it is written: a page
    /// found wrong at its sixth event had five written already, and a
    /// rerun wrote them again.
    pub fn page_events(
        &mut self,
        page: &[Value],
        date_ms: Option<i64>,
    ) -> Result<Vec<Seen>, Failure> {
        page.iter()
            .map(|event| self.event(event, date_ms))
            .collect()
    }

    /// An event (a lookup's answer, say) of the trail's tenant.
    pub fn of_tenant(&mut self, event: &Value) -> Result<(), Failure> {
        match event["accountId"].as_str() {
            Some(account) => {
                let cursor = event["cursor"].as_str().unwrap_or_default().to_string();
                self.same_tenant(
                    account,
                    &format!("event {}", crate::terminal::for_terminal(&cursor)),
                )
            }
            None => Ok(()),
        }
    }

    /// The next link to read. Polling the caught-up end reads one link
    /// again and again, and a walk that moved on may meet a link again;
    /// but links that go round before the walk moves on (an export read
    /// two in turn, writing their events each time), or new links to pages
    /// that never move on, are read for ever.
    pub fn follow(&mut self, link: &str, moved_on: bool, caught_up: bool) -> Result<(), Failure> {
        if moved_on || caught_up {
            self.visited.clear();
            self.pages_without_progress = 0;
            self.repeats = 0;
        } else {
            self.pages_without_progress += 1;
            if self.pages_without_progress > PAGES_WITHOUT_PROGRESS {
                return Err(not_the_api(&format!(
                    "{PAGES_WITHOUT_PROGRESS} pages in a row that do not move on"
                )));
            }
        }
        if caught_up || self.visited.insert(link.to_string()) {
            return Ok(());
        }
        self.repeats += 1;
        if self.repeats > LINK_REPEATS {
            Err(not_the_api("links that go round"))
        } else {
            Ok(())
        }
    }
}

/// The event of a page, whole: a page shortens large `data` (and says so
/// with `mayHaveMoreData`), so such an event is looked up by its cursor,
/// and the answer must be that event.
pub async fn whole_event(client: &Client, event: Value) -> Result<Value, Failure> {
    if event["mayHaveMoreData"] != Value::Bool(true) {
        return Ok(event);
    }
    let cursor = event["cursor"].as_str().unwrap_or_default();
    looked_up(
        client.get(&format!("/audit/events/{cursor}")).await?,
        cursor,
    )
}

/// The answer to a lookup of `cursor`: that event, not another.
pub fn looked_up(body: Value, cursor: &str) -> Result<Value, Failure> {
    if body["cursor"].as_str() == Some(cursor) {
        Ok(body)
    } else if body["cursor"].is_string() {
        Err(not_the_api(&format!(
            "asked for event {}, answered with another",
            crate::terminal::for_terminal(cursor)
        )))
    } else {
        Err(not_the_api("no event with a `cursor`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cursor(ms: u64, n: u128) -> String {
        Ulid::from_parts(ms, n).to_string()
    }

    fn event(c: &str) -> Value {
        json!({"cursor": c, "accountId": "acme"})
    }

    #[test]
    fn a_trail_only_goes_forward_in_canonical_cursors_of_one_tenant() {
        let now: i64 = chrono::Utc::now().timestamp_millis();
        let at = |ms: i64| ms as u64;
        let (a, b, c) = (
            cursor(at(now - 3), 1),
            cursor(at(now - 2), 1),
            cursor(at(now - 1), 1),
        );
        let mut order = TrailOrder::new(None);
        assert!(matches!(
            order.event(&event(&a), Some(now)),
            Ok(Seen::New(_))
        ));
        assert!(matches!(
            order.event(&event(&c), Some(now)),
            Ok(Seen::New(_))
        ));
        // Backwards, repeated, in another case, or of another tenant.
        assert!(order.event(&event(&b), Some(now)).is_err());
        assert!(order.event(&event(&c), Some(now)).is_err());
        let mut order = TrailOrder::new(None);
        assert!(order.event(&event(&a.to_lowercase()), Some(now)).is_err());
        assert!(order
            .event(&json!({"accountId": "acme"}), Some(now))
            .is_err());
        let mut order = TrailOrder::new(Some("acme".into()));
        assert!(order
            .event(&json!({"cursor": a, "accountId": "globex"}), Some(now))
            .is_err());
        assert!(order
            .page(&json!({"accountId": "globex", "events": []}))
            .is_err());
        // Later than the answer's clock allows.
        let mut order = TrailOrder::new(None);
        let ahead = cursor(at(now + 1000 + CURSOR_AHEAD_OF_DATE_MS + 1), 0);
        assert!(order.event(&event(&ahead), Some(now)).is_err());
        // A server dating its answer in 2100 is believed only up to five
        // minutes past this machine's clock, and one giving no `Date` too.
        let local = chrono::Utc::now().timestamp_millis();
        let far = cursor(at(local + 3_600_000), 0);
        let mut order = TrailOrder::new(None);
        assert!(order.event(&event(&far), Some(4_102_444_800_000)).is_err());
        let mut order = TrailOrder::new(None);
        assert!(order.event(&event(&far), None).is_err());
        let mut order = TrailOrder::new(None);
        assert!(order.event(&event(&cursor(at(local), 0)), None).is_ok());
        // An export's resume: only after its last record.
        let mut order = TrailOrder::new(None).after(Some(&b));
        assert!(order.event(&event(&a), Some(now)).is_err());
        assert!(order.event(&event(&c), Some(now)).is_ok());
    }

    #[test]
    fn a_query_goes_back_from_the_newest() {
        let (a, b, c) = (cursor(1, 1), cursor(2, 1), cursor(3, 1));
        let mut order = TrailOrder::new(None).newest_first();
        assert!(order.event(&event(&c), None).is_ok());
        assert!(order.event(&event(&b), None).is_ok());
        assert!(order.event(&event(&c), None).is_err());
        assert!(order.event(&event(&b), None).is_err());
        assert!(order.event(&event(&a), None).is_ok());
    }

    #[test]
    fn a_resumed_tail_skips_only_the_page_it_wrote_before() {
        let (a, b, c, d) = (cursor(1, 1), cursor(2, 1), cursor(3, 1), cursor(4, 1));
        let mut order = TrailOrder::new(None).resuming(Some(&b));
        assert_eq!(
            order.event(&event(&a), None).ok(),
            Some(Seen::AlreadyWritten)
        );
        assert_eq!(
            order.event(&event(&b), None).ok(),
            Some(Seen::AlreadyWritten)
        );
        assert!(matches!(order.event(&event(&c), None), Ok(Seen::New(_))));
        assert!(matches!(order.event(&event(&d), None), Ok(Seen::New(_))));
        // A reversed page: its highest first, then nothing may follow.
        let mut order = TrailOrder::new(None).resuming(Some(&a));
        assert!(matches!(order.event(&event(&d), None), Ok(Seen::New(_))));
        assert!(order.event(&event(&c), None).is_err());
    }

    #[test]
    fn links_that_go_round_are_refused_and_polling_is_not() {
        // Two links in turn: a few repeats are taken (an API whose time
        // budget ran out answers the same position again), no more.
        let mut order = TrailOrder::new(None);
        let mut refused = None;
        for turn in 0..10 {
            if order.follow(["/a", "/b"][turn % 2], false, false).is_err() {
                refused = Some(turn);
                break;
            }
        }
        assert_eq!(refused, Some(2 + LINK_REPEATS as usize));
        // New links to pages that never move on end too.
        let mut order = TrailOrder::new(None);
        let ended = (0..=PAGES_WITHOUT_PROGRESS + 1)
            .map(|n| order.follow(&format!("/p{n}"), false, false))
            .position(|r| r.is_err());
        assert_eq!(ended, Some(PAGES_WITHOUT_PROGRESS as usize));
        let mut order = TrailOrder::new(None);
        for _ in 0..3 {
            assert!(order.follow("/end", false, true).is_ok());
        }
        assert!(order.follow("/a", true, false).is_ok());
        assert!(order.follow("/a", true, false).is_ok());
    }

    #[test]
    fn a_lookup_answers_the_event_asked_for() {
        let (a, b) = (cursor(1, 1), cursor(2, 1));
        assert!(looked_up(event(&a), &a).is_ok());
        assert!(looked_up(event(&b), &a).is_err());
        assert!(looked_up(json!({}), &a).is_err());
    }
}
