//! Events per second through the local API against raw writes.

use super::*;

/// Events per second through the local API (HTTP, JWT, handler, SDK) for
/// batches of 100 from 4 clients, against raw BatchWriteItem on the same store.
pub async fn throughput() -> Result<Section, BenchError> {
    let env = TestEnv::start().await;
    let base = env.serve().await;
    let token = env.token("bench", "audit:write");
    let http = reqwest::Client::new();
    let rounds = 10;
    let body = json!({"events": (0..100).map(|i| json!({"eventType": "bulk.write", "serviceName": "bench", "userId": format!("u{i}"), "data": {"pad": "x".repeat(700)}})).collect::<Vec<_>>()});
    let started = Instant::now();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (http, base, token, body) =
                (http.clone(), base.clone(), token.clone(), body.clone());
            tokio::spawn(async move {
                for _ in 0..rounds {
                    let response = http
                        .post(format!("{base}/audit/events"))
                        .bearer_auth(&token)
                        .json(&body)
                        .send()
                        .await
                        .map_err(|e| e.to_string())?;
                    if response.status() != 200 {
                        return Err(format!("ingest answered {}", response.status()));
                    }
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    for client in clients {
        client
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| -> BenchError { e.into() })?;
    }
    let api_rate = (4 * rounds * 100) as f64 / started.elapsed().as_secs_f64();
    let now = Utc::now();
    let items: Vec<Item> = (0..4 * rounds * 100)
        .map(|i| -> Result<Item, BenchError> {
            let e = sized_event(
                ulid::Ulid::new().to_string(),
                "raw",
                now,
                1000,
                json!({"userId": format!("u{}", i % 100)}),
            )?;
            Ok(event_to_item(&e)?)
        })
        .collect::<Result<_, _>>()?;
    // a fresh table: the embedded store slows as a table grows
    let raw_env = TestEnv::start().await;
    let started = Instant::now();
    batch_put(&raw_env.direct, &raw_env.config.table_name, items).await?;
    let raw_rate = (4 * rounds * 100) as f64 / started.elapsed().as_secs_f64();
    let metadata_items = env
        .all_items()
        .await
        .iter()
        .filter(|i| {
            i.get(table::PARTITION_KEY)
                .and_then(|v| v.as_s().ok())
                .is_some_and(|p| p.starts_with(table::METADATA_PREFIX))
        })
        .count();
    let body = format!(
        "{} events in batches of 100 from 4 concurrent clients through `audit-local` (HTTP, JWT validation, API Gateway event, ingest handler, SDK, embedded store) against the same number of items written with raw `BatchWriteItem` (25 per call, 8 calls in flight) to the same store, on {} cores.\n\n| path | events/s | ratio |\n| --- | --- | --- |\n| audit-local ingest | {api_rate:.0} | {:.2} |\n| raw BatchWriteItem | {raw_rate:.0} | 1.00 |\n\nMetadata cost: ingesting these {} events of one kind wrote {metadata_items} metadata items in total (one per distinct property and type, first sighting per process; {:.1} WRU per million events at this volume, and nothing more however many further events of these kinds arrive); in general the extra WRU is (distinct service/event-type/property combinations) × (Lambda instances that see them), independent of volume.\n",
        4 * rounds * 100,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        api_rate / raw_rate,
        4 * rounds * 100,
        metadata_items as f64 * 1e6 / (4 * rounds * 100) as f64
    );
    Ok(Section {
        title: "Local throughput".into(),
        body,
    })
}
