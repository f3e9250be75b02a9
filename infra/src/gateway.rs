//! The local stand-in for API Gateway: validates the bearer token like the
//! JWT authorizer, turns each HTTP request into the same payload v2 event API
//! Gateway would send, and hands it to the function's handler.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{to_bytes, Body as AxumBody};
use axum::extract::{ConnectInfo, State};
use axum::http::{Request as HttpRequest, Response as HttpResponse, StatusCode};
use axum::Router;
use base64::Engine;
use lambda_http::{Body, Response};
use serde_json::{json, Map, Value};

use audit_core::event::MAX_REQUEST_BYTES;

use crate::app::Functions;
use crate::devauth::DevAuth;

#[derive(Clone)]
pub struct Gateway {
    pub functions: Arc<Functions>,
    pub auth: Arc<DevAuth>,
    /// The API mapping's path on a custom domain (`API_BASE_PATH`): only
    /// paths under it are the API's, and it is taken off before routing, as
    /// API Gateway takes it off `rawPath`.
    pub base_path: String,
}

pub use audit_core::routes::Route;

/// A matched route and its path parameters.
pub type RouteMatch = (Route, HashMap<String, String>);

/// Matches method and path to a route from the route table, as the HTTP
/// API's route table does. The path is as sent (percent-encoded); a path
/// parameter that is not valid percent-encoded UTF-8 is a 400.
pub fn match_route(method: &str, path: &str) -> Result<Option<RouteMatch>, &'static str> {
    let Some((route, raw)) = Route::match_path(method, path) else {
        return Ok(None);
    };
    let mut params = HashMap::new();
    for (name, value) in raw {
        let value =
            percent_decode(&value, false).ok_or("the path is not valid percent-encoded UTF-8")?;
        params.insert(name.to_string(), value);
    }
    Ok(Some((route, params)))
}

/// The methods the route table serves on `path` (empty: no such path).
pub fn allowed_methods(path: &str) -> Vec<&'static str> {
    Route::methods_for(path)
}

/// Percent-decodes a path segment or a query component (where `+` is a
/// space); `None` when the bytes are not UTF-8.
fn percent_decode(text: &str, plus_is_space: bool) -> Option<String> {
    let text = if plus_is_space {
        std::borrow::Cow::Owned(text.replace('+', " "))
    } else {
        std::borrow::Cow::Borrowed(text)
    };
    percent_encoding::percent_decode_str(&text)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// The query string as API Gateway passes it: decoded pairs, a repeated
/// name joined with commas. `Err` names what is not valid.
pub fn query_pairs(query: &str) -> Result<Vec<(String, String)>, &'static str> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let invalid = "the query string is not valid percent-encoded UTF-8";
        let (k, v) = (
            percent_decode(k, true).ok_or(invalid)?,
            percent_decode(v, true).ok_or(invalid)?,
        );
        match pairs.iter_mut().find(|(name, _)| *name == k) {
            Some((_, existing)) => {
                existing.push(',');
                existing.push_str(&v);
            }
            None => pairs.push((k, v)),
        }
    }
    Ok(pairs)
}

/// Builds the API Gateway HTTP API (payload v2) event for a request.
#[allow(clippy::too_many_arguments)]
pub fn apigw_event(
    route: Route,
    method: &str,
    path: &str,
    query: &str,
    headers: &HashMap<String, String>,
    body: &[u8],
    path_parameters: HashMap<String, String>,
    claims: HashMap<String, String>,
    source_ip: &str,
) -> Value {
    let mut query_parameters = Map::new();
    for (k, v) in query_pairs(query).unwrap_or_default() {
        query_parameters.insert(k, Value::String(v));
    }
    let (body_text, encoded) = match std::str::from_utf8(body) {
        Ok(text) => (text.to_string(), false),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(body), true),
    };
    let now = chrono::Utc::now();
    let mut event = json!({
        "version": "2.0",
        "routeKey": route.key(),
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            // API Gateway routes by the domain, so its `domainName` is
            // always a real host; a `Host` that is not one is not passed on.
            "domainName": headers
                .get("host")
                .filter(|host| is_plain_host(host))
                .cloned()
                .unwrap_or_else(|| "localhost".into()),
            "domainPrefix": "local",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": headers.get("user-agent").cloned().unwrap_or_default(),
            },
            "requestId": ulid::Ulid::new().to_string(),
            "routeKey": route.key(),
            "stage": "$default",
            "time": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            "timeEpoch": now.timestamp_millis(),
            "authorizer": { "jwt": { "claims": claims, "scopes": null } },
        },
        "isBase64Encoded": encoded,
    });
    if !query_parameters.is_empty() {
        event["queryStringParameters"] = Value::Object(query_parameters);
    }
    if !path_parameters.is_empty() {
        event["pathParameters"] = json!(path_parameters);
    }
    if !body.is_empty() {
        event["body"] = Value::String(body_text);
    }
    event
}

impl Gateway {
    pub fn router(self) -> Router {
        Router::new().fallback(serve).with_state(self)
    }

    /// Runs one API Gateway event through its function, as Lambda would.
    pub async fn invoke(&self, route: Route, event: &Value) -> Response<Body> {
        let text = event.to_string();
        // Lambda takes at most 6 MB of invocation payload: the body escaped
        // as a JSON string, beside the headers and context. A body well
        // under the functions' own 6 MB (quotes and backslashes escape to
        // two bytes, or four once the body itself is JSON) never reaches a
        // function on AWS, so it does not here.
        if text.len() > LAMBDA_MAX_INVOCATION_BYTES {
            return plain_error(
                413,
                "payload_too_large",
                &format!(
                    "as Lambda receives it (the body escaped in JSON, with the headers and context) this request takes {} bytes, and Lambda takes at most {LAMBDA_MAX_INVOCATION_BYTES}: send less (API Gateway answers such a request with its own error)",
                    text.len()
                ),
            );
        }
        let request = match lambda_http::request::from_str(&text) {
            Ok(request) => request,
            Err(err) => {
                tracing::error!(error = %err, "event did not deserialise");
                return plain_error(500, "internal_error", "the local gateway built a bad event");
            }
        };
        self.functions.handle(route, request).await
    }
}

/// Lambda's limit on a synchronous invocation's payload (6 MB).
const LAMBDA_MAX_INVOCATION_BYTES: usize = 6 * 1024 * 1024;

/// API Gateway's limit on the request line and the header values together
/// (HTTP APIs' quotas: 10240 bytes, not adjustable).
const MAX_REQUEST_LINE_AND_HEADER_VALUES: usize = 10_240;

/// API Gateway's own payload limit (10 MB); the functions refuse more than
/// 6 MB themselves, with their own 413.
const MAX_BODY: usize = 10 * 1024 * 1024;

/// A `Host` API Gateway could have routed by: a DNS name or an IP address,
/// and an optional port; nothing else (no user, path or odd characters).
pub fn is_plain_host(host: &str) -> bool {
    let Ok(authority) = host.parse::<http::uri::Authority>() else {
        return false;
    };
    let name = authority.host();
    let name_ok = if let Some(inner) = name.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    };
    // (`Authority::port` hides a port that is no u16: read it from the text.)
    let port_ok = match host.strip_prefix(name) {
        Some("") => true,
        Some(rest) => rest.strip_prefix(':').is_some_and(|port| {
            !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u16>().is_ok()
        }),
        None => false,
    };
    // And as the URL parser the function's request is built with reads it
    // (a name ending in a number is an IPv4 address to it: `1.2.3.256`).
    authority.as_str() == host
        && name_ok
        && port_ok
        && reqwest::Url::parse(&format!("http://{host}/")).is_ok()
}

async fn serve(
    State(gateway): State<Gateway>,
    request: HttpRequest<AxumBody>,
) -> HttpResponse<AxumBody> {
    let source_ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "127.0.0.1".into());
    // What API Gateway would refuse for its size never reaches a function
    // there: refused here too, so what works locally works deployed.
    let request_line = request.method().as_str().len()
        + request
            .uri()
            .path_and_query()
            .map_or(1, |p| p.as_str().len())
        + " HTTP/1.1".len()
        + 1;
    let header_values: usize = request.headers().values().map(|v| v.len()).sum();
    if request_line + header_values > MAX_REQUEST_LINE_AND_HEADER_VALUES {
        return to_axum(plain_error(
            431,
            "headers_too_large",
            &format!(
                "the request line and header values take {} bytes; API Gateway takes at most {MAX_REQUEST_LINE_AND_HEADER_VALUES}",
                request_line + header_values
            ),
        ));
    }
    let method = request.method().as_str().to_string();
    let path = match request
        .uri()
        .path()
        .strip_prefix(gateway.base_path.as_str())
    {
        Some(rest) if gateway.base_path.is_empty() || rest.is_empty() || rest.starts_with('/') => {
            rest.to_string()
        }
        _ => return to_axum(plain_error(404, "not_found", "no such route")),
    };
    let query = request.uri().query().unwrap_or_default().to_string();
    let mut headers: HashMap<String, String> = HashMap::new();
    for (name, value) in request.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value)
            })
            .or_insert(value);
    }
    // API Gateway routes by the host: a request whose `Host` names none
    // never reaches a function there.
    // A request without one (HTTP/1.1 requires it) had links to
    // `http://localhost/`, which lead nowhere.
    match headers.get("host") {
        Some(host) if is_plain_host(host) => {}
        Some(_) => {
            return to_axum(plain_error(
                400,
                "invalid_request",
                "the Host header must be a host name or address and an optional port",
            ))
        }
        None => {
            return to_axum(plain_error(
                400,
                "invalid_request",
                "the request has no Host header (API Gateway routes by it)",
            ))
        }
    }
    // API Gateway sets the scheme itself; here a proxy in front may say
    // `https`, and anything else is taken as the `http` this server is.
    let proto = match headers.get("x-forwarded-proto").map(String::as_str) {
        Some("https") => "https",
        _ => "http",
    };
    headers.insert("x-forwarded-proto".into(), proto.into());
    let (route, path_parameters) = match match_route(&method, &path) {
        Ok(Some(found)) => found,
        Ok(None) => {
            let allowed = allowed_methods(&path);
            if allowed.is_empty() {
                return to_axum(plain_error(404, "not_found", "no such route"));
            }
            let mut response = plain_error(
                405,
                "method_not_allowed",
                &format!("{method} is not served here; use {}", allowed.join(", ")),
            );
            if let Ok(value) = allowed.join(", ").parse() {
                response.headers_mut().insert("allow", value);
            }
            return to_axum(response);
        }
        Err(message) => return to_axum(plain_error(400, "invalid_request", message)),
    };
    if let Err(message) = query_pairs(&query) {
        return to_axum(plain_error(400, "invalid_request", message));
    }
    // API Gateway's JWT authorizer answers 401 before the function runs. It
    // takes the token alone or after `Bearer` (a scheme named in any case,
    // RFC 9110), as this does.
    let token = headers.get("authorization").map(|value| {
        let value = value.trim();
        match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => value,
        }
    });
    let claims = match token.map(|t| gateway.auth.verify(t)) {
        Some(Ok(claims)) => claims,
        Some(Err(err)) => return to_axum(plain_error(401, "unauthorized", &err.to_string())),
        None => {
            return to_axum(plain_error(
                401,
                "unauthorized",
                "a bearer token is required",
            ))
        }
    };
    // A body declared too large is refused before it is read, so a client
    // that waits for `100 Continue` never sends it.
    let declared = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_REQUEST_BYTES as u64) {
        return to_axum(plain_error(
            413,
            "payload_too_large",
            "a request may take at most 6 MB",
        ));
    }
    let body = match to_bytes(request.into_body(), MAX_BODY).await {
        Ok(body) => body,
        Err(err) => {
            // A body the connection could not deliver (a malformed chunk, a
            // connection cut short) is not a large one.
            return to_axum(
                if err.into_inner().is::<http_body_util::LengthLimitError>() {
                    plain_error(413, "payload_too_large", "a request may take at most 6 MB")
                } else {
                    plain_error(
                        400,
                        "invalid_request",
                        "the request body could not be read (malformed or cut short)",
                    )
                },
            );
        }
    };
    let event = apigw_event(
        route,
        &method,
        &path,
        &query,
        &headers,
        &body,
        path_parameters,
        claims,
        &source_ip,
    );
    to_axum(gateway.invoke(route, &event).await)
}

fn plain_error(status: u16, code: &str, message: &str) -> Response<Body> {
    let mut response = Response::new(Body::Text(
        json!({"error": {"code": code, "message": message}}).to_string(),
    ));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/json"),
    );
    response
}

fn to_axum(response: Response<Body>) -> HttpResponse<AxumBody> {
    let (parts, body) = response.into_parts();
    let bytes: Vec<u8> = match body {
        Body::Empty => Vec::new(),
        Body::Text(text) => text.into_bytes(),
        Body::Binary(bytes) => bytes,
        _ => Vec::new(),
    };
    HttpResponse::from_parts(parts, AxumBody::from(bytes))
}
