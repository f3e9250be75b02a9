//! What can be checked about the deployment without AWS: the template's
//! table matches the code's, its routes and scopes match the gateway's,
//! policies are least-privilege, and every `events/` file runs through its
//! function's handler as `sam local invoke -e` would feed it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use audit_core::Event;
use audit_dynamo::event_to_item;
use audit_dynamo::table;
use audit_infra::gateway::Route;
use audit_infra::testkit::{EnvOptions, TestEnv};
use serde_json::{json, Value};
use serde_yaml::Value as Yaml;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn template() -> Yaml {
    let text = std::fs::read_to_string(root().join("template.yaml")).expect("template.yaml");
    serde_yaml::from_str(&text).expect("template parses")
}

fn resources(template: &Yaml) -> Vec<(String, Yaml)> {
    template["Resources"]
        .as_mapping()
        .expect("Resources")
        .iter()
        .map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), v.clone()))
        .collect()
}

fn text(value: &Yaml) -> String {
    match value {
        Yaml::String(s) => s.clone(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Number(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

fn pairs(list: &Yaml, name: &str, value: &str) -> Vec<(String, String)> {
    list.as_sequence()
        .map(|items| {
            items
                .iter()
                .map(|i| (text(&i[name]), text(&i[value])))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_template_declares_the_table_the_code_creates() {
    let template = template();
    let table_resource = resources(&template)
        .into_iter()
        .find(|(_, r)| r["Type"] == "AWS::DynamoDB::Table")
        .expect("a table")
        .1;
    let p = &table_resource["Properties"];
    let mut declared = table::TableDefinition {
        table_name: String::new(),
        key_schema: pairs(&p["KeySchema"], "AttributeName", "KeyType"),
        attributes: pairs(&p["AttributeDefinitions"], "AttributeName", "AttributeType"),
        indexes: p["GlobalSecondaryIndexes"]
            .as_sequence()
            .map(|list| {
                list.iter()
                    .map(|i| {
                        (
                            text(&i["IndexName"]),
                            pairs(&i["KeySchema"], "AttributeName", "KeyType"),
                            text(&i["Projection"]["ProjectionType"]),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        billing_mode: text(&p["BillingMode"]),
        stream_view_type: Some(text(&p["StreamSpecification"]["StreamViewType"])),
        ttl_attribute: text(&p["TimeToLiveSpecification"]["AttributeName"]),
    };
    let mut code = table::definition("");
    declared.attributes.sort();
    code.attributes.sort();
    assert_eq!(
        declared, code,
        "template.yaml and shared::table have drifted apart"
    );
    assert_eq!(p["TimeToLiveSpecification"]["Enabled"], Yaml::Bool(true));
    assert_eq!(table_resource["DeletionPolicy"], Yaml::from("Retain"));
    assert_eq!(
        p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
        Yaml::Bool(true)
    );
    assert_eq!(p["DeletionProtectionEnabled"], Yaml::Bool(true));
}

/// Every route the local gateway serves is in the template with the same
/// scope and function, and every function builds with cargo-lambda from the workspace.
#[test]
fn routes_scopes_and_functions_match_the_gateway() {
    let template = template();
    let mut declared: BTreeSet<(String, String, String)> = BTreeSet::new();
    for (_, resource) in resources(&template) {
        if resource["Type"] != "AWS::Serverless::Function" {
            continue;
        }
        let binary = text(&resource["Metadata"]["BuildProperties"]["Binary"]);
        assert_eq!(
            resource["Metadata"]["BuildMethod"],
            Yaml::from("rust-cargolambda")
        );
        assert_eq!(resource["Properties"]["CodeUri"], Yaml::from("."));
        assert!(
            root()
                .join("functions")
                .join(&binary)
                .join("src/main.rs")
                .exists(),
            "no crate for {binary}"
        );
        if let Some(events) = resource["Properties"]["Events"].as_mapping() {
            for (_, event) in events {
                if event["Type"] != "HttpApi" {
                    continue;
                }
                let props = &event["Properties"];
                let key = format!("{} {}", text(&props["Method"]), text(&props["Path"]));
                let scopes: Vec<String> = props["Auth"]["AuthorizationScopes"]
                    .as_sequence()
                    .map(|s| s.iter().map(text).collect())
                    .unwrap_or_default();
                // The route's scope, and Amazon Cognito's name for it.
                assert_eq!(scopes.len(), 2, "{key}: one scope in two forms");
                assert_eq!(
                    scopes[1],
                    audit_core::auth::cognito_form(&scopes[0]),
                    "{key}"
                );
                declared.insert((key, scopes[0].clone(), binary.clone()));
            }
        }
    }
    let served: BTreeSet<(String, String, String)> = Route::all()
        .map(|r| {
            (
                r.key().to_string(),
                r.scope().to_string(),
                r.function().to_string(),
            )
        })
        .collect();
    assert_eq!(declared, served);
}

/// No function may update or delete, and nothing is granted on `*`.
#[test]
fn policies_are_least_privilege() {
    let template = template();
    let allowed: HashMap<&str, &[&str]> = HashMap::from([
        (
            "ingest",
            &[
                "dynamodb:PutItem",
                "dynamodb:BatchWriteItem",
                "dynamodb:ConditionCheckItem",
                "dynamodb:GetItem",
            ][..],
        ),
        (
            "cursor",
            &[
                "dynamodb:GetItem",
                "dynamodb:Query",
                "dynamodb:BatchGetItem",
                "dynamodb:PutItem",
            ][..],
        ),
        (
            "seal",
            &[
                "dynamodb:Query",
                "dynamodb:GetItem",
                "dynamodb:BatchGetItem",
                "dynamodb:PutItem",
                "dynamodb:BatchWriteItem",
                "events:PutEvents",
                "secretsmanager:GetSecretValue",
            ][..],
        ),
        (
            "list",
            &[
                "dynamodb:Query",
                "dynamodb:GetItem",
                // Pivot queries read the events their postings name by key.
                "dynamodb:BatchGetItem",
                "dynamodb:PutItem",
                "secretsmanager:GetSecretValue",
            ][..],
        ),
        (
            "metadata",
            &[
                "dynamodb:Query",
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                // The properties a settings change's record shows first.
                "dynamodb:BatchWriteItem",
            ][..],
        ),
        ("stream", &["events:PutEvents"][..]),
    ]);
    for (name, resource) in resources(&template) {
        if resource["Type"] != "AWS::Serverless::Function" {
            continue;
        }
        let binary = text(&resource["Metadata"]["BuildProperties"]["Binary"]);
        let permitted = allowed
            .get(binary.as_str())
            .unwrap_or_else(|| panic!("no policy expectation for {binary}"));
        let policies = resource["Properties"]["Policies"]
            .as_sequence()
            .expect("inline policies");
        for policy in policies {
            let statements = policy["Statement"].as_sequence().unwrap_or_else(|| {
                panic!("{name}: only inline policy documents (no SAM policy templates)")
            });
            for statement in statements {
                let actions: Vec<String> = match &statement["Action"] {
                    Yaml::Sequence(list) => list.iter().map(text).collect(),
                    single => vec![text(single)],
                };
                for action in &actions {
                    assert!(!action.contains('*'), "{name}: wildcard action {action}");
                    assert!(
                        permitted.contains(&action.as_str()),
                        "{name} may not have {action}"
                    );
                }
                let resource_text = format!("{:?}", statement["Resource"]);
                assert!(
                    !resource_text.contains("\"*\""),
                    "{name}: wildcard resource"
                );
            }
        }
    }
}

/// The actions a function's inline policies grant, by its binary's name.
fn granted_actions(template: &Yaml, binary: &str) -> BTreeSet<String> {
    let (_, function) = resources(template)
        .into_iter()
        .find(|(_, r)| r["Metadata"]["BuildProperties"]["Binary"].as_str() == Some(binary))
        .unwrap_or_else(|| panic!("no function builds {binary}"));
    let mut granted = BTreeSet::new();
    for policy in function["Properties"]["Policies"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        for statement in policy["Statement"].as_sequence().into_iter().flatten() {
            match &statement["Action"] {
                Yaml::Sequence(list) => granted.extend(list.iter().map(text)),
                single => {
                    granted.insert(text(single));
                }
            }
        }
    }
    granted
}

/// Every call the proxy has passed to the store so far, by operation.
fn calls_made(env: &TestEnv) -> Vec<String> {
    env.proxy
        .as_ref()
        .expect("a proxy")
        .counters
        .operations
        .lock()
        .expect("lock")
        .clone()
}

/// The IAM actions a DynamoDB call needs: a transaction is authorised as
/// each write inside it, and the store's transactions hold `Put`s only.
fn actions_needed(operation: &str) -> Vec<String> {
    match operation {
        "TransactWriteItems" => vec!["dynamodb:PutItem".to_string()],
        other => vec![format!("dynamodb:{other}")],
    }
}

fn event_files() -> Vec<(String, Value)> {
    let mut files: Vec<(String, Value)> = std::fs::read_dir(root().join("events"))
        .expect("events/")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, value)
        })
        .collect();
    // ingest first, so the reads find what the ingest files stored
    files.sort_by_key(|(name, _)| (!name.starts_with("post-audit-events"), name.clone()));
    files
}

/// Each `events/` file through its handler, as `sam local invoke -e` would.
#[tokio::test]
async fn every_event_file_runs_through_its_handler() {
    // Through the proxy, which names every call a handler makes: each must
    // be one its function's policy grants (a denied call on AWS fails the
    // request, or is logged and dropped where the write is best-effort).
    let env = TestEnv::start_with(EnvOptions {
        with_proxy: true,
        ..Default::default()
    })
    .await;
    let template = template();
    let calls = || calls_made(&env);
    let mut covered = BTreeSet::new();
    // The lookup and proof files name this cursor in tenant acme: put it there.
    let lookup_file = event_files()
        .into_iter()
        .find(|(name, _)| name == "get-audit-events-cursor.json")
        .expect("a lookup file");
    let looked_up = lookup_file.1["pathParameters"]["cursor"]
        .as_str()
        .unwrap()
        .to_string();
    let stored: Event = serde_json::from_value(json!({
        "cursor": looked_up, "accountId": "acme", "timestamp": "2026-11-22T10:00:00.000Z",
        "expiresAt": "2099-01-01T00:00:00.000Z", "serviceName": "identity", "eventType": "user.login"
    })).unwrap();
    env.direct
        .put_item()
        .table_name(&env.config.table_name)
        .set_item(Some(event_to_item(&stored).unwrap()))
        .send()
        .await
        .unwrap();
    let mut sealed = false;
    for (name, event) in event_files() {
        let Some(route_key) = event["routeKey"].as_str() else {
            continue;
        };
        let route = Route::from_key(route_key)
            .unwrap_or_else(|| panic!("{name}: unknown route {route_key}"));
        covered.insert(route.key());
        let integrity = matches!(
            route,
            Route::Checkpoint
                | Route::Checkpoints
                | Route::Proof
                | Route::Consistency
                | Route::Entries
        );
        if integrity && !sealed {
            // The ingest files ran first: seal what they stored, as the
            // seal function's schedule would once it settles.
            let store = std::sync::Arc::new(audit_dynamo::DynamoStore::new(
                env.client.clone(),
                &env.config.table_name,
            ));
            let later = chrono::Utc::now()
                + chrono::Duration::from_std(env.config.settle_horizon).unwrap()
                + chrono::Duration::seconds(1);
            let (checkpoint, added) = audit_core::integrity::seal::Sealer::new(store, &env.config)
                .seal_tenant("acme", later, false)
                .await
                .unwrap();
            assert!(checkpoint.is_some() && added >= 2, "sealed {added}");
            sealed = true;
        }
        let before = calls().len();
        let response = env.gateway.invoke(route, &event).await;
        let granted = granted_actions(&template, route.function());
        for operation in &calls()[before..] {
            for action in actions_needed(operation) {
                assert!(
                    granted.contains(&action),
                    "{name}: the {} function calls {operation}, and its policy does not grant {action}",
                    route.function()
                );
            }
        }
        let status = response.status().as_u16();
        let body: Value = serde_json::from_slice(response.body().as_ref()).unwrap_or(Value::Null);
        match route {
            Route::Ingest
                if event["body"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("\"events\"") =>
            {
                assert_eq!(status, 200, "{name}: {body}");
                assert!(
                    body["results"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .all(|r| r["status"] == "stored"),
                    "{name}: {body}"
                );
            }
            Route::Ingest => {
                assert_eq!(status, 201, "{name}: {body}");
                assert_eq!(body["status"], "stored");
            }
            Route::Lookup => {
                assert_eq!(status, 200, "{name}: {body}");
                assert_eq!(body["cursor"], event["pathParameters"]["cursor"]);
            }
            Route::Tail => {
                assert_eq!(status, 200, "{name}: {body}");
                assert!(
                    body["events"].is_array() && body["_links"]["next"]["href"].is_string(),
                    "{name}: {body}"
                );
            }
            Route::Query => {
                assert_eq!(status, 200, "{name}: {body}");
                // the query file looks for the event the single-ingest file stored
                let data = body["data"].as_array().unwrap();
                assert_eq!(data.len(), 1, "{name}: {body}");
                assert_eq!(data[0]["userId"], "u-1001");
            }
            Route::Metadata => {
                assert_eq!(status, 200, "{name}: {body}");
                assert!(body["targets"].is_array(), "{name}: {body}");
            }
            Route::Properties => {
                // sorted after the ingest files: the single event's data is known
                assert_eq!(status, 200, "{name}: {body}");
                assert!(
                    body["properties"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["name"] == "data.method"),
                    "{name}: {body}"
                );
            }
            Route::GetSettings => {
                assert_eq!(status, 200, "{name}: {body}");
                assert!(body["retentionDays"].is_u64());
            }
            Route::PutSettings => {
                assert_eq!(status, 200, "{name}: {body}");
                assert_eq!(body["retentionDays"], 365);
            }
            Route::VerifierKey => {
                assert_eq!(status, 200, "{name}: {body}");
                let key = body["verifierKey"].as_str().unwrap_or_default();
                audit_core::integrity::note::NoteVerifier::parse(key)
                    .unwrap_or_else(|e| panic!("{name}: {key}: {e}"));
            }
            Route::Checkpoint => {
                assert_eq!(status, 200, "{name}: {body}");
                assert!(body["treeSize"].as_u64() >= Some(2), "{name}: {body}");
                assert!(body["note"].is_string(), "{name}: {body}");
            }
            Route::Checkpoints => {
                assert_eq!(status, 200, "{name}: {body}");
                assert!(
                    body["checkpoints"]
                        .as_array()
                        .is_some_and(|c| !c.is_empty()),
                    "{name}: {body}"
                );
            }
            Route::Proof => {
                assert_eq!(status, 200, "{name}: {body}");
                assert_eq!(body["leafIndex"], 0, "{name}: the oldest event: {body}");
                assert!(body["inclusion"].is_array(), "{name}: {body}");
            }
            Route::Consistency => {
                assert_eq!(status, 200, "{name}: {body}");
                assert_eq!(
                    (body["from"].as_u64(), body["to"].as_u64()),
                    (Some(1), Some(2))
                );
                assert!(body["proof"].is_array(), "{name}: {body}");
            }
            Route::Entries => {
                assert_eq!(status, 200, "{name}: {body}");
                let entries = body["entries"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                assert_eq!(
                    entries.first().map(|e| &e["cursor"]),
                    Some(&json!(looked_up)),
                    "{name}: {body}"
                );
            }
        }
    }
    let stored: Vec<Event> = env
        .all_items()
        .await
        .into_iter()
        .filter(|i| {
            i.get(table::PARTITION_KEY)
                .and_then(|v| v.as_s().ok())
                .is_some_and(|t| t == "acme")
        })
        .map(|i| audit_dynamo::item_to_event(i).unwrap())
        .collect();
    let (records, events): (Vec<&Event>, Vec<&Event>) =
        stored.iter().partition(|e| e.service_name == "audit-api");
    assert_eq!(
        events.len(),
        1 + 3 + 1,
        "the ingest files stored 4 events beside the looked-up one"
    );
    // lookup, list (twice: one with a Cognito access token's claims),
    // query, metadata, properties, verifier key, the settings read and the
    // settings change, and the five integrity reads
    assert_eq!(
        records.len(),
        14,
        "{:?}",
        records.iter().map(|e| &e.event_type).collect::<Vec<_>>()
    );
    // The Cognito-shaped token (no `aud`, `audit/read`, groups as `[a b]`)
    // was let in, and recorded as its client.
    assert!(
        records
            .iter()
            .any(|e| e.client_id.as_deref() == Some("4example5clientid6acme")),
        "the Cognito access token's read is recorded"
    );
    let routes: BTreeSet<&str> = Route::all().map(Route::key).collect();
    assert_eq!(covered, routes, "every route has an events/ file (SPEC.md)");
}

/// What a first deploy needs of the template beyond what cfn-lint checks:
/// no function reserves concurrency unconditionally (Lambda refuses any
/// reservation on an account whose quota is 10); with a customer key, every
/// function that calls DynamoDB is granted the table's key; and a custom
/// resource waits for its function's log group (the function logs when
/// invoked, Lambda would create the group, and the group's creation would
/// fail) and gives up in minutes, not CloudFormation's hour.
#[test]
fn the_template_deploys_on_a_fresh_account_and_with_a_customer_key() {
    let template = template();
    let all = resources(&template);
    let functions: Vec<&(String, Yaml)> = all
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Serverless::Function")
        .collect();
    let (_, table_key) = all
        .iter()
        .find(|(name, _)| name == "TableKeyPolicy")
        .expect("a table key policy");
    let key_roles = format!("{:?}", table_key["Properties"]["Roles"]);
    for (name, function) in &functions {
        let reserved = &function["Properties"]["ReservedConcurrentExecutions"];
        assert!(
            reserved.is_null() || format!("{reserved:?}").contains("!If"),
            "{name} reserves {reserved:?} on every account"
        );
        let binary = text(&function["Metadata"]["BuildProperties"]["Binary"]);
        if granted_actions(&template, &binary)
            .iter()
            .any(|action| action.starts_with("dynamodb:"))
        {
            assert!(
                key_roles.contains(&format!("\"{name}Role\"")),
                "{name} calls DynamoDB, and TableKeyPolicy does not name {name}Role"
            );
        }
    }
    let custom: Vec<&(String, Yaml)> = all
        .iter()
        .filter(|(_, r)| {
            r["Type"]
                .as_str()
                .is_some_and(|t| t.starts_with("Custom::"))
        })
        .collect();
    assert!(!custom.is_empty(), "the verifier key is a custom resource");
    for (name, resource) in custom {
        let token = format!("{:?}", resource["Properties"]["ServiceToken"]);
        let (function, _) = functions
            .iter()
            .find(|(f, _)| token.contains(&format!("\"{f}.Arn\"")))
            .unwrap_or_else(|| panic!("{name}: no function serves {token}"));
        let (group, _) = all
            .iter()
            .find(|(_, g)| {
                g["Type"] == "AWS::Logs::LogGroup"
                    && format!("{:?}", g["Properties"]["LogGroupName"])
                        .contains(&format!("${{{function}}}"))
            })
            .unwrap_or_else(|| panic!("{function} has no log group"));
        assert!(
            format!("{:?}", resource["DependsOn"]).contains(&format!("\"{group}\"")),
            "{name} does not wait for {group}"
        );
        // Minutes, not CloudFormation's hour, and longer than a run of the
        // function that the request may wait behind.
        let function_timeout = functions
            .iter()
            .find(|(f, _)| f == function)
            .and_then(|(_, f)| f["Properties"]["Timeout"].as_u64())
            .unwrap_or(3);
        assert!(
            resource["Properties"]["ServiceTimeout"]
                .as_u64()
                .is_some_and(|t| t > function_timeout && t <= 1800),
            "{name}: no ServiceTimeout of minutes, beyond {function}'s {function_timeout} s"
        );
    }
}

/// The seal function may write only the log's partitions: its write
/// statements carry a `dynamodb:LeadingKeys` condition naming exactly the
/// adapter's log key patterns, none of which a tenant's events can have.
#[test]
fn the_seal_function_can_never_write_an_event() {
    let template = template();
    let (_, seal) = resources(&template)
        .into_iter()
        .find(|(_, r)| r["Metadata"]["BuildProperties"]["Binary"] == "seal")
        .expect("a seal function");
    let writes = ["dynamodb:PutItem", "dynamodb:BatchWriteItem"];
    let mut conditioned = 0;
    for policy in seal["Properties"]["Policies"].as_sequence().unwrap() {
        for statement in policy["Statement"].as_sequence().unwrap() {
            let actions: Vec<String> = match &statement["Action"] {
                Yaml::Sequence(list) => list.iter().map(text).collect(),
                single => vec![text(single)],
            };
            if !actions.iter().any(|a| writes.contains(&a.as_str())) {
                continue;
            }
            let keys: Vec<String> = statement["Condition"]["ForAllValues:StringLike"]
                ["dynamodb:LeadingKeys"]
                .as_sequence()
                .expect("every write statement is limited to leading keys")
                .iter()
                .map(text)
                .collect();
            assert_eq!(keys, table::SEAL_WRITABLE_KEYS);
            conditioned += 1;
        }
    }
    assert!(conditioned > 0, "the seal function writes the log");
    // A tenant id never contains `#`, and every pattern does before its
    // wildcard: no pattern matches a tenant's partition.
    for pattern in table::SEAL_WRITABLE_KEYS {
        let fixed = pattern.trim_end_matches('*');
        assert!(fixed.contains('#'), "{pattern}");
    }
    assert!(!audit_core::auth::is_valid_tenant("log#acme"));
    // Nor does any pattern match a partition the API writes for a tenant:
    // its events, idempotency markers (its own and a platform producer's),
    // metadata or settings, whatever the tenant's name (`u` and `idem` are
    // tenant ids too: a producer's markers were `idem#u#acme`, a posting's
    // key, until they took `/`).
    let matches = |pattern: &str, key: &str| -> bool {
        // `*` is any run of characters, as IAM's StringLike reads it.
        let parts: Vec<&str> = pattern.split('*').collect();
        let mut rest = key;
        for (n, part) in parts.iter().enumerate() {
            if n == 0 {
                let Some(after) = rest.strip_prefix(part) else {
                    return false;
                };
                rest = after;
            } else if n == parts.len() - 1 {
                return rest.ends_with(part);
            } else {
                let Some(at) = rest.find(part) else {
                    return false;
                };
                rest = &rest[at + part.len()..];
            }
        }
        rest.is_empty()
    };
    let tenants = [
        "acme", "u", "e", "s", "t", "idem", "log", "posted", "meta", "seal",
    ];
    for tenant in tenants {
        let mut partitions = vec![
            tenant.to_string(),
            format!("{}{tenant}", table::METADATA_PREFIX),
            format!("{}{tenant}", table::SETTINGS_PREFIX),
        ];
        for producer in [None, Some("u"), Some("acme"), Some("idem")] {
            let key = audit_core::store::IdempotencyKey {
                key: "k".into(),
                producer: producer.map(str::to_string),
            };
            partitions.push(format!(
                "{}{}",
                table::IDEMPOTENCY_PREFIX,
                key.scope(tenant)
            ));
        }
        for partition in &partitions {
            for pattern in table::SEAL_WRITABLE_KEYS {
                assert!(
                    !matches(pattern, partition),
                    "the seal function may write {partition} ({pattern})"
                );
            }
        }
    }
    assert!(matches("*#u#*", "acme#u#x") && matches("log#*", "log#acme"));
}

/// The seal function's `events/` files: the schedule runs a sealing pass,
/// and the CloudFormation custom resource gets the verifier key PUT to its
/// response URL.
#[tokio::test]
async fn the_seal_event_files_run_through_the_seal_handler() {
    let env = TestEnv::start_with(EnvOptions {
        with_proxy: true,
        ..Default::default()
    })
    .await;
    let files: BTreeMap<String, Value> = event_files().into_iter().collect();
    // Events to seal and post, stored by the ingest files.
    for name in ["post-audit-events.json", "post-audit-events-batch.json"] {
        let response = env.gateway.invoke(Route::Ingest, &files[name]).await;
        assert!(response.status().is_success(), "{name}");
    }
    // The handler's calls go through the proxy, which names each one.
    let handler = seal::SealHandler::new(
        std::sync::Arc::new(audit_dynamo::DynamoStore::new(
            env.client.clone(),
            &env.config.table_name,
        )),
        &env.config,
        audit_infra::relay::LocalPublisher::new(Vec::new()),
        "audit-trail.test",
    );
    assert!(!seal::is_custom_resource(&files["seal-schedule.json"]));
    let later = chrono::Utc::now()
        + chrono::Duration::from_std(env.config.settle_horizon).unwrap()
        + chrono::Duration::seconds(1);
    let before = calls_made(&env).len();
    handler.run(later).await.expect("a sealing run");
    let calls = calls_made(&env)[before..].to_vec();
    assert!(
        calls.iter().any(|c| c == "BatchWriteItem"),
        "the run sealed and posted: {calls:?}"
    );
    let granted = granted_actions(&template(), "seal");
    for operation in &calls {
        for action in actions_needed(operation) {
            assert!(
                granted.contains(&action),
                "the seal function calls {operation}, and its policy does not grant {action}"
            );
        }
    }

    // A server stands in for CloudFormation's pre-signed URL.
    let (url, mut receiver) = audit_infra::testkit::custom_resource_answers().await;
    let mut request = files["seal-custom-resource.json"].clone();
    assert!(seal::is_custom_resource(&request));
    request["ResponseURL"] = json!(url);
    handler.answer_custom_resource(&request).await.unwrap();
    let answer: Value = serde_json::from_str(&receiver.recv().await.unwrap()).unwrap();
    assert_eq!(answer["Status"], "SUCCESS");
    assert_eq!(answer["RequestId"], request["RequestId"]);
    let key = answer["Data"]["VerifierKey"].as_str().unwrap();
    assert_eq!(key, handler.verifier_key());
    audit_core::integrity::note::NoteVerifier::parse(key).unwrap();

    // A function that could not start (its secret unreadable, say) answers
    // FAILED with the reason, so the deploy stops at once instead of
    // waiting out CloudFormation's timeout; a Delete still succeeds, so the
    // stack can be removed.
    seal::answer_custom_resource(&request, Err("the secret is unreadable"))
        .await
        .unwrap();
    let answer: Value = serde_json::from_str(&receiver.recv().await.unwrap()).unwrap();
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    assert!(
        answer["Reason"]
            .as_str()
            .is_some_and(|r| r.contains("the secret is unreadable")),
        "{answer}"
    );
    assert_eq!(answer["RequestId"], request["RequestId"]);
    request["RequestType"] = json!("Delete");
    seal::answer_custom_resource(&request, Err("the secret is unreadable"))
        .await
        .unwrap();
    let answer: Value = serde_json::from_str(&receiver.recv().await.unwrap()).unwrap();
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
}

/// The stream files through the `stream` handler, delivering to a real HTTP
/// subscriber, as `sam local invoke -e` would feed them.
#[tokio::test]
async fn every_stream_event_file_runs_through_the_stream_handler() {
    use audit_infra::relay::{LocalPublisher, Subscriber};
    use audit_infra::testkit::TestSubscriber;
    let mut seen = 0;
    for (name, event) in event_files() {
        if event.get("Records").is_none() {
            continue;
        }
        seen += 1;
        let subscriber = TestSubscriber::start(None).await;
        let handler = stream::StreamHandler::new(
            LocalPublisher::new(vec![Subscriber::Http(subscriber.url.clone())]),
            "audit-trail.test",
        );
        let records: aws_lambda_events::dynamodb::Event =
            serde_json::from_value(event.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let response = handler.handle(records).await;
        assert!(response.batch_item_failures.is_empty(), "{name}");
        let delivered = subscriber.accepted_cursors();
        let expected: Vec<String> = event["Records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| {
                r["eventName"] == "INSERT"
                    && !r["dynamodb"]["NewImage"]["accountId"]["S"]
                        .as_str()
                        .unwrap_or("#")
                        .contains('#')
            })
            .map(|r| {
                r["dynamodb"]["NewImage"]["cursor"]["S"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(delivered, expected, "{name}");
        match name.as_str() {
            "dynamodb-stream-insert.json" => assert_eq!(delivered.len(), 1),
            "dynamodb-stream-batch.json" => assert_eq!(
                delivered.len(),
                3,
                "the idempotency marker is not forwarded"
            ),
            "dynamodb-stream-ttl-remove.json" => {
                assert!(delivered.is_empty(), "a TTL removal is not forwarded")
            }
            other => panic!("no expectation for {other}"),
        }
        let first = subscriber.accepted.lock().unwrap().first().cloned();
        if let Some(first) = first {
            assert_eq!(first["detail-type"], "AuditEvent");
            assert_eq!(first["detail"]["data"]["mfa"], true);
            assert!(
                first["detail"].get("gsiUserId").is_none(),
                "the detail is the API's JSON, not the item"
            );
        }
    }
    assert_eq!(seen, 3);
}

/// A subset of EventBridge/Lambda event filtering: exact values, `exists`,
/// and nested objects, which is all the template's patterns use.
fn pattern_matches(pattern: &Value, value: &Value) -> bool {
    let Some(fields) = pattern.as_object() else {
        return false;
    };
    fields.iter().all(|(key, rule)| {
        let found = value.get(key);
        match rule {
            Value::Object(_) => found.is_some_and(|v| pattern_matches(rule, v)),
            Value::Array(options) => options.iter().any(|option| match option {
                Value::Object(o) if o.contains_key("exists") => {
                    found.is_some() == o["exists"].as_bool().unwrap_or(true)
                }
                exact => found == Some(exact),
            }),
            _ => false,
        }
    })
}

#[test]
fn the_stream_filter_passes_only_event_inserts() {
    let template = template();
    let function = resources(&template)
        .into_iter()
        .find(|(_, r)| text(&r["Metadata"]["BuildProperties"]["Binary"]) == "stream")
        .expect("a stream function")
        .1;
    let source = function["Properties"]["Events"]
        .as_mapping()
        .unwrap()
        .values()
        .find(|e| e["Type"] == "DynamoDB")
        .expect("a DynamoDB event source")
        .clone();
    let props = &source["Properties"];
    assert_eq!(
        props["FunctionResponseTypes"][0],
        Yaml::from("ReportBatchItemFailures")
    );
    assert_eq!(props["BisectBatchOnFunctionError"], Yaml::Bool(true));
    assert!(
        props["MaximumRetryAttempts"].as_u64().is_some()
            && props["MaximumRecordAgeInSeconds"].as_u64().is_some()
    );
    assert!(props["DestinationConfig"]["OnFailure"]["Destination"] != Yaml::Null);
    let patterns: Vec<Value> = props["FilterCriteria"]["Filters"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|f| serde_json::from_str(f["Pattern"].as_str().unwrap()).unwrap())
        .collect();
    let passes = |record: &Value| patterns.iter().any(|p| pattern_matches(p, record));
    let files: HashMap<String, Value> = event_files().into_iter().collect();
    let batch = files["dynamodb-stream-batch.json"]["Records"]
        .as_array()
        .unwrap()
        .clone();
    let passed: Vec<bool> = batch.iter().map(passes).collect();
    assert_eq!(
        passed,
        vec![true, false, true, true],
        "the idempotency marker's insert is filtered out"
    );
    assert!(passes(&files["dynamodb-stream-insert.json"]["Records"][0]));
    // A metadata item has `serviceName`, a posting neither field: neither
    // is an event.
    let insert_of = |image: Value| json!({"eventName": "INSERT", "dynamodb": {"NewImage": image}});
    assert!(!passes(&insert_of(json!({
        "accountId": {"S": "meta#acme"}, "cursor": {"S": "[\"idp\",\"user.login\",\"mfa\",\"boolean\"]"},
        "serviceName": {"S": "idp"}, "eventType": {"S": "user.login"}, "name": {"S": "mfa"}, "type": {"S": "boolean"}
    }))));
    assert!(!passes(&insert_of(json!({
        "accountId": {"S": "acme#s#idp"}, "cursor": {"S": "01JDQ7A0000000000000000001"},
        "cursors": {"B": "AAAA"}, "ttl": {"N": "1802340000"}
    }))));
    assert!(
        !passes(&files["dynamodb-stream-ttl-remove.json"]["Records"][0]),
        "TTL removals are filtered out"
    );
}

/// The `Name` pattern (event types, service names) refuses exactly the
/// characters ingest counts as invisible.
#[test]
fn the_openapi_name_pattern_is_the_visible_character_rule() {
    let source = std::fs::read_to_string(root().join("openapi.yaml")).expect("openapi.yaml");
    let doc: Yaml = serde_yaml::from_str(&source).expect("openapi parses");
    let pattern = doc["components"]["schemas"]["Name"]["pattern"]
        .as_str()
        .expect("Name has a pattern");
    assert_eq!(pattern, audit_core::event::visible_text_pattern());
}

/// openapi.yaml documents exactly the routes the gateway serves, with the
/// same scopes (and the template is checked against the gateway above).
#[test]
fn the_openapi_document_matches_the_routes_and_scopes() {
    let source = std::fs::read_to_string(root().join("openapi.yaml")).expect("openapi.yaml");
    let doc: Yaml = serde_yaml::from_str(&source).expect("openapi parses");
    assert_eq!(source.lines().next(), Some("openapi: 3.1.0"));
    let mut documented = BTreeSet::new();
    for (path, operations) in doc["paths"].as_mapping().unwrap() {
        for (method, operation) in operations.as_mapping().unwrap() {
            let scopes: Vec<String> = operation["security"][0]["jwt"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(text)
                .collect();
            assert_eq!(scopes.len(), 1);
            assert!(
                operation["responses"]["default"] != Yaml::Null,
                "every operation documents its errors"
            );
            documented.insert((
                format!("{} {}", text(method).to_uppercase(), text(path)),
                scopes[0].clone(),
            ));
        }
    }
    let served: BTreeSet<(String, String)> = Route::all()
        .map(|r| (r.key().to_string(), r.scope().to_string()))
        .collect();
    assert_eq!(documented, served);
}

/// openapi.yaml lists the event's fields three times (what a producer
/// sends, what a reader gets, what a condition may name): each list is the
/// field table's, so a field added to one place and not the others fails.
#[test]
fn the_openapi_field_lists_are_the_field_table() {
    use audit_core::event::{FieldRule, FieldType, EVENT_FIELDS};
    let source = std::fs::read_to_string(root().join("openapi.yaml")).expect("openapi.yaml");
    let doc: Yaml = serde_yaml::from_str(&source).expect("openapi parses");
    let schemas = &doc["components"]["schemas"];
    let keys = |schema: &Yaml| -> BTreeSet<String> {
        schema["properties"]
            .as_mapping()
            .expect("properties")
            .keys()
            .map(text)
            .collect()
    };
    let enum_of = |schema: &Yaml| -> BTreeSet<String> {
        schema["enum"]
            .as_sequence()
            .expect("an enum")
            .iter()
            .map(text)
            .collect()
    };
    let fields = |keep: &dyn Fn(&audit_core::event::FieldSpec) -> bool| -> BTreeSet<String> {
        EVENT_FIELDS
            .iter()
            .filter(|f| keep(f))
            .map(|f| f.name.to_string())
            .collect()
    };
    assert_eq!(
        keys(&schemas["NewEvent"]),
        fields(&|f| f.rule != FieldRule::Assigned),
        "NewEvent: what a producer may send"
    );
    assert_eq!(keys(&schemas["Event"]), fields(&|_| true), "Event");
    assert_eq!(
        enum_of(&schemas["StringField"]),
        fields(&|f| f.query_type == Some(FieldType::String)),
        "StringField"
    );
    assert_eq!(
        enum_of(&schemas["TimeField"]),
        fields(&|f| f.query_type == Some(FieldType::Time)),
        "TimeField"
    );
}

/// The function-errors alarm sums the errors of every function in the
/// template, not of one: a failing seal or stream function pages too.
#[test]
fn the_errors_alarm_watches_every_function() {
    let template = template();
    let functions: BTreeSet<String> = resources(&template)
        .into_iter()
        .filter(|(_, r)| text(&r["Type"]) == "AWS::Serverless::Function")
        .map(|(name, _)| name)
        .collect();
    assert!(functions.len() >= 6, "{functions:?}");
    let alarm = &template["Resources"]["FunctionErrorsAlarm"]["Properties"];
    let watched: BTreeSet<String> = alarm["Metrics"]
        .as_sequence()
        .expect("a metric math alarm")
        .iter()
        .filter_map(|metric| {
            let dimension = &metric["MetricStat"]["Metric"]["Dimensions"][0]["Value"];
            match dimension {
                // `!Ref Name`
                Yaml::Tagged(tagged) if tagged.tag == "Ref" => Some(text(&tagged.value)),
                _ => None,
            }
        })
        .collect();
    assert_eq!(watched, functions);
    let expression = alarm["Metrics"][0]["Expression"]
        .as_str()
        .unwrap_or_default();
    let ids: Vec<String> = alarm["Metrics"]
        .as_sequence()
        .unwrap()
        .iter()
        .skip(1)
        .map(|m| text(&m["Id"]))
        .collect();
    for id in ids {
        assert!(
            expression.contains(&format!("FILL({id}, 0)")),
            "{expression}"
        );
    }
}
