//! What each cost lever does to a realistic ~1 KB event: write units and
//! bytes stored per event (indexes included), priced per million events.

use super::*;

use audit_core::pivot::{PostingsBuilder, PIVOT_INDEXES};
use audit_core::Config;

/// The attribute a secondary index on `field` would key on (the layouts
/// before 2026-11-28 had one per pivot field).
fn gsi_attribute(field: &str) -> String {
    let mut chars = field.chars();
    let first = chars
        .next()
        .map(|c| c.to_ascii_uppercase())
        .unwrap_or_default();
    format!("gsi{first}{}", chars.as_str())
}

/// us-east-1 on-demand prices, USD (see the section's text for the date).
const WRU_STANDARD: f64 = 0.625e-6;
const WRU_IA: f64 = 0.78125e-6;
const GB_MONTH_STANDARD: f64 = 0.25;
const GB_MONTH_IA: f64 = 0.10;
/// Kept 90 days: three months of storage.
const MONTHS: f64 = 3.0;
/// DynamoDB adds 100 bytes of overhead to every item and index entry.
const ITEM_OVERHEAD: usize = 100;
/// Tenants by how many events they write an hour.
const TENANT_EVENTS_PER_HOUR: [u64; 4] = [1, 10, 100, 1000];
/// The posting cadence's longest wait until 2026-12-04, then until 2026-12-05.
const MAX_LAG_UNTIL_2026_12_04: std::time::Duration = std::time::Duration::from_secs(3600);
const MAX_LAG_UNTIL_2026_12_05: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// How many events one posting covers for a tenant of `rate` events an
/// hour: what waits when the lag runs out, at most a batch (at least one).
fn events_per_posting(rate: u64, lag: std::time::Duration, batch: u64) -> u64 {
    (rate * lag.as_secs() / 3600).clamp(1, batch)
}

/// A Pactflow-style request record, about 1 KB of JSON as sent: a user
/// agent, a path, params, a user id and, for half of them, a trace id.
pub(super) fn request_record(i: usize) -> Value {
    const TYPES: [&str; 4] = [
        "pact.published",
        "pact.verified",
        "webhook.executed",
        "user.login",
    ];
    let mut record = json!({
        "eventType": TYPES[i % 4],
        "serviceName": "pactflow",
        "userId": format!("user-{:04}", i % 300),
        "message": format!("POST /pacts/provider/Orders/consumer/Checkout/version/1.4.{i} answered 201"),
        "data": {
            "request": {
                "method": "POST",
                "path": format!("/pacts/provider/Orders-{}/consumer/Checkout/version/1.4.{i}", i % 20),
                "params": {
                    "branch": "main",
                    "tags": ["prod", "main"],
                    "buildUrl": format!("https://ci.example.com/job/checkout-service/build/{}", 4000 + i),
                },
                "userAgent": "Pact-Broker-Client/1.66.0 (ruby 3.2.2; x86_64-linux) faraday/2.7.10 (+https://github.com/pact-foundation/pact_broker-client)",
                "ip": format!("203.0.113.{}", i % 250),
                "headers": {"accept": "application/hal+json, application/json, */*; q=0.01", "content-type": "application/json"},
            },
            "response": {"status": 201, "durationMs": 37 + i % 50},
            "pacticipant": {"consumer": "Checkout", "provider": format!("Orders-{}", i % 20), "version": format!("1.4.{i}")},
            "organization": {"id": "org-5f2d9a", "plan": "team", "region": "eu-west-1"},
            "client": {"sdk": "pact-js", "sdkVersion": "12.1.0", "node": "20.11.1"},
        },
    });
    if i.is_multiple_of(2) {
        record["traceId"] = json!(format!("1-6747c1a2-{:024x}", i * 7919));
    }
    record
}

/// One way of storing the same events.
struct Lever {
    name: &'static str,
    /// Projection of each pivot index kept (`None`: no such index).
    index: fn(&str) -> Option<&'static str>,
    /// `data` stored as deflated JSON bytes instead of a map.
    compress_data: bool,
}

fn every_index_all(_: &str) -> Option<&'static str> {
    Some("ALL")
}
fn every_index_keys_only(_: &str) -> Option<&'static str> {
    Some("KEYS_ONLY")
}
fn selective_keys_only(field: &str) -> Option<&'static str> {
    matches!(field, "userId" | "traceId").then_some("KEYS_ONLY")
}
fn no_index(_: &str) -> Option<&'static str> {
    None
}

const LEVERS: &[Lever] = &[
    Lever {
        name: "before: 4 indexes, projection ALL, `data` as a map",
        index: every_index_all,
        compress_data: false,
    },
    Lever {
        name: "4 indexes KEYS_ONLY, `data` as a map",
        index: every_index_keys_only,
        compress_data: false,
    },
    Lever {
        name: "4 indexes KEYS_ONLY, `data` deflated (the product until 2026-11-28)",
        index: every_index_keys_only,
        compress_data: true,
    },
    Lever {
        name: "userId + traceId indexes only (KEYS_ONLY), `data` deflated",
        index: selective_keys_only,
        compress_data: true,
    },
    Lever {
        name: "no indexes, `data` deflated (the base item alone)",
        index: no_index,
        compress_data: true,
    },
];

/// The item as a lever stores it, and the index entries it causes.
fn stored(item: &Item, lever: &Lever) -> (Item, Vec<Item>) {
    let mut base = item.clone();
    // `event_to_item` deflates `data`; the levers without it store the map.
    if !lever.compress_data {
        if let Some(AttributeValue::B(bytes)) = base.get(audit_dynamo::items::DATA) {
            let map = audit_dynamo::items::inflate_data(bytes.as_ref())
                .ok()
                .and_then(|data| serde_dynamo::to_attribute_value(data).ok());
            if let Some(map) = map {
                base.insert(audit_dynamo::items::DATA.into(), map);
            }
        }
    }
    let mut entries = Vec::new();
    for index in PIVOT_INDEXES {
        let attribute = gsi_attribute(index.field);
        match (lever.index)(index.field) {
            None => {}
            Some(projection) => {
                let Some(AttributeValue::S(value)) = base.get(index.field) else {
                    continue;
                };
                let key = AttributeValue::S(format!("acme#{value}"));
                base.insert(attribute.clone(), key.clone());
                let entry: Item = if projection == "ALL" {
                    base.clone()
                } else {
                    [
                        (table::PARTITION_KEY, base.get(table::PARTITION_KEY)),
                        (table::SORT_KEY, base.get(table::SORT_KEY)),
                    ]
                    .into_iter()
                    .filter_map(|(n, v)| v.map(|v| (n.to_string(), v.clone())))
                    .chain([(attribute, key)])
                    .collect()
                };
                entries.push(entry);
            }
        }
    }
    // An ALL entry copies the final base item (after compression/removals).
    for entry in entries.iter_mut() {
        if entry.len() > 3 {
            *entry = base.clone();
        }
    }
    (base, entries)
}

fn wru(size: usize) -> f64 {
    size.div_ceil(1024).max(1) as f64
}

/// The pivot postings the product writes for runs of `run` events (what
/// the sealer gathers from one run: `PostingsBuilder`, then
/// `EventStore::put_postings`, which also moves the posted-through mark),
/// to a table of their own: (WRU measured, WRU by the rules, bytes stored),
/// each per event. The bytes are of every item the table then holds.
async fn posting_cost(
    env: &TestEnv,
    items: &[Item],
    run: usize,
) -> Result<(f64, f64, f64), BenchError> {
    let definition = table::definition(&format!("{}-postings-{run}", env.config.table_name));
    table::ensure_table(&env.direct, &definition).await?;
    let store = audit_dynamo::DynamoStore::new(env.direct.clone(), &definition.table_name);
    for chunk in items.chunks(run) {
        let mut builder = PostingsBuilder::default();
        let mut through = String::new();
        for item in chunk {
            let event = audit_dynamo::item_to_event(item.clone())?;
            let cursor = ulid::Ulid::from_string(&event.cursor).map_err(|e| e.to_string())?;
            let expires_at_ms = chrono::DateTime::parse_from_rfc3339(&event.expires_at)
                .map(|t| t.timestamp_millis())
                .unwrap_or(i64::MAX);
            let values = PIVOT_INDEXES
                .iter()
                .enumerate()
                .filter_map(|(n, index)| event.text_field(index.field).map(|v| (n, v)));
            builder.add(cursor, expires_at_ms, values);
            through = event.cursor.clone();
        }
        let mark = audit_core::store::PostedMark {
            through: through.clone(),
            log_size: None,
        };
        audit_core::EventStore::put_postings(&store, "acme", &builder.finish(), &mark).await?;
    }
    let stored = env
        .direct
        .scan()
        .table_name(&definition.table_name)
        .send()
        .await?
        .items
        .unwrap_or_default();
    let (mut computed, mut bytes) = (0.0, 0usize);
    for posting in &stored {
        let size = item_size(posting);
        computed += wru(size);
        bytes += size + ITEM_OVERHEAD;
    }
    let n = items.len() as f64;
    Ok((
        store.posting_write_units() / n,
        computed / n,
        bytes as f64 / n,
    ))
}

/// Puts `items` 25 per `BatchWriteItem` and returns the write units
/// DynamoDB reports for them, indexes included.
async fn put_measured(env: &TestEnv, table_name: &str, items: &[Item]) -> Result<f64, BenchError> {
    let mut measured = 0.0;
    for chunk in items.chunks(25) {
        let requests: Vec<WriteRequest> = chunk
            .iter()
            .map(|item| -> Result<WriteRequest, BenchError> {
                Ok(WriteRequest::builder()
                    .put_request(PutRequest::builder().set_item(Some(item.clone())).build()?)
                    .build())
            })
            .collect::<Result<_, _>>()?;
        let written = env
            .direct
            .batch_write_item()
            .request_items(table_name, requests)
            .return_consumed_capacity(ReturnConsumedCapacity::Indexes)
            .send()
            .await?;
        measured += units(written.consumed_capacity().first()).0;
    }
    Ok(measured)
}

fn price(units: f64, bytes: f64, per_wru: f64, per_gb_month: f64) -> f64 {
    1e6 * units * per_wru + 1e6 * bytes / 1e9 * per_gb_month * MONTHS
}

pub async fn levers() -> Result<Section, BenchError> {
    const EVENTS: usize = 1000;
    let env = TestEnv::start().await;
    let now = Utc::now();
    let mut sent_bytes = 0usize;
    let mut items = Vec::with_capacity(EVENTS);
    for i in 0..EVENTS {
        let record = request_record(i);
        sent_bytes += record.to_string().len();
        let mut value = record;
        value["cursor"] = json!(ulid::Ulid::new().to_string());
        value["accountId"] = json!("acme");
        value["timestamp"] = json!(format_time(now));
        value["expiresAt"] = json!(format_time(now + chrono::Duration::days(90)));
        let event: Event = serde_json::from_value(value)?;
        items.push(event_to_item(&event)?);
    }
    let mut rows = Vec::new();
    // The cheapest layout that still serves pivot queries from the store.
    let mut best = f64::MAX;
    let mut floor = 0.0;
    let mut before = 0.0;
    let mut until_now = 0.0;
    let mut now = Vec::new();
    for lever in LEVERS {
        // Measured: the lever's table on the store, its items written with
        // ReturnConsumedCapacity.
        let mut definition =
            table::definition(&format!("{}-{}", env.config.table_name, rows.len()));
        for index in PIVOT_INDEXES {
            let Some(projection) = (lever.index)(index.field) else {
                continue;
            };
            let attribute = gsi_attribute(index.field);
            definition.attributes.push((attribute.clone(), "S".into()));
            definition.indexes.push((
                index.name.to_string(),
                vec![
                    (attribute, "HASH".into()),
                    (table::SORT_KEY.into(), "RANGE".into()),
                ],
                projection.to_string(),
            ));
        }
        table::ensure_table(&env.direct, &definition).await?;
        let mut base_bytes = 0usize;
        let mut index_bytes = 0usize;
        let mut computed_units = 0.0;
        let mut stored_items = Vec::new();
        for item in &items {
            let (base, entries) = stored(item, lever);
            let size = item_size(&base);
            base_bytes += size + ITEM_OVERHEAD;
            computed_units += wru(size);
            for entry in &entries {
                let entry_size = item_size(entry);
                index_bytes += entry_size + ITEM_OVERHEAD;
                computed_units += wru(entry_size);
            }
            stored_items.push(base);
        }
        let measured = put_measured(&env, &definition.table_name, &stored_items).await?;
        let n = EVENTS as f64;
        let units_per_event = measured / n;
        let bytes_per_event = (base_bytes + index_bytes) as f64 / n;
        let cost = price(
            units_per_event,
            bytes_per_event,
            WRU_STANDARD,
            GB_MONTH_STANDARD,
        );
        let cost_ia = price(units_per_event, bytes_per_event, WRU_IA, GB_MONTH_IA);
        if rows.is_empty() {
            before = cost;
        }
        if lever.name.ends_with("(the product until 2026-11-28)") {
            until_now = cost;
        }
        if lever.name.starts_with("no indexes") {
            floor = cost.min(cost_ia);
        } else {
            best = best.min(cost.min(cost_ia));
        }
        rows.push(format!(
            "| {} | {:.0} B | {:.2} | {:.2} | {:.0} B | ${cost:.2} | ${cost_ia:.2} |",
            lever.name,
            base_bytes as f64 / n - ITEM_OVERHEAD as f64,
            units_per_event,
            computed_units / n,
            bytes_per_event,
        ));
    }
    // Postings written by the sealer instead of indexes, measured at each
    // number of events one posting covers, on top of the lone base item.
    let lone = LEVERS.last().ok_or("no levers")?;
    let (base_units, base_bytes) = items.iter().fold((0.0, 0usize), |(u, b), item| {
        let size = item_size(&stored(item, lone).0);
        (u + wru(size), b + size + ITEM_OVERHEAD)
    });
    let n = EVENTS as f64;
    let cadence = Config::defaults();
    let per_posting =
        |rate: u64, lag: std::time::Duration| events_per_posting(rate, lag, cadence.posting_batch);
    let mut sizes: Vec<u64> = TENANT_EVENTS_PER_HOUR
        .iter()
        .flat_map(|&rate| {
            [
                per_posting(rate, MAX_LAG_UNTIL_2026_12_04),
                per_posting(rate, MAX_LAG_UNTIL_2026_12_05),
                per_posting(rate, cadence.posting_max_lag),
            ]
        })
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    // $ per million (Standard) by events per posting.
    let mut costs = std::collections::BTreeMap::new();
    let mut posting_rows = Vec::new();
    for &run in &sizes {
        let (units, computed, bytes) = posting_cost(&env, &items, run as usize).await?;
        let total_units = base_units / n + units;
        let total_bytes = base_bytes as f64 / n + bytes;
        let cost = price(total_units, total_bytes, WRU_STANDARD, GB_MONTH_STANDARD);
        let cost_ia = price(total_units, total_bytes, WRU_IA, GB_MONTH_IA);
        best = best.min(cost.min(cost_ia));
        costs.insert(run, cost);
        posting_rows.push(format!(
            "| {run} | {units:.3} | {computed:.3} | {bytes:.0} B | {total_units:.2} | {total_bytes:.0} B | ${cost:.2} | ${cost_ia:.2} |"
        ));
    }
    let lag_now = cadence.posting_max_lag.as_secs_f64() / 86400.0;
    let mut volume_rows = Vec::new();
    for &rate in &TENANT_EVENTS_PER_HOUR {
        let (hour, week, now_size) = (
            per_posting(rate, MAX_LAG_UNTIL_2026_12_04),
            per_posting(rate, MAX_LAG_UNTIL_2026_12_05),
            per_posting(rate, cadence.posting_max_lag),
        );
        let (hour_cost, week_cost, now_cost) = (costs[&hour], costs[&week], costs[&now_size]);
        let events = if rate == 1 { "event" } else { "events" };
        now.push(format!(
            "${now_cost:.2} for a tenant of {rate} {events} an hour"
        ));
        volume_rows.push(format!(
            "| {rate} | {hour} | ${hour_cost:.2} | {week} | ${week_cost:.2} | {now_size} | ${now_cost:.2} |"
        ));
    }
    let volume_note = format!(
        "The cost per event depends on how many events one posting covers. The sealer posts a tenant once {} of its settled events wait, or its postings were last written {lag_now:.0} days ago (`POSTING_MAX_LAG_SECONDS`, {} s, as long as an event can be kept; an hour until 2026-12-04, a week until 2026-12-05; docs/KEY-DESIGN.md, \"Posting cadence\"). Pivot reads scan the events waiting, at most a batch however long they wait, so the lag bounds no read, and a tenant of one event an hour has its postings written from as many events as a busy one:\n\n| tenant's events an hour | events per posting, an hour's lag (until 2026-12-04) | $ per million, Standard | events per posting, a week's lag (until 2026-12-05) | $ per million, Standard | events per posting, {lag_now:.0} days' lag (now) | $ per million, Standard |\n| --- | --- | --- | --- | --- | --- | --- |\n{}\n\nMeasured by events per posting:",
        cadence.posting_batch,
        cadence.posting_max_lag.as_secs(),
        volume_rows.join("\n"),
    );
    let body = format!(
        "{EVENTS} Pactflow-style request records (`infra/src/bench/levers.rs`: a user agent, a path, params, a userId, a traceId on half), **{:.0} bytes of JSON as sent** on average, stored as `event_to_item` stores them, then as each lever would. WRU per event are measured: each lever's table is created on the store with its indexes and projections, and the items are written with `ReturnConsumedCapacity`; the computed column applies DynamoDB's sizing rules (per started KB, per item and per index entry) as a cross-check. Bytes stored count the base item and every index entry, each with DynamoDB's 100 bytes of overhead. Prices per million events, kept 90 days (writes + 3 months of storage), us-east-1 on-demand: Standard $0.625 per million WRU and $0.25 per GB-month; Standard-IA $0.78125 per million WRU (25% dearer) and $0.10 per GB-month (60% cheaper), as on aws.amazon.com/dynamodb/pricing/on-demand/ seen through the docs search on 2026-11-27.\n\n| lever | base item | WRU per event, measured | WRU, by the rules | bytes stored per event | $ per million, Standard | $ per million, Standard-IA |\n| --- | --- | --- | --- | --- | --- | --- |\n{}\n\n**Now: postings instead of indexes** (what the product writes since 2026-11-28): the sealer, which reads every settled event once in order, writes one item per (pivot field, value) per run, keyed `<tenant>#<tag>#<value>` and the posting's last cursor, listing its cursors in 16 bytes each (at most 1000 per item), then the tenant's posted-through mark. They are written here by the product's own code (`PostingsBuilder`, `EventStore::put_postings`) to a table of their own, the write units as DynamoDB reports them, the bytes of every item that table then holds, and added to the lone deflated base item above. {volume_note}\n\n| events per posting | posting WRU per event, measured | by the rules | posting bytes per event | total WRU per event | total bytes per event | $ per million, Standard | $ per million, Standard-IA |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n{}\n\nReads under each lever (by the rules): projection `ALL` reads 1 item per returned event, about 0.125 RRU per 1 KB event (eventually consistent, 4 KB per unit, summed over the page). `KEYS_ONLY` reads the index entry and then the event by `BatchGetItem`: 2 items per returned event and 0.5 RRU per event (each item read rounds up to 4 KB on its own), about 4× the read units of `ALL`. Postings read one posting item per pivot value per run (up to 1000 cursors each) plus the events by `BatchGetItem`: at most 2 items per returned event, fewer when a posting lists many; and a filtered scan of the not-yet-posted tail (a batch of {batch} events at most, plus the last run's; docs/KEY-DESIGN.md weighs the longer lag's scan against the writes it saves).\n\n**Against the target** ($2.00 per million ~1 KB events, batched, kept 90 days; table writes and storage): before ${before:.2}; with keys-only indexes, until 2026-11-28, ${until_now:.2}; **now {}** (postings, `data` deflated); the cheapest layout measured that still serves pivot queries ${best:.2} ({}); the base item alone, with no way to pivot, is the floor at ${floor:.2}. docs/KEY-DESIGN.md says which levers were kept and why.\n",
        sent_bytes as f64 / n,
        rows.join("\n"),
        posting_rows.join("\n"),
        now.join(", "),
        if best <= 2.0 { "met by that lever" } else { "**not met**" },
        batch = cadence.posting_batch,
    );
    Ok(Section {
        title: "Cost levers for ~1 KB events".into(),
        body,
    })
}
