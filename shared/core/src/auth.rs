//! Who is calling: the tenant and scopes from the JWT authorizer's claims
//! (which `audit-http` reads from the request context), never from path,
//! query or body.

use std::collections::{HashMap, HashSet};

use crate::error::ApiError;

/// A JWT's claims, each as the authorizer passes it: a string.
pub type Claims = HashMap<String, String>;

pub const SCOPE_READ: &str = "audit:read";
pub const SCOPE_WRITE: &str = "audit:write";
pub const SCOPE_ADMIN: &str = "audit:admin";
pub const SCOPE_PLATFORM: &str = "audit:platform";
const ALL_SCOPES: [&str; 4] = [SCOPE_READ, SCOPE_WRITE, SCOPE_ADMIN, SCOPE_PLATFORM];

/// A scope as Amazon Cognito names it: `<resource server>/<scope>`
/// (`audit/read` for `audit:read`).
pub fn cognito_form(scope: &str) -> String {
    scope.replacen(':', "/", 1)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub tenant: String,
    pub scopes: HashSet<String>,
    /// `sub` claim.
    pub subject: Option<String>,
    /// `client_id` (or `azp`) claim.
    pub client_id: Option<String>,
}

impl Caller {
    /// The caller the authorizer vouched for: its claims (`None` when the
    /// request carried no JWT context) and the scopes it granted. 401 when
    /// there is no context or no usable tenant claim.
    pub fn from_claims(
        claims: Option<(&Claims, Option<&Vec<String>>)>,
        tenant_claim: &str,
    ) -> Result<Self, ApiError> {
        let Some((claims, authorizer_scopes)) = claims else {
            return Err(ApiError::Unauthorized(
                "a valid bearer token is required".into(),
            ));
        };
        // Taken as it is: a tenant id with spaces around it is not one
        // (trimming made ` acme ` another name for `acme`).
        let tenant = claims.get(tenant_claim).cloned().unwrap_or_default();
        if !is_valid_tenant(&tenant) {
            return Err(ApiError::Unauthorized(format!(
                "the token has no usable `{tenant_claim}` claim"
            )));
        }
        let mut scopes: HashSet<String> = HashSet::new();
        // `scope` is a string of space-separated scopes (RFC 9068); `scp`
        // may also be an array, which API Gateway passes on as `[a b]`. A
        // `scope` string that happens to be bracketed is taken as it is:
        // API Gateway reads `[audit:platform` from it, not `audit:platform`.
        if let Some(value) = claims.get("scope") {
            scopes.extend(split_scopes(value));
        }
        if let Some(value) = claims.get("scp") {
            let listed = value
                .strip_prefix('[')
                .and_then(|v| v.strip_suffix(']'))
                .unwrap_or(value);
            scopes.extend(split_scopes(listed));
        }
        if let Some(list) = authorizer_scopes {
            scopes.extend(list.iter().cloned());
        }
        // Amazon Cognito names a resource server's scopes `audit/read`; the
        // template's routes accept both forms, and so does every check here.
        for scope in ALL_SCOPES {
            if scopes.contains(&cognito_form(scope)) {
                scopes.insert(scope.to_string());
            }
        }
        Ok(Caller {
            tenant,
            scopes,
            subject: claims.get("sub").cloned(),
            client_id: claims
                .get("client_id")
                .or_else(|| claims.get("azp"))
                .cloned(),
        })
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.contains(scope)
    }

    pub fn require(&self, scope: &str) -> Result<(), ApiError> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "the token lacks the `{scope}` scope"
            )))
        }
    }
}

/// Scopes split on spaces only, as API Gateway splits them:
/// `a,audit:platform` is one scope, not two (splitting on commas too let
/// such a claim grant a scope the authorizer never saw).
fn split_scopes(value: &str) -> impl Iterator<Item = String> + '_ {
    value
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Tenant ids become partition keys; `#` is reserved for other item types.
pub fn is_valid_tenant(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant.len() <= 128
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller_with(claim: &str, value: &str) -> Caller {
        let claims: Claims = [
            ("tenant_id".to_string(), "acme".to_string()),
            (claim.to_string(), value.to_string()),
        ]
        .into_iter()
        .collect();
        Caller::from_claims(Some((&claims, None)), "tenant_id").expect("a caller")
    }

    #[test]
    fn scopes_parse_from_space_and_array_forms() {
        let a = caller_with("scope", "audit:read audit:write");
        assert!(a.has_scope(SCOPE_READ) && a.has_scope(SCOPE_WRITE));
        // `scp` as an array, as API Gateway passes it on.
        let b = caller_with("scp", "[audit:read audit:admin]");
        assert!(b.has_scope(SCOPE_READ) && b.has_scope(SCOPE_ADMIN));
        // Forms API Gateway reads as other scopes grant none of ours.
        for (claim, value) in [
            ("scope", "audit:write,audit:platform"),
            ("scope", "\"audit:read\""),
            ("scope", "[audit:platform audit:read]"),
            ("scp", "[[audit:read]]"),
            ("scope", "audit:read\taudit:admin"),
        ] {
            let caller = caller_with(claim, value);
            for ours in [SCOPE_PLATFORM, SCOPE_ADMIN] {
                assert!(
                    !caller.has_scope(ours),
                    "{claim}: {value}: {:?}",
                    caller.scopes
                );
            }
            if value.contains(',') || value.contains('"') || value.contains('\t') {
                assert!(!caller.has_scope(SCOPE_READ), "{claim}: {value}");
            }
        }
    }

    #[test]
    fn cognito_scopes_count_as_the_apis() {
        let claims: Claims = [
            ("tenant_id".to_string(), "acme".to_string()),
            (
                "scope".to_string(),
                "audit/read audit/platform other/write".to_string(),
            ),
        ]
        .into_iter()
        .collect();
        let caller = Caller::from_claims(Some((&claims, None)), "tenant_id").unwrap();
        assert!(caller.has_scope(SCOPE_READ) && caller.has_scope(SCOPE_PLATFORM));
        assert!(!caller.has_scope(SCOPE_WRITE) && !caller.has_scope(SCOPE_ADMIN));
    }

    #[test]
    fn tenant_ids_may_not_contain_the_key_separator() {
        assert!(is_valid_tenant("acme-42"));
        assert!(!is_valid_tenant("acme#idem"));
        assert!(!is_valid_tenant(""));
        assert!(!is_valid_tenant(&"x".repeat(129)));
    }
}
