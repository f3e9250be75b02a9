//! Pivot postings (docs/KEY-DESIGN.md, "Pivot postings"): the items the
//! sealer writes for each pivot value of each run of settled events, the
//! tenant's posted-through mark, and the reads of one pivot value: its
//! postings up to the mark, then a filtered scan of the tail above it.

use std::time::{Duration, Instant};

use audit_core::error::StoreError;
use audit_core::pivot::{pivot_key, PivotIndex, Posting};
use audit_core::store::{PostedMark, RangePage, RangeRead};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use ulid::Ulid;

use crate::items::Item;
use crate::retry::classify;
use crate::store::DynamoStore;
use crate::table::{PARTITION_KEY, POSTED_PREFIX, POSTED_SORT_KEY, SORT_KEY, TTL_ATTRIBUTE};

/// A posting's cursors (16 bytes each, ascending); the mark's cursor.
const CURSORS: &str = "cursors";
const THROUGH: &str = "through";
/// The tenant's log size when the mark moved (see `PostedMark::log_size`).
const LOG_SIZE: &str = "logSize";
/// Posting items the first `Query` of a page reads; each next one reads
/// twice as many (up to 1000): a rare value's small postings take few calls.
const POSTINGS_FIRST_QUERY: i32 = 8;
/// How long a process trusts a posted-through mark it read. The mark only
/// grows, so an older one is still true: it only leaves more tail to scan.
const MARK_FRESHNESS: Duration = Duration::from_secs(1);
/// Items a tail scan evaluates at least per call, however few it must find.
const TAIL_SCAN_MIN: usize = 1000;

fn posting_item(tenant: &str, posting: &Posting) -> Option<Item> {
    let last = posting.cursors.last()?;
    let packed: Vec<u8> = posting.cursors.iter().flat_map(|c| c.to_bytes()).collect();
    let mut item = Item::from([
        (
            PARTITION_KEY.to_string(),
            AttributeValue::S(pivot_key(tenant, posting.index, &posting.value)),
        ),
        // Keyed by its last cursor: a query reading down from `hi` starts
        // at the first posting whose last cursor is at or above it.
        (SORT_KEY.to_string(), AttributeValue::S(last.to_string())),
        (CURSORS.to_string(), AttributeValue::B(Blob::new(packed))),
    ]);
    if posting.expires_at_ms != i64::MAX {
        item.insert(
            TTL_ATTRIBUTE.to_string(),
            AttributeValue::N(posting.expires_at_ms.div_euclid(1000).to_string()),
        );
    }
    Some(item)
}

/// The cursors of a posting item, ascending.
fn posting_cursors(item: &Item) -> Result<Vec<Ulid>, StoreError> {
    let Some(AttributeValue::B(packed)) = item.get(CURSORS) else {
        return Err(StoreError::Corrupt("a posting without cursors".into()));
    };
    let bytes = packed.as_ref();
    if bytes.len() % 16 != 0 {
        return Err(StoreError::Corrupt("a posting's cursors are cut".into()));
    }
    Ok(bytes
        .chunks_exact(16)
        .filter_map(|c| <[u8; 16]>::try_from(c).ok())
        .map(Ulid::from_bytes)
        .collect())
}

fn parse_cursor(cursor: &str) -> Result<Ulid, StoreError> {
    Ulid::from_string(cursor).map_err(|_| StoreError::Corrupt(format!("cursor {cursor}")))
}

/// Cursors gathered from postings in the read's order, each once (a run
/// written again after a crash leaves two postings that overlap).
struct Gathered {
    cursors: Vec<Ulid>,
    newest_first: bool,
    limit: usize,
}

impl Gathered {
    /// Takes a posting's cursors within `lo..=hi`; false once the page is full.
    fn take(&mut self, listed: &[Ulid], lo: Ulid, hi: Ulid) -> bool {
        let in_order: Box<dyn Iterator<Item = &Ulid>> = if self.newest_first {
            Box::new(listed.iter().rev())
        } else {
            Box::new(listed.iter())
        };
        for cursor in in_order.filter(|c| **c >= lo && **c <= hi) {
            // Past the last one taken, in the read's direction: not taken yet.
            let beyond = self.cursors.last().is_none_or(|last| {
                if self.newest_first {
                    cursor < last
                } else {
                    cursor > last
                }
            });
            if beyond {
                if self.cursors.len() == self.limit {
                    return false;
                }
                self.cursors.push(*cursor);
            }
        }
        true
    }
}

impl DynamoStore {
    /// Writes the postings, then moves the mark (never backwards).
    pub(crate) async fn write_postings(
        &self,
        tenant: &str,
        postings: &[Posting],
        mark: &PostedMark,
    ) -> Result<(), StoreError> {
        let items: Vec<Item> = postings
            .iter()
            .filter_map(|p| posting_item(tenant, p))
            .collect();
        let units = self.write_items(items).await?;
        self.posting_units.add(units);
        let through = &mark.through;
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(
                PARTITION_KEY,
                AttributeValue::S(format!("{POSTED_PREFIX}{tenant}")),
            )
            .item(SORT_KEY, AttributeValue::S(POSTED_SORT_KEY.into()))
            .item(THROUGH, AttributeValue::S(through.to_string()));
        if let Some(size) = mark.log_size {
            put = put.item(LOG_SIZE, AttributeValue::N(size.to_string()));
        }
        let marked = put
            .condition_expression("attribute_not_exists(#through) OR #through < :through")
            .expression_attribute_names("#through", THROUGH)
            .expression_attribute_values(":through", AttributeValue::S(through.to_string()))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(classify);
        match marked {
            Ok(output) => {
                if let (Ok(mut marks), Ok(through)) =
                    (self.posted_marks.lock(), parse_cursor(through))
                {
                    marks.insert(tenant.to_string(), (Some(through), Instant::now()));
                }
                self.posting_units
                    .add_consumed(output.consumed_capacity.as_slice());
                Ok(())
            }
            // A later run already marked further.
            Err(StoreError::ConditionFailed) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// The tenant's posted-through mark, read now.
    pub(crate) async fn read_posted_mark(
        &self,
        tenant: &str,
    ) -> Result<Option<PostedMark>, StoreError> {
        let item = self
            .get_item(&format!("{POSTED_PREFIX}{tenant}"), POSTED_SORT_KEY, true)
            .await?;
        let through = item
            .as_ref()
            .and_then(|i| i.get(THROUGH))
            .and_then(|v| v.as_s().ok())
            .map(|c| parse_cursor(c))
            .transpose()?;
        if let Ok(mut marks) = self.posted_marks.lock() {
            marks.insert(tenant.to_string(), (through, Instant::now()));
        }
        Ok(through.map(|through| PostedMark {
            through: through.to_string(),
            log_size: item
                .as_ref()
                .and_then(|i| i.get(LOG_SIZE))
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse().ok()),
        }))
    }

    /// The mark as this process last read it, if that was recent.
    pub(crate) async fn posted_through_cached(
        &self,
        tenant: &str,
    ) -> Result<Option<Ulid>, StoreError> {
        let known = self
            .posted_marks
            .lock()
            .ok()
            .and_then(|marks| marks.get(tenant).copied())
            .filter(|(_, at)| at.elapsed() < MARK_FRESHNESS);
        match known {
            Some((through, _)) => Ok(through),
            None => Ok(self
                .read_posted_mark(tenant)
                .await?
                .and_then(|mark| parse_cursor(&mark.through).ok())),
        }
    }

    /// One page of one pivot value's events in `lo..=hi`: from its postings
    /// up to the posted-through mark, and above it from the tenant's
    /// partition, filtered on the value. Each call reads one side; when it
    /// finishes its side with the other still to read, it answers `more`,
    /// and `last_cursor` is the edge of its side, so the caller's next read
    /// starts on the other side.
    pub(crate) async fn read_pivot(
        &self,
        read: &RangeRead,
        index: &PivotIndex,
        value: &str,
    ) -> Result<RangePage, StoreError> {
        let (lo, hi) = (parse_cursor(&read.lo)?, parse_cursor(&read.hi)?);
        if lo > hi {
            return Ok(RangePage::default());
        }
        let posted = self.posted_through_cached(&read.tenant).await?;
        let posted_side = posted.filter(|p| *p >= lo).map(|p| (lo, p.min(hi)));
        let tail_lo = posted.map_or(lo, |p| lo.max(Ulid(p.0.saturating_add(1))));
        let tail_side = (posted.is_none_or(|p| p < hi) && tail_lo <= hi).then_some((tail_lo, hi));
        let (first, second_exists) = match (read.newest_first, posted_side, tail_side) {
            (true, _, Some(tail)) => (Side::Tail(tail), posted_side.is_some()),
            (true, Some(posted), None) => (Side::Postings(posted), false),
            (false, Some(posted), _) => (Side::Postings(posted), tail_side.is_some()),
            (false, None, Some(tail)) => (Side::Tail(tail), false),
            (_, None, None) => return Ok(RangePage::default()),
        };
        let (mut page, edge) = match first {
            Side::Tail((lo, hi)) => {
                let edge = if read.newest_first { lo } else { hi };
                (self.scan_tail(read, index, value, lo, hi).await?, edge)
            }
            Side::Postings((lo, hi)) => {
                let edge = if read.newest_first { lo } else { hi };
                let at_mark = posted == Some(hi);
                let page = self
                    .read_postings(read, index, value, (lo, hi), at_mark)
                    .await?;
                (page, edge)
            }
        };
        if !page.more && second_exists {
            page.more = true;
            page.last_cursor = Some(edge.to_string());
        }
        Ok(page)
    }

    /// The not-yet-posted tail: the tenant's partition in `lo..=hi`,
    /// filtered on the pivot value by DynamoDB.
    async fn scan_tail(
        &self,
        read: &RangeRead,
        index: &PivotIndex,
        value: &str,
        lo: Ulid,
        hi: Ulid,
    ) -> Result<RangePage, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND #sk BETWEEN :lo AND :hi")
            .filter_expression("#field = :value")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#sk", SORT_KEY)
            .expression_attribute_names("#field", index.field)
            .expression_attribute_values(":pk", AttributeValue::S(read.tenant.clone()))
            .expression_attribute_values(":lo", AttributeValue::S(lo.to_string()))
            .expression_attribute_values(":hi", AttributeValue::S(hi.to_string()))
            .expression_attribute_values(":value", AttributeValue::S(value.to_string()))
            .scan_index_forward(!read.newest_first)
            // DynamoDB limits the items it evaluates, before the filter: a
            // small page still scans a full batch, within the read budget.
            .limit(
                read.limit
                    .max(TAIL_SCAN_MIN)
                    .min(read.scan_limit)
                    .clamp(1, 10_000) as i32,
            )
            .consistent_read(read.consistent)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(classify)?;
        // With a filter, the last item evaluated may not be returned: the
        // next read starts after the last key DynamoDB evaluated.
        let last_evaluated = output
            .last_evaluated_key
            .as_ref()
            .and_then(|k| k.get(SORT_KEY))
            .and_then(|v| v.as_s().ok())
            .cloned();
        let items = output.items.unwrap_or_default();
        let mut page = RangePage {
            items_read: output.scanned_count.max(0) as usize,
            more: last_evaluated.is_some(),
            read_units: output
                .consumed_capacity
                .and_then(|c| c.capacity_units)
                .unwrap_or(0.0),
            ..RangePage::default()
        };
        page.last_cursor = last_evaluated.or_else(|| {
            items
                .last()
                .and_then(|i| i.get(SORT_KEY))
                .and_then(|v| v.as_s().ok())
                .cloned()
        });
        self.push_events(items, read.data_as_text, &mut page);
        Ok(page)
    }

    /// Up to `read.limit` cursors from the value's postings in `lo..=hi`,
    /// then their events by key.
    /// `at_mark`: `hi` is the posted-through mark, so every cursor up to it
    /// is in a posting whose last cursor is at or below it (the run that
    /// moved the mark past a cursor wrote it there).
    async fn read_postings(
        &self,
        read: &RangeRead,
        index: &PivotIndex,
        value: &str,
        (lo, hi): (Ulid, Ulid),
        at_mark: bool,
    ) -> Result<RangePage, StoreError> {
        let partition = pivot_key(&read.tenant, index, value);
        let mut page = RangePage::default();
        let mut gathered = Gathered {
            cursors: Vec::new(),
            newest_first: read.newest_first,
            limit: read.limit.max(1),
        };
        // The page is full and the range holds more.
        let mut full = false;
        // Reading up, a posting started above `hi`.
        let mut past_range = false;
        let mut per_query = POSTINGS_FIRST_QUERY;
        if read.newest_first && !at_mark {
            // The posting holding `hi`, if any: the first whose last cursor
            // is at or above it.
            let (holding, _) = self
                .query_postings(
                    &partition,
                    "#sk >= :a",
                    hi,
                    None,
                    true,
                    Some(1),
                    None,
                    &mut page,
                )
                .await?;
            for item in &holding {
                full |= !gathered.take(&posting_cursors(item)?, lo, hi);
            }
        }
        let mut start = None;
        while !full && !past_range {
            let limit = Some(per_query);
            per_query = (per_query * 2).min(1000);
            let (condition, upper, forward) = if read.newest_first {
                ("#sk BETWEEN :a AND :b", Some(hi), false)
            } else {
                ("#sk >= :a", None, true)
            };
            let (items, next) = self
                .query_postings(
                    &partition,
                    condition,
                    lo,
                    upper,
                    forward,
                    limit,
                    start.take(),
                    &mut page,
                )
                .await?;
            for item in &items {
                let listed = posting_cursors(item)?;
                // Reading up, a posting starting above `hi` ends the range.
                if !read.newest_first && listed.first().is_some_and(|first| *first > hi) {
                    past_range = true;
                    break;
                }
                if !gathered.take(&listed, lo, hi) {
                    full = true;
                    break;
                }
            }
            match next {
                Some(key) if !full && !past_range => start = Some(key),
                _ => break,
            }
        }
        let mut cursors: Vec<String> = gathered.cursors.iter().map(Ulid::to_string).collect();
        let fetched = self.fetch_events(read, &cursors, &mut page).await?;
        // Stopped at the byte budget: the range goes on after the last
        // cursor whose event was fetched.
        cursors.truncate(fetched);
        page.more = full || fetched < gathered.cursors.len();
        // Every cursor the postings gave counts as read, fetched or not:
        // the next read lists those past the stop again, and the budget
        // should see that work.
        page.items_read = gathered.cursors.len();
        page.last_cursor = cursors.pop();
        Ok(page)
    }

    /// One `Query` of a posting partition; the items and where the next
    /// call starts.
    #[allow(clippy::too_many_arguments)]
    async fn query_postings(
        &self,
        partition: &str,
        condition: &str,
        a: Ulid,
        b: Option<Ulid>,
        forward: bool,
        limit: Option<i32>,
        start: Option<Item>,
        page: &mut RangePage,
    ) -> Result<(Vec<Item>, Option<Item>), StoreError> {
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression(format!("#pk = :pk AND {condition}"))
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#sk", SORT_KEY)
            .expression_attribute_values(":pk", AttributeValue::S(partition.to_string()))
            .expression_attribute_values(":a", AttributeValue::S(a.to_string()))
            .scan_index_forward(forward)
            // Strongly consistent: the mark was read so, and postings it
            // covers were written only just before it moved.
            .consistent_read(true)
            .set_limit(limit)
            .set_exclusive_start_key(start)
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        if let Some(b) = b {
            query = query.expression_attribute_values(":b", AttributeValue::S(b.to_string()));
        }
        let output = query.send().await.map_err(classify)?;
        page.read_units += output
            .consumed_capacity
            .and_then(|c| c.capacity_units)
            .unwrap_or(0.0);
        let next = output.last_evaluated_key.filter(|k| !k.is_empty());
        Ok((output.items.unwrap_or_default(), next))
    }
}

enum Side {
    Postings((Ulid, Ulid)),
    Tail((Ulid, Ulid)),
}

#[cfg(test)]
mod tests {
    use super::*;
    use audit_core::pivot::PIVOT_INDEXES;

    #[test]
    fn a_posting_item_reads_back_its_cursors_in_order() {
        let posting = Posting {
            index: &PIVOT_INDEXES[0],
            value: "user#1".into(),
            cursors: (1..=5).map(|n| Ulid(n * 1_000_003)).collect(),
            expires_at_ms: 1_700_000_000_123,
        };
        let item = posting_item("acme", &posting).expect("an item");
        assert_eq!(posting_cursors(&item).ok(), Some(posting.cursors.clone()));
        assert_eq!(
            item.get(PARTITION_KEY)
                .and_then(|v| v.as_s().ok())
                .map(String::as_str),
            Some("acme#u#user#1")
        );
        assert_eq!(
            item.get(SORT_KEY).and_then(|v| v.as_s().ok()),
            posting.cursors.last().map(Ulid::to_string).as_ref()
        );
        assert_eq!(
            item.get(TTL_ATTRIBUTE)
                .and_then(|v| v.as_n().ok())
                .map(String::as_str),
            Some("1700000000")
        );
    }

    #[test]
    fn cut_cursor_bytes_are_corrupt_not_a_panic() {
        let item = Item::from([(
            CURSORS.to_string(),
            AttributeValue::B(Blob::new(vec![1u8; 17])),
        )]);
        assert!(posting_cursors(&item).is_err());
        assert!(posting_cursors(&Item::new()).is_err());
    }

    #[test]
    fn overlapping_postings_give_each_cursor_once_in_order() {
        let c = |n: u128| Ulid(n);
        let short: Vec<Ulid> = (1..=5).map(c).collect();
        let long: Vec<Ulid> = (1..=8).map(c).collect();
        let mut down = Gathered {
            cursors: Vec::new(),
            newest_first: true,
            limit: 100,
        };
        assert!(down.take(&long, c(2), c(7)));
        assert!(down.take(&short, c(2), c(7)));
        assert_eq!(down.cursors, (2..=7).rev().map(c).collect::<Vec<_>>());
        let mut up = Gathered {
            cursors: Vec::new(),
            newest_first: false,
            limit: 3,
        };
        assert!(!up.take(&short, c(2), c(7)));
        assert_eq!(up.cursors, vec![c(2), c(3), c(4)]);
    }
}
