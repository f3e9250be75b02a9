//! Every function's handler over one store, as the local gateway serves them.

use std::sync::Arc;

use audit_core::routes::Route;
use audit_core::Config;
use audit_dynamo::DynamoStore;
use audit_http::runtime::HttpHandler;
use aws_sdk_dynamodb::Client;
use cursor::CursorHandler;
use ingest::IngestHandler;
use lambda_http::{Body, Request, Response};
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

    /// Hands a request to the function the route table names for `route`.
    pub async fn handle(&self, route: Route, request: Request) -> Response<Body> {
        match route.function() {
            "ingest" => self.ingest.handle(request).await,
            "cursor" => self.cursor.handle(request).await,
            "list" => self.list.handle(request).await,
            "metadata" => self.metadata.handle(request).await,
            other => {
                tracing::error!(
                    function = other,
                    "the route table names an unknown function"
                );
                Response::builder()
                    .status(500)
                    .body(Body::Empty)
                    .unwrap_or_default()
            }
        }
    }
}
