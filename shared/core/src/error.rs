//! One error type for every route: what went wrong, in domain terms, with a
//! stable code. `audit-http` maps it once to a status and a response; no
//! status code is known here. Messages are written for API users: no SDK
//! debug output, no internal names.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest {
        /// The offending field (JSON path), when there is one.
        field: Option<String>,
        message: String,
    },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{message}")]
    Forbidden {
        /// The field that asked for what the token may not do, when one did
        /// (a batch event's `accountId`).
        field: Option<String>,
        message: String,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{message}")]
    PayloadTooLarge {
        /// What is too large, when it is one part of the request (a batch's
        /// `events[3]`, or `events` for too many of them).
        field: Option<String>,
        message: String,
    },
    /// The event exists but is not in the integrity log yet.
    #[error("the event is not sealed yet; it will be within {retry_after_seconds} s")]
    NotSealedYet { retry_after_seconds: u64 },
    #[error("the audit trail is temporarily unavailable; retry after {retry_after_seconds} s")]
    Unavailable { retry_after_seconds: u64 },
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn bad_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::Forbidden {
            field: None,
            message: message.into(),
        }
    }

    pub fn bad_input(message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            field: None,
            message: message.into(),
        }
    }

    /// The stable, machine-readable code in `{"error":{"code"}}`.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "invalid_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::NotSealedYet { .. } => "not_sealed_yet",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::Internal => "internal_error",
        }
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            ApiError::BadRequest { field, .. }
            | ApiError::Forbidden { field, .. }
            | ApiError::PayloadTooLarge { field, .. } => field.as_deref(),
            _ => None,
        }
    }
}

/// The error object of a response or of a batch item's result:
/// `{"code", "message", "field"?}`.
impl Serialize for ApiError {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let field = self.field();
        let mut map = serializer.serialize_map(Some(2 + usize::from(field.is_some())))?;
        map.serialize_entry("code", self.code())?;
        map.serialize_entry("message", &self.to_string())?;
        if let Some(field) = field {
            map.serialize_entry("field", field)?;
        }
        map.end()
    }
}

/// Failures of the store, as the domain needs to tell them apart.
#[derive(Debug, Error, Clone)]
pub enum StoreError {
    /// DynamoDB kept refusing for capacity after the SDK's retries.
    #[error("throttled by DynamoDB")]
    Throttled,
    /// Timeouts, connection failures, 5xx: the write may or may not have landed.
    #[error("DynamoDB unavailable: {0}")]
    Unavailable(String),
    /// A conditional write found the key taken.
    #[error("conditional check failed")]
    ConditionFailed,
    /// DynamoDB refused the request as invalid (`ValidationException`): for a
    /// write of one item, that item can never be stored as it is.
    #[error("refused by DynamoDB: {0}")]
    Rejected(String),
    #[error("stored item is malformed: {0}")]
    Corrupt(String),
    #[error("DynamoDB error: {0}")]
    Other(String),
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Throttled => ApiError::Unavailable {
                retry_after_seconds: 1,
            },
            StoreError::Unavailable(_) => ApiError::Unavailable {
                retry_after_seconds: 1,
            },
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::Internal
            }
        }
    }
}

/// Parses a JSON request body strictly (see [`crate::json`]): 400 naming
/// the body when it is empty (`hint` says what to send) or not JSON (with
/// line and column), and naming the place of a duplicate key or of a number
/// that can't be kept exactly.
pub fn parse_json_body(body: &[u8], hint: &str) -> Result<serde_json::Value, ApiError> {
    let (value, defects) = parse_json_body_lenient(body, hint)?;
    match defects.into_iter().next() {
        Some(defect) => Err(defect_error(defect)),
        None => Ok(value),
    }
}

/// Like [`parse_json_body`], but hands back the defects with the value, so
/// a batch can refuse only the events they sit in.
pub fn parse_json_body_lenient(
    body: &[u8],
    hint: &str,
) -> Result<(serde_json::Value, Vec<crate::json::Defect>), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "body",
            format!("the body is empty; send {hint}"),
        ));
    }
    crate::json::parse(body).map_err(|err| {
        ApiError::bad_request(
            "body",
            format!(
                "the body is not valid JSON (line {}, column {})",
                err.line, err.column
            ),
        )
    })
}

/// The 400 for a value that reads as JSON but can't be kept as sent.
pub fn defect_error(defect: crate::json::Defect) -> ApiError {
    let field = if defect.path.is_empty() {
        "body".to_string()
    } else {
        defect.path
    };
    ApiError::bad_request(field, defect.message)
}
