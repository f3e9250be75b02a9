//! The route table, written once. The functions dispatch on API Gateway's
//! `routeKey` through it, the local gateway matches paths with it, and tests
//! check `template.yaml` and `openapi.yaml` against it.

use crate::auth::{SCOPE_ADMIN, SCOPE_READ, SCOPE_WRITE};

/// Every route the API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    Ingest,
    Lookup,
    Tail,
    Query,
    Metadata,
    Properties,
    GetSettings,
    PutSettings,
    Checkpoint,
    Checkpoints,
    Proof,
    Consistency,
    Entries,
    VerifierKey,
}

/// What the deployment knows about a route.
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    pub route: Route,
    /// API Gateway's route key: `METHOD /path/{param}`.
    pub key: &'static str,
    /// The scope the JWT authorizer demands.
    pub scope: &'static str,
    /// The self-audit record a call writes (reads and changes are
    /// recorded; writes of events are not).
    pub self_audit: SelfAudit,
    /// The Lambda binary that serves it.
    pub function: &'static str,
    /// The query parameters it takes; any other, or one given twice, is a
    /// 400 before the route runs.
    pub query: &'static [&'static str],
}

/// What a route records about its own call, and of which `eventType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelfAudit {
    /// Nothing (a write of events is its own record).
    None,
    /// A read's record: who read what, the same properties for every read
    /// (metadata lists them from the record's schema).
    Read(&'static str),
    /// A change's record: it holds the change.
    Change(&'static str),
}

impl SelfAudit {
    pub fn event_type(self) -> Option<&'static str> {
        match self {
            SelfAudit::None => None,
            SelfAudit::Read(event_type) | SelfAudit::Change(event_type) => Some(event_type),
        }
    }
}

pub const ROUTES: &[RouteSpec] = &[
    RouteSpec {
        route: Route::Ingest,
        key: "POST /audit/events",
        scope: SCOPE_WRITE,
        self_audit: SelfAudit::None,
        function: "ingest",
        query: &[],
    },
    RouteSpec {
        route: Route::Lookup,
        key: "GET /audit/events/{cursor}",
        scope: SCOPE_READ,
        self_audit: SelfAudit::Read("audit.lookup"),
        function: "cursor",
        query: &[],
    },
    RouteSpec {
        route: Route::Tail,
        key: "GET /audit",
        scope: SCOPE_READ,
        self_audit: SelfAudit::Read("audit.list"),
        function: "list",
        query: &["limit", "from", "after", "wait", "selfAudit"],
    },
    RouteSpec {
        route: Route::Query,
        key: "POST /audit/query",
        scope: SCOPE_READ,
        self_audit: SelfAudit::Read("audit.query"),
        function: "list",
        query: &["limit", "cursor"],
    },
    RouteSpec {
        route: Route::Metadata,
        key: "GET /audit/metadata",
        scope: SCOPE_READ,
        self_audit: SelfAudit::Read("audit.metadata"),
        function: "metadata",
        query: &[],
    },
    RouteSpec {
        route: Route::Properties,
        key: "GET /audit/metadata/properties",
        scope: SCOPE_READ,
        self_audit: SelfAudit::Read("audit.metadata.properties"),
        function: "metadata",
        query: &["target", "serviceName", "eventType"],
    },
    RouteSpec {
        route: Route::GetSettings,
        key: "GET /audit/settings",
        scope: SCOPE_ADMIN,
        self_audit: SelfAudit::Read("audit.settings.read"),
        function: "metadata",
        query: &[],
    },
    RouteSpec {
        route: Route::PutSettings,
        key: "PUT /audit/settings",
        scope: SCOPE_ADMIN,
        self_audit: SelfAudit::Change("audit.settings.updated"),
        function: "metadata",
        query: &[],
    },
    RouteSpec {
        route: Route::Checkpoint,
        key: "GET /audit/checkpoint",
        scope: SCOPE_READ,
        self_audit: SelfAudit::Read("audit.checkpoint"),
        function: "cursor",
        query: &[],
    },
    RouteSpec {
        route: Route::Checkpoints,
        key: "GET /audit/checkpoints",
        scope: SCOPE_READ,
        self_audit: SelfAudit::Read("audit.checkpoints"),
        function: "cursor",
        query: &["fromSize", "after", "limit"],
    },
    RouteSpec {
        route: Route::Proof,
        key: "GET /audit/events/{cursor}/proof",
        scope: SCOPE_READ,
        self_audit: SelfAudit::Read("audit.proof"),
        function: "cursor",
        query: &["treeSize"],
    },
    RouteSpec {
        route: Route::Consistency,
        key: "GET /audit/proofs/consistency",
        scope: SCOPE_READ,
        self_audit: SelfAudit::Read("audit.consistency"),
        function: "cursor",
        query: &["from", "to"],
    },
    RouteSpec {
        route: Route::Entries,
        key: "GET /audit/entries",
        scope: SCOPE_READ,
        self_audit: SelfAudit::Read("audit.entries"),
        function: "cursor",
        query: &["start", "limit"],
    },
    RouteSpec {
        route: Route::VerifierKey,
        key: "GET /audit/verifier-key",
        scope: SCOPE_READ,
        self_audit: SelfAudit::Read("audit.verifier-key"),
        function: "cursor",
        query: &[],
    },
];

impl Route {
    pub fn all() -> impl Iterator<Item = Route> {
        ROUTES.iter().map(|spec| spec.route)
    }

    pub fn spec(self) -> &'static RouteSpec {
        // Every variant has its row (a unit test checks it); the first row
        // is never reached.
        ROUTES
            .iter()
            .find(|spec| spec.route == self)
            .unwrap_or(&ROUTES[0])
    }

    pub fn key(self) -> &'static str {
        self.spec().key
    }

    pub fn method(self) -> &'static str {
        self.key().split_once(' ').map_or("", |(method, _)| method)
    }

    /// The path template, `{name}` for a path parameter.
    pub fn path(self) -> &'static str {
        self.key().split_once(' ').map_or("", |(_, path)| path)
    }

    pub fn scope(self) -> &'static str {
        self.spec().scope
    }

    pub fn self_audit(self) -> Option<&'static str> {
        self.spec().self_audit.event_type()
    }

    pub fn function(self) -> &'static str {
        self.spec().function
    }

    pub fn from_key(key: &str) -> Option<Route> {
        ROUTES
            .iter()
            .find(|spec| spec.key == key)
            .map(|spec| spec.route)
    }

    /// Matches a method and a path (as sent, still percent-encoded) the way
    /// API Gateway's route table does: exact segments, `{name}` matching one
    /// non-empty segment, a trailing `/` ignored. Returns the route and its
    /// raw path parameters.
    pub fn match_path(method: &str, path: &str) -> Option<(Route, Vec<(&'static str, String)>)> {
        Route::all()
            .filter(|route| route.method() == method)
            .find_map(|route| route.capture(path).map(|params| (route, params)))
    }

    /// The methods served on `path` (empty: no route has that path).
    pub fn methods_for(path: &str) -> Vec<&'static str> {
        let mut methods: Vec<&'static str> = Route::all()
            .filter(|route| route.capture(path).is_some())
            .map(Route::method)
            .collect();
        methods.dedup();
        methods
    }

    fn capture(self, path: &str) -> Option<Vec<(&'static str, String)>> {
        let template: Vec<&'static str> = self.path().split('/').skip(1).collect();
        let given: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        if template.len() != given.len() {
            return None;
        }
        let mut params = Vec::new();
        for (pattern, segment) in template.into_iter().zip(given) {
            match pattern.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) if !segment.is_empty() => params.push((name, segment.to_string())),
                Some(_) => return None,
                None if pattern == segment => {}
                None => return None,
            }
        }
        Some(params)
    }
}

/// Every `eventType` the API records about itself, from the table.
pub fn self_audit_event_types() -> impl Iterator<Item = &'static str> {
    ROUTES
        .iter()
        .filter_map(|spec| spec.self_audit.event_type())
}

/// The `eventType`s of the records reads write, whatever their scope (a
/// change's record, such as a settings update, holds the change instead).
pub fn read_record_event_types() -> impl Iterator<Item = &'static str> {
    ROUTES.iter().filter_map(|spec| match spec.self_audit {
        SelfAudit::Read(event_type) => Some(event_type),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_one_row_and_one_key() {
        let variants = [
            Route::Ingest,
            Route::Lookup,
            Route::Tail,
            Route::Query,
            Route::Metadata,
            Route::Properties,
            Route::GetSettings,
            Route::PutSettings,
            Route::Checkpoint,
            Route::Checkpoints,
            Route::Proof,
            Route::Consistency,
            Route::Entries,
            Route::VerifierKey,
        ];
        assert_eq!(ROUTES.len(), variants.len());
        for route in variants {
            assert_eq!(ROUTES.iter().filter(|s| s.route == route).count(), 1);
            assert_eq!(route.spec().route, route);
            assert_eq!(Route::from_key(route.key()), Some(route));
        }
    }

    #[test]
    fn paths_match_like_api_gateway() {
        assert_eq!(
            Route::match_path("GET", "/audit/events/01ABC"),
            Some((Route::Lookup, vec![("cursor", "01ABC".to_string())]))
        );
        assert_eq!(
            Route::match_path("GET", "/audit/"),
            Some((Route::Tail, vec![]))
        );
        assert_eq!(Route::match_path("GET", "/audit/events/"), None);
        assert_eq!(
            Route::match_path("GET", "/audit/events/01ABC/proof"),
            Some((Route::Proof, vec![("cursor", "01ABC".to_string())]))
        );
        assert_eq!(Route::match_path("DELETE", "/audit"), None);
        assert_eq!(Route::match_path("GET", "/audit/events/a/b"), None);
        assert_eq!(Route::methods_for("/audit/settings"), vec!["GET", "PUT"]);
        assert!(Route::methods_for("/nowhere").is_empty());
    }
}
