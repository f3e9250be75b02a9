//! The pivot indexes: which event fields a query can read an index for.
//! A leaf module: the event model, the planner and the store port read it.

/// A secondary index the store keeps: tenant + one pivot field, ordered by
/// cursor. Queries plan on these; the adapter creates them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PivotIndex {
    pub name: &'static str,
    /// The event field it pivots on.
    pub field: &'static str,
    /// The attribute holding `<tenant>#<value>`.
    pub key_attribute: &'static str,
}

pub const PIVOT_INDEXES: &[PivotIndex] = &[
    PivotIndex {
        name: "byUserId",
        field: "userId",
        key_attribute: "gsiUserId",
    },
    PivotIndex {
        name: "byEventType",
        field: "eventType",
        key_attribute: "gsiEventType",
    },
    PivotIndex {
        name: "byServiceName",
        field: "serviceName",
        key_attribute: "gsiServiceName",
    },
    PivotIndex {
        name: "byTraceId",
        field: "traceId",
        key_attribute: "gsiTraceId",
    },
];

pub fn pivot_key(tenant: &str, value: &str) -> String {
    format!("{tenant}#{value}")
}
