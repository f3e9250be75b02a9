//! Text and JSON from the trail as a terminal shows them safely: nothing
//! an event holds can reorder, hide or control the screen.

use std::io::Write;

use serde_json::Value;

/// What a terminal must not be given raw: controls (C0, DEL, C1: `\u{9b}`
/// starts an escape sequence on some terminals) and the marks that reorder
/// or hide text. Its own list, not ingest's invisible table: that one also
/// holds variation selectors (an emoji's U+FE0F) and fillers, which change
/// nothing on a screen; these reorder, hide or control it.
pub fn hides_on_a_terminal(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00ad}'
                | '\u{061c}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
                | '\u{e0000}'..='\u{e007f}'
        )
}

/// JSON for a terminal: the same value, with every character
/// [`hides_on_a_terminal`] written as a `\u` escape (serde_json escapes
/// only C0, `"` and `\`), so an event can't reorder or control the screen
/// through `audit get` or JSON on a terminal. Piped output is left as the
/// API sent it.
pub fn terminal_json(value: &Value, pretty: bool) -> String {
    let mut out = Vec::new();
    let written = if pretty {
        let formatter = TerminalSafe(serde_json::ser::PrettyFormatter::new());
        serde::Serialize::serialize(
            value,
            &mut serde_json::Serializer::with_formatter(&mut out, formatter),
        )
    } else {
        let formatter = TerminalSafe(serde_json::ser::CompactFormatter);
        serde::Serialize::serialize(
            value,
            &mut serde_json::Serializer::with_formatter(&mut out, formatter),
        )
    };
    match written {
        Ok(()) => String::from_utf8(out).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// A serde_json formatter that escapes what [`hides_on_a_terminal`] in
/// strings and otherwise formats as the one it wraps.
struct TerminalSafe<F>(F);

impl<F: serde_json::ser::Formatter> serde_json::ser::Formatter for TerminalSafe<F> {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut start = 0;
        for (at, c) in fragment.char_indices() {
            if hides_on_a_terminal(c) {
                writer.write_all(&fragment.as_bytes()[start..at])?;
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(writer, "\\u{unit:04x}")?;
                }
                start = at + c.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object_value(w)
    }
}

/// Text from the trail as a terminal shows it safely: control characters
/// (an escape sequence could retitle the window, recolour or overwrite
/// lines) and the marks that reorder or hide text (bidi overrides and
/// isolates, zero-width characters) are printed as escapes (`\n`,
/// `\u{202e}`); everything else as it is.
pub fn for_terminal(text: &str) -> std::borrow::Cow<'_, str> {
    let hidden = hides_on_a_terminal;
    if !text.chars().any(hidden) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => shown.push_str("\\n"),
            '\r' => shown.push_str("\\r"),
            '\t' => shown.push_str("\\t"),
            c if hidden(c) => shown.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => shown.push(c),
        }
    }
    std::borrow::Cow::Owned(shown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// JSON for a terminal is the same value, with nothing in it that could
    /// reorder or control the screen raw; other text is left as it is.
    #[test]
    fn json_for_a_terminal_escapes_what_would_control_it_and_keeps_the_value() {
        let hostile =
            "A\u{1b}[31mB\u{202e}evil\u{2066}\u{200b}C\u{9b}31mD\u{85}E\u{2028}F\u{7f}G\u{e0001}H";
        let kept = "é 😀\u{fe0f} 漢字";
        let value = json!({"message": hostile, "data": {hostile: [kept, 1.5, null]}});
        for pretty in [false, true] {
            let text = terminal_json(&value, pretty);
            // Only the pretty printer's own line breaks are controls.
            assert!(
                text.chars().all(|c| c == '\n' || !hides_on_a_terminal(c)),
                "{text}"
            );
            assert!(text.contains(kept), "{text}");
            assert!(
                text.contains("\\udb40\\udc01"),
                "astral as a surrogate pair: {text}"
            );
            let back: Value = serde_json::from_str(&text).expect("JSON");
            assert_eq!(back, value);
        }
        assert_eq!(terminal_json(&value, false).lines().count(), 1);
    }

    /// Every control character and every reordering or hiding mark is
    /// shown as an escape; no other character changes.
    #[test]
    fn text_for_a_terminal_holds_no_control_or_reordering_character() {
        for code in (0u32..0x3000)
            .chain(0xfff0..0x10000)
            .chain(0xe0000..0xe0080)
        {
            let Some(c) = char::from_u32(code) else {
                continue;
            };
            let text = format!("a{c}b");
            let shown = for_terminal(&text);
            let dangerous = c.is_control()
                || matches!(
                    code,
                    0xad | 0x061c
                        | 0x180e
                        | 0x200b..=0x200f
                        | 0x2028..=0x202e
                        | 0x2060..=0x2069
                        | 0xfeff
                        | 0xfff9..=0xfffb
                        | 0xe0000..=0xe007f
                );
            if dangerous {
                assert!(
                    !shown.contains(c) && shown.starts_with('a') && shown.ends_with('b'),
                    "U+{code:04X}: {shown:?}"
                );
            } else {
                assert_eq!(shown, text, "U+{code:04X}");
            }
        }
        assert_eq!(
            for_terminal("\u{1b}]0;title\u{7}x\r\n"),
            "\\u{1b}]0;title\\u{7}x\\r\\n"
        );
        // The metadata tree: one line per name, whatever a name holds.
        let tree = crate::metadata_tree(&serde_json::json!({
            "services": [{"serviceName": "s\u{202e}x", "eventTypes": ["a\nb", "c\u{0}"]}],
            "targets": [],
        }));
        assert_eq!(tree.lines().count(), 4, "{tree}");
        assert!(
            !tree.contains('\u{202e}') && !tree.contains('\u{0}'),
            "{tree}"
        );
    }
}
