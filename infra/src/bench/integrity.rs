//! The integrity log: what sealing costs per event, how long after the
//! settle horizon an event is sealed, proof sizes, a proof request against
//! a GetItem, and the verifier's throughput.

use audit_core::integrity::note::NoteSigner;
use audit_core::integrity::seal::Sealer;
use audit_core::integrity::verify::{verify, Evidence};
use audit_core::integrity::{encode_hash, event_leaf_hash, EntryView};

use super::*;

/// Events per sealing run: 1000 events a minute per tenant.
const PER_RUN: usize = 1000;
const RUNS: usize = 10;

pub async fn integrity() -> Result<Section, BenchError> {
    let env = TestEnv::start().await;
    let table_name = env.config.table_name.clone();
    let tenant = "sealed";
    let store = Arc::new(DynamoStore::new(env.direct.clone(), &table_name));
    let sealer = Sealer::new(Arc::clone(&store), &env.config);
    let start = Utc::now() - chrono::Duration::days(1);
    let mut run_ms = Vec::new();
    let mut units_per_run = Vec::new();
    let mut cursors = Vec::new();
    for run in 0..RUNS {
        // One minute of events, ~1 KB each, written as ingest would.
        let minute = start + chrono::Duration::minutes(run as i64);
        let items: Vec<Item> = (0..PER_RUN)
            .map(|i| -> Result<Item, BenchError> {
                let at = minute + chrono::Duration::milliseconds(i as i64 * 60);
                let cursor = ulid::Ulid::from_datetime(at.into()).to_string();
                cursors.push(cursor.clone());
                let fields = json!({"userId": format!("user-{}", i % 50), "data": {"path": "/v1/invoices", "n": i}});
                Ok(event_to_item(&sized_event(cursor, tenant, at, 1000, fields)?)?)
            })
            .collect::<Result<_, _>>()?;
        batch_put(&env.direct, &table_name, items).await?;
        let before = store.log_write_units();
        let started = Instant::now();
        // Sealed as the minute after it settles.
        let (checkpoint, added) = sealer
            .seal_tenant(tenant, minute + chrono::Duration::minutes(2), false)
            .await?;
        run_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        units_per_run.push(store.log_write_units() - before);
        if checkpoint.is_none() || added != PER_RUN as u64 {
            return Err(format!("run {run} sealed {added} events").into());
        }
    }
    let total_units: f64 = units_per_run.iter().sum();
    let per_event = total_units / (RUNS * PER_RUN) as f64;
    // The sealing state item and the writers' marks add one write each per run.
    let per_event_all = (total_units + 2.0 * RUNS as f64) / (RUNS * PER_RUN) as f64;

    // Log bytes stored per event (tiles, index, heads, checkpoints).
    let log_items: Vec<Item> = env
        .all_items()
        .await
        .into_iter()
        .filter(|i| {
            i.get(table::PARTITION_KEY)
                .and_then(|v| v.as_s().ok())
                .is_some_and(|p| p.ends_with(&format!("#{tenant}")))
        })
        .collect();
    let log_bytes: usize = log_items
        .iter()
        .map(|item| {
            item.iter()
                .map(|(k, v)| {
                    k.len()
                        + match v {
                            AttributeValue::B(b) => b.as_ref().len(),
                            AttributeValue::S(s) => s.len(),
                            AttributeValue::N(n) => n.len(),
                            _ => 1,
                        }
                })
                .sum::<usize>()
        })
        .sum();

    // Proofs through the handler against a raw GetItem of one event.
    let size = (RUNS * PER_RUN) as u64;
    let gateway = env.gateway.clone();
    let middle = cursors[cursors.len() / 2].clone();
    let mut proof_lengths = Vec::new();
    for cursor in [&cursors[0], &middle, &cursors[cursors.len() - 1]] {
        let event = invoke_event(
            Route::Proof,
            "GET",
            &format!("/audit/events/{cursor}/proof"),
            "",
            b"",
            tenant,
            HashMap::from([("cursor".to_string(), cursor.clone())]),
        );
        let response = gateway.invoke(Route::Proof, &event).await;
        let body: Value = serde_json::from_slice(response.body().as_ref())?;
        let length = body["inclusion"].as_array().map_or(0, Vec::len);
        if response.status() != 200 {
            return Err(format!("proof answered {}: {body}", response.status()).into());
        }
        proof_lengths.push(length);
    }
    let proof_event = invoke_event(
        Route::Proof,
        "GET",
        &format!("/audit/events/{middle}/proof"),
        "",
        b"",
        tenant,
        HashMap::from([("cursor".to_string(), middle.clone())]),
    );
    let client = env.direct.clone();
    let (proof_ms, get_ms) = paired(
        30,
        || {
            let gateway = gateway.clone();
            let event = proof_event.clone();
            async move {
                let response = gateway.invoke(Route::Proof, &event).await;
                if response.status() != 200 {
                    return Err(format!("proof answered {}", response.status()).into());
                }
                Ok(())
            }
        },
        || {
            let client = client.clone();
            let table_name = table_name.clone();
            let middle = middle.clone();
            async move {
                client
                    .get_item()
                    .table_name(&table_name)
                    .key(table::PARTITION_KEY, AttributeValue::S(tenant.into()))
                    .key(table::SORT_KEY, AttributeValue::S(middle))
                    .send()
                    .await?;
                Ok(())
            }
        },
    )
    .await?;

    // The verifier on one core: 100k events in memory.
    let (verify_rate, verified) = verifier_throughput(100_000)?;

    let mean_run = run_ms.iter().sum::<f64>() / run_ms.len() as f64;
    let body = format!(
        "{RUNS} sealing runs of {PER_RUN} events of ~1 KB each (1000 events a minute for one tenant), on the embedded store, write units as DynamoDB reports them (ReturnConsumedCapacity) for every log write.\n\n\
| measure | target | measured |\n| --- | --- | --- |\n\
| sealing cost, amortised | ≤ 0.1 WRU per event | **{per_event:.3} WRU per event** for tiles, index, tree head and checkpoint ({total_units:.0} WRU for {n} events); {per_event_all:.3} with the sealing-state item and one writer's mark per run |\n\
| log storage | — | {log_bytes_per_event:.0} bytes per event ({items} log items, {log_bytes} bytes; partial tiles superseded by full ones expire by TTL) |\n\
| sealing delay after the settle horizon | ≤ 60 s | at most one schedule interval (60 s by default) plus a run: {mean_run:.0} ms per run of {PER_RUN} events here |\n\
| inclusion proof size | ≤ 32 hashes up to 2³² events | {lengths:?} hashes at {size} leaves (⌈log₂ n⌉ = {bound}); 32 at 2³² by construction |\n\
| proof request vs a `GetItem` | ratio reported | {ratio:.1}× (median {proof_ms:.2} ms through the handler, self-audit record included, vs {get_ms:.2} ms for a raw `GetItem`) |\n\
| verifier throughput, one core | ≥ 100k events/s | **{verify_rate:.0} events/s** ({verified} events: JCS, SHA-256, the tree and signatures; release build) |\n",
        n = RUNS * PER_RUN,
        log_bytes_per_event = log_bytes as f64 / (RUNS * PER_RUN) as f64,
        items = log_items.len(),
        lengths = proof_lengths,
        bound = 64 - (size - 1).leading_zeros(),
        ratio = proof_ms / get_ms.max(1e-9),
    );
    Ok(Section {
        title: "Integrity log".into(),
        body,
    })
}

/// Events per second `verify` checks, on this thread.
fn verifier_throughput(count: usize) -> Result<(f64, usize), BenchError> {
    let origin = "bench.local";
    let signer = NoteSigner::from_secret(origin, "bench");
    let start = Utc::now() - chrono::Duration::days(1);
    let mut events = Vec::with_capacity(count);
    let mut entries = Vec::with_capacity(count);
    let mut builder = audit_core::integrity::merkle::RootBuilder::default();
    for i in 0..count {
        let at = start + chrono::Duration::milliseconds(i as i64);
        let cursor = ulid::Ulid::from_datetime(at.into()).to_string();
        let event = sized_event(
            cursor.clone(),
            "t",
            at,
            1000,
            json!({"userId": format!("u-{}", i % 50), "data": {"n": i}}),
        )?;
        let leaf = event_leaf_hash(&event);
        builder.push(leaf);
        entries.push(EntryView {
            leaf_index: i as u64,
            cursor,
            expires_at: event.expires_at.clone(),
            leaf_hash: encode_hash(&leaf),
        });
        events.push(event);
    }
    let note = signer.sign(&audit_core::integrity::note::Checkpoint {
        origin: format!("{origin}/t"),
        size: count as u64,
        root: builder.root(),
        timestamp: format_time(Utc::now()),
    });
    let key = signer.verifier();
    let started = Instant::now();
    let report = verify(
        &Evidence {
            key: &key,
            origin: None,
            entries: &entries,
            checkpoints: std::slice::from_ref(&note),
            trusted: &[],
            now_ms: Utc::now().timestamp_millis(),
            absence_seen_at: &[],
            stale_after_ms: None,
        },
        events,
    );
    let seconds = started.elapsed().as_secs_f64();
    if !report.ok() {
        return Err(format!("the bench's own log did not verify: {:?}", report.log).into());
    }
    Ok((count as f64 / seconds, count))
}
