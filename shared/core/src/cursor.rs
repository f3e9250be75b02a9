//! Event cursors: ULIDs, monotonic within a process, doubling as sort keys.

use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use ulid::{Generator, Ulid};

use crate::error::ApiError;

/// Hands out strictly increasing ULIDs within this process, timed by the
/// process's clock that never runs backwards ([`now`]).
pub struct CursorGenerator {
    inner: Mutex<Generator>,
}

impl Default for CursorGenerator {
    fn default() -> Self {
        // Read the clock now: a step back before the first cursor is drawn
        // is then behind this reading too.
        let _ = now();
        Self {
            inner: Mutex::new(Generator::new()),
        }
    }
}

impl CursorGenerator {
    pub fn next(&self) -> Ulid {
        self.next_at(now())
    }

    /// The next cursor at the time `at`.
    fn next_at(&self, at: SystemTime) -> Ulid {
        let mut generator = match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        // The monotonic generator only fails when 2^80 ids are drawn in one
        // millisecond; a fresh random ULID is still unique then.
        generator
            .generate_from_datetime(at)
            .unwrap_or_else(|_| Ulid::new())
    }
}

/// The process's clock ([`ForwardClock`]): what times cursors, and what the
/// writes that must cover them (the sealing marks) are timed by.
static PROCESS_CLOCK: Mutex<ForwardClock> = Mutex::new(ForwardClock { anchor: None });

/// The wall clock, never behind a time this process has read from it.
pub fn now() -> SystemTime {
    let mut clock = match PROCESS_CLOCK.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    clock.read(SystemTime::now(), Instant::now())
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

    /// After the system clock steps back, the clock goes on from where it
    /// was at the pace of real time, not from the stepped-back time, and a
    /// step forward is followed at once; cursors follow it.
    #[test]
    fn the_clock_never_goes_back_when_the_system_clock_does() {
        let mut clock = ForwardClock::default();
        let (wall, start) = (SystemTime::now(), Instant::now());
        let later = |seconds: u64| start + Duration::from_secs(seconds);
        let since = |at: SystemTime| at.duration_since(wall).unwrap_or_default().as_secs();
        assert_eq!(clock.read(wall, start), wall);
        // 1 s later the system clock reads 15 s earlier, then 60 s earlier.
        assert_eq!(
            since(clock.read(wall - Duration::from_secs(15), later(1))),
            1
        );
        assert_eq!(
            since(clock.read(wall - Duration::from_secs(60), later(3))),
            3
        );
        // Read often while behind, it still keeps real time's pace.
        for _ in 0..1000 {
            clock.read(wall - Duration::from_secs(60), later(3));
        }
        assert_eq!(
            since(clock.read(wall - Duration::from_secs(59), later(4))),
            4
        );
        // Once the system clock is ahead again, it is read as it is.
        assert_eq!(
            since(clock.read(wall + Duration::from_secs(20), later(5))),
            20
        );
        assert_eq!(
            since(clock.read(wall + Duration::from_secs(20), later(6))),
            21
        );
        let generator = CursorGenerator::default();
        let (first, stepped) = (
            generator.next_at(wall),
            generator.next_at(clock.read(wall - Duration::from_secs(30), later(7))),
        );
        assert_eq!(stepped.timestamp_ms() - first.timestamp_ms(), 22_000);
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
