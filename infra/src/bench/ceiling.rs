//! One tenant's sustained write ceiling when every partition key is held to
//! a number of write units per second (scaled down from DynamoDB's ~1000).

use super::*;

use crate::proxy::Faults;
use crate::testkit::EnvOptions;

pub async fn ceiling() -> Result<Section, BenchError> {
    const UNITS_PER_KEY: f64 = 100.0;
    const WRITERS: usize = 4;
    const BATCH: usize = 25;
    const SECONDS: u64 = 15;
    let env = TestEnv::start_with(EnvOptions {
        with_proxy: true,
        ..Default::default()
    })
    .await;
    let proxy = env
        .proxy
        .as_ref()
        .ok_or("the ceiling bench needs the proxy")?;
    proxy.set(Faults {
        units_per_key_per_second: Some(UNITS_PER_KEY),
        ..Default::default()
    });
    let base = env.serve().await;
    let token = env.token("acme", "audit:read audit:write");
    let http = reqwest::Client::new();
    let started = Instant::now();
    let stop = started + Duration::from_secs(SECONDS);
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (http, base, token) = (http.clone(), base.clone(), token.clone());
            tokio::spawn(async move {
                let (mut acknowledged, mut failed) = (Vec::new(), 0usize);
                let mut n = writer * 1_000_000;
                while Instant::now() < stop {
                    let events: Vec<Value> = (0..BATCH)
                        .map(|_| {
                            n += 1;
                            super::levers::request_record(n)
                        })
                        .collect();
                    let answer = http
                        .post(format!("{base}/audit/events"))
                        .bearer_auth(&token)
                        .json(&json!({ "events": events }))
                        .send()
                        .await;
                    let Ok(answer) = answer else {
                        failed += BATCH;
                        continue;
                    };
                    let body: Value = answer.json().await.unwrap_or_default();
                    for result in body["results"].as_array().into_iter().flatten() {
                        match (result["status"].as_str(), result["cursor"].as_str()) {
                            (Some("stored"), Some(cursor)) => acknowledged.push(cursor.to_string()),
                            _ => failed += 1,
                        }
                    }
                }
                (acknowledged, failed)
            })
        })
        .collect();
    let (mut acknowledged, mut failed) = (Vec::new(), 0);
    for writer in writers {
        let (stored, refused) = writer.await?;
        acknowledged.extend(stored);
        failed += refused;
    }
    let elapsed = started.elapsed().as_secs_f64();
    proxy.set(Faults::default());
    let in_table: std::collections::HashSet<String> = env
        .events_by_tenant()
        .await
        .remove("acme")
        .unwrap_or_default()
        .into_iter()
        .collect();
    let lost = acknowledged
        .iter()
        .filter(|c| !in_table.contains(*c))
        .count();
    let throttled = proxy
        .counters
        .items_throttled_per_key
        .load(std::sync::atomic::Ordering::Relaxed);
    let rate = acknowledged.len() as f64 / elapsed;
    // Every event writes its tenant's table key (1 unit: the deflated item
    // is under 1 KB) and the one service's index key (1 unit).
    let predicted = UNITS_PER_KEY;
    let body = format!(
        "The fault proxy held every partition key (the table's `accountId`; the table has no secondary index since 2026-11-28) to **{UNITS_PER_KEY:.0} write units per second** (`Faults::units_per_key_per_second`, a token bucket with one second of burst), answering beyond it as DynamoDB does. {WRITERS} writers sent batches of {BATCH} ~1 KB request records (`levers::request_record`, one tenant, one service) through the local gateway for {SECONDS} s.\n\n| measured | value |\n| --- | --- |\n| events acknowledged | {} |\n| sustained ceiling, events/s | {rate:.0} |\n| predicted from the hottest key (the tenant's `accountId`, 1 unit per event) | {predicted:.0} |\n| items the limit refused (retried by the store until the write deadline) | {throttled} |\n| events answered `failed` (the client retries them) | {failed} |\n| acknowledged events missing from the table | **{lost}** |\n\nScaled up, a tenant stops near 1000 events/s of ~1 KB events, whatever the table's on-demand limits; docs/SCALING.md designs the way past it.\n",
        acknowledged.len(),
    );
    Ok(Section {
        title: "One tenant's write ceiling".into(),
        body,
    })
}
