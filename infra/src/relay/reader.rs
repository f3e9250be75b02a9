//! The relay's reading half: the store's stream through the real DynamoDB
//! Streams API, each batch fed to the `stream` function's handler as the
//! Lambda event source mapping would, retried and given up as it would be,
//! and the position in each shard kept.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::dynamodb::Event as StreamEvent;
use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, ShardIteratorType};
use base64::Engine;
use serde_json::{json, Map, Value};
use stream::StreamHandler;

use super::{DeadLetters, LocalPublisher};

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
/// Records asked of a shard at a time (Lambda's default batch size).
const RECORDS_PER_READ: i32 = 100;

/// How often the stream's shards are looked for again besides when one
/// closes (DynamoDB rolls shards over every few hours).
const SHARD_DISCOVERY_EVERY: Duration = Duration::from_secs(30);

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
    /// The longest pause between retries of a failed batch (backoff doubles
    /// from `poll` up to it).
    pub max_pause: Duration,
    /// Start at the oldest record kept (true) or only new ones (false),
    /// when `position_file` holds no position of the stream.
    pub from_start: bool,
    /// Where the relay keeps its position in each shard once what it read
    /// is handled (`audit-local serve` keeps it beside its data): a
    /// restarted relay goes on just after it, so what was stored but not
    /// yet delivered when it stopped is delivered (again, at worst), never
    /// skipped. `None`: kept in memory only (tests, `--memory`).
    pub position_file: Option<std::path::PathBuf>,
    /// Where records the handler keeps failing go (the mapping's OnFailure
    /// destination).
    pub dead_letters: DeadLetters,
}

/// Longest pause between deliveries of a batch a subscriber keeps refusing
/// (`audit-local serve`'s `max_pause`).
pub const MAX_RETRY_PAUSE: Duration = Duration::from_secs(30);

/// Retries of a record the handler fails, as the template's mapping allows
/// (`MaximumRetryAttempts`), before it goes to the dead letters. Failures
/// while a subscriber is out don't count: locally the subscriber stands in
/// for EventBridge too, which would hold the entry and retry for a day.
pub const MAX_RETRY_ATTEMPTS: u32 = 10;

/// What `Relay::position_file` holds.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SavedPositions {
    stream_arn: String,
    shards: HashMap<String, String>,
}

/// Where the relay reads: the stream and a position in each shard.
struct Positions {
    arn: String,
    iterators: HashMap<String, Option<String>>,
    /// The last record read from each shard, to take a new iterator after it
    /// when the current one fails (expired, or trimmed as DynamoDB Local
    /// does under load).
    last_read: HashMap<String, String>,
    /// Where each shard was first read from, for a shard with nothing read yet.
    from_start: HashMap<String, bool>,
}

impl Relay {
    /// Takes the stream position first, then relays in the background: an
    /// event stored once this returns is delivered, so call it before the
    /// API accepts requests.
    pub async fn start(self) -> Result<tokio::task::JoinHandle<()>, String> {
        let (mut positions, resumed) = self.positions().await?;
        // Shards known now start where `from_start` says; shards that appear
        // later start at their beginning, so nothing in them is missed. A
        // relay going on from a kept position reads a shard the position
        // does not name from its beginning too.
        self.discover_shards(&mut positions, self.from_start || resumed)
            .await?;
        if !resumed {
            // Kept at once, with no shard read yet: a relay stopped before
            // its first save goes on from the shards' beginnings, never
            // from their ends past what this one read.
            self.save_positions(&positions);
        }
        Ok(tokio::spawn(async move {
            if let Err(err) = self.run(positions).await {
                tracing::error!(error = %err, "stream relay stopped");
            }
        }))
    }

    /// Starts in the background; errors are logged. Prefer [`Self::start`].
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            match self.start().await {
                Ok(handle) => {
                    let _ = handle.await;
                }
                Err(err) => tracing::error!(error = %err, "stream relay stopped"),
            }
        })
    }

    /// The positions `position_file` keeps for the stream `arn` (shard and
    /// the sequence number of the last record handled); `None` without a
    /// file. A file this relay cannot use (unreadable, or of another
    /// stream) names no shard, so every shard is read from its beginning:
    /// sent again, never skipped.
    fn saved_positions(&self, arn: &str) -> Option<HashMap<String, String>> {
        let path = self.position_file.as_ref()?;
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "the relay's position file does not read; reading every shard from its beginning");
                return Some(HashMap::new());
            }
        };
        match serde_json::from_str::<SavedPositions>(&text) {
            Ok(saved) if saved.stream_arn == arn => Some(saved.shards),
            Ok(_) => {
                tracing::warn!(path = %path.display(), "the relay's position file is of another stream; reading every shard from its beginning");
                Some(HashMap::new())
            }
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "the relay's position file does not read; reading every shard from its beginning");
                Some(HashMap::new())
            }
        }
    }

    /// Keeps the positions of what is handled (written whole, then renamed
    /// over the last, so a stop mid-write leaves the last one).
    fn save_positions(&self, positions: &Positions) {
        let Some(path) = &self.position_file else {
            return;
        };
        let saved = SavedPositions {
            stream_arn: positions.arn.clone(),
            shards: positions.last_read.clone(),
        };
        let written = serde_json::to_vec(&saved)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                use std::io::Write as _;
                let partial = path.with_extension("partial");
                let mut file = std::fs::File::create(&partial)?;
                file.write_all(&bytes)?;
                // On disk before it replaces the last one.
                file.sync_all()?;
                std::fs::rename(&partial, path)
            });
        if let Err(err) = written {
            tracing::warn!(path = %path.display(), error = %err, "the relay's position was not kept");
        }
    }

    /// The stream's positions, and whether they were kept by a relay before.
    async fn positions(&self) -> Result<(Positions, bool), String> {
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
        let saved = self.saved_positions(&arn);
        let resumed = saved.is_some();
        Ok((
            Positions {
                arn,
                iterators: HashMap::new(),
                last_read: saved.unwrap_or_default(),
                from_start: HashMap::new(),
            },
            resumed,
        ))
    }

    /// Takes an iterator for every shard not known yet; how many it found.
    async fn discover_shards(
        &self,
        positions: &mut Positions,
        from_start: bool,
    ) -> Result<usize, String> {
        let mut added = 0;
        let description = self
            .streams
            .describe_stream()
            .stream_arn(&positions.arn)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        for shard in description
            .stream_description()
            .map(|d| d.shards())
            .unwrap_or_default()
        {
            let Some(id) = shard.shard_id() else { continue };
            if positions.iterators.contains_key(id) {
                continue;
            }
            // A shard this relay handled records of before it stopped goes
            // on just after them; one it never read, from where it says.
            let saved = positions.last_read.get(id).cloned();
            let mut shard_from_start = from_start;
            let iterator = match self
                .iterator(&positions.arn, id, saved.as_deref(), from_start)
                .await
            {
                Ok(iterator) => iterator,
                Err(err) if saved.is_some() && err.contains("TrimmedDataAccessException") => {
                    // Trimmed since (DynamoDB keeps a day): the oldest kept.
                    tracing::warn!(shard = %id, error = %err, "the kept position is gone; reading the shard from its oldest record");
                    positions.last_read.remove(id);
                    shard_from_start = true;
                    self.iterator(&positions.arn, id, None, true).await?
                }
                Err(err) => return Err(err),
            };
            positions.iterators.insert(id.to_string(), iterator);
            positions
                .from_start
                .insert(id.to_string(), shard_from_start);
            added += 1;
        }
        Ok(added)
    }

    /// A shard iterator just after `after`, else at the shard's start or its end.
    async fn iterator(
        &self,
        arn: &str,
        shard: &str,
        after: Option<&str>,
        from_start: bool,
    ) -> Result<Option<String>, String> {
        let request = self
            .streams
            .get_shard_iterator()
            .stream_arn(arn)
            .shard_id(shard);
        let request = match after {
            Some(sequence) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(sequence),
            None if from_start => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            None => request.shard_iterator_type(ShardIteratorType::Latest),
        };
        let output = request.send().await.map_err(|e| {
            // With the service's error code (TrimmedDataAccessException).
            aws_sdk_dynamodbstreams::error::DisplayErrorContext(&e).to_string()
        })?;
        Ok(output.shard_iterator().map(str::to_string))
    }

    async fn run(self, mut positions: Positions) -> Result<(), String> {
        let mut retry: Vec<Value> = Vec::new();
        let mut failures: u32 = 0;
        // Failed attempts of the first failed record that count against it.
        let mut counted: u32 = 0;
        // Shards are looked for again when one closes (its child holds what
        // follows) and now and then, not on every poll: the embedded store
        // answers `DescribeStream` with a scan of the whole stream's index,
        // and on every 200 ms poll that made the relay fall behind for good
        // once about 250 000 events were stored.
        let mut discovered = std::time::Instant::now();
        let mut shard_closed = false;
        loop {
            // With no shard open, or one closed whose child is not found
            // yet, every poll looks again (as before), so nothing waits 30 s.
            let none_open = positions.iterators.values().all(Option::is_none);
            if shard_closed || none_open || discovered.elapsed() >= SHARD_DISCOVERY_EVERY {
                match self.discover_shards(&mut positions, true).await {
                    Ok(added) if added > 0 || !shard_closed => shard_closed = false,
                    Ok(_) => {}
                    Err(err) => tracing::warn!(error = %err, "DescribeStream failed; retrying"),
                }
                discovered = std::time::Instant::now();
            }
            // A shard that gave a whole batch has more waiting: read on
            // without the pause.
            let mut more_waiting = false;
            let arn = positions.arn.clone();
            let mut batch = std::mem::take(&mut retry);
            if batch.is_empty() {
                for (shard, iterator) in positions.iterators.iter_mut() {
                    let Some(current) = iterator.clone() else {
                        continue;
                    };
                    match self
                        .streams
                        .get_records()
                        .shard_iterator(current)
                        .limit(RECORDS_PER_READ)
                        .send()
                        .await
                    {
                        Ok(output) => {
                            if let Some(sequence) = output
                                .records()
                                .last()
                                .and_then(|r| r.dynamodb())
                                .and_then(|d| d.sequence_number())
                            {
                                positions
                                    .last_read
                                    .insert(shard.clone(), sequence.to_string());
                            }
                            more_waiting |= output.records().len() >= RECORDS_PER_READ as usize;
                            batch.extend(output.records().iter().map(|r| lambda_record(r, &arn)));
                            *iterator = output.next_shard_iterator().map(str::to_string);
                            shard_closed |= iterator.is_none();
                        }
                        Err(err) => {
                            // An iterator that failed once fails forever:
                            // take a new one just after the last record read.
                            tracing::warn!(shard = %shard, error = %err, "GetRecords failed; taking a new iterator");
                            let after = positions.last_read.get(shard).map(String::as_str);
                            // A shard read from its end that has read nothing
                            // yet has no place to go back to: its beginning,
                            // not a new end past what was stored meanwhile.
                            let from_start = after.is_none()
                                || positions.from_start.get(shard).copied().unwrap_or(true);
                            match self.iterator(&arn, shard, after, from_start).await {
                                Ok(fresh) => {
                                    shard_closed |= fresh.is_none();
                                    *iterator = fresh
                                }
                                Err(err) => {
                                    tracing::warn!(shard = %shard, error = %err, "GetShardIterator failed")
                                }
                            }
                        }
                    }
                }
            }
            let mut pause = if more_waiting {
                Duration::ZERO
            } else {
                self.poll
            };
            if !batch.is_empty() {
                let event: StreamEvent =
                    serde_json::from_value(json!({"Records": batch})).map_err(|e| e.to_string())?;
                let response = self.handler.handle(event).await;
                // As Lambda does: retry from the first failed record on, with
                // backoff. While a subscriber is out, for as long as it takes
                // (EventBridge's part); a record the handler fails for any
                // other reason, MAX_RETRY_ATTEMPTS times, then it goes to
                // the dead letters and the relay moves past it.
                let failed: Vec<String> = response
                    .batch_item_failures
                    .iter()
                    .filter_map(|f| f.item_identifier.clone())
                    .collect();
                let is_failed = |record: &Value| {
                    failed
                        .iter()
                        .any(|f| record["dynamodb"]["SequenceNumber"] == f.as_str())
                };
                // A record still undelivered because a subscriber is out
                // waits for it without counting (a record the handler can't
                // read never reaches a subscriber, so it always counts).
                if !failed.is_empty() && !self.handler.publisher().out_for_any(&failed) {
                    counted += 1;
                }
                if counted > MAX_RETRY_ATTEMPTS {
                    // As Lambda does once the retries are spent: the batch it
                    // was retrying (the failed record and all behind it) is
                    // given up; the failure queue learns of the failed ones.
                    // From the failed record on, as Lambda's failure
                    // destination names the range it gave up.
                    for (index, record) in batch.iter().skip_while(|r| !is_failed(r)).enumerate() {
                        let why = if index == 0 {
                            format!("the stream handler failed the record {counted} times")
                        } else {
                            "given up with the failed record before it in its batch".to_string()
                        };
                        self.dead_letters.keep(&why, record.clone());
                    }
                    counted = 0;
                    failures = 0;
                    batch.clear();
                }
                match batch.iter().position(is_failed) {
                    Some(first) => {
                        failures = failures.saturating_add(1);
                        retry = batch.split_off(first);
                        pause =
                            (self.poll * 2u32.saturating_pow(failures.min(10))).min(self.max_pause);
                        tracing::warn!(
                            records = retry.len(),
                            failures,
                            retry_in_ms = pause.as_millis() as u64,
                            "a subscriber refused stream records; keeping them and retrying"
                        );
                    }
                    None => {
                        failures = 0;
                        counted = 0;
                    }
                }
                // Everything read is handled (delivered, or given up to the
                // dead letters): a restart goes on after it.
                if retry.is_empty() {
                    self.save_positions(&positions);
                }
            }
            tokio::time::sleep(pause).await;
        }
    }
}
