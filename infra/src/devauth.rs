//! Development tokens: HS256 JWTs that the local gateway validates the way
//! API Gateway's JWT authorizer does (signature, expiry, issuer, audience).

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Value};

/// The `client_id` of the tokens `audit-local token` mints by default.
pub const DEV_CLIENT_ID: &str = "audit-local-dev";
pub const DEFAULT_SECRET: &str = "audit-local-development-secret-do-not-use-in-aws";
pub const DEFAULT_ISSUER: &str = "https://audit-local.invalid/";
pub const DEFAULT_AUDIENCE: &str = "audit-trail-api";

#[derive(Debug, Clone)]
pub struct DevAuth {
    secret: String,
    pub issuer: String,
    pub audience: String,
    pub tenant_claim: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TokenRejected(pub String);

impl Default for DevAuth {
    fn default() -> Self {
        Self {
            secret: std::env::var("AUDIT_LOCAL_JWT_SECRET")
                .unwrap_or_else(|_| DEFAULT_SECRET.to_string()),
            issuer: DEFAULT_ISSUER.to_string(),
            audience: DEFAULT_AUDIENCE.to_string(),
            tenant_claim: std::env::var("TENANT_CLAIM").unwrap_or_else(|_| "tenant_id".to_string()),
        }
    }
}

impl DevAuth {
    pub fn with_secret(secret: impl Into<String>) -> Self {
        Self {
            secret: secret.into(),
            ..Self::default()
        }
    }

    /// Mints a token for `tenant` with space-separated `scopes`.
    pub fn mint(&self, tenant: &str, scopes: &str, ttl: Duration) -> String {
        self.mint_as(
            tenant,
            scopes,
            ttl,
            &format!("dev-user@{tenant}"),
            DEV_CLIENT_ID,
        )
    }

    /// [`Self::mint`] for a given subject (`sub`) and client (`client_id`):
    /// a SIEM poller's token, to try `selfAudit=others`.
    pub fn mint_as(
        &self,
        tenant: &str,
        scopes: &str,
        ttl: Duration,
        subject: &str,
        client_id: &str,
    ) -> String {
        self.mint_claims(json!({
            "sub": subject,
            "client_id": client_id,
            self.tenant_claim.clone(): tenant,
            "scope": scopes,
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now(),
            "exp": now() + ttl.as_secs(),
            "jti": ulid::Ulid::new().to_string(),
        }))
    }

    pub fn mint_claims(&self, claims: Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(self.secret.as_bytes()),
        )
        .unwrap_or_default()
    }

    /// Validates a bearer token; returns the claims flattened to strings as
    /// API Gateway passes them to the function.
    pub fn verify(&self, token: &str) -> Result<HashMap<String, String>, TokenRejected> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = 0;
        // As API Gateway's authorizer: a token is not valid before `nbf`,
        // nor before it was issued (`iat`).
        validation.validate_nbf = true;
        let data = decode::<HashMap<String, Value>>(
            token,
            &DecodingKey::from_secret(self.secret.as_bytes()),
            &validation,
        )
        .map_err(|err| TokenRejected(format!("the bearer token was rejected: {}", reason(&err))))?;
        // Its signature holds: now its claims as strictly as a body (a
        // claim given twice would be read as its last copy).
        if let Some(defect) = token
            .split('.')
            .nth(1)
            .and_then(|payload| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(payload.trim_end_matches('='))
                    .ok()
            })
            .and_then(|json| audit_core::json::parse(&json).ok())
            .and_then(|(_, defects)| defects.into_iter().next())
        {
            return Err(TokenRejected(format!(
                "the bearer token was rejected: its claims are not strict JSON: {}",
                defect.message
            )));
        }
        // RFC 7519: not accepted on or after `exp` (the crate refuses only
        // after it, so a token was still good for the second it expired in).
        if data
            .claims
            .get("exp")
            .and_then(Value::as_f64)
            .is_some_and(|exp| exp <= now() as f64)
        {
            return Err(TokenRejected(
                "the bearer token was rejected: it has expired (`exp`)".into(),
            ));
        }
        match data.claims.get("iat") {
            None => {}
            Some(Value::Number(iat)) if iat.as_f64().is_some_and(|t| t <= now() as f64) => {}
            Some(Value::Number(_)) => {
                return Err(TokenRejected(
                    "the bearer token was rejected: it is issued in the future (`iat`)".into(),
                ))
            }
            Some(_) => {
                return Err(TokenRejected(
                    "the bearer token was rejected: `iat` must be a number of seconds".into(),
                ))
            }
        }
        Ok(data
            .claims
            .into_iter()
            // A null claim is no claim (not the text `null`).
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k, claim_string(&v)))
            .collect())
    }
}

/// API Gateway renders claim values as strings; arrays as `[a b]`.
fn claim_string(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(claim_string).collect::<Vec<_>>().join(" ")
        ),
        other => other.to_string(),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Parses `1h`, `30m`, `45s`, `2d` or plain seconds.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("bad duration `{text}` (try 1h, 30m, 45s)"))?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("bad duration unit in `{text}` (s, m, h, d)")),
    };
    Ok(Duration::from_secs(seconds))
}

/// Why a token was refused, in the API's words: the library's own message
/// names its internals (base64 offsets, serde variants).
fn reason(err: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match err.kind() {
        ErrorKind::ExpiredSignature => "it has expired (`exp`)".into(),
        ErrorKind::ImmatureSignature => "it is not valid yet (`nbf`)".into(),
        ErrorKind::InvalidIssuer => "it is from another issuer (`iss`)".into(),
        ErrorKind::InvalidAudience => "it is for another audience (`aud`)".into(),
        ErrorKind::InvalidSignature => "its signature does not match".into(),
        // jsonwebtoken also says "missing" for a claim of the wrong type
        // (`"exp": "soon"`, `1e300`): name both.
        ErrorKind::MissingRequiredClaim(claim) | ErrorKind::InvalidClaimFormat(claim) => {
            format!("it lacks a usable `{claim}` claim (absent, or of the wrong type)")
        }
        ErrorKind::InvalidAlgorithm => "it is not signed with HS256".into(),
        _ => "it is not a well-formed signed JWT".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_bad_ones_are_rejected() {
        let auth = DevAuth::with_secret("s1");
        let token = auth.mint("acme", "audit:read audit:write", Duration::from_secs(60));
        let claims = auth.verify(&token).unwrap();
        assert_eq!(claims["tenant_id"], "acme");
        assert_eq!(claims["scope"], "audit:read audit:write");
        assert!(DevAuth::with_secret("s2").verify(&token).is_err());
        for claim in ["nbf", "iat"] {
            let mut claims = json!({"tenant_id":"acme","iss":auth.issuer,"aud":auth.audience,"exp": now() + 600});
            claims[claim] = json!(now() + 120);
            assert!(
                auth.verify(&auth.mint_claims(claims.clone())).is_err(),
                "future {claim}"
            );
            claims[claim] = json!(now() - 1);
            assert!(
                auth.verify(&auth.mint_claims(claims)).is_ok(),
                "past {claim}"
            );
        }
        let expired = auth.mint_claims(
            json!({"tenant_id":"acme","iss":auth.issuer,"aud":auth.audience,"exp": now() - 10}),
        );
        assert!(auth.verify(&expired).is_err());
        // Not on `exp` either, only before it.
        let expiring_now = auth.mint_claims(
            json!({"tenant_id":"acme","iss":auth.issuer,"aud":auth.audience,"exp": now()}),
        );
        let TokenRejected(message) = auth.verify(&expiring_now).expect_err("refused at exp");
        assert!(message.contains("expired"), "{message}");
        let expiring_soon = auth.mint_claims(
            json!({"tenant_id":"acme","iss":auth.issuer,"aud":auth.audience,"exp": now() + 5}),
        );
        assert!(auth.verify(&expiring_soon).is_ok());
        let wrong_aud = auth.mint_claims(
            json!({"tenant_id":"acme","iss":auth.issuer,"aud":"other","exp": now() + 60}),
        );
        assert!(auth.verify(&wrong_aud).is_err());
        // A refusal says why in the API's words, never the library's.
        let garbled = format!("{token}.{token}");
        let unsigned = "eyJhbGciOiJub25lIn0.eyJ0ZW5hbnRfaWQiOiJhY21lIn0.";
        for (bad, why) in [
            (expired.as_str(), "expired"),
            (wrong_aud.as_str(), "audience"),
            (garbled.as_str(), "well-formed"),
            (unsigned, "well-formed"),
            ("", "well-formed"),
        ] {
            let TokenRejected(message) = auth.verify(bad).expect_err("refused");
            assert!(message.contains(why), "{message}");
            for internal in ["Base64", "JSON error", "variant", "offset"] {
                assert!(!message.contains(internal), "{message}");
            }
        }
        assert_eq!(parse_ttl("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_ttl("1y").is_err());
    }
}
