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
//! `"selfAudit": true` a conditional `PutItem` of the self-audit record
//! the handler writes for the same request (built as `selfaudit` builds
//! it), runs beside the read, as every read handler writes one while it
//! reads. The answer is `{"count": <items returned>}`.

use audit_core::auth::Caller;
use audit_core::config::Config;
use audit_core::selfaudit::{read_record, RequestFacts};
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

/// The self-audit record a read handler writes for the bench's request,
/// built by `selfaudit::read_record` (the same fields, `data` with the same
/// facts, deflated by the product's `event_to_item`) under a fresh cursor in
/// the tenant's partition. Until 2026-12-04 this was a hand-made item of
/// 598 bytes of request JSON against the handler's 768.
fn record_item(tenant: &str, payload: &Value) -> Result<audit_dynamo::Item, Error> {
    let (method, path, query_string, event_type) = match text(payload, "call")? {
        "tail-page" => ("GET", "/audit".to_string(), "limit=1000", "audit.list"),
        "index-page" => (
            "POST",
            "/audit/query".to_string(),
            "limit=1000",
            "audit.query",
        ),
        _ => (
            "GET",
            format!("/audit/events/{}", text(payload, "cursor")?),
            "",
            "audit.lookup",
        ),
    };
    // What the bench's API Gateway event carries: `sub` = bench, no user
    // agent, the source address 127.0.0.1.
    let caller = Caller {
        tenant: tenant.into(),
        scopes: Default::default(),
        subject: Some("bench".into()),
        client_id: None,
    };
    let facts = RequestFacts {
        event_type,
        path,
        method: method.into(),
        query_string: query_string.into(),
        user_agent: None,
        referer: None,
        source_ip: Some("127.0.0.1".into()),
    };
    let record = read_record(&caller, &facts, ulid::Ulid::new(), 90);
    Ok(audit_dynamo::event_to_item(&record)?)
}

/// The record's put, refused should the key exist, as the store writes it.
async fn put(client: &Client, table_name: &str, payload: &Value) -> Result<(), Error> {
    let item = record_item(text(payload, "tenant")?, payload)?;
    client
        .put_item()
        .table_name(table_name)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(#sk)")
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
