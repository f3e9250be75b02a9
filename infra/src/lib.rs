//! What runs the Audit Trail API outside AWS: the embedded store, the local
//! API gateway (JWT validation + API Gateway v2 events), development tokens,
//! and a fault-injecting proxy for tests and benchmarks.

pub mod app;
pub mod bench;
pub mod devauth;
pub mod embedded;
pub mod gateway;
pub mod proxy;
pub mod raw;
pub mod relay;
pub mod runtime_api;
pub mod testkit;
pub mod tls;
