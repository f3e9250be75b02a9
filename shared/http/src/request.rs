//! Reading API Gateway (payload v2) requests into domain inputs: the route,
//! the caller, the request's facts for self-audit, parameters and links.

use std::collections::{HashMap, HashSet};

use audit_core::auth::Caller;
use audit_core::error::ApiError;
use audit_core::routes::Route;
use audit_core::selfaudit::RequestFacts;
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::response::JSON;

/// The route API Gateway matched (its `routeKey`), from the route table.
/// 404 for a request no route of the table could have matched.
pub fn route(request: &Request) -> Result<Route, ApiError> {
    let key = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context.route_key.as_deref(),
        _ => None,
    };
    key.and_then(Route::from_key)
        .ok_or_else(|| ApiError::NotFound("no such route".into()))
}

/// The caller from the JWT authorizer's claims; 401 without them.
pub fn caller(request: &Request, tenant_claim: &str) -> Result<Caller, ApiError> {
    let claims = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context
            .authorizer
            .as_ref()
            .and_then(|authorizer| authorizer.jwt.as_ref())
            .map(|jwt| (&jwt.claims, jwt.scopes.as_ref())),
        _ => None,
    };
    Caller::from_claims(claims, tenant_claim)
}

/// The route and an authorised caller: what every handler checks first.
/// The caller must hold the route's scope (from the route table).
pub fn authorised(request: &Request, tenant_claim: &str) -> Result<(Route, Caller), ApiError> {
    let caller = caller(request, tenant_claim)?;
    let route = route(request)?;
    caller.require(route.scope())?;
    // Every route's parameters come from the route table, checked here
    // once, so no route can take an unknown or repeated one.
    query_parameters(request, route.spec().query)?;
    Ok((route, caller))
}

/// The error for a route of another function, sent to this one by a
/// misconfigured integration: logged, and answered as API Gateway would
/// answer an unknown route.
pub fn not_served(route: Route) -> ApiError {
    tracing::error!(route = route.key(), "a route this function does not serve");
    ApiError::NotFound("no such route".into())
}

/// What the self-audit record of a call of `route` says about the request.
pub fn facts(request: &Request, route: Route) -> RequestFacts {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let source_ip = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context.http.source_ip.clone(),
        _ => None,
    };
    RequestFacts {
        event_type: route.self_audit().unwrap_or("audit.request"),
        path: request.uri().path().to_string(),
        method: request.method().to_string(),
        query_string: request.uri().query().unwrap_or_default().to_string(),
        user_agent: header("user-agent"),
        referer: header("referer"),
        source_ip,
    }
}

/// True when the request declares a JSON body (`application/json`, any
/// parameters, or a `+json` type).
pub fn has_json_content_type(request: &Request) -> bool {
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

/// A JSON body, not compressed: a content coding would otherwise reach the
/// JSON reader as bytes and read as "not valid JSON" at line 1, column 1.
/// (RFC 9110 makes an unsupported content coding a 415 too.)
pub fn require_json(request: &Request) -> Result<(), ApiError> {
    let content_types = request.headers().get_all(http::header::CONTENT_TYPE);
    // API Gateway joins a repeated header with commas; no media type has one.
    let repeated = content_types.iter().count() > 1
        || content_types
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.contains(',')));
    if repeated {
        return Err(ApiError::UnsupportedMediaType(
            "`Content-Type` was given more than once; send it once, as `application/json`".into(),
        ));
    }
    if !has_json_content_type(request) {
        return Err(ApiError::UnsupportedMediaType(
            "send the body as JSON with `Content-Type: application/json`".into(),
        ));
    }
    let coded = request
        .headers()
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("?").split(','))
        .map(|coding| coding.trim().to_ascii_lowercase())
        .find(|coding| !coding.is_empty() && coding != "identity");
    match coded {
        Some(coding) => Err(ApiError::UnsupportedMediaType(format!(
            "the body is sent with `Content-Encoding: {coding}`; send it uncompressed (the API reads only identity-coded JSON)"
        ))),
        None => Ok(()),
    }
}

/// The request's own URL (scheme and host as the client saw them) with a
/// new query string: links that work behind API Gateway and locally. The
/// host is the domain API Gateway matched the request to (its context's
/// `domainName`), not the `Host` header as sent; the header only when there
/// is no context.
pub fn link(request: &Request, base_path: &str, query: &[(&str, String)]) -> String {
    let uri = request.uri();
    // Only the two schemes a link to this API can have.
    let scheme = request
        .headers()
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.scheme_str())
        .filter(|scheme| matches!(*scheme, "http" | "https"))
        .unwrap_or("https");
    let domain = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context.domain_name.as_deref(),
        _ => None,
    };
    let host = domain
        .or_else(|| {
            request
                .headers()
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
        })
        .or_else(|| uri.authority().map(|a| a.as_str()));
    let query_string: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", encode_component(v)))
        .collect();
    // API Gateway leaves a custom domain's API mapping out of the path
    // (`base_path`, from `API_BASE_PATH`): put back, so a link leads where
    // the client called. The stack's own execute-api URL has no mapping.
    let base_path = match domain {
        Some(domain) if domain.contains(".execute-api.") => "",
        _ => base_path,
    };
    let mut url = match host {
        Some(host) => format!("{scheme}://{host}{base_path}{}", uri.path()),
        None => format!("{base_path}{}", uri.path()),
    };
    if !query_string.is_empty() {
        url.push('?');
        url.push_str(&query_string.join("&"));
    }
    url
}

/// Everything but RFC 3986's unreserved characters.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a query component (RFC 3986).
pub fn encode_component(value: &str) -> String {
    utf8_percent_encode(value, COMPONENT).to_string()
}

/// A query component as form decoding reads it: `+` is a space, `%XX` a
/// byte (invalid UTF-8 replaced).
fn decode_component(raw: &str) -> String {
    percent_decode_str(&raw.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// Reads query-string parameters, refusing any not in `known` (typos in a
/// poller's URL should fail loudly, not silently read something else).
pub fn query_parameters(
    request: &Request,
    known: &[&str],
) -> Result<HashMap<String, String>, ApiError> {
    // A parameter given twice (`limit=1000&limit=5`) is ambiguous: refused,
    // never resolved by taking one of them. Counted on the raw query string,
    // since API Gateway joins repeated values with commas, by the name as
    // decoded (`%6Cimit` is `limit`), since the values are read decoded.
    let mut names = HashSet::new();
    for pair in request.uri().query().unwrap_or_default().split('&') {
        let raw_name = pair.split_once('=').map_or(pair, |(name, _)| name);
        let name = decode_component(raw_name);
        // What is not UTF-8 once decoded (`%FF`) is refused, as the local
        // gateway refuses it: read through lambda_http it became U+FFFD,
        // and on AWS such a value was read as another one.
        if percent_decode_str(&pair.replace('+', " "))
            .decode_utf8()
            .is_err()
        {
            return Err(ApiError::bad_request(
                name.as_str(),
                format!("the query parameter `{name}` is not UTF-8 once percent-decoded"),
            ));
        }
        if !name.is_empty() && !names.insert(name.clone()) {
            return Err(ApiError::bad_request(
                name.as_str(),
                format!("the query parameter `{name}` is given more than once"),
            ));
        }
    }
    let params = request.query_string_parameters();
    let mut found = HashMap::new();
    for (key, value) in params.iter() {
        if !known.contains(&key) {
            let message = if known.is_empty() {
                format!("unknown query parameter `{key}`: this route takes none")
            } else {
                format!(
                    "unknown query parameter `{key}` (known: {})",
                    known.join(", ")
                )
            };
            return Err(ApiError::bad_request(key, message));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request(host: &str, domain: Option<&str>) -> Request {
        request_with_query(host, domain, "limit=5")
    }

    fn request_with_query(host: &str, domain: Option<&str>, query: &str) -> Request {
        let mut event = serde_json::json!({
            "version": "2.0",
            "routeKey": "GET /audit/events",
            "rawPath": "/audit/events",
            "rawQueryString": query,
            "headers": {"host": host, "x-forwarded-proto": "https"},
            "requestContext": {
                "accountId": "000000000000", "apiId": "api", "requestId": "r",
                "routeKey": "GET /audit/events", "stage": "$default",
                "time": "01/Jan/2026:00:00:00 +0000", "timeEpoch": 0,
                "http": {"method": "GET", "path": "/audit/events", "protocol": "HTTP/1.1",
                         "sourceIp": "192.0.2.1", "userAgent": "t"}
            },
            "isBase64Encoded": false
        });
        if let Some(domain) = domain {
            event["requestContext"]["domainName"] = domain.into();
        }
        lambda_http::request::from_str(&event.to_string()).expect("an API Gateway v2 event")
    }

    /// Links name the domain API Gateway routed the request by, whatever
    /// `Host` the client sent; `Host` only without a context.
    #[test]
    fn links_take_the_domain_api_gateway_matched_not_the_host_header() {
        let domain = "abc.execute-api.eu-west-1.amazonaws.com";
        let routed = request("attacker.example", Some(domain));
        assert_eq!(
            link(&routed, "", &[("cursor", "a+b".into())]),
            format!("https://{domain}/audit/events?cursor=a%2Bb")
        );
        let bare = request("127.0.0.1:3000", None);
        assert_eq!(link(&bare, "", &[]), "https://127.0.0.1:3000/audit/events");
    }

    /// A value that is not UTF-8 once decoded is refused, as the local
    /// gateway refuses it; lambda_http read it as U+FFFD, another value.
    #[test]
    fn a_query_value_that_is_not_utf8_is_refused() {
        for query in [
            "serviceName=%FF",
            "serviceName=a%C3",
            "%FF=x",
            "serviceName=%E2%82",
        ] {
            let request = request_with_query("h", None, query);
            assert!(
                query_parameters(&request, &["serviceName"]).is_err(),
                "{query}"
            );
        }
        for query in [
            "serviceName=%E2%82%AC",
            "serviceName=a+b%2Bc",
            "serviceName=%ZZ",
        ] {
            let request = request_with_query("h", None, query);
            assert!(
                query_parameters(&request, &["serviceName"]).is_ok(),
                "{query}"
            );
        }
    }

    /// Behind a custom domain's API mapping (`/v1`), API Gateway gives the
    /// path without it: the link puts it back.
    #[test]
    fn links_put_back_the_api_mappings_path() {
        let routed = request("x", Some("audit.example.com"));
        assert_eq!(
            link(&routed, "/v1", &[("limit", "5".into())]),
            "https://audit.example.com/v1/audit/events?limit=5"
        );
        // The execute-api URL, which the stack also serves, has no mapping.
        let direct = request("x", Some("abc.execute-api.eu-west-1.amazonaws.com"));
        assert_eq!(
            link(&direct, "/v1", &[("limit", "5".into())]),
            "https://abc.execute-api.eu-west-1.amazonaws.com/audit/events?limit=5"
        );
    }
}
