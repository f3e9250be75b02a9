//! One retry policy for every write: a deadline, exponential backoff with
//! full jitter, and one classification of SDK failures.

use std::time::{Duration, Instant};

use audit_core::error::StoreError;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

/// Retries of one write until its deadline. The SDK's own retries (4
/// attempts, see [`crate::client`]) sit under this; this covers what the SDK
/// hands back as done but not fully applied (unprocessed batch items,
/// conflicting transactions) and throttling that outlasts the SDK.
#[derive(Debug)]
pub struct RetryPolicy {
    deadline: Instant,
    attempt: u32,
}

impl RetryPolicy {
    pub fn until(deadline: Instant) -> Self {
        Self {
            deadline,
            attempt: 0,
        }
    }

    /// A policy for writes without a caller's deadline (metadata sightings).
    pub fn for_background() -> Self {
        Self::until(Instant::now() + Duration::from_secs(2))
    }

    /// Waits before the next attempt; `false` (at once) when that attempt
    /// could not finish before the deadline.
    pub async fn pause(&mut self) -> bool {
        let pause = backoff(self.attempt);
        if Instant::now() + pause >= self.deadline {
            return false;
        }
        tokio::time::sleep(pause).await;
        self.attempt += 1;
        true
    }

    /// Whether a failure is worth another attempt at all.
    pub fn is_retryable(err: &StoreError) -> bool {
        matches!(err, StoreError::Throttled)
    }
}

/// Exponential backoff with full jitter: 25 ms, 50 ms, ... capped at 800 ms.
fn backoff(attempt: u32) -> Duration {
    let cap = 25u64.saturating_mul(1 << attempt.min(5));
    Duration::from_millis(rand::random_range(cap / 2..=cap))
}

/// Sorts SDK failures into what the domain must tell apart.
pub fn classify<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    err: SdkError<E, R>,
) -> StoreError {
    let code = err.code().unwrap_or_default().to_string();
    match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            StoreError::Unavailable(format!("{err:?}"))
        }
        _ => match code.as_str() {
            "ProvisionedThroughputExceededException"
            | "ThrottlingException"
            | "RequestLimitExceeded" => StoreError::Throttled,
            "ConditionalCheckFailedException" => StoreError::ConditionFailed,
            // The request (for a write of one item: that item) is invalid.
            "ValidationException" => {
                StoreError::Rejected(err.message().unwrap_or_default().to_string())
            }
            "InternalServerError" | "ServiceUnavailable" | "InternalFailure" => {
                StoreError::Unavailable(code)
            }
            _ => StoreError::Other(format!("{code}: {}", err.message().unwrap_or_default())),
        },
    }
}
