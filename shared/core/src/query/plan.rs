//! Which index a query reads.

use super::*;

/// Which index a query reads, and with which key values.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// `None`: the tenant's own partition of the base table.
    pub index: Option<&'static PivotIndex>,
    /// The pivot values to read (one index query each); empty for the base table.
    pub values: Vec<String>,
}

/// Most selective first: trace ids and user ids name few events; event
/// types and services many.
const PIVOT_PREFERENCE: &[&str] = &["traceId", "userId", "eventType", "serviceName"];

impl Plan {
    /// Read the tenant's time range and evaluate every condition.
    pub fn whole_range() -> Plan {
        Plan {
            index: None,
            values: Vec::new(),
        }
    }

    pub fn for_query(query: &Query) -> Plan {
        for field in PIVOT_PREFERENCE {
            let candidates = query
                .conditions
                .iter()
                .filter(|c| c.field.segments.len() == 1 && c.field.name == *field);
            let mut best: Option<Vec<String>> = None;
            for condition in candidates {
                let values: Vec<String> = match (condition.operator, &condition.value) {
                    (Operator::Eq, Value::String(s)) => vec![s.clone()],
                    (Operator::In, Value::Array(list)) => list
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect(),
                    _ => continue,
                };
                if best.as_ref().is_none_or(|b| values.len() < b.len()) {
                    best = Some(values);
                }
            }
            if let Some(mut values) = best {
                values.sort();
                values.dedup();
                let index = PIVOT_INDEXES.iter().find(|i| i.field == *field);
                return Plan { index, values };
            }
        }
        Plan {
            index: None,
            values: Vec::new(),
        }
    }
}
