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

/// The request's own URL (scheme and host as the client saw them) with a
/// new query string: links that work behind API Gateway and locally.
pub fn link(request: &lambda_http::Request, query: &[(&str, String)]) -> String {
    let uri = request.uri();
    let scheme = request
        .headers()
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.scheme_str())
        .unwrap_or("https");
    let host = request
        .headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    let query_string: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", encode_component(v)))
        .collect();
    let mut url = match host {
        Some(host) => format!("{scheme}://{host}{}", uri.path()),
        None => uri.path().to_string(),
    };
    if !query_string.is_empty() {
        url.push('?');
        url.push_str(&query_string.join("&"));
    }
    url
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn encode_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Reads query-string parameters, refusing any not in `known` (typos in a
/// poller's URL should fail loudly, not silently read something else).
pub fn query_parameters(
    request: &lambda_http::Request,
    known: &[&str],
) -> Result<std::collections::HashMap<String, String>, ApiError> {
    use lambda_http::RequestExt;
    // A parameter given twice (`limit=1000&limit=5`) is ambiguous: refused,
    // never resolved by taking one of them. Counted on the raw query string,
    // since API Gateway joins repeated values with commas.
    let mut names = std::collections::HashSet::new();
    for pair in request.uri().query().unwrap_or_default().split('&') {
        let name = pair.split_once('=').map_or(pair, |(name, _)| name);
        if !name.is_empty() && !names.insert(name) {
            return Err(ApiError::bad_request(
                name,
                format!("the query parameter `{name}` is given more than once"),
            ));
        }
    }
    let params = request.query_string_parameters();
    let mut found = std::collections::HashMap::new();
    for (key, value) in params.iter() {
        if !known.contains(&key) {
            return Err(ApiError::bad_request(
                key,
                format!(
                    "unknown query parameter `{key}` (known: {})",
                    known.join(", ")
                ),
            ));
        }
        found.insert(key.to_string(), value.to_string());
    }
    Ok(found)
}

/// A `limit` parameter: 1..=max, default when absent.
pub fn parse_limit(value: Option<&String>, default: usize, max: usize) -> Result<usize, ApiError> {
    match value {
        None => Ok(default),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(
                "limit",
                format!("`limit` must be a whole number from 1 to {max}"),
            )),
        },
    }
}
