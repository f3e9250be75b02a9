//! An event as a page of the trail prints it.

use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use super::Event;

/// An event read for a page. A tail page only prints `data`, and parsing it
/// only to print it again took most of a page's CPU, so such a read keeps it
/// as the stored JSON text (`data_text`, with `event.data` then `None`). The
/// stored text is compact JSON as `serde_json` printed the parsed value at
/// ingest, so it prints byte for byte as a parsed copy prints.
#[derive(Debug, Clone)]
pub struct PageEvent {
    pub event: Event,
    pub data_text: Option<Box<RawValue>>,
}

impl PageEvent {
    /// An event whose `data` (if any) is already parsed.
    pub fn parsed(event: Event) -> Self {
        Self {
            event,
            data_text: None,
        }
    }

    /// The event with its `data` parsed. (The text was checked to be JSON
    /// when it was read.)
    pub fn into_event(self) -> Event {
        let Self {
            mut event,
            data_text,
        } = self;
        if let Some(text) = data_text {
            event.data = serde_json::from_str(text.get()).ok();
        }
        event
    }
}

impl Serialize for PageEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // `data` is the event's last field, so its text follows the rest.
        #[derive(Serialize)]
        struct WithDataText<'a> {
            #[serde(flatten)]
            event: &'a Event,
            data: &'a RawValue,
        }
        match (&self.data_text, &self.event.data) {
            (Some(text), None) => WithDataText {
                event: &self.event,
                data: text,
            }
            .serialize(serializer),
            _ => self.event.serialize(serializer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn event_with(data: Option<Value>) -> Event {
        serde_json::from_value(json!({
            "cursor": "01JD0000000000000000000000", "accountId": "acme",
            "timestamp": "2026-11-27T00:00:00.000Z", "expiresAt": "2027-02-25T00:00:00.000Z",
            "serviceName": "svc", "eventType": "a.b", "userId": "ü-1", "traceId": "t",
            "message": "line\nnext \u{2028}", "sandbox": true,
            "indexedData": {"z": "1", "a": "2"}, "mayHaveMoreData": true, "data": data,
        }))
        .unwrap_or_else(|err| panic!("an event: {err}"))
    }

    /// The event as a page reads it: `data` as the text ingest stored.
    fn with_data_text(event: &Event) -> PageEvent {
        let mut head = event.clone();
        let data_text = head
            .data
            .take()
            .map(|data| RawValue::from_string(data.to_string()))
            .transpose()
            .unwrap_or_else(|err| panic!("data prints as JSON: {err}"));
        PageEvent {
            event: head,
            data_text,
        }
    }

    /// The event as a lookup reads it: `data` parsed from that text.
    fn parsed_back(event: &Event) -> Event {
        let mut parsed = event.clone();
        parsed.data = event
            .data
            .as_ref()
            .and_then(|data| serde_json::from_str(&data.to_string()).ok());
        parsed
    }

    fn printed<T: Serialize>(value: &T) -> String {
        serde_json::to_string(value).unwrap_or_else(|err| panic!("prints: {err}"))
    }

    proptest! {
        /// Printed from the stored text, any `data` reads byte for byte as
        /// the lookup, the query and the stream print the parsed event; and
        /// parsed, the page's event is the lookup's.
        #[test]
        fn data_printed_from_its_text_reads_as_the_parsed_event(data in crate::testing::json_value()) {
            let event = event_with(Some(data));
            let page_event = with_data_text(&event);
            let lookup = parsed_back(&event);
            prop_assert_eq!(printed(&page_event), printed(&lookup));
            prop_assert_eq!(page_event.into_event(), lookup);
        }
    }
}
