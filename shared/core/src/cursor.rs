//! Event cursors: ULIDs, monotonic within a process, doubling as sort keys.

use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use ulid::{Generator, Ulid};

use crate::error::ApiError;

/// Hands out strictly increasing ULIDs within this process, timed by a
/// clock that never runs backwards ([`ForwardClock`]).
#[derive(Default)]
pub struct CursorGenerator {
    inner: Mutex<(Generator, ForwardClock)>,
}

impl CursorGenerator {
    pub fn next(&self) -> Ulid {
        self.next_at(SystemTime::now(), Instant::now())
    }

    /// The next cursor with the wall clock reading `wall` at `instant`.
    fn next_at(&self, wall: SystemTime, instant: Instant) -> Ulid {
        let mut guard = match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let (generator, clock) = &mut *guard;
        // The monotonic generator only fails when 2^80 ids are drawn in one
        // millisecond; a fresh random ULID is still unique then.
        generator
            .generate_from_datetime(clock.read(wall, instant))
            .unwrap_or_else(|_| Ulid::new())
    }
}

/// The wall clock as this process has seen it, never behind a time it has
/// already read. A tail hands out `next` up to the settle horizon (now less
/// 10 s); a cursor drawn after the system clock stepped back further than
/// that (an NTP step, a VM resumed) would sort below a horizon already
/// handed out, and a poller would never see its event. After a step back,
/// this clock goes on from the last time read at the pace of the monotonic
/// clock, until the wall clock catches up; a step forward is taken at once.
#[derive(Debug, Default)]
struct ForwardClock {
    /// The last wall time read that was not behind, and when it was read.
    anchor: Option<(SystemTime, Instant)>,
}

impl ForwardClock {
    fn read(&mut self, wall: SystemTime, instant: Instant) -> SystemTime {
        if let Some((anchor_wall, anchor_instant)) = self.anchor {
            let expected = anchor_wall + instant.saturating_duration_since(anchor_instant);
            if wall < expected {
                return expected;
            }
        }
        self.anchor = Some((wall, instant));
        wall
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
    use std::time::Duration;

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

    /// After the system clock steps back, cursors go on from where they
    /// were at the pace of real time, not from the stepped-back time, and
    /// a step forward is followed at once.
    #[test]
    fn cursors_never_go_back_in_time_when_the_clock_does() {
        let generator = CursorGenerator::default();
        let (wall, start) = (SystemTime::now(), Instant::now());
        let ms = |cursor: Ulid| cursor.timestamp_ms();
        let first = generator.next_at(wall, start);
        let later = |seconds: u64| start + Duration::from_secs(seconds);
        // 1 s later the clock reads 15 s earlier, then 60 s earlier.
        let stepped = generator.next_at(wall - Duration::from_secs(15), later(1));
        assert_eq!(ms(stepped), ms(first) + 1000);
        let stepped = generator.next_at(wall - Duration::from_secs(60), later(3));
        assert_eq!(ms(stepped), ms(first) + 3000);
        // Once the wall clock is ahead again, it is read as it is.
        let ahead = generator.next_at(wall + Duration::from_secs(20), later(4));
        assert_eq!(ms(ahead), ms(first) + 20_000);
        let after = generator.next_at(wall + Duration::from_secs(20), later(5));
        assert_eq!(ms(after), ms(first) + 21_000);
        assert!(first < stepped && stepped < ahead && ahead < after);
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
