//! The sealer, run on a schedule: every tenant with new settled events gets
//! them appended to its integrity log and a signed checkpoint, which is
//! put on the bus (`AuditCheckpoint`) so subscribers hold copies the
//! operator can't rewrite. It also answers the CloudFormation custom
//! resource that publishes the verifier key at deploy.

use std::sync::Arc;
use std::time::Duration;

use audit_core::config::Config;
use audit_core::integrity::seal::{SealBudget, SealReport, Sealer};
use audit_core::integrity::{CheckpointRecord, LogStore};
use audit_core::publish::{BusEntry, Publisher};
use audit_core::EventStore;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// The bus detail type of a checkpoint.
pub const CHECKPOINT_DETAIL_TYPE: &str = "AuditCheckpoint";

pub struct SealHandler<S, P> {
    sealer: Sealer<S>,
    publisher: P,
    source: String,
}

/// The bus entry of a checkpoint: the record as the API returns it.
pub fn checkpoint_entry(checkpoint: &CheckpointRecord, source: &str) -> BusEntry {
    let mut detail = serde_json::to_value(checkpoint).unwrap_or_default();
    if let Some(map) = detail.as_object_mut() {
        map.remove("lastCursor");
    }
    BusEntry {
        source: source.to_string(),
        detail_type: CHECKPOINT_DETAIL_TYPE.to_string(),
        detail: detail.to_string(),
        // Heartbeats repeat a size: the time tells two checkpoints apart, so
        // the local relay's per-subscriber retry state never mixes them.
        record_id: format!(
            "{}#{}#{}",
            checkpoint.origin, checkpoint.tree_size, checkpoint.timestamp
        ),
    }
}

impl<S: EventStore + LogStore, P: Publisher> SealHandler<S, P> {
    pub fn new(store: Arc<S>, config: &Config, publisher: P, source: impl Into<String>) -> Self {
        Self {
            sealer: Sealer::new(store, config),
            publisher,
            source: source.into(),
        }
    }

    pub fn verifier_key(&self) -> String {
        self.sealer.signer().verifier().vkey()
    }

    /// One run with no time limit (the local runner, tests).
    pub async fn run(&self, now: DateTime<Utc>) -> Result<SealReport, String> {
        self.run_within(now, &SealBudget::unlimited()).await
    }

    /// One run: seal within `budget`, then publish every new checkpoint.
    /// `Err` when a checkpoint could not be published (it is kept all the
    /// same) or a tenant failed; tenants the budget left wait for the next
    /// run and are no failure.
    pub async fn run_within(
        &self,
        now: DateTime<Utc>,
        budget: &SealBudget,
    ) -> Result<SealReport, String> {
        let report = self
            .sealer
            .seal_all(now, budget)
            .await
            .map_err(|e| e.to_string())?;
        let entries: Vec<BusEntry> = report
            .checkpoints
            .iter()
            .map(|c| checkpoint_entry(c, &self.source))
            .collect();
        let mut unpublished = 0;
        for call in entries.chunks(audit_core::publish::MAX_ENTRIES_PER_CALL) {
            match self.publisher.publish(call).await {
                Ok(accepted) => unpublished += accepted.iter().filter(|ok| !**ok).count(),
                Err(err) => {
                    tracing::error!(error = %err, "checkpoints not published");
                    unpublished += call.len();
                }
            }
        }
        tracing::info!(
            tenants = report.tenants_checked,
            deferred = report.tenants_deferred,
            checkpoints = report.checkpoints.len(),
            leaves = report.leaves_added,
            failures = report.failures,
            unpublished,
            "sealing run finished"
        );
        if unpublished > 0 || report.failures > 0 {
            return Err(format!(
                "{unpublished} checkpoints unpublished, {} tenants failed",
                report.failures
            ));
        }
        Ok(report)
    }

    /// Answers a CloudFormation custom resource request (any `RequestType`)
    /// with the verifier key, PUT to its `ResponseURL`.
    pub async fn answer_custom_resource(&self, request: &Value) -> Result<(), String> {
        answer_custom_resource(request, Ok(&self.verifier_key())).await
    }
}

/// Answers a CloudFormation custom resource request, PUT to its
/// `ResponseURL`: `SUCCESS` with the verifier key, or `FAILED` with why
/// there is none (a function that could not start answers so, rather than
/// leaving the stack to wait out its timeout). A `Delete` always succeeds:
/// there is nothing to remove, and a failure would block the stack's
/// deletion.
pub async fn answer_custom_resource(
    request: &Value,
    verifier_key: Result<&str, &str>,
) -> Result<(), String> {
    let url = request["ResponseURL"]
        .as_str()
        .ok_or("the custom resource request has no ResponseURL")?;
    let deleting = request["RequestType"] == "Delete";
    let (status, reason, data) = match verifier_key {
        Ok(key) => (
            "SUCCESS",
            "verifier key derived from the checkpoint signing key".to_string(),
            json!({"VerifierKey": key}),
        ),
        Err(_) if deleting => ("SUCCESS", "nothing to delete".to_string(), json!({})),
        Err(why) => (
            "FAILED",
            format!("the seal function could not start: {why}"),
            json!({}),
        ),
    };
    let body = json!({
        "Status": status,
        "Reason": reason,
        "PhysicalResourceId": request["PhysicalResourceId"].as_str().unwrap_or("checkpoint-verifier-key"),
        "StackId": request["StackId"],
        "RequestId": request["RequestId"],
        "LogicalResourceId": request["LogicalResourceId"],
        "Data": data,
    });
    let response = reqwest::Client::new()
        .put(url)
        // The pre-signed URL is signed without a content type.
        .header("content-type", "")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("CloudFormation answered {}", response.status()));
    }
    Ok(())
}

/// How long a run invoked with `remaining` time before its deadline may go
/// on starting work: a tenth of it (at least 5 s) is kept to finish the
/// tenant at hand, write its tiles and publish the checkpoints.
pub fn run_budget(remaining: Duration) -> Duration {
    let margin = (remaining / 10).max(Duration::from_secs(5));
    remaining.saturating_sub(margin)
}

/// Whether an invocation is a CloudFormation custom resource request.
pub fn is_custom_resource(payload: &Value) -> bool {
    payload.get("RequestType").is_some() && payload.get("ResponseURL").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_keeps_a_tenth_of_its_time_and_at_least_five_seconds() {
        assert_eq!(
            run_budget(Duration::from_secs(300)),
            Duration::from_secs(270)
        );
        assert_eq!(run_budget(Duration::from_secs(30)), Duration::from_secs(25));
        assert_eq!(run_budget(Duration::from_secs(3)), Duration::ZERO);
    }

    /// A heartbeat repeats the last size: its entry still has an id of its
    /// own, or a publisher that tracks deliveries by id would take the new
    /// checkpoint for the old one.
    #[test]
    fn checkpoints_of_one_size_have_entries_of_their_own() {
        let checkpoint = |timestamp: &str| CheckpointRecord {
            note: String::new(),
            tree_size: 7,
            root_hash: String::new(),
            origin: "audit.local/acme".into(),
            timestamp: timestamp.into(),
            last_cursor: None,
        };
        let first = checkpoint_entry(&checkpoint("2026-12-05T01:00:00.000Z"), "s");
        let heartbeat = checkpoint_entry(&checkpoint("2026-12-05T02:00:00.000Z"), "s");
        assert_ne!(first.record_id, heartbeat.record_id);
    }
}
