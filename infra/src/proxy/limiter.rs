//! The proxy's per-partition-key write limit: DynamoDB holds each
//! partition to about 1000 write units a second, index keys included.

use serde_json::Value;

/// A token bucket per partition key, one second of burst.
#[derive(Default)]
pub(super) struct KeyLimiter {
    buckets: std::collections::HashMap<String, (f64, std::time::Instant)>,
}

impl KeyLimiter {
    /// Takes the units every item needs on every key it writes, all or none.
    pub(super) fn admit(&mut self, items: &[&Value], rate: f64) -> bool {
        let now = std::time::Instant::now();
        let mut needed: std::collections::HashMap<String, f64> = Default::default();
        for item in items {
            for (key, units) in keys_written(item) {
                *needed.entry(key).or_default() += units;
            }
        }
        for (key, units) in &needed {
            let (tokens, last) = self.buckets.entry(key.clone()).or_insert((rate, now));
            *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(rate);
            *last = now;
            if *tokens < *units {
                return false;
            }
        }
        for (key, units) in needed {
            if let Some((tokens, _)) = self.buckets.get_mut(&key) {
                *tokens -= units;
            }
        }
        true
    }
}

/// The partition keys an item (DynamoDB JSON) writes and the units each
/// pays: the table's key the item's size in started KB; each index key one
/// unit (the indexes hold keys only).
fn keys_written(item: &Value) -> Vec<(String, f64)> {
    let Some(attributes) = item.as_object() else {
        return Vec::new();
    };
    let size: usize = attributes
        .iter()
        .map(|(name, value)| name.len() + attribute_size(value))
        .sum();
    let mut keys = Vec::new();
    for (name, value) in attributes {
        let Some(text) = value.get("S").and_then(Value::as_str) else {
            continue;
        };
        if name == "accountId" {
            keys.push((format!("table:{text}"), size.div_ceil(1024).max(1) as f64));
        } else if name.starts_with("gsi") {
            // Index keys of tables that have secondary indexes (the
            // benchmarks' older layouts; the product's table has none).
            keys.push((format!("{name}:{text}"), 1.0));
        }
    }
    keys
}

/// DynamoDB's size of one attribute value given in its JSON protocol form.
fn attribute_size(value: &Value) -> usize {
    let Some((kind, inner)) = value.as_object().and_then(|o| o.iter().next()) else {
        return 0;
    };
    match (kind.as_str(), inner) {
        ("S", Value::String(s)) => s.len(),
        ("N", Value::String(n)) => n.len().div_ceil(2) + 1,
        ("B", Value::String(b64)) => b64.len() * 3 / 4,
        ("M", Value::Object(map)) => {
            3 + map
                .iter()
                .map(|(k, v)| k.len() + attribute_size(v) + 1)
                .sum::<usize>()
        }
        ("L", Value::Array(list)) => 3 + list.iter().map(|v| attribute_size(v) + 1).sum::<usize>(),
        _ => 1,
    }
}
