//! The pivot fields: which event fields a query can read postings for, and
//! the postings themselves. A leaf module: the event model, the planner,
//! the sealer and the store port read it.
//!
//! A posting lists, in cursor order, the cursors of one run of settled
//! events that share one pivot value. The sealer writes them off the write
//! path (docs/KEY-DESIGN.md, "Pivot postings"): an event pays for no index
//! entry when it is written.

use std::collections::BTreeMap;

use ulid::Ulid;

/// A field queries can pivot on: tenant + value, ordered by cursor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PivotIndex {
    /// What logs and benchmarks call it.
    pub name: &'static str,
    /// The event field it pivots on.
    pub field: &'static str,
    /// The field's one-letter tag in a posting's partition key.
    pub tag: char,
}

pub const PIVOT_INDEXES: &[PivotIndex] = &[
    PivotIndex {
        name: "byUserId",
        field: "userId",
        tag: 'u',
    },
    PivotIndex {
        name: "byEventType",
        field: "eventType",
        tag: 'e',
    },
    PivotIndex {
        name: "byServiceName",
        field: "serviceName",
        tag: 's',
    },
    PivotIndex {
        name: "byTraceId",
        field: "traceId",
        tag: 't',
    },
];

/// The partition key of one pivot value's postings: `<tenant>#<tag>#<value>`.
/// A tenant id has no `#`, so the value is everything after the second one;
/// and every other item type's partition key has exactly one `#`.
pub fn pivot_key(tenant: &str, index: &PivotIndex, value: &str) -> String {
    format!("{tenant}#{}#{value}", index.tag)
}

/// Most cursors one posting item lists: 16 bytes each, so an item stays
/// near 16 KB, far under DynamoDB's 400 KB.
pub const POSTING_CURSORS_MAX: usize = 1000;

/// One posting item: the cursors (ascending) of one pivot value in one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Posting {
    pub index: &'static PivotIndex,
    pub value: String,
    pub cursors: Vec<Ulid>,
    /// The latest `expiresAt` of the events listed (epoch ms): the posting
    /// lives as long as the last of them.
    pub expires_at_ms: i64,
}

/// Gathers one run's settled events, in cursor order, into postings.
#[derive(Debug, Default)]
pub struct PostingsBuilder {
    lists: BTreeMap<(usize, String), (Vec<Ulid>, i64)>,
}

impl PostingsBuilder {
    /// Adds one event, given its cursor, expiry and pivot values (by the
    /// position of its field in [`PIVOT_INDEXES`]).
    pub fn add<'a>(
        &mut self,
        cursor: Ulid,
        expires_at_ms: i64,
        values: impl IntoIterator<Item = (usize, &'a str)>,
    ) {
        for (index, value) in values {
            let list = self
                .lists
                .entry((index, value.to_string()))
                .or_insert_with(|| (Vec::new(), i64::MIN));
            list.0.push(cursor);
            list.1 = list.1.max(expires_at_ms);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.lists.is_empty()
    }

    /// The run's postings, each value's cursors cut into items of at most
    /// [`POSTING_CURSORS_MAX`] from the run's first event. The cut depends
    /// only on the run's start, so a run done again after a crash writes
    /// the same items again (the last one possibly longer).
    pub fn finish(self) -> Vec<Posting> {
        let mut postings = Vec::new();
        for ((index, value), (cursors, expires_at_ms)) in self.lists {
            let Some(index) = PIVOT_INDEXES.get(index) else {
                continue;
            };
            for part in cursors.chunks(POSTING_CURSORS_MAX) {
                postings.push(Posting {
                    index,
                    value: value.clone(),
                    cursors: part.to_vec(),
                    expires_at_ms,
                });
            }
        }
        postings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_posting_key_splits_back_into_tenant_tag_and_value() {
        let key = pivot_key("acme", &PIVOT_INDEXES[1], "a#b");
        assert_eq!(key, "acme#e#a#b");
        let mut parts = key.splitn(3, '#');
        assert_eq!(parts.next(), Some("acme"));
        assert_eq!(parts.next(), Some("e"));
        assert_eq!(parts.next(), Some("a#b"));
    }

    #[test]
    fn postings_are_cut_from_the_run_start_and_keep_the_latest_expiry() {
        let mut builder = PostingsBuilder::default();
        let cursors: Vec<Ulid> = (0..(POSTING_CURSORS_MAX as u128 * 2 + 5))
            .map(|n| Ulid(n + 1))
            .collect();
        for (n, cursor) in cursors.iter().enumerate() {
            let user = if n % 2 == 0 { "even" } else { "odd" };
            builder.add(*cursor, n as i64, [(0, user), (1, "kind")]);
        }
        let postings = builder.finish();
        let kind: Vec<&Posting> = postings.iter().filter(|p| p.index.tag == 'e').collect();
        assert_eq!(kind.len(), 3);
        assert_eq!(kind[0].cursors, cursors[..POSTING_CURSORS_MAX]);
        assert_eq!(kind[2].cursors, cursors[POSTING_CURSORS_MAX * 2..]);
        assert_eq!(kind[2].expires_at_ms, cursors.len() as i64 - 1);
        let even: usize = postings
            .iter()
            .filter(|p| p.value == "even")
            .map(|p| p.cursors.len())
            .sum();
        assert_eq!(even, cursors.len().div_ceil(2));
    }
}
