//! The embedded DynamoDB-compatible store (dynoxide), served over HTTP on a
//! loopback port so the real `aws-sdk-dynamodb` client talks to it.

use std::net::SocketAddr;

use dynoxide::Database;

pub struct EmbeddedStore {
    pub database: Database,
    pub endpoint: String,
    pub address: SocketAddr,
}

impl EmbeddedStore {
    /// `path: None` keeps everything in memory.
    pub async fn start(path: Option<&str>) -> Result<Self, String> {
        let database = match path {
            Some(path) => Database::new(path),
            None => Database::memory(),
        }
        .map_err(|err| format!("cannot open the embedded store: {err}"))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|err| format!("cannot bind the embedded store: {err}"))?;
        let address = listener.local_addr().map_err(|err| err.to_string())?;
        let served = database.clone();
        tokio::spawn(async move { dynoxide::server::serve_on(listener, served).await });
        Ok(Self {
            database,
            endpoint: format!("http://{address}"),
            address,
        })
    }
}
