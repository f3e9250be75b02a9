//! The read handlers under Lambda's 128 MB CPU share, against the raw calls
//! they wrap run the same way (`raw-lambda`): wall time and CPU time per
//! invocation, and the share of a page's CPU spent converting items to JSON.

use super::dynamodb_local::DynamoDbLocal;
use super::reads::load_tenant;
use super::startup::{
    cpu_share_cgroup, cpu_share_cgroup_for, share_per_100k, LIST_MEMORY_MB, PAUSE,
    SHARE_128MB_PER_100K,
};
use super::*;
use crate::runtime_api::{lambda_environment, run_binary_paced, CpuShare, Invocation};

/// Warm invocations measured per binary start (after one cold one).
const ROUNDS: usize = 12;
/// Starts per binary, the handler's and the raw calls' taking turns so that
/// a drift of the store or the machine falls on both; their warm
/// invocations are pooled.
const STARTS: usize = 4;

/// Median wall and CPU ms of the warm invocations of `runs`.
fn warm_medians(runs: &[Invocation]) -> (f64, f64) {
    let warm = &runs[1..];
    (
        median(
            warm.iter()
                .map(|r| r.duration.as_secs_f64() * 1000.0)
                .collect(),
        ),
        median(warm.iter().map(|r| r.cpu.as_secs_f64() * 1000.0).collect()),
    )
}

/// Runs `binary` once with `event` 1 + `ROUNDS` times, under the share;
/// every answer must be a success.
async fn one_start(
    binary: &str,
    deployment: &HashMap<String, String>,
    event: &Value,
    share: CpuShare<'_>,
) -> Result<Vec<Invocation>, BenchError> {
    let runs = run_binary_paced(
        &release_binary(binary),
        lambda_environment("", binary, deployment),
        vec![event.clone(); ROUNDS + 1],
        share,
        PAUSE,
    )
    .await?;
    for run in &runs {
        let http_status = run.response["statusCode"].as_u64().unwrap_or(200);
        if run.status != 200 || http_status != 200 {
            return Err(format!("{binary}: {} {}", run.status, run.response).into());
        }
    }
    Ok(runs)
}

/// The handler's and the raw calls' invocations, `STARTS` starts each,
/// taking turns; each list keeps its first start's cold invocation first.
async fn paired_invocations(
    binary: &str,
    event: &Value,
    raw_event: &Value,
    deployment: &HashMap<String, String>,
    share: CpuShare<'_>,
) -> Result<(Vec<Invocation>, Vec<Invocation>), BenchError> {
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..STARTS {
        for (name, event, pooled) in [
            (binary, event, &mut ours),
            ("raw-lambda", raw_event, &mut raw),
        ] {
            let runs = one_start(name, deployment, event, share).await?;
            if pooled.is_empty() {
                *pooled = runs;
            } else {
                pooled.extend(runs.into_iter().skip(1));
            }
        }
    }
    Ok((ours, raw))
}

/// The read handlers under the share, on DynamoDB Local when it is
/// installed (it serves requests concurrently, as DynamoDB does) and on the
/// embedded store otherwise.
pub async fn handler_cpu(events: usize) -> Result<Section, BenchError> {
    build_release_binaries()?;
    let local = DynamoDbLocal::start().await;
    let (endpoint, store_note) = match &local {
        Ok(local) => (
            Some(local.endpoint.clone()),
            "DynamoDB Local (serves requests concurrently, as DynamoDB does; a JVM on the same two cores)".to_string(),
        ),
        Err(why) => (None, format!("the embedded store ({why}), which serialises requests, so a read's concurrent self-audit write adds its time to the read")),
    };
    let env = TestEnv::start_with(EnvOptions {
        endpoint,
        ..EnvOptions::default()
    })
    .await;
    let tenant = "loaded";
    let (first, middle, _) = load_tenant(&env, tenant, events).await?;
    // A pivot read scans the tail above the posted-through mark: so does
    // the raw call.
    let posted_through = audit_core::EventStore::posted_through(
        &audit_dynamo::DynamoStore::new(env.direct.clone(), &env.config.table_name),
        tenant,
    )
    .await?
    .ok_or("the loaded tenant was not posted")?;
    let cgroup = cpu_share_cgroup();
    let share = cgroup
        .as_deref()
        .map_or(CpuShare::Unlimited, CpuShare::AfterInit);
    let share_note = match &cgroup {
        Ok(_) => format!(
            "under a cgroup CPU quota of {SHARE_128MB_PER_100K} µs per 100 000 µs (Lambda's share at 128 MB)"
        ),
        Err(why) => format!("with **no CPU quota** ({why})"),
    };
    let deployment = HashMap::from([
        ("TABLE_NAME".to_string(), env.config.table_name.clone()),
        (
            "DYNAMODB_ENDPOINT".to_string(),
            env.config.dynamodb_endpoint.clone().unwrap_or_default(),
        ),
        ("EVENT_BUS_NAME".to_string(), "local".to_string()),
    ]);
    let query_body = serde_json::to_vec(&json!({
        "and": [{"field": "userId", "operator": "eq", "value": "user-042"}],
        "from": format_time(first),
    }))?;
    let cases = [
        (
            "list page of 1000 (`GET /audit`)",
            "list",
            invoke_event(
                Route::Tail,
                "GET",
                "/audit",
                &format!("limit=1000&from={middle}"),
                b"",
                tenant,
                HashMap::new(),
            ),
            json!({"call": "tail-page", "tenant": tenant, "from": middle, "limit": 1001, "selfAudit": true}),
            "`Query` limit 1001 + self-audit `PutItem`",
        ),
        (
            "query page of 1000 (`userId eq`)",
            "list",
            invoke_event(
                Route::Query,
                "POST",
                "/audit/query",
                "limit=1000",
                &query_body,
                tenant,
                HashMap::new(),
            ),
            json!({"call": "index-page", "tenant": tenant, "key": audit_core::pivot::pivot_key(tenant, &audit_core::pivot::PIVOT_INDEXES[0], "user-042"), "after": posted_through, "field": "userId", "value": "user-042", "limit": 1000, "selfAudit": true}),
            "tail `Query` (filtered) + postings `Query` + `BatchGetItem` (100 per call) + self-audit `PutItem`",
        ),
        (
            "lookup (`GET /audit/events/{cursor}`)",
            "cursor",
            invoke_event(
                Route::Lookup,
                "GET",
                &format!("/audit/events/{middle}"),
                "",
                b"",
                tenant,
                HashMap::from([("cursor".to_string(), middle.clone())]),
            ),
            json!({"call": "get-item", "tenant": tenant, "cursor": middle, "selfAudit": true}),
            "`GetItem` + self-audit `PutItem`",
        ),
    ];
    let mut rows = Vec::new();
    let mut verdicts = Vec::new();
    let mut list_page_cpu_ms = 0.0;
    let mut list_raw_cpu_ms = 0.0;
    for (label, binary, event, raw_event, raw_label) in &cases {
        eprintln!("under the share: {label}");
        let (ours, raw) = paired_invocations(binary, event, raw_event, &deployment, share).await?;
        let (ours_wall, ours_cpu) = warm_medians(&ours);
        let (raw_wall, raw_cpu) = warm_medians(&raw);
        if *binary == "list" && list_page_cpu_ms == 0.0 {
            list_page_cpu_ms = ours_cpu;
            list_raw_cpu_ms = raw_cpu;
        }
        let ratio = ours_wall / raw_wall.max(0.001);
        verdicts.push(format!(
            "{label} {ratio:.2}× ({})",
            if ratio <= 1.15 { "met" } else { "**not met**" }
        ));
        rows.push(format!(
            "| {label} | {raw_label} | {ours_wall:.1} | {raw_wall:.1} | {ratio:.2} | {ours_cpu:.2} | {raw_cpu:.2} | {:.2} |",
            ours_cpu / raw_cpu.max(0.001)
        ));
    }

    // A page of 1000 takes more CPU than a 100 ms period of the 128 MB
    // share grants, so its wall time is mostly waiting for the next
    // period: the list function runs at LIST_MEMORY_MB, and is measured
    // there too.
    let list_share_note = match cpu_share_cgroup_for(LIST_MEMORY_MB) {
        Ok(path) => {
            let (label, binary, event, raw_event, raw_label) = &cases[0];
            let share = CpuShare::AfterInit(&path);
            let (ours, raw) =
                paired_invocations(binary, event, raw_event, &deployment, share).await?;
            let (ours_wall, ours_cpu) = warm_medians(&ours);
            let (raw_wall, raw_cpu) = warm_medians(&raw);
            let ratio = ours_wall / raw_wall.max(0.001);
            verdicts.push(format!(
                "{label} at {LIST_MEMORY_MB} MB, the list function's memory, {ratio:.2}× ({})",
                if ratio <= 1.15 { "met" } else { "**not met**" }
            ));
            rows.push(format!(
                "| {label}, at {LIST_MEMORY_MB} MB (the list function's memory) | {raw_label} | {ours_wall:.1} | {raw_wall:.1} | {ratio:.2} | {ours_cpu:.2} | {raw_cpu:.2} | {:.2} |",
                ours_cpu / raw_cpu.max(0.001)
            ));
            format!(
                " The last row runs both under the share of {LIST_MEMORY_MB} MB ({} µs per 100 000 µs), the memory `template.yaml` gives the list function since 2026-11-28: a page of 1000 takes more CPU than a period of the 128 MB share grants, so there its wall time is mostly waiting for the next period; Lambda bills GB-seconds, so four times the memory for a fraction of the wall time costs about the same per page.",
                share_per_100k(LIST_MEMORY_MB)
            )
        }
        Err(_) => String::new(),
    };

    // item → page event → JSON for the list page's 1000 items (`data` inflated, kept as text), in this process
    // (release, unthrottled: CPU time is the same under a quota).
    let page = env
        .direct
        .query()
        .table_name(&env.config.table_name)
        .key_condition_expression("#pk = :t AND #sk >= :lo")
        .expression_attribute_names("#pk", table::PARTITION_KEY)
        .expression_attribute_names("#sk", table::SORT_KEY)
        .expression_attribute_values(":t", AttributeValue::S(tenant.into()))
        .expression_attribute_values(":lo", AttributeValue::S(middle.clone()))
        .limit(1000)
        .send()
        .await?;
    let items = page.items.unwrap_or_default();
    // As the handler converts a page (`data` inflated and printed from its
    // text), and as it did before (`data` parsed into a value and printed
    // again), alternating, in this one process.
    let (mut as_text, mut parsed) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        // The handler receives the items from the SDK: their copy is not timed.
        let copy = items.clone();
        let started = Instant::now();
        let events = copy
            .into_iter()
            .map(audit_dynamo::item_to_page_event)
            .collect::<Result<Vec<_>, _>>()?;
        std::hint::black_box(serde_json::to_vec(&ListPage { events: &events })?);
        as_text.push(started.elapsed().as_secs_f64() * 1000.0);
        let copy = items.clone();
        let started = Instant::now();
        let events = copy
            .into_iter()
            .map(audit_dynamo::item_to_event)
            .collect::<Result<Vec<_>, _>>()?;
        std::hint::black_box(serde_json::to_vec(&events)?);
        parsed.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    // Of that, inflating `data` alone (libdeflate, a thread's reused
    // state), as the handler does it for each item.
    let packed: Vec<Vec<u8>> = items
        .iter()
        .filter_map(|item| item.get(audit_dynamo::items::DATA))
        .filter_map(|value| value.as_b().ok())
        .map(|blob| blob.as_ref().to_vec())
        .collect();
    let mut inflating = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        for bytes in &packed {
            std::hint::black_box(audit_dynamo::items::inflate_data_text(bytes)?);
        }
        inflating.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let inflate_ms = median(inflating);
    let (packed_bytes, inflated_bytes) = packed.iter().try_fold((0, 0), |(p, i), bytes| {
        audit_dynamo::items::inflate_data_text(bytes)
            .map(|text| (p + bytes.len(), i + text.get().len()))
    })?;
    let conversion_ms = median(as_text);
    let parsed_ms = median(parsed);
    let conversion_share = conversion_ms / list_page_cpu_ms.max(0.001);

    let pause_ms = PAUSE.as_millis();
    let body = format!(
        "Each read handler's release binary against `raw-lambda` (`infra/src/bin/raw-lambda.rs`: the raw SDK calls the handler wraps, as a Lambda function built and configured the same way: the read, and beside it a conditional `PutItem` of the self-audit record the handler writes for the same request, built as `selfaudit` builds it (since 2026-12-04; before, a hand-made item of 598 bytes of request JSON against the handler's 768); for the query page, the raw calls are those a pivot read makes: the tail above the posted-through mark, filtered on the value, then the value's postings and the events they name), both {share_note}, on {store_note}, over the loaded tenant of {events} events (the reads section's). Each binary is started {STARTS} times, the handler's and `raw-lambda` taking turns (since 2026-12-04; before, all of one binary's starts, then the other's), and serves its request 1 + {ROUNDS} times, idle {pause_ms} ms after each answer (one period of the quota and a margin, so each request starts with the whole quota; back to back, a request of a few ms was throttled or not by where the previous one left the period, and the same build measured the query page at 0.85× and 1.86× in two runs); medians of the warm invocations. Wall time is from handing the event out to receiving the whole answer, timed before the bench parses it (until 2026-11-28 the parse of a 1 MB page was counted too); CPU time is the process's, every thread, from the scheduler's nanosecond counters (`/proc/<pid>/task/*/schedstat`).{list_share_note}\n\n| read | raw call | handler wall ms | raw wall ms | wall ÷ raw | handler CPU ms | raw CPU ms | CPU ÷ raw |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n{}\n\n**Against the target** (each read ≤ 1.15× the raw calls it wraps, under the share): {}.\n\n**Conversion.** Item → page event → JSON for the list page's 1000 items, as the handler does it (`data` inflated and printed from its stored text, `PageEvent`), takes {conversion_ms:.2} ms of CPU in a release build, {:.0}% of the list page's {list_page_cpu_ms:.2} ms of handler CPU (the issue's threshold for a one-pass conversion is 20%). Parsing `data` into a value and printing it again, as pages did before 2026-11-27, takes {parsed_ms:.2} ms in the same run ({:.2}× the text path). Of the conversion, inflating `data` alone takes {inflate_ms:.2} ms ({:.0}%; {} items, {:.0} B deflated to {:.0} B on average, since 2026-12-05): `data` is deflated so that a ~1 KB event's item stays one write unit (`docs/KEY-DESIGN.md`), and that lever is worth more than this CPU: {:.2} ms is {:.0}% of the raw call's CPU for the same page, so a list page stays above 1.15× the raw call as long as `data` is stored deflated.\n",
        rows.join("\n"),
        verdicts.join(", "),
        conversion_share * 100.0,
        parsed_ms / conversion_ms.max(0.001),
        inflate_ms / conversion_ms.max(0.001) * 100.0,
        packed.len(),
        packed_bytes as f64 / packed.len().max(1) as f64,
        inflated_bytes as f64 / packed.len().max(1) as f64,
        inflate_ms,
        inflate_ms / list_raw_cpu_ms.max(0.001) * 100.0,
    );
    drop(local);
    Ok(Section {
        title: "Read handlers under the 128 MB CPU share".into(),
        body,
    })
}

/// The body of a list page, as the list handler writes it.
#[derive(serde::Serialize)]
struct ListPage<'a> {
    events: &'a [audit_core::event::PageEvent],
}
