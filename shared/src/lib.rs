//! The Audit Trail API domain. Nothing here knows about Lambda except the
//! small `http` module that maps domain results to HTTP responses and the
//! `auth` module that reads authorizer claims from a `lambda_http::Request`.

pub mod auth;
pub mod config;
pub mod cursor;
pub mod dynamo;
pub mod error;
pub mod event;
pub mod http;
pub mod ingest;
pub mod metadata;
pub mod query;
pub mod read;
pub mod selfaudit;
pub mod settings;
pub mod store;
pub mod stream;
pub mod table;
pub mod telemetry;

pub use config::Config;
pub use error::ApiError;
pub use event::Event;
pub use store::EventStore;
