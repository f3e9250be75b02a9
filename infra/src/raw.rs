//! The raw DynamoDB calls a pivot query page wraps, written with the SDK
//! alone, for the benchmarks' handler ÷ raw ratios: the not-yet-posted
//! tail filtered on the value, the value's posting items newest first,
//! their cursors, then the events by key.

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use aws_sdk_dynamodb::Client;

use audit_dynamo::table;

pub type RawError = Box<dyn std::error::Error + Send + Sync>;

/// The tail a pivot read scans above the posted-through mark: the
/// tenant's events after `after` whose `field` is `value`.
pub struct Tail<'a> {
    pub field: &'a str,
    pub value: &'a str,
    pub after: &'a str,
}

/// Reads up to `limit` events: those of the tail, then those of the
/// posting partition `key` (newest first); returns how many came back.
pub async fn postings_page(
    client: &Client,
    table_name: &str,
    tenant: &str,
    key: &str,
    tail: Option<Tail<'_>>,
    limit: usize,
) -> Result<usize, RawError> {
    let mut tail_found = 0;
    if let Some(tail) = tail {
        let out = client
            .query()
            .table_name(table_name)
            .key_condition_expression("#pk = :t AND #sk > :after")
            .filter_expression("#field = :value")
            .expression_attribute_names("#pk", table::PARTITION_KEY)
            .expression_attribute_names("#sk", table::SORT_KEY)
            .expression_attribute_names("#field", tail.field)
            .expression_attribute_values(":t", AttributeValue::S(tenant.into()))
            .expression_attribute_values(":after", AttributeValue::S(tail.after.into()))
            .expression_attribute_values(":value", AttributeValue::S(tail.value.into()))
            .scan_index_forward(false)
            .limit(1000)
            .send()
            .await?;
        tail_found = out.items().len();
    }
    let limit = limit.saturating_sub(tail_found);
    let mut cursors: Vec<String> = Vec::with_capacity(limit);
    let mut start = None;
    let mut per_query = 8;
    while cursors.len() < limit {
        let out = client
            .query()
            .table_name(table_name)
            .key_condition_expression("#pk = :k")
            .expression_attribute_names("#pk", table::PARTITION_KEY)
            .expression_attribute_values(":k", AttributeValue::S(key.into()))
            .scan_index_forward(false)
            .consistent_read(true)
            .limit(per_query)
            .set_exclusive_start_key(start)
            .send()
            .await?;
        per_query = (per_query * 2).min(1000);
        for posting in out.items() {
            let Some(AttributeValue::B(packed)) = posting.get("cursors") else {
                continue;
            };
            for bytes in packed.as_ref().chunks_exact(16).rev() {
                if cursors.len() < limit {
                    let bytes: [u8; 16] = bytes.try_into()?;
                    cursors.push(ulid::Ulid::from_bytes(bytes).to_string());
                }
            }
        }
        start = out.last_evaluated_key.filter(|k| !k.is_empty());
        if start.is_none() {
            break;
        }
    }
    let mut count = tail_found;
    for chunk in cursors.chunks(100) {
        let keys = chunk
            .iter()
            .map(|cursor| {
                [
                    (
                        table::PARTITION_KEY.to_string(),
                        AttributeValue::S(tenant.into()),
                    ),
                    (
                        table::SORT_KEY.to_string(),
                        AttributeValue::S(cursor.clone()),
                    ),
                ]
                .into()
            })
            .collect();
        let request = KeysAndAttributes::builder().set_keys(Some(keys)).build()?;
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
