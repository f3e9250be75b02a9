//! The embedded DynamoDB-compatible store (dynoxide), served over HTTP on a
//! loopback port so the real `aws-sdk-dynamodb` client talks to it.

use std::net::SocketAddr;

use dynoxide::Database;

pub struct EmbeddedStore {
    pub database: Database,
    /// The SQLite database: a path, or a shared-cache in-memory URI.
    pub location: String,
    pub endpoint: String,
    pub address: SocketAddr,
}

impl EmbeddedStore {
    /// `path: None` keeps everything in memory.
    pub async fn start(path: Option<&str>) -> Result<Self, String> {
        // In memory, a named shared-cache database, so a second connection
        // can reach it to add the indexes below.
        let location = match path {
            Some(path) => path.to_string(),
            None => format!(
                "file:audit-embedded-{}?mode=memory&cache=shared",
                ulid::Ulid::new()
            ),
        };
        let database = Database::new(&location)
            .map_err(|err| format!("cannot open the embedded store: {err}"))?;
        index_stream_records(&location)
            .map_err(|err| format!("cannot index the embedded store's stream records: {err}"))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|err| format!("cannot bind the embedded store: {err}"))?;
        let address = listener.local_addr().map_err(|err| err.to_string())?;
        let served = database.clone();
        tokio::spawn(async move { dynoxide::server::serve_on(listener, served).await });
        Ok(Self {
            database,
            location,
            endpoint: format!("http://{address}"),
            address,
        })
    }
}

/// dynoxide keeps every stream record in one table with no index, and finds
/// the next sequence number, a shard's range and a page of records by
/// scanning all of it: every write and every relay poll costs time in
/// proportion to all writes so far, and a local trail of 100k events crawls
/// (about 100 keyed events a second after 10k in a debug build). These
/// indexes match those queries' expressions exactly, so SQLite answers them
/// from the index; they change no result.
fn index_stream_records(location: &str) -> rusqlite::Result<()> {
    let connection = rusqlite::Connection::open(location)?;
    connection.execute_batch(
        "CREATE INDEX IF NOT EXISTS audit_stream_records_by_table
           ON _stream_records (table_name, CAST(sequence_number AS INTEGER));
         CREATE INDEX IF NOT EXISTS audit_stream_records_by_shard
           ON _stream_records (table_name, shard_id, CAST(sequence_number AS INTEGER));",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dynoxide's own stream-record queries, as written in its storage
    /// layer; an upgrade that rewrites them fails here, not as a slow store.
    const DYNOXIDE_QUERIES: [(&str, &str); 3] = [
        (
            "SELECT COALESCE(MAX(CAST(sequence_number AS INTEGER)), 0) + 1 FROM _stream_records WHERE table_name = 't'",
            "audit_stream_records_by_table",
        ),
        (
            "SELECT event_name FROM _stream_records WHERE table_name = 't' AND shard_id = 's' AND CAST(sequence_number AS INTEGER) > 5 ORDER BY CAST(sequence_number AS INTEGER) ASC LIMIT 10",
            "audit_stream_records_by_shard",
        ),
        (
            "SELECT MIN(CAST(sequence_number AS INTEGER)), MAX(CAST(sequence_number AS INTEGER)) FROM _stream_records WHERE table_name = 't' AND shard_id = 's'",
            "audit_stream_records_by_shard",
        ),
    ];

    #[tokio::test]
    async fn stream_record_lookups_use_an_index_not_a_scan() {
        let store = EmbeddedStore::start(None).await.expect("the store starts");
        let connection = rusqlite::Connection::open(&store.location).expect("a second connection");
        for (query, index) in DYNOXIDE_QUERIES {
            let mut statement = connection
                .prepare(&format!("EXPLAIN QUERY PLAN {query}"))
                .expect("the query plans");
            let plan: Vec<String> = statement
                .query_map([], |row| row.get::<_, String>(3))
                .expect("the plan is read")
                .collect::<Result<_, _>>()
                .expect("every step is text");
            assert!(
                plan.iter().any(|step| step.contains(index)),
                "{query}: {plan:?}"
            );
            assert!(
                !plan
                    .iter()
                    .any(|step| step.starts_with("SCAN _stream_records")),
                "{query}: {plan:?}"
            );
        }
    }
}
