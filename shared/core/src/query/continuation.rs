//! The signed continuation of a query.

use super::*;

/// The opaque continuation of a query: signed, bound to the tenant, the
/// query body and the resolved window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryCursor {
    #[serde(rename = "t")]
    pub tenant: String,
    #[serde(rename = "q")]
    pub fingerprint: String,
    /// Everything at or above this cursor has been considered.
    #[serde(rename = "p")]
    pub position: String,
    #[serde(rename = "f")]
    pub from_ms: i64,
    #[serde(rename = "o")]
    pub to_ms: i64,
}

type HmacSha256 = Hmac<Sha256>;

pub struct CursorSigner {
    key: Vec<u8>,
}

impl CursorSigner {
    pub fn new(key: &[u8]) -> Self {
        Self { key: key.to_vec() }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length.
        HmacSha256::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("hmac accepts any key length"))
    }

    pub fn sign(&self, cursor: &QueryCursor) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(cursor).unwrap_or_default());
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        format!(
            "{payload}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    /// Verifies a cursor from `next` for this tenant and query; 400 otherwise.
    pub fn verify(
        &self,
        token: &str,
        tenant: &str,
        fingerprint: &str,
    ) -> Result<QueryCursor, ApiError> {
        let invalid = || {
            ApiError::bad_request("cursor", "`cursor` is not a cursor this query handed out; take it from `next`, unchanged, with the same query body")
        };
        let (payload, signature) = token.split_once('.').ok_or_else(invalid)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| invalid())?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        mac.verify_slice(&signature).map_err(|_| invalid())?;
        let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid())?;
        let cursor: QueryCursor = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        if cursor.tenant != tenant || cursor.fingerprint != fingerprint {
            return Err(invalid());
        }
        Ok(cursor)
    }
}

/// JSON with object keys sorted, so equal bodies hash equally.
pub(super) fn canonical_json(value: &Value) -> String {
    fn sort(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut sorted = Map::new();
                for key in keys {
                    sorted.insert(key.clone(), sort(&map[key]));
                }
                Value::Object(sorted)
            }
            Value::Array(items) => Value::Array(items.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    sort(value).to_string()
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
