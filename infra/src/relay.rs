//! The local stream relay: reads the store's stream through the real
//! DynamoDB Streams API, feeds each batch to the `stream` function's handler
//! as the Lambda event source mapping would, and delivers the entries to
//! local subscribers (NDJSON on stdout, HTTP POST).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use audit_shared::stream::{detail_json, BusEntry, Publisher};
use aws_lambda_events::dynamodb::Event as StreamEvent;
use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, ShardIteratorType};
use base64::Engine;
use serde_json::{json, Map, Value};
use stream::StreamHandler;

#[derive(Debug, Clone, PartialEq)]
pub enum Subscriber {
    Stdout,
    Http(String),
}

impl std::str::FromStr for Subscriber {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "stdout" => Ok(Subscriber::Stdout),
            url if url.starts_with("http://") || url.starts_with("https://") => {
                Ok(Subscriber::Http(url.to_string()))
            }
            other => Err(format!(
                "a subscriber is `stdout` or an http(s) URL, not `{other}`"
            )),
        }
    }
}

/// Delivers entries as EventBridge would hand them to a rule target.
pub struct LocalPublisher {
    subscribers: Vec<Subscriber>,
    http: reqwest::Client,
}

impl LocalPublisher {
    pub fn new(subscribers: Vec<Subscriber>) -> Self {
        Self {
            subscribers,
            http: reqwest::Client::new(),
        }
    }
}

/// The envelope EventBridge wraps a detail in.
pub fn envelope(entry: &BusEntry) -> Value {
    json!({
        "version": "0",
        "id": ulid::Ulid::new().to_string(),
        "detail-type": entry.detail_type,
        "source": entry.source,
        "account": "000000000000",
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "region": "local",
        "resources": [],
        "detail": detail_json(entry),
    })
}

#[async_trait]
impl Publisher for LocalPublisher {
    async fn publish(&self, entries: &[BusEntry]) -> Result<Vec<bool>, String> {
        let mut accepted = Vec::with_capacity(entries.len());
        for entry in entries {
            let body = envelope(entry);
            let mut ok = true;
            for subscriber in &self.subscribers {
                match subscriber {
                    Subscriber::Stdout => println!("{body}"),
                    Subscriber::Http(url) => {
                        let delivered = self.http.post(url).json(&body).send().await;
                        ok &= delivered.is_ok_and(|r| r.status().is_success());
                    }
                }
            }
            accepted.push(ok);
        }
        Ok(accepted)
    }
}

/// DynamoDB JSON (`{"S": ...}`) of a stream attribute value.
fn attribute_json(value: &AttributeValue) -> Value {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    match value {
        AttributeValue::S(s) => json!({"S": s}),
        AttributeValue::N(n) => json!({"N": n}),
        AttributeValue::Bool(b) => json!({"BOOL": b}),
        AttributeValue::Null(_) => json!({"NULL": true}),
        AttributeValue::B(b) => json!({"B": b64(b.as_ref())}),
        AttributeValue::Ss(list) => json!({"SS": list}),
        AttributeValue::Ns(list) => json!({"NS": list}),
        AttributeValue::Bs(list) => {
            json!({"BS": list.iter().map(|b| b64(b.as_ref())).collect::<Vec<_>>()})
        }
        AttributeValue::L(list) => {
            json!({"L": list.iter().map(attribute_json).collect::<Vec<_>>()})
        }
        AttributeValue::M(map) => json!({"M": image_json(map)}),
        _ => json!({"NULL": true}),
    }
}

fn image_json(image: &HashMap<String, AttributeValue>) -> Value {
    Value::Object(
        image
            .iter()
            .map(|(k, v)| (k.clone(), attribute_json(v)))
            .collect::<Map<_, _>>(),
    )
}

/// The Lambda event record for a Streams API record.
pub fn lambda_record(record: &Record, stream_arn: &str) -> Value {
    let change = record.dynamodb();
    let mut dynamodb = json!({
        "ApproximateCreationDateTime": change.and_then(|c| c.approximate_creation_date_time()).map(|t| t.secs()).unwrap_or(0),
        "Keys": change.and_then(|c| c.keys()).map(image_json).unwrap_or(json!({})),
        "SequenceNumber": change.and_then(|c| c.sequence_number()).unwrap_or_default(),
        "SizeBytes": change.and_then(|c| c.size_bytes()).unwrap_or(0),
        "StreamViewType": "NEW_IMAGE",
    });
    if let Some(image) = change.and_then(|c| c.new_image()) {
        dynamodb["NewImage"] = image_json(image);
    }
    let mut event = json!({
        "eventID": record.event_id().unwrap_or_default(),
        "eventName": record.event_name().map(|n| n.as_str()).unwrap_or_default(),
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "local",
        "eventSourceARN": stream_arn,
        "dynamodb": dynamodb,
    });
    if let Some(identity) = record.user_identity() {
        event["userIdentity"] = json!({"type": identity.r#type().unwrap_or("Service"), "principalId": identity.principal_id().unwrap_or_default()});
    }
    event
}

/// A Streams client for a local endpoint.
pub async fn streams_client(endpoint: &str) -> aws_sdk_dynamodbstreams::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_sdk_dynamodbstreams::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodbstreams::config::Credentials::new(
            "local", "local", None, None, "local",
        ))
        .load()
        .await;
    aws_sdk_dynamodbstreams::Client::new(&config)
}

pub struct Relay {
    pub streams: aws_sdk_dynamodbstreams::Client,
    pub dynamo: aws_sdk_dynamodb::Client,
    pub table: String,
    pub handler: Arc<StreamHandler<LocalPublisher>>,
    pub poll: Duration,
    /// Start at the oldest record kept (true) or only new ones (false).
    pub from_start: bool,
}

/// Attempts at one batch before the relay gives up on it (Lambda's
/// MaximumRetryAttempts; in AWS the on-failure queue keeps it).
const MAX_ATTEMPTS: u32 = 5;

impl Relay {
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            if let Err(err) = self.run().await {
                tracing::error!(error = %err, "stream relay stopped");
            }
        })
    }

    async fn run(self) -> Result<(), String> {
        let table = self
            .dynamo
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let arn = table
            .table()
            .and_then(|t| t.latest_stream_arn())
            .ok_or("the table has no stream")?
            .to_string();
        let mut iterators: HashMap<String, Option<String>> = HashMap::new();
        let mut retry: Vec<Value> = Vec::new();
        let mut attempts = 0;
        loop {
            // pick up new shards
            let description = self
                .streams
                .describe_stream()
                .stream_arn(&arn)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            for shard in description
                .stream_description()
                .map(|d| d.shards())
                .unwrap_or_default()
            {
                let Some(id) = shard.shard_id() else { continue };
                if iterators.contains_key(id) {
                    continue;
                }
                let kind = if self.from_start {
                    ShardIteratorType::TrimHorizon
                } else {
                    ShardIteratorType::Latest
                };
                let iterator = self
                    .streams
                    .get_shard_iterator()
                    .stream_arn(&arn)
                    .shard_id(id)
                    .shard_iterator_type(kind)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                iterators.insert(
                    id.to_string(),
                    iterator.shard_iterator().map(str::to_string),
                );
            }
            let mut batch = std::mem::take(&mut retry);
            if batch.is_empty() {
                attempts = 0;
                for (shard, iterator) in iterators.iter_mut() {
                    let Some(current) = iterator.clone() else {
                        continue;
                    };
                    match self
                        .streams
                        .get_records()
                        .shard_iterator(current)
                        .limit(100)
                        .send()
                        .await
                    {
                        Ok(output) => {
                            batch.extend(output.records().iter().map(|r| lambda_record(r, &arn)));
                            *iterator = output.next_shard_iterator().map(str::to_string);
                        }
                        Err(err) => {
                            tracing::warn!(shard = %shard, error = %err, "GetRecords failed")
                        }
                    }
                }
            }
            if !batch.is_empty() {
                let event: StreamEvent =
                    serde_json::from_value(json!({"Records": batch})).map_err(|e| e.to_string())?;
                let response = self.handler.handle(event).await;
                // As Lambda does: retry from the first failed record on.
                let failed: Vec<String> = response
                    .batch_item_failures
                    .iter()
                    .filter_map(|f| f.item_identifier.clone())
                    .collect();
                if let Some(first) = batch.iter().position(|r| {
                    failed
                        .iter()
                        .any(|f| r["dynamodb"]["SequenceNumber"] == f.as_str())
                }) {
                    attempts += 1;
                    if attempts < MAX_ATTEMPTS {
                        retry = batch.split_off(first);
                    } else {
                        tracing::error!(
                            records = batch.len() - first,
                            "giving up on stream records after {MAX_ATTEMPTS} attempts"
                        );
                    }
                }
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}
