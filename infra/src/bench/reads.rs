//! Query selectivity and handler overhead on a loaded tenant.

use super::*;

/// The loaded tenant the read rows measure: `events` events of about 700 B
/// spread evenly over 30 days, 100 distinct `userId`s, 10 event types, 4 services, 1000 trace ids,
/// `data.bucket` = i mod 1000. Returns the first event's time, the cursor
/// of the event in the middle, and the seconds the load took.
pub(super) async fn load_tenant(
    env: &TestEnv,
    tenant: &str,
    events: usize,
) -> Result<(DateTime<Utc>, String, f64), BenchError> {
    let first = Utc::now() - LOADED_SPAN;
    let step = LOADED_SPAN.num_milliseconds() / events.max(1) as i64;
    let items: Vec<Item> = (0..events)
        .map(|i| -> Result<Item, BenchError> {
            let at = first + chrono::Duration::milliseconds(step * i as i64);
            let fields = json!({"userId": format!("user-{:03}", i % 100), "eventType": format!("kind.{}", i % 10), "serviceName": format!("svc-{}", i % 4), "traceId": format!("trace-{:04}", i % 1000), "data": {"bucket": i % 1000}});
            Ok(event_to_item(&sized_event(ulid::Ulid::from_datetime(at.into()).to_string(), tenant, at, 700, fields)?)?)
        })
        .collect::<Result<_, _>>()?;
    let middle = items
        .get(events / 2)
        .and_then(|item| item.get(table::SORT_KEY))
        .and_then(|value| value.as_s().ok())
        .cloned()
        .ok_or("no events to load")?;
    let load_started = Instant::now();
    load_items(env, items).await?;
    let load_seconds = load_started.elapsed().as_secs_f64();
    eprintln!("loaded {events} events in {load_seconds:.1} s");
    // The events are settled: the sealer posts them, as it would have by now.
    let store = Arc::new(audit_dynamo::DynamoStore::new(
        env.direct.clone(),
        &env.config.table_name,
    ));
    let (posted, _) = audit_core::integrity::seal::Poster::new(store, &env.config)
        .post_tenant(tenant, Utc::now())
        .await?;
    eprintln!("posted {posted} events");
    Ok((first, middle, load_seconds))
}

/// How far back the loaded tenant's events go.
pub(super) const LOADED_SPAN: chrono::Duration = chrono::Duration::days(30);

/// Loads a tenant and measures query selectivity and handler overhead, on
/// the embedded store or on `env`'s (DynamoDB Local, which serves requests
/// concurrently).
pub async fn reads(events: usize) -> Result<Section, BenchError> {
    reads_on(None, events).await
}

/// The same rows on DynamoDB Local, which serves requests concurrently as
/// DynamoDB does; a section saying why when it cannot be started.
pub async fn reads_on_dynamodb_local(events: usize) -> Result<Section, BenchError> {
    match super::dynamodb_local::DynamoDbLocal::start().await {
        Ok(local) => reads_on(Some(local.endpoint.clone()), events).await,
        Err(why) => Ok(Section {
            title: "Reads on DynamoDB Local: handler overhead against a concurrent store".into(),
            body: format!("Not run: {why}.\n"),
        }),
    }
}

/// The same rows on the store at `endpoint` (the embedded one when `None`).
pub(super) async fn reads_on(
    endpoint: Option<String>,
    events: usize,
) -> Result<Section, BenchError> {
    let start_env = || {
        TestEnv::start_with(EnvOptions {
            endpoint: endpoint.clone(),
            ..EnvOptions::default()
        })
    };
    let env = &start_env().await;
    let table_name = env.config.table_name.clone();
    let client = env.direct.clone();
    let tenant = "loaded";
    let (first, middle, load_seconds) = load_tenant(env, tenant, events).await?;

    let store = Arc::new(DynamoStore::new(client.clone(), &table_name));
    let reader = TrailReader::new(Arc::clone(&store), env.config.clone());
    // A pivot read scans the tail above the posted-through mark: so does
    // the raw call.
    let posted_through = audit_core::EventStore::posted_through(store.as_ref(), tenant)
        .await?
        .ok_or("the loaded tenant was not posted")?;
    let mut selectivity = Vec::new();
    for (label, body) in [
        (
            "`userId eq user-042` (postings byUserId)",
            json!({"and": [{"field": "userId", "operator": "eq", "value": "user-042"}]}),
        ),
        (
            "`eventType eq kind.3` (postings byEventType)",
            json!({"and": [{"field": "eventType", "operator": "eq", "value": "kind.3"}]}),
        ),
        (
            "`serviceName eq svc-2` (postings byServiceName)",
            json!({"and": [{"field": "serviceName", "operator": "eq", "value": "svc-2"}]}),
        ),
        (
            "`traceId eq trace-0042` (postings byTraceId)",
            json!({"and": [{"field": "traceId", "operator": "eq", "value": "trace-0042"}]}),
        ),
        (
            "`data.bucket eq 7` (no index: tenant partition, budget-capped)",
            json!({"and": [{"field": "data.bucket", "operator": "eq", "value": 7}]}),
        ),
    ] {
        let query = Query::parse(&body, Utc::now())?;
        let (mut read, mut returned, mut requests, mut max_read, mut rru) =
            (0usize, 0usize, 0usize, 0usize, 0.0);
        let mut cursor: Option<String> = None;
        loop {
            let verified = cursor
                .as_deref()
                .map(|t| reader.verify_cursor(t, tenant, &query))
                .transpose()?;
            let page = reader.query(tenant, &query, verified, 1000).await?;
            requests += 1;
            // Index entries and the events then fetched by key.
            read += page.items_read + page.items_fetched;
            max_read = max_read.max(page.items_read + page.items_fetched);
            returned += page.events.len();
            rru += page.read_units;
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        eprintln!("{label}: {requests} requests");
        selectivity.push(format!(
            "| {label} | {returned} | {read} | {:.2} | {requests} | {max_read} | {:.3} |",
            read as f64 / returned.max(1) as f64,
            rru / returned.max(1) as f64
        ));
    }

    // handler against the raw call it wraps, same store, same run
    let mut overhead = Vec::new();
    // (read route, handler ÷ raw), for the verdict against 1.15×.
    let mut read_ratios: Vec<(String, f64)> = Vec::new();
    for limit in [100usize, 1000] {
        let event = invoke_event(
            Route::Tail,
            "GET",
            "/audit",
            &format!("limit={limit}&from={middle}"),
            b"",
            tenant,
            HashMap::new(),
        );
        let gateway = env.gateway.clone();
        let (ours, raw) = paired(
            30,
            || {
                let (gateway, event) = (gateway.clone(), event.clone());
                async move {
                    let response = gateway.invoke(Route::Tail, &event).await;
                    if response.status() != 200 {
                        return Err(format!("list answered {}", response.status()).into());
                    }
                    Ok(())
                }
            },
            || {
                let (client, table_name, middle) =
                    (client.clone(), table_name.clone(), middle.clone());
                async move {
                    let out = client
                        .query()
                        .table_name(&table_name)
                        .key_condition_expression("#pk = :t AND #sk BETWEEN :lo AND :hi")
                        .expression_attribute_names("#pk", table::PARTITION_KEY)
                        .expression_attribute_names("#sk", table::SORT_KEY)
                        .expression_attribute_values(":t", AttributeValue::S(tenant.into()))
                        .expression_attribute_values(":lo", AttributeValue::S(middle))
                        .expression_attribute_values(
                            ":hi",
                            AttributeValue::S("7ZZZZZZZZZZZZZZZZZZZZZZZZZ".into()),
                        )
                        .limit(limit as i32 + 1)
                        .send()
                        .await?;
                    std::hint::black_box(out.count);
                    Ok(())
                }
            },
        )
        .await?;
        overhead.push(format!("| list page of {limit} (`GET /audit`) vs `Query` limit {} | {ours:.2} | {raw:.2} | {:.3} |", limit + 1, ours / raw));
        read_ratios.push((format!("list page of {limit}"), ours / raw));
    }
    {
        let body = serde_json::to_vec(
            &json!({"and": [{"field": "userId", "operator": "eq", "value": "user-042"}], "from": format_time(first)}),
        )?;
        let event = invoke_event(
            Route::Query,
            "POST",
            "/audit/query",
            "limit=1000",
            &body,
            tenant,
            HashMap::new(),
        );
        let gateway = env.gateway.clone();
        let (ours, raw) = paired(
            20,
            || {
                let (gateway, event) = (gateway.clone(), event.clone());
                async move {
                    let response = gateway.invoke(Route::Query, &event).await;
                    if response.status() != 200 {
                        return Err(format!("query answered {}", response.status()).into());
                    }
                    Ok(())
                }
            },
            || {
                let (client, table_name) = (client.clone(), table_name.clone());
                let posted_through = posted_through.clone();
                async move {
                    let key = audit_core::pivot::pivot_key(
                        tenant,
                        &audit_core::pivot::PIVOT_INDEXES[0],
                        "user-042",
                    );
                    let tail = crate::raw::Tail {
                        field: "userId",
                        value: "user-042",
                        after: &posted_through,
                    };
                    let count = crate::raw::postings_page(
                        &client,
                        &table_name,
                        tenant,
                        &key,
                        Some(tail),
                        1000,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                    std::hint::black_box(count);
                    Ok(())
                }
            },
        )
        .await?;
        overhead.push(format!("| query page of 1000 (`userId eq`) vs the tail's filtered `Query` + the postings' `Query` + `BatchGetItem` of their cursors | {ours:.2} | {raw:.2} | {:.3} |", ours / raw));
        read_ratios.push(("query page of 1000".to_string(), ours / raw));
    }
    {
        let params = HashMap::from([("cursor".to_string(), middle.clone())]);
        let event = invoke_event(
            Route::Lookup,
            "GET",
            &format!("/audit/events/{middle}"),
            "",
            b"",
            tenant,
            params,
        );
        let gateway = env.gateway.clone();
        let (ours, raw) = paired(
            100,
            || {
                let (gateway, event) = (gateway.clone(), event.clone());
                async move {
                    let response = gateway.invoke(Route::Lookup, &event).await;
                    if response.status() != 200 {
                        return Err(format!("lookup answered {}", response.status()).into());
                    }
                    Ok(())
                }
            },
            || {
                let (client, table_name, middle) =
                    (client.clone(), table_name.clone(), middle.clone());
                async move {
                    let out = client
                        .get_item()
                        .table_name(&table_name)
                        .key(table::PARTITION_KEY, AttributeValue::S(tenant.into()))
                        .key(table::SORT_KEY, AttributeValue::S(middle))
                        .send()
                        .await?;
                    std::hint::black_box(out.item.is_some());
                    Ok(())
                }
            },
        )
        .await?;
        overhead.push(format!(
            "| cursor lookup (with its concurrent self-audit `PutItem`) vs `GetItem` | {ours:.2} | {raw:.2} | {:.3} |",
            ours / raw
        ));
        read_ratios.push(("lookup".to_string(), ours / raw));
        // The self-audit record is written concurrently: compare with doing both in sequence.
        let (ours, sequential) = paired(
            100,
            || {
                let (gateway, event) = (gateway.clone(), event.clone());
                async move {
                    std::hint::black_box(gateway.invoke(Route::Lookup, &event).await.status());
                    Ok(())
                }
            },
            || {
                let (client, table_name, middle) =
                    (client.clone(), table_name.clone(), middle.clone());
                async move {
                    let out = client
                        .get_item()
                        .table_name(&table_name)
                        .key(table::PARTITION_KEY, AttributeValue::S(tenant.into()))
                        .key(table::SORT_KEY, AttributeValue::S(middle))
                        .send()
                        .await?;
                    std::hint::black_box(out.item.is_some());
                    // a record of about the size the self-audit writes
                    let record = event_to_item(&sized_event(
                        ulid::Ulid::new().to_string(),
                        tenant,
                        Utc::now(),
                        500,
                        json!({}),
                    )?)?;
                    client
                        .put_item()
                        .table_name(&table_name)
                        .set_item(Some(record))
                        .send()
                        .await?;
                    Ok(())
                }
            },
        )
        .await?;
        overhead.push(format!(
            "| cursor lookup vs `GetItem` + `PutItem` in sequence (what a non-concurrent self-audit would cost) | {ours:.2} | {sequential:.2} | {:.3} |",
            ours / sequential
        ));
    }
    // ingest against the raw writes it wraps, each on its own fresh table
    for (count, rounds) in [(1usize, 40usize), (25, 30), (100, 15), (1000, 5)] {
        let ingest_env = start_env().await;
        let raw_env = start_env().await;
        let body = serde_json::to_vec(&if count == 1 {
            json!({"eventType": "bulk.write", "serviceName": "bench", "userId": "u-1", "data": {"pad": "x".repeat(800)}})
        } else {
            json!({"events": (0..count).map(|i| json!({"eventType": "bulk.write", "serviceName": "bench", "userId": format!("u{}", i % 50), "data": {"pad": "x".repeat(800)}})).collect::<Vec<_>>()})
        })?;
        let event = invoke_event(
            Route::Ingest,
            "POST",
            "/audit/events",
            "",
            &body,
            "bench",
            HashMap::new(),
        );
        let gateway = ingest_env.gateway.clone();
        let raw_client = raw_env.direct.clone();
        let raw_table = raw_env.config.table_name.clone();
        let ours_and_raw = paired(
            rounds,
            || {
                let (gateway, event) = (gateway.clone(), event.clone());
                async move {
                    let response = gateway.invoke(Route::Ingest, &event).await;
                    let status = response.status();
                    if !status.is_success() {
                        let message = serde_json::from_slice::<Value>(response.body().as_ref())
                            .ok()
                            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                            .unwrap_or_default();
                        return Err(format!("answered {status}, \"{message}\"").into());
                    }
                    Ok(())
                }
            },
            || {
                let (client, table_name) = (raw_client.clone(), raw_table.clone());
                async move {
                    let now = Utc::now();
                    let items: Vec<Item> = (0..count)
                        .map(|i| -> Result<Item, BenchError> {
                            let e = sized_event(
                                ulid::Ulid::new().to_string(),
                                "bench",
                                now,
                                1000,
                                json!({"userId": format!("u{}", i % 50)}),
                            )?;
                            Ok(event_to_item(&e)?)
                        })
                        .collect::<Result<_, _>>()?;
                    if count == 1 {
                        client
                            .put_item()
                            .table_name(&table_name)
                            .set_item(items.into_iter().next())
                            .condition_expression("attribute_not_exists(#sk)")
                            .expression_attribute_names("#sk", table::SORT_KEY)
                            .send()
                            .await?;
                        Ok(())
                    } else {
                        batch_put(&client, &table_name, items).await
                    }
                }
            },
        )
        .await;
        let (ours, raw) = match (ours_and_raw, env.embedded.is_some()) {
            (Ok(pair), _) => pair,
            // Reported, not fatal, on DynamoDB Local: a JVM on the same two
            // cores can be slower than the write deadline.
            (Err(why), false) => {
                overhead.push(format!(
                    "| ingest of {count} | not measured: {why} (DynamoDB Local, on the same two cores, did not store them within the write deadline; the client retries `failed` events) | | |"
                ));
                continue;
            }
            (Err(why), true) => return Err(why),
        };
        let raw_call = if count == 1 {
            "conditional `PutItem`"
        } else {
            "`BatchWriteItem` (25 per call, 8 in flight)"
        };
        overhead.push(format!(
            "| ingest of {count} vs raw {raw_call} | {ours:.2} | {raw:.2} | {:.3} |",
            ours / raw
        ));
    }

    let verdicts = read_ratios
        .iter()
        .map(|(route, ratio)| {
            format!(
                "{route} {ratio:.2}× ({})",
                if *ratio <= 1.15 { "met" } else { "**not met**" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let loaded_by = if env.embedded.is_some() {
        "the embedded store's bulk import"
    } else {
        "`BatchWriteItem`"
    };
    let store_note = if env.embedded.is_some() {
        "The embedded store serialises every request behind one SQLite lock, so a read's self-audit `PutItem`, written concurrently with the read, adds its time to the read here (compare the lookup with `GetItem` + `PutItem` in sequence); the next section measures the same rows on DynamoDB Local, which serves requests concurrently."
    } else {
        "DynamoDB Local serves requests concurrently (a JVM on the same two cores as the benchmark), so a read's self-audit `PutItem` runs beside the read as it does on DynamoDB."
    };
    let body = format!(
        "A tenant of {events} events (about 700 B each) spread evenly over 30 days, 100 distinct `userId`s, 10 event types, 4 services, 1000 trace ids, `data.bucket` = i mod 1000; loaded with {loaded_by} in {load_seconds:.1} s ({:.0} items/s). Each query is followed through every `next` page (limit 1000) over the default 30-day window; the read budget per request is {} items.\n\n| query | returned | items read | read per returned | requests | most read by one request | RRU per returned |\n| --- | --- | --- | --- | --- | --- | --- |\n{}\n\nHandler overhead: the function's handler (API Gateway event in, JSON response out) against the raw SDK call it wraps, alternating, medians (ms, local, context only).\n\n| operation | handler ms | raw ms | handler ÷ raw |\n| --- | --- | --- | --- |\n{}\n\n**Against the target** (each read ≤ 1.15× the raw calls it wraps): {verdicts}. Beyond the raw call, a read checks the token, writes its self-audit record, and converts every item to an event and the page to JSON (the raw call stops at the SDK's attribute maps). {store_note}\n",
        events as f64 / load_seconds,
        env.config.query_read_budget,
        selectivity.join("\n"),
        overhead.join("\n")
    );
    Ok(Section {
        title: if env.embedded.is_some() {
            "Reads: selectivity and handler overhead".into()
        } else {
            "Reads on DynamoDB Local: handler overhead against a concurrent store".into()
        },
        body,
    })
}
