//! A running API for tests and benchmarks: a fresh table on the embedded
//! store (or on `AUDIT_TEST_DYNAMODB_ENDPOINT`, e.g. DynamoDB Local), the
//! real SDK client, the local gateway, optionally a fault proxy in between.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use audit_core::Config;
use audit_dynamo::table;
use audit_dynamo::Item;
use aws_sdk_dynamodb::Client;

use crate::app::Functions;
use crate::devauth::DevAuth;
use crate::embedded::EmbeddedStore;
use crate::gateway::Gateway;
use crate::proxy::FaultProxy;

pub const ENDPOINT_VARIABLE: &str = "AUDIT_TEST_DYNAMODB_ENDPOINT";

pub struct TestEnv {
    pub config: Config,
    /// The client the functions use (through the proxy, when there is one).
    pub client: Client,
    /// A client straight to the store, for counting what really landed.
    pub direct: Client,
    pub gateway: Gateway,
    pub auth: DevAuth,
    pub proxy: Option<FaultProxy>,
    pub embedded: Option<EmbeddedStore>,
    /// Where a relay this environment starts keeps what it gives up on (a
    /// file of its own in the temporary directory).
    pub dead_letters: crate::relay::DeadLetters,
}

#[derive(Default)]
pub struct EnvOptions {
    pub with_proxy: bool,
    pub write_deadline: Option<Duration>,
    pub configure: Option<fn(&mut Config)>,
    /// A table without the deployment's stream. DynamoDB Local looks up
    /// every stream it has ever had on each write, so a long run of tables
    /// with streams slowed its writes until tests timed out; only a test
    /// that starts the relay needs one.
    pub without_stream: bool,
    /// A store to use instead of `AUDIT_TEST_DYNAMODB_ENDPOINT` or the
    /// embedded one (the benchmark's DynamoDB Local rows).
    pub endpoint: Option<String>,
}

impl TestEnv {
    pub async fn start() -> Self {
        Self::start_with(EnvOptions::default()).await
    }

    pub async fn start_with(options: EnvOptions) -> Self {
        let (endpoint, embedded) = match options.endpoint.clone().or_else(|| {
            std::env::var(ENDPOINT_VARIABLE)
                .ok()
                .filter(|e| !e.is_empty())
        }) {
            Some(endpoint) => (endpoint, None),
            None => {
                let store = EmbeddedStore::start(None)
                    .await
                    .expect("embedded store starts");
                (store.endpoint.clone(), Some(store))
            }
        };
        let table_name = format!(
            "audit-test-{}",
            ulid::Ulid::new().to_string().to_lowercase()
        );
        let mut config = Config::for_table(&table_name);
        if let Some(deadline) = options.write_deadline {
            config.write_deadline = deadline;
        }
        if let Some(configure) = options.configure {
            configure(&mut config);
        }
        let mut direct_config = config.clone();
        direct_config.dynamodb_endpoint = Some(endpoint.clone());
        let direct = audit_dynamo::client(&direct_config).await;
        let mut definition = table::definition(&table_name);
        if options.without_stream {
            definition.stream_view_type = None;
        }
        table::ensure_table(&direct, &definition)
            .await
            .expect("table is created");
        let proxy = if options.with_proxy {
            Some(FaultProxy::start(&endpoint).await.expect("proxy starts"))
        } else {
            None
        };
        config.dynamodb_endpoint = Some(
            proxy
                .as_ref()
                .map(|p| p.endpoint.clone())
                .unwrap_or(endpoint),
        );
        let client = audit_dynamo::client(&config).await;
        let auth = DevAuth::with_secret("test-secret");
        let gateway = Gateway {
            functions: Functions::new(client.clone(), config.clone()),
            auth: Arc::new(auth.clone()),
            base_path: config.api_base_path.clone(),
        };
        TestEnv {
            config,
            client,
            direct,
            gateway,
            auth,
            proxy,
            embedded,
            dead_letters: crate::relay::DeadLetters::to_file(
                std::env::temp_dir().join(format!("{table_name}-dead-letters.ndjson")),
            ),
        }
    }

    /// The records the relay gave up on, oldest first.
    pub fn dead_letters_kept(&self) -> Vec<serde_json::Value> {
        self.dead_letters
            .path()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Serves the gateway on a loopback port; returns its base URL.
    pub async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let router = self.gateway.clone().router();
        tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await;
        });
        format!("http://{address}")
    }

    pub fn token(&self, tenant: &str, scopes: &str) -> String {
        self.auth.mint(tenant, scopes, Duration::from_secs(600))
    }

    /// Starts the stream relay feeding the `stream` handler, delivering to
    /// `subscribers`, from the oldest record the stream keeps.
    pub async fn start_relay(
        &self,
        subscribers: Vec<crate::relay::Subscriber>,
    ) -> tokio::task::JoinHandle<()> {
        self.start_relay_from(subscribers, true, None).await
    }

    /// As `audit-local --memory serve` does: only records written after it
    /// returns.
    pub async fn start_relay_at_latest(
        &self,
        subscribers: Vec<crate::relay::Subscriber>,
    ) -> tokio::task::JoinHandle<()> {
        self.start_relay_from(subscribers, false, None).await
    }

    /// As `audit-local serve` does over a data file: keeping its position in
    /// `position_file`, and going on from it when the file holds one (else
    /// only records written after it returns).
    pub async fn start_relay_keeping_position(
        &self,
        subscribers: Vec<crate::relay::Subscriber>,
        position_file: &std::path::Path,
    ) -> tokio::task::JoinHandle<()> {
        self.start_relay_from(subscribers, false, Some(position_file.to_path_buf()))
            .await
    }

    /// Starts the relay reading the stream through `endpoint` (the fault
    /// proxy, which names every call it passes on).
    pub async fn start_relay_through(
        &self,
        subscribers: Vec<crate::relay::Subscriber>,
        endpoint: &str,
    ) -> tokio::task::JoinHandle<()> {
        self.start_relay_with(subscribers, true, None, Some(endpoint))
            .await
    }

    async fn start_relay_from(
        &self,
        subscribers: Vec<crate::relay::Subscriber>,
        from_start: bool,
        position_file: Option<std::path::PathBuf>,
    ) -> tokio::task::JoinHandle<()> {
        self.start_relay_with(subscribers, from_start, position_file, None)
            .await
    }

    async fn start_relay_with(
        &self,
        subscribers: Vec<crate::relay::Subscriber>,
        from_start: bool,
        position_file: Option<std::path::PathBuf>,
        streams_endpoint: Option<&str>,
    ) -> tokio::task::JoinHandle<()> {
        let endpoint = streams_endpoint
            .map(str::to_string)
            .or_else(|| self.embedded.as_ref().map(|e| e.endpoint.clone()))
            .or_else(|| std::env::var(ENDPOINT_VARIABLE).ok())
            .unwrap_or_default();
        let streams = crate::relay::streams_client(&endpoint).await;
        let handler = Arc::new(stream::StreamHandler::new(
            crate::relay::LocalPublisher::new(subscribers)
                .with_dead_letters(self.dead_letters.clone()),
            "audit-trail.local",
        ));
        crate::relay::Relay {
            streams,
            dynamo: self.direct.clone(),
            table: self.config.table_name.clone(),
            handler,
            poll: Duration::from_millis(50),
            max_pause: Duration::from_millis(400),
            from_start,
            position_file,
            dead_letters: self.dead_letters.clone(),
        }
        .start()
        .await
        .expect("the relay starts")
    }

    /// Every item in the table, read straight from the store.
    pub async fn all_items(&self) -> Vec<Item> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .direct
                .scan()
                .table_name(&self.config.table_name)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .expect("scan");
            items.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        items
    }

    /// Event items per tenant (other item types left out).
    pub async fn events_by_tenant(&self) -> HashMap<String, Vec<String>> {
        let mut by_tenant: HashMap<String, Vec<String>> = HashMap::new();
        for item in self.all_items().await {
            let text = |name: &str| {
                item.get(name)
                    .and_then(|v| v.as_s().ok())
                    .cloned()
                    .unwrap_or_default()
            };
            let tenant = text(table::PARTITION_KEY);
            if !tenant.contains('#') {
                by_tenant
                    .entry(tenant)
                    .or_default()
                    .push(text(table::SORT_KEY));
            }
        }
        for cursors in by_tenant.values_mut() {
            cursors.sort();
        }
        by_tenant
    }
}

/// An HTTP subscriber for the relay: records every delivery; can refuse the
/// first delivery of events whose `eventType` it is told to.
#[derive(Clone)]
pub struct TestSubscriber {
    pub url: String,
    /// Accepted deliveries (the EventBridge envelopes).
    pub accepted: Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    /// Every delivery attempt's cursor.
    pub attempts: Arc<std::sync::Mutex<Vec<String>>>,
    /// Accepted deliveries as the bytes received.
    pub accepted_raw: Arc<std::sync::Mutex<Vec<String>>>,
    /// While set, every delivery is refused (503): a subscriber outage.
    pub down: Arc<std::sync::atomic::AtomicBool>,
    /// The first delivery of an event whose `eventType` is a key here is
    /// answered with that status.
    pub first_answer: Arc<std::sync::Mutex<HashMap<String, u16>>>,
}

impl TestSubscriber {
    pub async fn start(refuse_once: Option<&'static str>) -> Self {
        use axum::extract::State;
        use axum::http::StatusCode;
        let subscriber = TestSubscriber {
            url: String::new(),
            accepted: Arc::default(),
            attempts: Arc::default(),
            accepted_raw: Arc::default(),
            down: Arc::default(),
            first_answer: Arc::default(),
        };
        let state = (subscriber.clone(), refuse_once);
        async fn receive(
            State((subscriber, refuse_once)): State<(TestSubscriber, Option<&'static str>)>,
            raw: String,
        ) -> StatusCode {
            let Ok(body) = serde_json::from_str::<serde_json::Value>(&raw) else {
                return StatusCode::BAD_REQUEST;
            };
            let cursor = body["detail"]["cursor"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let first_attempt = {
                let mut attempts = subscriber.attempts.lock().expect("lock");
                let first = !attempts.contains(&cursor);
                attempts.push(cursor);
                first
            };
            if subscriber.down.load(std::sync::atomic::Ordering::SeqCst) {
                return StatusCode::SERVICE_UNAVAILABLE;
            }
            if first_attempt && refuse_once.is_some_and(|kind| body["detail"]["eventType"] == kind)
            {
                return StatusCode::SERVICE_UNAVAILABLE;
            }
            let told = body["detail"]["eventType"].as_str().and_then(|kind| {
                subscriber
                    .first_answer
                    .lock()
                    .expect("lock")
                    .get(kind)
                    .copied()
            });
            if let Some(status) = told.filter(|_| first_attempt) {
                return StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            }
            subscriber.accepted.lock().expect("lock").push(body);
            subscriber.accepted_raw.lock().expect("lock").push(raw);
            StatusCode::OK
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/events", listener.local_addr().expect("address"));
        let app = axum::Router::new()
            .route("/events", axum::routing::post(receive))
            .with_state(state);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestSubscriber { url, ..subscriber }
    }

    pub fn accepted_cursors(&self) -> Vec<String> {
        self.accepted
            .lock()
            .expect("lock")
            .iter()
            .map(|b| {
                b["detail"]["cursor"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    }
}

/// A stand-in for CloudFormation's pre-signed response URL: the URL, and
/// each body PUT to it, in order.
pub async fn custom_resource_answers() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (sender, answers) = tokio::sync::mpsc::unbounded_channel::<String>();
    let app = axum::Router::new().route(
        "/cloudformation-response",
        axum::routing::put(move |body: String| {
            let sender = sender.clone();
            async move {
                let _ = sender.send(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a local port");
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (
        format!("http://127.0.0.1:{port}/cloudformation-response"),
        answers,
    )
}
