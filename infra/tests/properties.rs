//! Property tests of the local gateway's request decoding: no path or query
//! string panics it, and what it can't decode is refused, not guessed.

use audit_infra::gateway::{allowed_methods, match_route, query_pairs};
use proptest::prelude::*;

/// Text rich in `%`, multi-byte characters, separators and hex digits.
fn url_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("%".to_string()),
            Just("%2".to_string()),
            Just("%e9".to_string()),
            Just("%C3%A9".to_string()),
            Just("%ff".to_string()),
            Just("é".to_string()),
            Just("🦀".to_string()),
            Just("/".to_string()),
            Just("&".to_string()),
            Just("=".to_string()),
            Just("+".to_string()),
            Just("audit".to_string()),
            Just("events".to_string()),
            "[a-fA-F0-9]{1,3}",
            "\\PC{0,4}",
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #[test]
    fn paths_and_queries_never_panic(path in url_text(), query in url_text(), method in "[A-Z]{1,7}") {
        for path in [format!("/audit/events/{path}"), format!("/{path}"), path.clone()] {
            let _ = match_route(&method, &path);
            let _ = allowed_methods(&path);
        }
        let _ = query_pairs(&query);
    }

    /// Encoding any text and decoding it gives it back: nothing is guessed.
    #[test]
    fn percent_decoding_round_trips(text in "\\PC{0,30}") {
        let encoded: String = percent_encoding::utf8_percent_encode(&text, percent_encoding::NON_ALPHANUMERIC).to_string();
        let path = format!("/audit/events/{encoded}");
        match match_route("GET", &path) {
            Ok(Some((_, params))) => prop_assert_eq!(params.get("cursor"), Some(&text)),
            Ok(None) => prop_assert!(text.is_empty()),
            Err(_) => prop_assert!(false, "valid encoding refused: {}", path),
        }
        let pairs = query_pairs(&format!("k={encoded}")).map_err(TestCaseError::fail)?;
        prop_assert_eq!(pairs, vec![("k".to_string(), text)]);
    }

    /// Bytes that are not UTF-8 once decoded are refused.
    #[test]
    fn invalid_utf8_is_refused(byte in 0x80u8..=0xff) {
        let lone = format!("%{byte:02x}");
        let path = format!("/audit/events/x{lone}");
        let query = format!("from={lone}");
        prop_assert!(match_route("GET", &path).is_err());
        prop_assert!(query_pairs(&query).is_err());
    }
}
