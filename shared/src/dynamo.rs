//! [`EventStore`] over DynamoDB through `aws-sdk-dynamodb`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_dynamodb::config::{Credentials, Region};
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, PutRequest, ReturnConsumedCapacity, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::error::StoreError;
use crate::event::{Event, MAX_SORT_KEY_BYTES};
use crate::metadata::ObservedProperty;
use crate::store::TenantSettings;
use crate::store::{EventStore, IdempotentPut, RangePage, RangeRead};
use crate::table::{
    pivot_key, IDEMPOTENCY_PREFIX, METADATA_PREFIX, PARTITION_KEY, PIVOT_INDEXES, SETTINGS_PREFIX,
    SETTINGS_SORT_KEY, SORT_KEY, TTL_ATTRIBUTE,
};

pub type Item = HashMap<String, AttributeValue>;

/// Builds the process's one SDK client: explicit timeouts, standard retries
/// (which handle throttling with backoff), optional endpoint override.
pub async fn client(config: &Config) -> Client {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_attempt_timeout(config.attempt_timeout)
        .operation_timeout(config.operation_timeout)
        .connect_timeout(Duration::from_secs(1))
        .build();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeouts)
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(4));
    if let Some(endpoint) = &config.dynamodb_endpoint {
        loader = loader.endpoint_url(endpoint);
        // Local endpoints accept any credentials; don't go looking for real ones.
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            loader = loader
                .credentials_provider(Credentials::new("local", "local", None, None, "local"));
        }
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            loader = loader.region(Region::new("us-east-1"));
        }
    }
    Client::new(&loader.load().await)
}

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }
}

/// The stored item of an event: its fields, the TTL number and the keys of
/// the pivot indexes.
pub fn event_to_item(event: &Event) -> Result<Item, StoreError> {
    let mut item: Item =
        serde_dynamo::to_item(event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    if let Ok(expires_at) = DateTime::parse_from_rfc3339(&event.expires_at) {
        item.insert(
            TTL_ATTRIBUTE.into(),
            AttributeValue::N(expires_at.timestamp().to_string()),
        );
    }
    for index in PIVOT_INDEXES {
        if let Some(AttributeValue::S(value)) = item.get(index.field) {
            let key = pivot_key(&event.account_id, value);
            item.insert(index.key_attribute.into(), AttributeValue::S(key));
        }
    }
    Ok(item)
}

pub fn item_to_event(item: Item) -> Result<Event, StoreError> {
    serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt(e.to_string()))
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

/// The idempotency marker of an event written under `key`.
pub fn marker_item(event: &Event, key: &str) -> Item {
    let mut item = Item::new();
    item.insert(
        PARTITION_KEY.into(),
        AttributeValue::S(format!("{IDEMPOTENCY_PREFIX}{}", event.account_id)),
    );
    item.insert(SORT_KEY.into(), AttributeValue::S(key.to_string()));
    item.insert("target".into(), AttributeValue::S(event.cursor.clone()));
    item.insert(
        "timestamp".into(),
        AttributeValue::S(event.timestamp.clone()),
    );
    item.insert(
        "expiresAt".into(),
        AttributeValue::S(event.expires_at.clone()),
    );
    if let Ok(expires_at) = DateTime::parse_from_rfc3339(&event.expires_at) {
        item.insert(
            TTL_ATTRIBUTE.into(),
            AttributeValue::N(expires_at.timestamp().to_string()),
        );
    }
    item
}

fn duplicate_from_marker(item: &Item) -> Option<IdempotentPut> {
    let text = |name: &str| match item.get(name) {
        Some(AttributeValue::S(s)) => Some(s.clone()),
        _ => None,
    };
    Some(IdempotentPut::Duplicate {
        cursor: text("target")?,
        timestamp: text("timestamp")?,
        expires_at: text("expiresAt")?,
    })
}

/// Exponential backoff with full jitter: 25 ms, 50 ms, ... capped at 800 ms.
pub fn backoff(attempt: u32) -> Duration {
    let cap = 25u64.saturating_mul(1 << attempt.min(5));
    Duration::from_millis(rand::random_range(cap / 2..=cap))
}

#[async_trait]
impl EventStore for DynamoStore {
    async fn put_event(&self, event: &Event) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(event_to_item(event)?))
            .condition_expression("attribute_not_exists(#sk)")
            .expression_attribute_names("#sk", SORT_KEY)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn put_event_once(
        &self,
        event: &Event,
        key: &str,
        deadline: Instant,
    ) -> Result<IdempotentPut, StoreError> {
        let event_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(event_to_item(event)?))
            .condition_expression("attribute_not_exists(#sk)")
            .expression_attribute_names("#sk", SORT_KEY)
            .build()
            .map_err(|e| StoreError::Other(e.to_string()))?;
        // A marker past its TTL but not yet removed counts as gone.
        let marker_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(marker_item(event, key)))
            .condition_expression("attribute_not_exists(#sk) OR #ttl < :now")
            .expression_attribute_names("#sk", SORT_KEY)
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(
                ":now",
                AttributeValue::N(Utc::now().timestamp().to_string()),
            )
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| StoreError::Other(e.to_string()))?;
        let mut attempt = 0;
        loop {
            let result = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(event_put.clone()).build())
                .transact_items(TransactWriteItem::builder().put(marker_put.clone()).build())
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await;
            let err = match result {
                Ok(_) => return Ok(IdempotentPut::Stored),
                Err(err) => err,
            };
            let reasons = err
                .as_service_error()
                .and_then(|e| match e {
                    aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => {
                        Some(c.cancellation_reasons().to_vec())
                    }
                    _ => None,
                });
            match reasons {
                Some(reasons) => {
                    let marker_reason = reasons.get(1);
                    if marker_reason.and_then(|r| r.code()) == Some("ConditionalCheckFailed") {
                        if let Some(duplicate) = marker_reason
                            .and_then(|r| r.item())
                            .and_then(duplicate_from_marker)
                        {
                            return Ok(duplicate);
                        }
                        return self.read_marker(&event.account_id, key).await;
                    }
                    if let Some(invalid) =
                        reasons.iter().find(|r| r.code() == Some("ValidationError"))
                    {
                        return Err(StoreError::Rejected(
                            invalid.message().unwrap_or_default().to_string(),
                        ));
                    }
                    // TransactionConflict (a concurrent retry with the same
                    // key) or throttling: go round again.
                    let throttled = reasons.iter().any(|r| {
                        matches!(
                            r.code(),
                            Some("ThrottlingError" | "ProvisionedThroughputExceeded")
                        )
                    });
                    if Instant::now() + backoff(attempt) >= deadline {
                        return Err(if throttled {
                            StoreError::Throttled
                        } else {
                            StoreError::Unavailable("transaction kept conflicting".into())
                        });
                    }
                }
                None => {
                    let classified = classify(err);
                    if !matches!(classified, StoreError::Throttled)
                        || Instant::now() + backoff(attempt) >= deadline
                    {
                        return Err(classified);
                    }
                }
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }

    async fn put_events(&self, events: &[Event], deadline: Instant) -> Vec<Result<(), StoreError>> {
        let mut results: Vec<Option<Result<(), StoreError>>> =
            (0..events.len()).map(|_| None).collect();
        let mut pending: HashMap<String, usize> = HashMap::new();
        let mut requests = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            match event_to_item(event).and_then(|item| {
                PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .map_err(|e| StoreError::Other(e.to_string()))
            }) {
                Ok(put) => {
                    pending.insert(event.cursor.clone(), i);
                    requests.push(WriteRequest::builder().put_request(put).build());
                }
                Err(err) => results[i] = Some(Err(err)),
            }
        }
        let mut settle = |requests: &[WriteRequest],
                          outcome: &dyn Fn() -> Result<(), StoreError>| {
            for request in requests {
                if let Some(i) = cursor_of(request).and_then(|c| pending.get(&c)) {
                    results[*i] = Some(outcome());
                }
            }
        };
        // Groups still to write. A group DynamoDB refuses as invalid is split
        // in halves until the one item it refuses is alone: its neighbours
        // are stored, and only it is reported.
        let mut groups: Vec<Vec<WriteRequest>> = vec![requests];
        let mut attempt = 0;
        while let Some(group) = groups.pop() {
            if group.is_empty() {
                continue;
            }
            let sent = self
                .client
                .batch_write_item()
                .request_items(&self.table, group.clone())
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await;
            let unprocessed = match sent.map_err(classify) {
                Ok(output) => {
                    let unprocessed = output
                        .unprocessed_items
                        .and_then(|mut map| map.remove(&self.table))
                        .unwrap_or_default();
                    let still: std::collections::HashSet<String> =
                        unprocessed.iter().filter_map(cursor_of).collect();
                    let done: Vec<WriteRequest> = group
                        .into_iter()
                        .filter(|r| cursor_of(r).is_some_and(|c| !still.contains(&c)))
                        .collect();
                    settle(&done, &|| Ok(()));
                    unprocessed
                }
                Err(StoreError::Rejected(reason)) if group.len() == 1 => {
                    settle(&group, &|| Err(StoreError::Rejected(reason.clone())));
                    continue;
                }
                Err(StoreError::Rejected(_)) => {
                    let mut first = group;
                    let second = first.split_off(first.len() / 2);
                    groups.push(second);
                    groups.push(first);
                    continue;
                }
                Err(StoreError::Throttled) => group,
                // Nothing in this call is known to be stored; retrying is safe.
                Err(other) => {
                    let reason = other.to_string();
                    settle(&group, &|| Err(StoreError::Unavailable(reason.clone())));
                    continue;
                }
            };
            if unprocessed.is_empty() {
                continue;
            }
            let pause = backoff(attempt);
            if Instant::now() + pause >= deadline {
                settle(&unprocessed, &|| Err(StoreError::Throttled));
                continue;
            }
            tokio::time::sleep(pause).await;
            attempt += 1;
            groups.push(unprocessed);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(StoreError::Unavailable("not attempted".into()))))
            .collect()
    }

    async fn read_range(&self, read: &RangeRead) -> Result<RangePage, StoreError> {
        let (index_name, key_attribute, key_value) = match &read.pivot {
            Some((index, value)) => (
                Some(index.name),
                index.key_attribute,
                pivot_key(&read.tenant, value),
            ),
            None => (None, PARTITION_KEY, read.tenant.clone()),
        };
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .set_index_name(index_name.map(str::to_string))
            .key_condition_expression("#pk = :pk AND #sk BETWEEN :lo AND :hi")
            .expression_attribute_names("#pk", key_attribute)
            .expression_attribute_names("#sk", SORT_KEY)
            .expression_attribute_values(":pk", AttributeValue::S(key_value))
            .expression_attribute_values(":lo", AttributeValue::S(read.lo.clone()))
            .expression_attribute_values(":hi", AttributeValue::S(read.hi.clone()))
            .scan_index_forward(!read.newest_first)
            .limit(read.limit.clamp(1, 10_000) as i32)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(classify)?;
        let items = output.items.unwrap_or_default();
        let mut page = RangePage {
            items_read: items.len(),
            more: output.last_evaluated_key.is_some_and(|k| !k.is_empty()),
            read_units: output
                .consumed_capacity
                .and_then(|c| c.capacity_units)
                .unwrap_or(0.0),
            ..RangePage::default()
        };
        page.last_cursor = items
            .last()
            .and_then(|i| i.get(SORT_KEY))
            .and_then(|v| v.as_s().ok())
            .cloned();
        page.events.reserve(items.len());
        for item in items {
            match item_to_event(item) {
                Ok(event) => page.events.push(event),
                // One unreadable item must not stop the trail; it is logged for operators.
                Err(err) => tracing::error!(error = %err, "skipping an unreadable event item"),
            }
        }
        Ok(page)
    }

    async fn get_settings(&self, tenant: &str) -> Result<Option<TenantSettings>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(
                PARTITION_KEY,
                AttributeValue::S(format!("{SETTINGS_PREFIX}{tenant}")),
            )
            .key(SORT_KEY, AttributeValue::S(SETTINGS_SORT_KEY.into()))
            .send()
            .await
            .map_err(classify)?;
        output
            .item
            .map(|item| {
                serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .transpose()
    }

    async fn put_settings(
        &self,
        tenant: &str,
        settings: &TenantSettings,
    ) -> Result<(), StoreError> {
        let mut item: Item =
            serde_dynamo::to_item(settings).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        item.insert(
            PARTITION_KEY.into(),
            AttributeValue::S(format!("{SETTINGS_PREFIX}{tenant}")),
        );
        item.insert(SORT_KEY.into(), AttributeValue::S(SETTINGS_SORT_KEY.into()));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn put_properties(
        &self,
        sightings: &[(String, ObservedProperty)],
    ) -> Result<(), StoreError> {
        let mut failure = None;
        for chunk in sightings.chunks(25) {
            if let Err(err) = self.put_property_chunk(chunk).await {
                failure = Some(err);
            }
        }
        failure.map_or(Ok(()), Err)
    }

    async fn read_properties(
        &self,
        tenant: &str,
        service_name: Option<&str>,
        event_type: Option<&str>,
    ) -> Result<Vec<ObservedProperty>, StoreError> {
        self.query_properties(tenant, service_name, event_type)
            .await
    }

    async fn get_event(&self, tenant: &str, cursor: &str) -> Result<Option<Event>, StoreError> {
        self.get_event_item(tenant, cursor).await
    }
}

impl DynamoStore {
    /// Up to 25 property items in one batch; one that can't be a key is left out.
    async fn put_property_chunk(
        &self,
        chunk: &[(String, ObservedProperty)],
    ) -> Result<(), StoreError> {
        {
            let mut requests = Vec::with_capacity(chunk.len());
            let mut keys = std::collections::HashSet::new();
            for (tenant, property) in chunk {
                let key = property_key(property);
                if key.len() > MAX_SORT_KEY_BYTES {
                    // A name this long can't be a key; the other properties are kept.
                    tracing::warn!(bytes = key.len(), "a property name too long to record");
                    continue;
                }
                if !keys.insert((tenant.clone(), key.clone())) {
                    continue; // BatchWriteItem refuses duplicate keys in one call
                }
                let mut item: Item = serde_dynamo::to_item(property)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                item.insert(
                    PARTITION_KEY.into(),
                    AttributeValue::S(format!("{METADATA_PREFIX}{tenant}")),
                );
                item.insert(SORT_KEY.into(), AttributeValue::S(key));
                let put = PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .map_err(|e| StoreError::Other(e.to_string()))?;
                requests.push(WriteRequest::builder().put_request(put).build());
            }
            let mut attempt = 0;
            while !requests.is_empty() {
                let output = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests)
                    .send()
                    .await
                    .map_err(classify)?;
                requests = output
                    .unprocessed_items
                    .and_then(|mut m| m.remove(&self.table))
                    .unwrap_or_default();
                if !requests.is_empty() {
                    if attempt >= 5 {
                        return Err(StoreError::Throttled);
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
        Ok(())
    }

    async fn query_properties(
        &self,
        tenant: &str,
        service_name: Option<&str>,
        event_type: Option<&str>,
    ) -> Result<Vec<ObservedProperty>, StoreError> {
        let prefix = match (service_name, event_type) {
            (Some(service), Some(kind)) => format!("[{},{},", json_text(service), json_text(kind)),
            (Some(service), None) => format!("[{},", json_text(service)),
            _ => "[".to_string(),
        };
        let mut properties = Vec::new();
        let mut start: Option<Item> = None;
        // Metadata is bounded per tenant; 20 pages of 1 MB is far beyond it.
        for _ in 0..20 {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                .expression_attribute_names("#pk", PARTITION_KEY)
                .expression_attribute_names("#sk", SORT_KEY)
                .expression_attribute_values(
                    ":pk",
                    AttributeValue::S(format!("{METADATA_PREFIX}{tenant}")),
                )
                .expression_attribute_values(":prefix", AttributeValue::S(prefix.clone()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(classify)?;
            for item in output.items.unwrap_or_default() {
                match serde_dynamo::from_item::<_, ObservedProperty>(item) {
                    Ok(property) => properties.push(property),
                    Err(err) => {
                        tracing::error!(error = %err, "skipping an unreadable metadata item")
                    }
                }
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(properties)
    }

    async fn get_event_item(
        &self,
        tenant: &str,
        cursor: &str,
    ) -> Result<Option<Event>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PARTITION_KEY, AttributeValue::S(tenant.to_string()))
            .key(SORT_KEY, AttributeValue::S(cursor.to_string()))
            .send()
            .await
            .map_err(classify)?;
        output.item.map(item_to_event).transpose()
    }
}

impl DynamoStore {
    async fn read_marker(&self, tenant: &str, key: &str) -> Result<IdempotentPut, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(
                PARTITION_KEY,
                AttributeValue::S(format!("{IDEMPOTENCY_PREFIX}{tenant}")),
            )
            .key(SORT_KEY, AttributeValue::S(key.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        output
            .item
            .as_ref()
            .and_then(duplicate_from_marker)
            .ok_or_else(|| StoreError::Corrupt("idempotency marker vanished".into()))
    }
}

fn json_text(value: &str) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// `[serviceName, eventType, property, type]` as JSON: unambiguous, and
/// sorted so a service's or a kind's properties share a key prefix.
fn property_key(property: &ObservedProperty) -> String {
    format!(
        "[{},{},{},{}]",
        json_text(&property.service_name),
        json_text(&property.event_type),
        json_text(&property.name),
        json_text(&property.json_type)
    )
}

fn cursor_of(request: &WriteRequest) -> Option<String> {
    match request.put_request()?.item().get(SORT_KEY)? {
        AttributeValue::S(cursor) => Some(cursor.clone()),
        _ => None,
    }
}
