//! Decoding the table's stream images: which records are user events.

use audit_core::event::Event;

use crate::items::{inflate_data, DATA};
use crate::table::PARTITION_KEY;

/// The principal of a TTL deletion in a stream record.
pub const TTL_PRINCIPAL: &str = "dynamodb.amazonaws.com";

/// The event in a stream record's new image, if the item is an event.
/// Every other item type (idempotency markers, settings, metadata, the log,
/// postings) has a `#` in its partition key; an event always has `serviceName`.
pub fn event_from_image(image: serde_dynamo::Item) -> Option<Result<Event, String>> {
    let is_event = matches!(image.get(PARTITION_KEY), Some(serde_dynamo::AttributeValue::S(tenant)) if !tenant.contains('#'))
        && image.contains_key("serviceName");
    if !is_event {
        return None;
    }
    let mut image = image;
    let packed = match image.remove(DATA) {
        Some(serde_dynamo::AttributeValue::B(bytes)) => Some(bytes),
        Some(other) => {
            image.insert(DATA.to_string(), other);
            None
        }
        None => None,
    };
    Some(
        serde_dynamo::from_item(image)
            .map_err(|e| e.to_string())
            .and_then(|mut event: Event| {
                if let Some(bytes) = packed {
                    event.data = Some(inflate_data(&bytes)?);
                }
                Ok(event)
            }),
    )
}
