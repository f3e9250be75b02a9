//! Every function's handler over one store, as the local gateway serves them.

use std::sync::Arc;

use audit_shared::dynamo::DynamoStore;
use audit_shared::Config;
use aws_sdk_dynamodb::Client;
use cursor::CursorHandler;
use ingest::IngestHandler;
use list::ListHandler;
use metadata::MetadataHandler;

pub struct Functions {
    pub ingest: IngestHandler<DynamoStore>,
    pub cursor: CursorHandler<DynamoStore>,
    pub list: ListHandler<DynamoStore>,
    pub metadata: MetadataHandler<DynamoStore>,
}

impl Functions {
    pub fn new(client: Client, config: Config) -> Arc<Self> {
        let store = Arc::new(DynamoStore::new(client, &config.table_name));
        Arc::new(Self {
            ingest: IngestHandler::new(Arc::clone(&store), config.clone()),
            cursor: CursorHandler::new(Arc::clone(&store), &config),
            list: ListHandler::new(Arc::clone(&store), config.clone()),
            metadata: MetadataHandler::new(Arc::clone(&store), &config),
        })
    }
}
