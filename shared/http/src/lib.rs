//! The HTTP edge: API Gateway v2 requests become domain inputs
//! ([`request`]), domain results become responses ([`response`], the only
//! place that knows status codes), and [`runtime`] runs a handler on Lambda.

pub mod request;
pub mod response;
pub mod runtime;
pub mod telemetry;
