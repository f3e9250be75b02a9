//! Event cursors: ULIDs, monotonic within a process, doubling as sort keys.

use std::sync::Mutex;
use std::time::SystemTime;

use ulid::{Generator, Ulid};

use crate::error::ApiError;

/// Hands out strictly increasing ULIDs within this process.
pub struct CursorGenerator {
    inner: Mutex<Generator>,
}

impl Default for CursorGenerator {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Generator::new()),
        }
    }
}

impl CursorGenerator {
    pub fn next(&self) -> Ulid {
        let mut generator = match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        // The monotonic generator only fails when 2^80 ids are drawn in one
        // millisecond; a fresh random ULID is still unique then.
        generator
            .generate_from_datetime(SystemTime::now())
            .unwrap_or_else(|_| Ulid::new())
    }
}

/// Parses a cursor from user input (path or query); 400 when malformed.
pub fn parse_cursor(field: &str, value: &str) -> Result<Ulid, ApiError> {
    if value.len() != ulid::ULID_LEN {
        return Err(ApiError::bad_request(
            field,
            format!("`{field}` must be a 26-character cursor"),
        ));
    }
    // 26 base-32 characters hold 130 bits; a ULID's first must be 0-7.
    if !matches!(value.as_bytes()[0], b'0'..=b'7') {
        return Err(ApiError::bad_request(
            field,
            format!("`{field}` is not a valid cursor"),
        ));
    }
    Ulid::from_string(value)
        .map_err(|_| ApiError::bad_request(field, format!("`{field}` is not a valid cursor")))
}

/// The canonical (upper-case) text of a cursor.
pub fn canonical(ulid: Ulid) -> String {
    ulid.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_increase_strictly_within_a_process() {
        let generator = CursorGenerator::default();
        let mut last = generator.next();
        for _ in 0..10_000 {
            let next = generator.next();
            assert!(next > last);
            assert!(next.to_string() > last.to_string());
            last = next;
        }
    }

    #[test]
    fn malformed_cursors_are_refused() {
        assert!(parse_cursor("cursor", "not-a-cursor").is_err());
        assert!(parse_cursor("cursor", "01ARZ3NDEKTSV4RRFFQ69G5FA!").is_err());
        // first char above 7 overflows 128 bits
        assert!(parse_cursor("cursor", "81ARZ3NDEKTSV4RRFFQ69G5FAV").is_err());
        assert!(parse_cursor("cursor", "01ARZ3NDEKTSV4RRFFQ69G5FAV").is_ok());
    }
}
