//! Turning domain results into HTTP responses: the only place that knows
//! status codes and the error body shape.

use audit_core::error::ApiError;
use lambda_http::{Body, Response};
use serde::Serialize;

pub const JSON: &str = "application/json";

pub fn json_response<T: Serialize>(status: u16, body: &T) -> Response<Body> {
    // Text, not binary: API Gateway's response then carries the JSON as a
    // string, not base64 of it (a third larger, encoded and then scanned
    // again as the runtime writes the response).
    match serde_json::to_string(body) {
        Ok(text) => Response::builder()
            .status(status)
            .header("content-type", JSON)
            .body(Body::Text(text))
            .unwrap_or_else(|_| fallback_error()),
        Err(err) => {
            tracing::error!(error = %err, "response serialisation failed");
            error_response(&ApiError::Internal)
        }
    }
}

/// The status of each domain error, written once.
pub fn status_of(err: &ApiError) -> u16 {
    match err {
        ApiError::BadRequest { .. } => 400,
        ApiError::Unauthorized(_) => 401,
        ApiError::Forbidden { .. } => 403,
        ApiError::NotFound(_) => 404,
        ApiError::PayloadTooLarge { .. } => 413,
        ApiError::UnsupportedMediaType(_) => 415,
        ApiError::NotSealedYet { .. } => 409,
        ApiError::Internal => 500,
        ApiError::Unavailable { .. } => 503,
    }
}

/// The `{"error":{...}}` body every error response carries.
pub fn error_body(err: &ApiError) -> serde_json::Value {
    serde_json::json!({ "error": err })
}

pub fn error_response(err: &ApiError) -> Response<Body> {
    let status = status_of(err);
    if status >= 500 {
        tracing::warn!(code = err.code(), "request failed");
    }
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", JSON);
    if let ApiError::Unavailable {
        retry_after_seconds,
    }
    | ApiError::NotSealedYet {
        retry_after_seconds,
    } = err
    {
        builder = builder.header("retry-after", retry_after_seconds.to_string());
    }
    builder
        .body(Body::Text(error_body(err).to_string()))
        .unwrap_or_else(|_| fallback_error())
}

/// Like [`json_response`], with a `Retry-After` header.
pub fn json_response_retry_after<T: Serialize>(
    status: u16,
    body: &T,
    retry_after_seconds: u64,
) -> Response<Body> {
    let mut response = json_response(status, body);
    if let Ok(value) = retry_after_seconds.to_string().parse() {
        response.headers_mut().insert("retry-after", value);
    }
    response
}

fn fallback_error() -> Response<Body> {
    let mut response = Response::new(Body::Text(error_body(&ApiError::Internal).to_string()));
    *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    response
}

pub fn into_response(result: Result<Response<Body>, ApiError>) -> Response<Body> {
    result.unwrap_or_else(|err| error_response(&err))
}
