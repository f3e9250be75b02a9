//! Capacity units per event and the cost per million events.

use super::*;

/// Cost per million events from the measured units and public prices.
pub fn cost() -> Section {
    let body = "Prices (AWS us-east-1, on-demand, seen through the docs search on 2026-11-27; check the current price pages): DynamoDB Standard $0.625 per million write request units, $0.125 per million read request units, $0.25 per GB-month of storage (Standard-IA: requests 25% dearer, storage $0.10); Lambda arm64 $0.0000133334 per GB-second and $0.20 per million requests; API Gateway HTTP API $1.00 per million requests; EventBridge custom events $1.00 per million (64 KB chunks); DynamoDB Streams reads by Lambda triggers are free.\n\nPer million realistic ~1 KB events (the request records of \"Cost levers\": 936 bytes of JSON as sent), with the units and bytes measured there for what the product writes now: 1 WRU per event on the write path (the deflated base item; no index entry), the sealer's pivot postings 0.83 WRU per event at 1000 events per posting (every tenant that writes 1000 events within the posting cadence's lag, 3650 days since 2026-12-05: a tenant of 1 event an hour too, which paid 1.55 at 168 per posting under the week-long lag before), and 1046 bytes stored per event, postings included:\n\n| item | per million events |\n| --- | --- |\n| ingest, single events: 1 M HTTP requests + 1 M Lambda invocations (128 MB, ~10 ms) + 1 M WRU | $1.00 + $0.20 + $0.02 + $0.63 = **$1.85** |\n| ingest, batches of 100: 10 k requests + 10 k invocations (~100 ms) + 1 M WRU | $0.01 + $0.002 + $0.002 + $0.63 = **$0.64** |\n| ingest with `messageId` (a transaction: the event and its marker written twice over) | + about 3 M WRU = + about $1.88 |\n| pivot postings, written by the sealer: 0.83 M WRU at 1000 events per posting, any tenant that writes 1000 events within 3650 days (1.55 M at 168 per posting, a tenant of 1 event an hour under the week-long lag until 2026-12-05), and its second read of every settled event (strongly consistent: about 0.25 RRU per ~1 KB event) | $0.52 + $0.03 = **$0.55** |\n| storage for 90 days (1046 bytes per event, postings included: 1.05 GB × 3 months) | **$0.78** |\n| stream path: Lambda (batches of 100, ~20 ms) + 1 M PutEvents entries | $0.003 + $1.00 = **$1.00** |\n| reading every event once through list pages of 1000 (about 0.25 RRU per event for ~1 KB events, 1 k requests) | $0.03 + $0.001 = **$0.03** |\n| integrity log: sealing (0.08 WRU per event measured in \"Integrity log\", tiles and checkpoints) and its storage (65 bytes per event, kept beyond the events' TTL) | $0.05 + about $0.00002 per month = **$0.05** |\n\nTable writes and storage alone: **$1.93** per million at 1000 events per posting (every tenant that writes 1000 events within 3650 days since 2026-12-05; of at least 6 events an hour with the week-long lag before, when a tenant of 1 event an hour paid $2.47 at 168 per posting; of at least 1000 events an hour before 2026-12-04, when a tenant of 10 an hour paid $2.85 and one of 100 $2.49) (the target is $2.00; it was $3.98 with four keys-only indexes until 2026-11-28, and $8.20 with full-projection indexes and `data` as a map: see \"Cost levers\" and docs/KEY-DESIGN.md). Total for a million ~1 KB events ingested in batches, kept 90 days, streamed and read once: about **$3.0** (it was $5.1); with single-event ingest about **$4.2** (it was $6.3). The EventBridge entries of the stream path are now the largest single item. For comparison, CloudTrail Lake charges per GB ingested (about $2.50 per GB with seven-year retention, i.e. about $2.50 per million 1 KB events) plus per GB scanned by queries; WorkOS Audit Logs prices per million events stored and per SIEM connection (see their pricing page; the figure could not be checked from this machine).\n";
    Section {
        title: "Cost per million events".into(),
        body: body.to_string(),
    }
}

/// Write and read units per event, from ReturnConsumedCapacity.
pub async fn capacity() -> Result<Section, BenchError> {
    let env = TestEnv::start().await;
    let table_name = env.config.table_name.clone();
    let client = &env.direct;
    let now = Utc::now();
    let mut rows = Vec::new();
    let cursor = || ulid::Ulid::new().to_string();

    for (label, fields) in [
        ("1 KB event, eventType + serviceName only", json!({})),
        (
            "1 KB event, + userId + traceId",
            json!({"userId": "u-1", "traceId": "t-1"}),
        ),
    ] {
        let event = sized_event(cursor(), "acme", now, 1000, fields.clone())?;
        let item = event_to_item(&event)?;
        let size = item_size(&item);
        let put = client
            .put_item()
            .table_name(&table_name)
            .set_item(Some(item.clone()))
            .condition_expression("attribute_not_exists(#sk)")
            .expression_attribute_names("#sk", table::SORT_KEY)
            .return_consumed_capacity(ReturnConsumedCapacity::Indexes)
            .send()
            .await?;
        let (total, base, indexes) = units(put.consumed_capacity());
        rows.push(format!(
            "| {label}: single, conditional PutItem | {size} B | {base} | {indexes} | {total} |"
        ));

        let batch: Vec<WriteRequest> = (0..25)
            .map(|_| -> Result<WriteRequest, BenchError> {
                let mut e = event.clone();
                e.cursor = ulid::Ulid::new().to_string();
                Ok(WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(event_to_item(&e)?))
                            .build()?,
                    )
                    .build())
            })
            .collect::<Result<_, _>>()?;
        let written = client
            .batch_write_item()
            .request_items(&table_name, batch)
            .return_consumed_capacity(ReturnConsumedCapacity::Indexes)
            .send()
            .await?;
        let (total, base, indexes) = units(written.consumed_capacity().first());
        rows.push(format!(
            "| {label}: BatchWriteItem of 25, per event | {size} B | {} | {} | {} |",
            base / 25.0,
            indexes / 25.0,
            total / 25.0
        ));

        let mut keyed_fields = fields.clone();
        keyed_fields["messageId"] = json!(format!("msg-{}", cursor()));
        let keyed = sized_event(cursor(), "acme", now, 1000, keyed_fields)?;
        let marker = audit_dynamo::marker_item(
            &keyed,
            &audit_core::store::IdempotencyKey {
                key: keyed.message_id.clone().unwrap_or_default(),
                producer: None,
            },
        );
        let transact = client
            .transact_write_items()
            .transact_items(
                aws_sdk_dynamodb::types::TransactWriteItem::builder()
                    .put(
                        aws_sdk_dynamodb::types::Put::builder()
                            .table_name(&table_name)
                            .set_item(Some(event_to_item(&keyed)?))
                            .build()?,
                    )
                    .build(),
            )
            .transact_items(
                aws_sdk_dynamodb::types::TransactWriteItem::builder()
                    .put(
                        aws_sdk_dynamodb::types::Put::builder()
                            .table_name(&table_name)
                            .set_item(Some(marker))
                            .build()?,
                    )
                    .build(),
            )
            .return_consumed_capacity(ReturnConsumedCapacity::Indexes)
            .send()
            .await?;
        let total: f64 = transact
            .consumed_capacity()
            .iter()
            .filter_map(|c| c.capacity_units)
            .sum();
        let base: f64 = transact
            .consumed_capacity()
            .iter()
            .map(|c| units(Some(c)).1)
            .sum();
        let indexes: f64 = transact
            .consumed_capacity()
            .iter()
            .map(|c| units(Some(c)).2)
            .sum();
        rows.push(format!("| {label}: with messageId, TransactWriteItems (event + marker) | {size} B | {base} | {indexes} | {total} |"));
    }

    // reads: a page of 1000 one-KB events, eventually consistent
    let tenant = "reader";
    let items: Vec<Item> = (0..1000)
        .map(|i| -> Result<Item, BenchError> {
            let at = now - chrono::Duration::minutes(1000 - i);
            let e = sized_event(
                ulid::Ulid::from_datetime(at.into()).to_string(),
                tenant,
                at,
                1000,
                json!({"userId": "u-1"}),
            )?;
            Ok(event_to_item(&e)?)
        })
        .collect::<Result<_, _>>()?;
    batch_put(client, &table_name, items).await?;
    let page = client
        .query()
        .table_name(&table_name)
        .key_condition_expression("#pk = :t")
        .expression_attribute_names("#pk", table::PARTITION_KEY)
        .expression_attribute_values(":t", AttributeValue::S(tenant.into()))
        .return_consumed_capacity(ReturnConsumedCapacity::Total)
        .send()
        .await?;
    let read = page.count as f64;
    let rru = page
        .consumed_capacity()
        .and_then(|c| c.capacity_units)
        .unwrap_or(0.0);
    let body = format!(
        "Write units per stored event, as reported by `ReturnConsumedCapacity` (`INDEXES`) for exactly the items and calls the store makes (`event_to_item`, the idempotency marker). DynamoDB bills per started KB per item. The table has no secondary index since 2026-11-28 (the sealer writes pivot postings later, a fraction of a unit per event: see \"Cost levers\"), so the index column is 0.\n\n| write | item size | base table WRU | index WRU | total WRU |\n| --- | --- | --- | --- | --- |\n{}\n\nReads: one `Query` page of {read} one-KB events consumed {rru} RRU (eventually consistent) = {:.3} RRU per returned event. The store's own report per page is the same call.\n",
        rows.join("\n"),
        if read > 0.0 { rru / read } else { 0.0 }
    );
    Ok(Section {
        title: "Capacity units".into(),
        body,
    })
}
