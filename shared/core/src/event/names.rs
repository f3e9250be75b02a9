//! What a name may look like: the characters that show nothing (a
//! required name needs one that shows something), and the API's own
//! `serviceName`, which no producer may use nor anything that reads as it.

/// Characters that show nothing, as inclusive ranges: controls, every kind
/// of space and line break, and every character Unicode calls default
/// ignorable (zero-width, joining, filler and direction marks, variation
/// selectors, tags; DerivedCoreProperties.txt, `Default_Ignorable_Code_Point`)
/// with the other format controls that show nothing alone (interlinear
/// annotation, Egyptian hieroglyph, shorthand and musical format controls).
/// A required name needs a character outside them; the OpenAPI document's
/// `Name` pattern is built from this table (a test holds it to it).
pub const INVISIBLE_CHARACTERS: &[(char, char)] = &[
    ('\u{0}', ' '),
    ('\u{7f}', '\u{a0}'),
    ('\u{ad}', '\u{ad}'),
    // combining grapheme joiner, Arabic letter mark, Hangul fillers,
    // Khmer inherent vowels, Mongolian vowel separator
    ('\u{34f}', '\u{34f}'),
    ('\u{61c}', '\u{61c}'),
    ('\u{115f}', '\u{1160}'),
    ('\u{1680}', '\u{1680}'),
    ('\u{17b4}', '\u{17b5}'),
    // Mongolian free variation selectors and vowel separator
    ('\u{180b}', '\u{180f}'),
    ('\u{2000}', '\u{200f}'),
    ('\u{2028}', '\u{202f}'),
    ('\u{205f}', '\u{206f}'),
    // Braille blank
    ('\u{2800}', '\u{2800}'),
    ('\u{3000}', '\u{3000}'),
    ('\u{3164}', '\u{3164}'),
    // variation selectors
    ('\u{fe00}', '\u{fe0f}'),
    ('\u{feff}', '\u{feff}'),
    ('\u{ffa0}', '\u{ffa0}'),
    // reserved default ignorables, interlinear annotation controls
    ('\u{fff0}', '\u{fffb}'),
    // Egyptian hieroglyph format controls
    ('\u{13430}', '\u{1343f}'),
    // shorthand format controls
    ('\u{1bca0}', '\u{1bca3}'),
    // musical symbol format controls
    ('\u{1d173}', '\u{1d17a}'),
    // tags, variation selectors supplement, reserved default ignorables
    ('\u{e0000}', '\u{e0fff}'),
];

/// The JSON Schema pattern of a name with a visible character. Characters
/// past U+FFFF are written as themselves (openapi.yaml writes them as YAML
/// `\U` escapes): `\uXXXX` holds four digits, and Python's `re`
/// (schemathesis) does not read `\u{...}`. So the pattern needs a regex
/// engine that reads code points: Python, Rust's `regex`, ECMA-262 with
/// the `u` flag (ajv's default); ECMA-262 without it refuses the class.
pub fn visible_text_pattern() -> String {
    let shown = |c: char| {
        if u32::from(c) > 0xffff {
            c.to_string()
        } else {
            format!("\\u{:04x}", u32::from(c))
        }
    };
    let ranges: String = INVISIBLE_CHARACTERS
        .iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                shown(lo)
            } else {
                format!("{}-{}", shown(lo), shown(hi))
            }
        })
        .collect();
    format!("[^{ranges}]")
}

/// The `serviceName` of every self-audit record. Producers may not use it
/// (a reader leaving the API's records out would not see theirs, and they
/// would pass for the API's), nor anything that reads as it: other case,
/// spaces or invisible marks, another dash.
pub const SELF_AUDIT_SERVICE: &str = "audit-api";

/// Reads as [`SELF_AUDIT_SERVICE`] to a person or a case-blind filter:
/// in any case; in compatibility forms (full-width `ａｕｄｉｔ`,
/// mathematical `𝐚𝐮𝐝𝐢𝐭`, circled `ⓐⓤⓓⓘⓣ`); with accents (`audit-apí`);
/// in letters of other scripts that are drawn the same (Cyrillic `а`: the
/// confusables skeleton of Unicode's UTS #39); with its two words apart by
/// any dash or connector (Unicode's Pd and Pc: `‐`, `⸺`, `_`, `‿`), space
/// or invisible mark (`audit api`, `Audit - Api`, `audit\u{3164}api`), or
/// with spaces and invisible marks inside a word (`aud\u{200a}it-api`).
/// `auditapi` reads as another word.
pub fn names_the_api(name: &str) -> bool {
    // Lower case before the skeleton (`Audit-Api`), and after it: the
    // skeleton draws a capital I as `l`, so `AUDlT-AP1` reads as
    // `AUDIT-API` only when the letters are drawn first.
    [Case::LowerFirst, Case::DrawnFirst]
        .into_iter()
        .any(|case| {
            let (words, squeezed) = reading(name, case);
            API_READINGS[case as usize]
                .iter()
                .any(|api| words == *api || squeezed == *api)
        })
}

/// How the API's own name reads, in either case, by each [`Case`]:
/// worked out once, not for every event.
static API_READINGS: std::sync::LazyLock<[[String; 2]; 2]> = std::sync::LazyLock::new(|| {
    [Case::LowerFirst, Case::DrawnFirst].map(|case| {
        [
            SELF_AUDIT_SERVICE.to_string(),
            SELF_AUDIT_SERVICE.to_uppercase(),
        ]
        .map(|api| reading(&api, case).0)
    })
});

/// When a reading lowers the case: before or after each character is drawn.
#[derive(Clone, Copy)]
enum Case {
    LowerFirst = 0,
    DrawnFirst = 1,
}

/// What a name reads as: its words split at every dash, connector, space
/// or invisible mark (`audit api`), and its text with those dropped and
/// dashes kept (`aud it-api`), each folded as [`names_the_api`] says.
fn reading(name: &str, case: Case) -> (String, String) {
    use unicode_general_category::{get_general_category, GeneralCategory};
    use unicode_normalization::char::is_combining_mark;
    use unicode_normalization::UnicodeNormalization;
    // Compatibility forms to their letters, accents dropped, lower case,
    // then (below) each character to the one it is drawn as. Blanks
    // first: normalising turns some (U+3164) into other marks.
    let letters: String = name
        .chars()
        .map(|c| if is_invisible(c) { ' ' } else { c })
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(|c| match case {
            Case::LowerFirst => c.to_lowercase().collect::<Vec<_>>(),
            Case::DrawnFirst => vec![c],
        })
        .collect();
    let dash = |c: char| {
        c == '\u{2212}'
            || matches!(
                get_general_category(c),
                GeneralCategory::DashPunctuation | GeneralCategory::ConnectorPunctuation
            )
    };
    let mut words: Vec<String> = vec![String::new()];
    let mut squeezed = String::new();
    for c in letters.chars() {
        // Told apart before the skeleton, which draws some dashes as
        // letters (`—` as `ー`).
        if dash(c) {
            words.push(String::new());
            squeezed.push('-');
        } else if c.is_whitespace() || is_invisible(c) {
            words.push(String::new());
        } else {
            let mut buffer = [0u8; 4];
            let drawn =
                unicode_security::confusable_detection::skeleton(c.encode_utf8(&mut buffer))
                    .filter(|c| !is_combining_mark(*c))
                    .flat_map(char::to_lowercase);
            for d in drawn {
                if let Some(word) = words.last_mut() {
                    word.push(d);
                }
                squeezed.push(d);
            }
        }
    }
    words.retain(|word| !word.is_empty());
    (words.join("-"), squeezed)
}

/// Shows nothing: in [`INVISIBLE_CHARACTERS`].
pub fn is_invisible(c: char) -> bool {
    INVISIBLE_CHARACTERS
        .iter()
        .any(|&(lo, hi)| (lo..=hi).contains(&c))
}

/// Holds a character that shows something.
pub fn has_visible_text(s: &str) -> bool {
    s.chars().any(|c| !is_invisible(c))
}
