//! The raw DynamoDB calls a read handler wraps, as a Lambda function of its
//! own, so the benchmark can run them under the same CPU share and runtime
//! as the handlers and compare like with like (docs/BENCHMARKS.md). It is
//! configured as the functions are (`Config::from_env`, the same client).
//!
//! Payloads: `{"call": "tail-page", "tenant", "from", "limit"}` (one `Query`
//! of the tenant's partition), `{"call": "index-page", "tenant", "key",
//! "limit"}` (the `byUserId` index `Query`, then `BatchGetItem` of its keys,
//! 100 per call), `{"call": "get-item", "tenant", "cursor"}`. The answer is
//! `{"count": <items returned>}`.

use audit_core::config::Config;
use audit_dynamo::table;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
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
            let out = client
                .query()
                .table_name(table_name)
                .index_name("byUserId")
                .key_condition_expression("#pk = :k")
                .expression_attribute_names("#pk", "gsiUserId")
                .expression_attribute_values(":k", AttributeValue::S(text(payload, "key")?.into()))
                .scan_index_forward(false)
                .limit(limit)
                .send()
                .await?;
            let keys: Vec<_> = out
                .items()
                .iter()
                .map(|entry| {
                    [table::PARTITION_KEY, table::SORT_KEY]
                        .iter()
                        .filter_map(|k| entry.get(*k).map(|v| (k.to_string(), v.clone())))
                        .collect()
                })
                .collect();
            let mut count = 0;
            for chunk in keys.chunks(100) {
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(chunk.to_vec()))
                    .build()?;
                let got = client
                    .batch_get_item()
                    .request_items(table_name, request)
                    .send()
                    .await?;
                count += got
                    .responses
                    .and_then(|mut r| r.remove(table_name))
                    .map_or(0, |items| items.len());
            }
            Ok(count)
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
