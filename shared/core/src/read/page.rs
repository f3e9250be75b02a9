//! A page as it is printed: large `data` shortened, and no more events
//! than fit in one Lambda answer.

use serde_json::{Map, Value};

use crate::event::{Event, PageEvent};

/// Most bytes of event JSON one page holds, whatever its `limit`: Lambda
/// answers at most 6 MB, and the page is a JSON string inside that answer,
/// where escaping can double it. A page cut short hands out `next` at the
/// first event it left out.
pub const MAX_PAGE_BYTES: usize = 3_000_000;

/// `events` shortened as pages print them (large `data` cut, see
/// [`shorten`]) and as many of them as fit in [`MAX_PAGE_BYTES`], at least
/// one; the cursor of the first left out, if any was.
pub(super) fn fit_page(
    data_max_bytes: usize,
    events: Vec<PageEvent>,
) -> (Vec<PageEvent>, Option<String>) {
    let mut kept = Vec::with_capacity(events.len());
    let mut bytes = 0;
    for event in events {
        let event = shorten_page_event(data_max_bytes, event);
        // The event and the comma before it.
        bytes += json_len(&event) + 1;
        if bytes > MAX_PAGE_BYTES && !kept.is_empty() {
            return (kept, Some(event.event.cursor));
        }
        kept.push(event);
    }
    (kept, None)
}

/// [`shorten`] for a page's event: `data` within the limit stays the stored
/// text (its length is its compact JSON's).
fn shorten_page_event(data_max_bytes: usize, page_event: PageEvent) -> PageEvent {
    match &page_event.data_text {
        Some(text) if text.get().len() <= data_max_bytes => page_event,
        _ => PageEvent::parsed(shorten(page_event.into_event(), data_max_bytes)),
    }
}

/// Shortens `data` past `max` bytes to the leading top-level entries that
/// fit, for a page; the cursor lookup returns it whole.
fn shorten(mut event: Event, max: usize) -> Event {
    let Some(data) = &event.data else {
        return event;
    };
    if json_len(data) <= max {
        return event;
    }
    let shortened = match data {
        Value::Object(map) => {
            let mut kept = Map::new();
            let mut used = 2;
            for (key, value) in map {
                let entry = key.len() + 4 + json_len(value);
                if used + entry <= max {
                    used += entry;
                    kept.insert(key.clone(), value.clone());
                }
            }
            Some(Value::Object(kept))
        }
        _ => None,
    };
    event.data = shortened;
    event.may_have_more_data = Some(true);
    event
}

impl PageEvent {
    /// About the length of the event as a page prints it, without printing
    /// it: its `data` (the stored text, or the parsed value measured; a page
    /// shortens it to `data_max_bytes`), its message (the longest text
    /// field) and a kilobyte for the rest. Only for deciding when to stop
    /// reading; the cut itself measures ([`fit_page`]).
    pub fn estimated_len(&self, data_max_bytes: usize) -> usize {
        let data = match (&self.data_text, &self.event.data) {
            (Some(text), _) => text.get().len(),
            (None, Some(data)) => json_len(data),
            (None, None) => 0,
        };
        data.min(data_max_bytes) + self.event.message.as_ref().map_or(0, String::len) + 1024
    }
}

/// The length of `value` as compact JSON, counted as it is written out
/// rather than built: a page measures every event's `data`.
fn json_len<T: serde::Serialize + ?Sized>(value: &T) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        // A `Value` or an event always serialises; were it not to, treat it
        // as too big.
        Err(_) => usize::MAX / 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(cursor: &str, message_bytes: usize) -> PageEvent {
        let event: Event = serde_json::from_value(serde_json::json!({
            "cursor": cursor, "accountId": "acme",
            "timestamp": "2026-11-22T10:00:00.000Z", "expiresAt": "2027-01-01T00:00:00.000Z",
            "serviceName": "s", "eventType": "e", "message": "m".repeat(message_bytes)
        }))
        .expect("an event");
        PageEvent::parsed(event)
    }

    /// The cut keeps what fits in `MAX_PAGE_BYTES`, names the first event
    /// left out, and always keeps one event, however large.
    #[test]
    fn a_page_keeps_what_fits_and_names_the_first_left_out() {
        let mb = 1_000_000;
        let events = vec![
            event("A", mb),
            event("B", mb),
            event("C", mb),
            event("D", 10),
        ];
        let (kept, left_out) = fit_page(8192, events);
        let cursors: Vec<&str> = kept.iter().map(|e| e.event.cursor.as_str()).collect();
        assert_eq!(cursors, ["A", "B"]);
        assert_eq!(left_out.as_deref(), Some("C"));

        let (kept, left_out) = fit_page(8192, vec![event("A", 4 * mb), event("B", 10)]);
        assert_eq!(kept.len(), 1, "one event always goes");
        assert_eq!(left_out.as_deref(), Some("B"));

        let (kept, left_out) = fit_page(8192, vec![event("A", 10), event("B", 10)]);
        assert_eq!((kept.len(), left_out), (2, None));
    }
}
