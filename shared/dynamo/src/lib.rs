//! The DynamoDB adapter: the one real [`audit_core::store::EventStore`].
//! Everything that knows the AWS SDK or the table's attribute names lives
//! here; the domain sees only the store port.

mod batch;
mod by_key;
pub mod client;
mod item_reader;
pub mod items;
mod keyed;
mod log;
mod postings;
mod properties;
pub mod retry;
pub mod store;
pub mod stream;
pub mod table;

pub use client::client;
pub use items::{event_to_item, item_size, item_to_event, item_to_page_event, marker_item, Item};
pub use store::DynamoStore;
