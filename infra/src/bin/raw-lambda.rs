//! The raw DynamoDB calls a read handler wraps, as a Lambda function of its
//! own, so the benchmark can run them under the same CPU share and runtime
//! as the handlers and compare like with like (docs/BENCHMARKS.md). It is
//! configured as the functions are (`Config::from_env`, the same client).
//!
//! Payloads: `{"call": "tail-page", "tenant", "from", "limit"}` (one `Query`
//! of the tenant's partition), `{"call": "index-page", "tenant", "key",
//! "limit"}` (with `"after", "field", "value"`: first a filtered `Query` of
//! the tenant's events after the posted-through mark; then the `Query` of
//! a pivot value's postings, then `BatchGetItem` of their cursors, 100 per
//! call), `{"call": "get-item", "tenant", "cursor"}`. With
//! `"selfAudit": true` a conditional `PutItem` of a record the size of a
//! self-audit record, with its index keys, runs beside the read, as every read handler writes
//! one while it reads. The answer is `{"count": <items returned>}`.

use audit_core::config::Config;
use audit_core::selfaudit::SELF_AUDIT_SERVICE;
use audit_dynamo::table;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use lambda_http::lambda_runtime::{self, service_fn, LambdaEvent};
use serde_json::{json, Value};

type Error = lambda_runtime::Error;

fn text<'a>(payload: &'a Value, name: &str) -> Result<&'a str, Error> {
    payload[name]
        .as_str()
        .ok_or_else(|| format!("`{name}` is missing").into())
}

async fn call(client: &Client, table_name: &str, payload: &Value) -> Result<usize, Error> {
    if payload["selfAudit"].as_bool() == Some(true) {
        let (count, put) = futures::join!(
            read(client, table_name, payload),
            put(client, table_name, payload)
        );
        put?;
        return count;
    }
    read(client, table_name, payload).await
}

/// A put like the self-audit record's: a fresh cursor in the tenant's
/// partition, ~400 bytes, refused should the key exist, and carrying the
/// pivot index keys a read's record carries (`serviceName`, `eventType`,
/// `userId` of the token's subject), so DynamoDB writes as many index
/// entries for it as for the handler's record.
async fn put(client: &Client, table_name: &str, payload: &Value) -> Result<(), Error> {
    let tenant = text(payload, "tenant")?;
    let cursor = ulid::Ulid::new().to_string();
    let data = "{\"path\":\"/audit/events/01JDQ8Z7W3P9X4K2M5N6B7C8D9\",\"method\":\"GET\",\"userAgent\":\"curl/8.5.0\",\"sourceIp\":\"203.0.113.7\",\"subject\":\"bench\"}";
    let fields = [
        ("serviceName", SELF_AUDIT_SERVICE),
        ("eventType", "audit.list"),
        ("userId", "bench"),
    ];
    let mut put = client
        .put_item()
        .table_name(table_name)
        .item(table::PARTITION_KEY, AttributeValue::S(tenant.into()))
        .item(table::SORT_KEY, AttributeValue::S(cursor.clone()))
        .item("cursor", AttributeValue::S(cursor))
        .item("accountId", AttributeValue::S(tenant.into()))
        .item(
            "timestamp",
            AttributeValue::S("2026-11-27T10:00:00.000Z".into()),
        )
        .item(
            "expiresAt",
            AttributeValue::S("2027-02-25T10:00:00.000Z".into()),
        )
        .item(table::TTL_ATTRIBUTE, AttributeValue::N("1803549600".into()))
        .item("data", AttributeValue::S(data.into()));
    for (field, value) in fields {
        put = put.item(field, AttributeValue::S(value.into()));
    }
    put.condition_expression("attribute_not_exists(#sk)")
        .expression_attribute_names("#sk", table::SORT_KEY)
        .send()
        .await?;
    Ok(())
}

async fn read(client: &Client, table_name: &str, payload: &Value) -> Result<usize, Error> {
    let tenant = text(payload, "tenant")?;
    let limit = payload["limit"].as_i64().unwrap_or(1000) as i32;
    match text(payload, "call")? {
        "tail-page" => {
            let out = client
                .query()
                .table_name(table_name)
                .key_condition_expression("#pk = :t AND #sk BETWEEN :lo AND :hi")
                .expression_attribute_names("#pk", table::PARTITION_KEY)
                .expression_attribute_names("#sk", table::SORT_KEY)
                .expression_attribute_values(":t", AttributeValue::S(tenant.into()))
                .expression_attribute_values(
                    ":lo",
                    AttributeValue::S(text(payload, "from")?.into()),
                )
                .expression_attribute_values(
                    ":hi",
                    AttributeValue::S("7ZZZZZZZZZZZZZZZZZZZZZZZZZ".into()),
                )
                .limit(limit)
                .send()
                .await?;
            Ok(out.items().len())
        }
        "index-page" => {
            let tail = match payload["after"].as_str() {
                Some(after) => Some(audit_infra::raw::Tail {
                    field: text(payload, "field")?,
                    value: text(payload, "value")?,
                    after,
                }),
                None => None,
            };
            Ok(audit_infra::raw::postings_page(
                client,
                table_name,
                tenant,
                text(payload, "key")?,
                tail,
                limit.max(1) as usize,
            )
            .await?)
        }
        "get-item" => {
            let out = client
                .get_item()
                .table_name(table_name)
                .key(table::PARTITION_KEY, AttributeValue::S(tenant.into()))
                .key(
                    table::SORT_KEY,
                    AttributeValue::S(text(payload, "cursor")?.into()),
                )
                .send()
                .await?;
            Ok(usize::from(out.item.is_some()))
        }
        other => Err(format!("unknown call `{other}`").into()),
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config = Config::from_env()?;
    let client = audit_dynamo::client(&config).await;
    let table_name = config.table_name.clone();
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let (client, table_name) = (client.clone(), table_name.clone());
        async move {
            let count = call(&client, &table_name, &event.payload).await?;
            Ok::<_, Error>(json!({ "count": count }))
        }
    }))
    .await
}
