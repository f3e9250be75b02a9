//! Decoding the table's stream images: which records are user events.

use audit_core::event::Event;
use audit_core::pivot::PIVOT_INDEXES;

use crate::items::{inflate_data, DATA};
use crate::table::PARTITION_KEY;

/// The principal of a TTL deletion in a stream record.
pub const TTL_PRINCIPAL: &str = "dynamodb.amazonaws.com";

/// The event in a stream record's new image, if the item is an event.
/// Other item types (idempotency markers, settings, metadata) have a `#`
/// in their partition key and none of the pivot-index attributes.
pub fn event_from_image(image: serde_dynamo::Item) -> Option<Result<Event, String>> {
    let is_event = matches!(image.get(PARTITION_KEY), Some(serde_dynamo::AttributeValue::S(tenant)) if !tenant.contains('#'))
        && image.contains_key(PIVOT_INDEXES[2].key_attribute);
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
