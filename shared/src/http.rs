//! Turning domain results into HTTP responses: the only place that knows
//! status codes and the error body shape.

use lambda_http::{Body, Response};
use serde::Serialize;

use crate::error::ApiError;

pub const JSON: &str = "application/json";

pub fn json_response<T: Serialize>(status: u16, body: &T) -> Response<Body> {
    match serde_json::to_vec(body) {
        Ok(bytes) => Response::builder()
            .status(status)
            .header("content-type", JSON)
            .body(Body::Binary(bytes))
            .unwrap_or_else(|_| fallback_error()),
        Err(err) => {
            tracing::error!(error = %err, "response serialisation failed");
            error_response(&ApiError::Internal)
        }
    }
}

pub fn error_response(err: &ApiError) -> Response<Body> {
    if err.status() >= 500 {
        tracing::warn!(code = err.code(), "request failed");
    }
    let mut builder = Response::builder()
        .status(err.status())
        .header("content-type", JSON);
    if let ApiError::Unavailable {
        retry_after_seconds,
    } = err
    {
        builder = builder.header("retry-after", retry_after_seconds.to_string());
    }
    builder
        .body(Body::Text(err.body().to_string()))
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
    let mut response = Response::new(Body::Text(ApiError::Internal.body().to_string()));
    *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    response
}

pub fn into_response(result: Result<Response<Body>, ApiError>) -> Response<Body> {
    result.unwrap_or_else(|err| error_response(&err))
}

/// True when the request declares a JSON body (`application/json`, any
/// parameters, or a `+json` type).
pub fn has_json_content_type(request: &lambda_http::Request) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let essence = v
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            essence == JSON || (essence.starts_with("application/") && essence.ends_with("+json"))
        })
        .unwrap_or(false)
}

pub fn require_json(request: &lambda_http::Request) -> Result<(), ApiError> {
    if has_json_content_type(request) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(
            "send the body as JSON with `Content-Type: application/json`".into(),
        ))
    }
}
