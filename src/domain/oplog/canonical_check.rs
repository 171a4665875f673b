//! Checks that bytes are canonical JSON without building a `serde_json::Value`.
//!
//! [`check_canonical_json`] accepts exactly the text that parses with `serde_json` and
//! re-encodes to itself through [`canonical_json`](super::canonical::canonical_json), the
//! reference decision of `binary::canonical_json_value`, in one pass after a UTF-8 check and,
//! for the usual payload (objects, arrays, strings, literals and plain integers), without
//! allocating. Canonical text has one spelling per value, so the check is a grammar:
//!
//! - the whole input is UTF-8, one value, with no whitespace outside strings and nothing after
//!   the value;
//! - object keys strictly increase by the byte order of their *decoded* UTF-8 (a duplicate key
//!   is refused: a parsed `Value` keeps one of them, so the re-encoding would differ);
//! - strings hold no raw byte below U+0020; `"` and `\` appear only as `\"` and `\\`; U+0008,
//!   U+000C, U+000A, U+000D and U+0009 only as `\b`, `\f`, `\n`, `\r` and `\t`; every other
//!   character below U+0020 only as `\u00xx` with lowercase hex; no other escape;
//! - a number is accepted exactly when `serde_json` prints the number it parses to as the
//!   same text: `-0` parses to the float `-0.0`, integers past `u64` (or below `i64`) parse to
//!   floats, and floats print in their shortest form (`1.0`, `100000.0`, `1e+16`, `1e-7`);
//!   plain integers that surely fit are decided without `serde_json`;
//! - `true`, `false`, `null`;
//! - at most [`MAX_DEPTH`] nested arrays and objects, `serde_json`'s recursion limit.

use std::cmp::Ordering;
use std::fmt;

use serde_json::Number;

/// The deepest nesting of arrays and objects `serde_json` parses: it refuses the 128th level.
const MAX_DEPTH: u8 = 127;

/// Why text is not canonical JSON: a fixed description, never quoting the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NotCanonical(pub(super) &'static str);

/// Whether `text` is canonical JSON (see the module docs): the same answer as parsing it with
/// `serde_json` and comparing its canonical re-encoding with `text`, without building the value.
pub(super) fn check_canonical_json(text: &[u8]) -> Result<(), NotCanonical> {
    let text = std::str::from_utf8(text).map_err(|_| NotCanonical("not UTF-8"))?;
    let mut cursor = Cursor { text, pos: 0 };
    cursor.value(MAX_DEPTH)?;
    if cursor.pos != text.len() {
        return Err(NotCanonical("bytes after the value"));
    }
    Ok(())
}

/// A position in UTF-8 text being checked; every step fails cleanly past the end.
struct Cursor<'a> {
    /// The whole input.
    text: &'a str,
    /// The byte offset of the next unread byte.
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// The next unread byte, if any.
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    /// Reads the next byte, if any.
    fn next_byte(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    /// Reads the next byte if it is `b`.
    fn eat(&mut self, b: u8) -> bool {
        let found = self.peek() == Some(b);
        if found {
            self.pos += 1;
        }
        found
    }

    /// Checks one value, allowing `depth` more levels of arrays and objects inside it.
    fn value(&mut self, depth: u8) -> Result<(), NotCanonical> {
        match self.peek() {
            Some(b'[') => self.array(Self::nested(depth)?),
            Some(b'{') => self.object(Self::nested(depth)?),
            Some(b'"') => self.string().map(drop),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            Some(_) => Err(NotCanonical("expected a value")),
            None => Err(NotCanonical("truncated")),
        }
    }

    /// The depth left inside a container opened with `depth` left.
    fn nested(depth: u8) -> Result<u8, NotCanonical> {
        depth
            .checked_sub(1)
            .ok_or(NotCanonical("nested more deeply than serde_json parses"))
    }

    /// Checks an array (the cursor is on its `[`).
    fn array(&mut self, depth: u8) -> Result<(), NotCanonical> {
        self.pos += 1;
        if self.eat(b']') {
            return Ok(());
        }
        loop {
            self.value(depth)?;
            match self.next_byte() {
                Some(b',') => {}
                Some(b']') => return Ok(()),
                _ => return Err(NotCanonical("expected `,` or `]` after an array item")),
            }
        }
    }

    /// Checks an object (the cursor is on its `{`), its keys strictly increasing.
    fn object(&mut self, depth: u8) -> Result<(), NotCanonical> {
        self.pos += 1;
        if self.eat(b'}') {
            return Ok(());
        }
        let mut previous: Option<Key<'a>> = None;
        loop {
            if self.peek() != Some(b'"') {
                return Err(NotCanonical("expected a string key"));
            }
            let key = self.string()?;
            if previous.is_some_and(|prev| prev.order(&key) != Ordering::Less) {
                return Err(NotCanonical("object keys not strictly increasing"));
            }
            previous = Some(key);
            if !self.eat(b':') {
                return Err(NotCanonical("expected `:` after an object key"));
            }
            self.value(depth)?;
            match self.next_byte() {
                Some(b',') => {}
                Some(b'}') => return Ok(()),
                _ => return Err(NotCanonical("expected `,` or `}` after an object member")),
            }
        }
    }

    /// Checks a string (the cursor is on its opening quote) and returns its escaped body.
    fn string(&mut self) -> Result<Key<'a>, NotCanonical> {
        self.pos += 1;
        let start = self.pos;
        let mut escaped = false;
        loop {
            let rest = &self.text.as_bytes()[self.pos..];
            let Some(run) = plain_run(rest) else {
                return Err(NotCanonical("unterminated string"));
            };
            self.pos += run;
            match rest[run] {
                b'"' => {
                    let raw = &self.text.as_bytes()[start..self.pos];
                    self.pos += 1;
                    return Ok(Key { raw, escaped });
                }
                b'\\' => {
                    self.escape()?;
                    escaped = true;
                }
                _ => return Err(NotCanonical("raw control character in a string")),
            }
        }
    }

    /// Checks one escape (the cursor is on its backslash) and steps over it.
    fn escape(&mut self) -> Result<(), NotCanonical> {
        let len = match &self.text.as_bytes()[self.pos + 1..] {
            [b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't', ..] => 2,
            [b'u', b'0', b'0', hi, lo, ..] if is_canonical_u_escape(*hi, *lo) => 6,
            _ => return Err(NotCanonical("escape serde_json does not write")),
        };
        self.pos += len;
        Ok(())
    }

    /// Checks a number (the cursor is on its first byte): its token must read as a number that
    /// `serde_json` prints as the same token.
    fn number(&mut self) -> Result<(), NotCanonical> {
        const MALFORMED: NotCanonical = NotCanonical("malformed number");
        let start = self.pos;
        let negative = self.eat(b'-');
        let digits_start = self.pos;
        match self.next_byte() {
            Some(b'0') => {}
            Some(b'1'..=b'9') => self.skip_digits(),
            _ => return Err(MALFORMED),
        }
        let digits = self.pos - digits_start;
        let mut integer = true;
        if self.eat(b'.') {
            self.digits().ok_or(MALFORMED)?;
            integer = false;
        }
        if self.eat(b'e') || self.eat(b'E') {
            let _sign = self.eat(b'+') || self.eat(b'-');
            self.digits().ok_or(MALFORMED)?;
            integer = false;
        }
        // Fast path: at most 19 digits fit a `u64`, at most 18 a negative `i64`, and an integer
        // without leading zeros prints as itself. `-0` is a float (`-0.0`): leave it to
        // serde_json, as every other token.
        let fits = if negative { digits <= 18 } else { digits <= 19 };
        let is_minus_zero = negative && self.text.as_bytes()[digits_start] == b'0';
        if integer && fits && !is_minus_zero {
            return Ok(());
        }
        let token = self.text.get(start..self.pos).ok_or(MALFORMED)?;
        if printed_as_serde_json(token) {
            Ok(())
        } else {
            Err(NotCanonical("number not as serde_json prints it"))
        }
    }

    /// Reads one or more decimal digits; `None` if there is none.
    fn digits(&mut self) -> Option<()> {
        matches!(self.next_byte(), Some(b'0'..=b'9')).then(|| self.skip_digits())
    }

    /// Reads any run of decimal digits.
    fn skip_digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
    }

    /// Checks that `word` comes next and steps over it.
    fn literal(&mut self, word: &str) -> Result<(), NotCanonical> {
        if !self.text.as_bytes()[self.pos..].starts_with(word.as_bytes()) {
            return Err(NotCanonical("expected `true`, `false` or `null`"));
        }
        self.pos += word.len();
        Ok(())
    }
}

/// The offset of the first byte in `bytes` that ends a run of plain string bytes (the quote,
/// the backslash or a control character, which must not appear raw), if any.
fn plain_run(bytes: &[u8]) -> Option<usize> {
    // Whole words first: string bodies are long runs of plain bytes.
    let (words, _) = bytes.as_chunks::<8>();
    let clean = words
        .iter()
        .take_while(|word| !has_special_byte(u64::from_le_bytes(**word)))
        .count()
        * 8;
    let offset = bytes[clean..]
        .iter()
        .position(|&b| b < 0x20 || b == b'"' || b == b'\\')?;
    Some(clean + offset)
}

/// Whether any of the eight bytes of `word` is a quote, a backslash or below 0x20.
fn has_special_byte(word: u64) -> bool {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    // The classic bit trick: for `n` up to 0x80, `below(x, n)` is true exactly when some byte
    // of `x` is below `n` (a borrow can only spoil the bytes above a true hit, never invent
    // one). The quote and the backslash are the bytes that XOR to zero.
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS != 0;
    below(word, 0x20)
        || below(word ^ (ONES * u64::from(b'"')), 1)
        || below(word ^ (ONES * u64::from(b'\\')), 1)
}

/// Whether `serde_json` reads `token` as a number and prints that number as `token`.
fn printed_as_serde_json(token: &str) -> bool {
    let Ok(number) = token.parse::<Number>() else {
        return false;
    };
    let mut rest = PrefixOf(token.as_bytes());
    fmt::write(&mut rest, format_args!("{number}")).is_ok() && rest.0.is_empty()
}

/// A `fmt::Write` sink that consumes what is written from the front of its bytes and fails as
/// soon as the writing departs from them, so formatted text is compared without a `String`.
struct PrefixOf<'a>(&'a [u8]);

impl fmt::Write for PrefixOf<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 = self.0.strip_prefix(s.as_bytes()).ok_or(fmt::Error)?;
        Ok(())
    }
}

/// An object key as it appears between its quotes, its escapes already checked canonical.
#[derive(Clone, Copy)]
struct Key<'a> {
    /// The escaped bytes between the quotes.
    raw: &'a [u8],
    /// Whether `raw` holds any escape.
    escaped: bool,
}

impl Key<'_> {
    /// Orders keys by their decoded UTF-8 bytes, as a parsed `serde_json` map does.
    fn order(&self, other: &Self) -> Ordering {
        if self.escaped || other.escaped {
            Decoded(self.raw).cmp(Decoded(other.raw))
        } else {
            self.raw.cmp(other.raw)
        }
    }
}

/// The bytes a string body decodes to, one at a time (the body's escapes are canonical).
struct Decoded<'a>(&'a [u8]);

impl Iterator for Decoded<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let (b, rest) = match self.0 {
            [] => return None,
            [b'\\', b'u', _, _, hi, lo, rest @ ..] => {
                let nibble = |d: u8| hex_digit(d).unwrap_or(0);
                ((nibble(*hi) << 4) | nibble(*lo), rest)
            }
            [b'\\', c, rest @ ..] => (unescape(*c), rest),
            [b, rest @ ..] => (*b, rest),
        };
        self.0 = rest;
        Some(b)
    }
}

/// Whether `\u00` then the hex digits `hi` and `lo` is how `serde_json` writes that byte:
/// lowercase hex of a control character without a two-character escape.
fn is_canonical_u_escape(hi: u8, lo: u8) -> bool {
    match (hex_digit(hi), hex_digit(lo)) {
        (Some(hi @ 0..=1), Some(lo)) => short_escape((hi << 4) | lo).is_none(),
        _ => false,
    }
}

/// The letter of the two-character escape `serde_json` writes for `b`, if it has one.
fn short_escape(b: u8) -> Option<u8> {
    match b {
        0x08 => Some(b'b'),
        0x0c => Some(b'f'),
        b'\n' => Some(b'n'),
        b'\r' => Some(b'r'),
        b'\t' => Some(b't'),
        b'"' => Some(b'"'),
        b'\\' => Some(b'\\'),
        _ => None,
    }
}

/// The byte a two-character escape `\c` stands for.
fn unescape(c: u8) -> u8 {
    match c {
        b'b' => 0x08,
        b'f' => 0x0c,
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        other => other,
    }
}

/// The value of one lowercase hex digit.
fn hex_digit(d: u8) -> Option<u8> {
    match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::oplog::canonical::{
        canonical_json, write_canonical_json, write_json_string,
    };
    use crate::domain::oplog::test_support::arb_json;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    /// The reference decision: parse with `serde_json`, re-encode, compare.
    fn reference(text: &[u8]) -> bool {
        serde_json::from_slice::<Value>(text).is_ok_and(|v| canonical_json(&v) == text)
    }

    /// Fails the property case unless the checker and the reference agree on `text`.
    fn agrees(text: &[u8]) -> Result<(), TestCaseError> {
        prop_assert_eq!(
            check_canonical_json(text).is_ok(),
            reference(text),
            "{:?}",
            String::from_utf8_lossy(text)
        );
        Ok(())
    }

    /// Asserts that `text` is canonical, by the checker and by the reference.
    fn accepted(text: impl AsRef<[u8]>) {
        let text = text.as_ref();
        let shown = String::from_utf8_lossy(text);
        assert_eq!(check_canonical_json(text), Ok(()), "{shown}");
        assert!(reference(text), "reference refuses {shown}");
    }

    /// Asserts that `text` is not canonical, by the checker and by the reference.
    fn refused(text: impl AsRef<[u8]>) {
        let text = text.as_ref();
        let shown = String::from_utf8_lossy(text);
        assert!(check_canonical_json(text).is_err(), "accepted {shown}");
        assert!(!reference(text), "reference accepts {shown}");
    }

    /// `n` arrays nested in one another.
    fn nested_arrays(n: usize) -> String {
        "[".repeat(n) + &"]".repeat(n)
    }

    /// `n` objects nested in one another, the innermost holding `1`.
    fn nested_objects(n: usize) -> String {
        r#"{"a":"#.repeat(n) + "1" + &"}".repeat(n)
    }

    #[test]
    fn canonical_text_is_accepted() {
        accepted(br#"{"a":[true,false,null,{"y":2.5,"z":"x"}],"b":-1,"c":{}}"#);
        accepted(b"[[],{},[{}]]");
    }

    #[test]
    fn empty_input_is_refused_and_top_level_scalars_are_accepted() {
        refused(b"");
        for text in [
            "1", "-7", "\"a\"", "\"\"", "null", "true", "false", "[]", "{}", "0.5",
        ] {
            accepted(text);
        }
    }

    #[test]
    fn whitespace_outside_strings_is_refused() {
        for text in [
            " 1",
            "1 ",
            "1\n",
            "[1, 2]",
            "[ 1]",
            "[1 ]",
            "{\"a\": 1}",
            "{\"a\" :1}",
            "{ \"a\":1}",
            "{\"a\":1 }",
            "\t[]",
            "[]\r",
            "{}\n",
        ] {
            refused(text);
        }
        accepted("\" a \\n\"");
    }

    #[test]
    fn bytes_after_the_value_are_refused() {
        for text in [
            "1x",
            "{}{}",
            "[]]",
            "nullnull",
            "\"a\"\"b\"",
            "1,2",
            "{},",
            "true1",
        ] {
            refused(text);
        }
    }

    #[test]
    fn structure_errors_are_refused() {
        for text in [
            "[",
            "]",
            "{",
            "}",
            "[1,]",
            "[,1]",
            "[1,,2]",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{,}",
            "{1:2}",
            "{a:1}",
            "{\"a\",1}",
            "[1:2]",
            "[\"a\":1]",
            "{\"a\"::1}",
            ":",
            ",",
        ] {
            refused(text);
        }
    }

    #[test]
    fn literals_are_exact() {
        for text in ["true", "false", "null", "[true,false,null]"] {
            accepted(text);
        }
        for text in [
            "tru", "nul", "fals", "True", "NULL", "truee", "[nul]", "t", "nan", "NaN",
        ] {
            refused(text);
        }
    }

    #[test]
    fn keys_must_strictly_increase_by_byte_order() {
        accepted(r#"{"a":1,"b":2}"#);
        accepted(r#"{"":0,"a":1,"aa":2,"b":3}"#);
        // 'B' (0x42) < '_' (0x5f) < 'a' (0x61) < 'é' (0xc3 0xa9) < '☃' (0xe2 ...).
        accepted(r#"{"B":5,"_":4,"a":3,"é":1,"☃":0}"#);
        refused(r#"{"b":1,"a":2}"#);
        refused(r#"{"aa":1,"a":2}"#);
        refused(r#"{"é":1,"z":2}"#);
        // Duplicates: a parsed map keeps one, so the re-encoding is shorter.
        refused(r#"{"a":1,"a":2}"#);
        refused(r#"{"a":1,"a":1}"#);
        refused(r#"{"":1,"":1}"#);
    }

    #[test]
    fn keys_with_escapes_compare_decoded() {
        // `\"` decodes to 0x22, before '#' (0x23), though its backslash (0x5c) sorts after.
        accepted(r##"{"\"":1,"#":2}"##);
        refused(r##"{"#":1,"\"":2}"##);
        // `\u0000` (0x00) sorts before `\n` (0x0a), though `u` sorts after `n`.
        accepted(r#"{"\u0000":1,"\n":2}"#);
        refused(r#"{"\n":1,"\u0000":2}"#);
        // `\\` (0x5c) sorts after 'A' and before 'a'.
        accepted(r#"{"A":1,"\\":2,"a":3}"#);
        refused(r#"{"\\":1,"A":2}"#);
        // A key equal once decoded to its predecessor is a duplicate.
        refused(r#"{"\t":1,"\t":2}"#);
        accepted(r#"{"a\"":1,"a\"b":2,"a\\":3}"#);
        refused(r#"{"a\\":1,"a\"":2}"#);
    }

    #[test]
    fn nested_objects_keep_their_own_key_order() {
        accepted(r#"{"b":{"z":1,"zz":2},"c":{"a":2}}"#);
        accepted(r#"{"a":[{"b":1},{"a":1}],"b":0}"#);
        refused(r#"{"b":{"a":1},"a":{"a":2}}"#);
        refused(r#"{"a":{"b":1,"a":2}}"#);
    }

    #[test]
    fn strings_escape_exactly_as_serde_json_writes() {
        accepted(r#""\"\\\b\f\n\r\t""#);
        accepted(r#""\u0000\u0001\u000b\u000e\u001f\u0007""#);
        accepted("\"é ☃ / \u{7f} \u{1f600}\"");
        for text in [
            r#""\/""#,
            r#""\u0041""#,
            r#""\u00e9""#,
            r#""\u00E9""#,
            r#""\u001F""#,
            r#""\u000B""#,
            r#""\u0008""#,
            r#""\u0009""#,
            r#""\u000a""#,
            r#""\u000c""#,
            r#""\u000d""#,
            r#""\u0022""#,
            r#""\u005c""#,
            r#""\u007f""#,
            r#""\u0020""#,
            r#""\ud83d\ude00""#,
            r#""\ud800""#,
            r#""\x41""#,
            r#""\a""#,
            r#""\u00""#,
            r#""\u001""#,
            r#""\u00g0""#,
            r#""\""#,
            r#""\"#,
            r#""abc"#,
            "\"",
        ] {
            refused(text);
        }
    }

    #[test]
    fn raw_control_characters_in_strings_are_refused() {
        for b in 0u8..0x20 {
            refused([b'"', b, b'"']);
            refused([b'"', b'a', b, b'b', b'"']);
        }
        accepted([b'"', 0x7f, b'"']);
    }

    #[test]
    fn invalid_utf8_is_refused() {
        for text in [
            &b"\"\xff\""[..],
            b"\"\xc3\"",
            b"\"\xc0\xaf\"",
            b"\"\xed\xa0\x80\"",
            b"\"\xf4\x90\x80\x80\"",
            b"\xef\xbb\xbf1",
            b"[\xff]",
            b"1\xff",
        ] {
            refused(text);
        }
        accepted("\"\u{10ffff}\"");
    }

    #[test]
    fn numbers_are_accepted_only_as_serde_json_prints_them() {
        for text in [
            "0",
            "1",
            "42",
            "-7",
            "-1",
            "9223372036854775807",
            "9999999999999999999",
            "18446744073709551615",
            "-999999999999999999",
            "-9223372036854775807",
            "-9223372036854775808",
            "0.0",
            "-0.0",
            "1.0",
            "1.5",
            "0.1",
            "-2.5",
            "100000.0",
            "1000000000000000.0",
            "1e+16",
            "1e+20",
            "1.5e+300",
            "1.7976931348623157e+308",
            "1e-7",
            "0.00001",
            "1.23e-18",
            "5e-324",
            "-1.8446744073709552e+19",
        ] {
            accepted(text);
            accepted(format!("[{text}]"));
            accepted(format!("{{\"n\":{text}}}"));
        }
        for text in [
            // `-0` reads as the float -0.0.
            "-0",
            "00",
            "01",
            "-01",
            "1.",
            ".5",
            "+1",
            "-",
            "--1",
            "1e",
            "1e+",
            "1.e5",
            "0x1",
            "1e5",
            "1E5",
            "1.50",
            "1.0e16",
            "1e16",
            "1E+16",
            "1.5e300",
            "1.5E+300",
            "1e400",
            "-1e400",
            "1e-400",
            "1e0",
            "10000000000000000.0",
            "0.000001",
            // Past u64 and below i64, integers read as floats.
            "18446744073709551616",
            "-9223372036854775809",
            "123456789012345678901234567890",
            "Infinity",
            "-Infinity",
        ] {
            refused(text);
            refused(format!("[{text}]"));
            refused(format!("{{\"n\":{text}}}"));
        }
    }

    #[test]
    fn minus_zero_reads_as_a_float_in_serde_json() {
        let v: Value = serde_json::from_str("-0").unwrap();
        assert!(v.is_f64());
        assert_eq!(v.to_string(), "-0.0");
        let big: Value = serde_json::from_str("18446744073709551616").unwrap();
        assert!(big.is_f64());
    }

    #[test]
    fn the_depth_limit_is_serde_json_s() {
        // serde_json parses 127 nested containers and refuses 128.
        for nest in [nested_arrays, nested_objects] {
            assert!(serde_json::from_str::<Value>(&nest(127)).is_ok());
            assert!(serde_json::from_str::<Value>(&nest(128)).is_err());
            for n in 1..=140 {
                let text = nest(n);
                assert_eq!(
                    check_canonical_json(text.as_bytes()).is_ok(),
                    n <= 127,
                    "{n}"
                );
                assert_eq!(reference(text.as_bytes()), n <= 127, "{n}");
            }
        }
        // Mixed containers, and a deep item after shallow ones.
        let mixed = "[{\"a\":".repeat(64) + "0" + &"}]".repeat(64);
        refused(mixed);
        let mixed = "[{\"a\":".repeat(63) + "[0]" + &"}]".repeat(63);
        accepted(mixed);
        accepted(format!("[[1],{}]", nested_arrays(126)));
        refused(format!("[[1],{}]", nested_arrays(127)));
        // An overly deep tail is refused even though it is never closed.
        refused("[".repeat(200));
    }

    /// A byte-level damage to an encoding.
    #[derive(Debug, Clone)]
    enum Damage {
        /// Replaces the byte at an index.
        Replace(prop::sample::Index, u8),
        /// Inserts a byte before an index.
        Insert(prop::sample::Index, u8),
        /// Deletes the byte at an index.
        Delete(prop::sample::Index),
        /// Inserts a space before an index.
        Space(prop::sample::Index),
        /// Keeps only the bytes before an index.
        Truncate(prop::sample::Index),
    }

    /// Writes one object (chosen by `object` among those with two members or more) with the
    /// members at `member` and the next one swapped, or, if `duplicate`, the member at `member`
    /// written twice.
    #[derive(Debug, Clone, Copy)]
    struct Reorder {
        /// Which object, modulo their number.
        object: usize,
        /// Which member, modulo the number of members but the last.
        member: usize,
        /// Duplicate rather than swap.
        duplicate: bool,
    }

    /// Bytes likely to matter in JSON, and now and then any byte.
    fn arb_json_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            4 => prop::sample::select(b"{}[]:,\"\\ -+.eE0123456789abfnrtu/\n\x00\x1f".to_vec()),
            1 => any::<u8>(),
        ]
    }

    /// Any [`Damage`].
    fn arb_damage() -> impl Strategy<Value = Damage> {
        let index = any::<prop::sample::Index>;
        prop_oneof![
            (index(), arb_json_byte()).prop_map(|(i, b)| Damage::Replace(i, b)),
            (index(), arb_json_byte()).prop_map(|(i, b)| Damage::Insert(i, b)),
            index().prop_map(Damage::Delete),
            index().prop_map(Damage::Space),
            index().prop_map(Damage::Truncate),
        ]
    }

    /// Any [`Reorder`].
    fn arb_reorder() -> impl Strategy<Value = Reorder> {
        (any::<usize>(), any::<usize>(), any::<bool>()).prop_map(|(object, member, duplicate)| {
            Reorder {
                object,
                member,
                duplicate,
            }
        })
    }

    /// Applies `damage` to `bytes`.
    fn damage(bytes: &mut Vec<u8>, damage: &Damage) {
        let len = bytes.len();
        match damage {
            Damage::Insert(i, b) => bytes.insert(i.index(len + 1), *b),
            Damage::Space(i) => bytes.insert(i.index(len + 1), b' '),
            _ if len == 0 => {}
            Damage::Replace(i, b) => bytes[i.index(len)] = *b,
            Damage::Delete(i) => drop(bytes.remove(i.index(len))),
            Damage::Truncate(i) => bytes.truncate(i.index(len)),
        }
    }

    /// The canonical encoding of `v`, but reordered as `reorder` says (if `v` holds an object
    /// with two members or more).
    fn reordered(v: &Value, reorder: Reorder) -> Vec<u8> {
        let mut out = Vec::new();
        let objects = count_objects(v);
        if objects == 0 {
            write_canonical_json(v, &mut out);
        } else {
            let mut target = reorder.object % objects;
            write_reordered(v, &mut target, reorder, &mut out);
        }
        out
    }

    /// How many objects with at least two members `v` holds, itself included.
    fn count_objects(v: &Value) -> usize {
        match v {
            Value::Array(items) => items.iter().map(count_objects).sum(),
            Value::Object(map) => {
                usize::from(map.len() >= 2) + map.values().map(count_objects).sum::<usize>()
            }
            _ => 0,
        }
    }

    /// Writes `v` canonically, except that the `target`-th object with two members or more
    /// (in writing order) is reordered as `reorder` says.
    fn write_reordered(v: &Value, target: &mut usize, reorder: Reorder, out: &mut Vec<u8>) {
        match v {
            Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_reordered(item, target, reorder, out);
                }
                out.push(b']');
            }
            Value::Object(map) => {
                let mut members: Vec<(&String, &Value)> = map.iter().collect();
                if members.len() >= 2 {
                    if *target == 0 {
                        let i = reorder.member % (members.len() - 1);
                        if reorder.duplicate {
                            members.insert(i, members[i]);
                        } else {
                            members.swap(i, i + 1);
                        }
                    }
                    *target = target.wrapping_sub(1);
                }
                out.push(b'{');
                for (i, (key, item)) in members.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_json_string(key, out);
                    out.push(b':');
                    write_reordered(item, target, reorder, out);
                }
                out.push(b'}');
            }
            other => write_canonical_json(other, out),
        }
    }

    #[test]
    fn reordered_objects_are_refused() {
        let v = json!({"a": 1, "b": {"c": 2, "d": 3}});
        let reorder = |object: usize, duplicate| Reorder {
            object,
            member: 0,
            duplicate,
        };
        let outer = reordered(&v, reorder(0, false));
        assert_eq!(outer, br#"{"b":{"c":2,"d":3},"a":1}"#);
        refused(outer);
        let inner = reordered(&v, reorder(1, true));
        assert_eq!(inner, br#"{"a":1,"b":{"c":2,"c":2,"d":3}}"#);
        refused(inner);
    }

    /// Whether `b` ends a run of plain string bytes, one byte at a time.
    fn is_special(b: u8) -> bool {
        b < 0x20 || b == b'"' || b == b'\\'
    }

    #[test]
    fn the_word_scan_finds_every_special_byte_at_every_position() {
        for special in (0u8..0x20).chain([b'"', b'\\']) {
            for at in 0..8 {
                for filler in [b'a', b' ', 0x7f, 0x80, 0xff, b'!', b'#', b'[', b']'] {
                    let mut word = [filler; 8];
                    word[at] = special;
                    assert!(has_special_byte(u64::from_le_bytes(word)), "{word:?}");
                    let mut text = vec![filler; 21];
                    text[8 + at] = special;
                    assert_eq!(plain_run(&text), Some(8 + at));
                }
            }
        }
        for b in (0x20u8..=0xff).filter(|&b| !is_special(b)) {
            assert!(!has_special_byte(u64::from_le_bytes([b; 8])), "{b:#x}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The word-at-a-time scan finds the same byte as a byte-at-a-time one.
        #[test]
        fn the_word_scan_agrees_with_a_byte_scan(
            bytes in prop::collection::vec(
                prop_oneof![4 => 0x20u8..=0xff, 1 => any::<u8>()],
                0..40,
            ),
        ) {
            prop_assert_eq!(plain_run(&bytes), bytes.iter().position(|&b| is_special(b)));
            for word in bytes.as_chunks::<8>().0 {
                prop_assert_eq!(
                    has_special_byte(u64::from_le_bytes(*word)),
                    word.iter().any(|&b| is_special(b))
                );
            }
        }

        /// Everything `canonical_json` writes is accepted.
        #[test]
        fn canonical_encodings_are_accepted(v in arb_json()) {
            let bytes = canonical_json(&v);
            prop_assert_eq!(check_canonical_json(&bytes), Ok(()));
        }

        /// Damaged canonical encodings (members swapped or duplicated, bytes replaced, inserted
        /// or deleted, spaces inserted, truncation) get the reference's answer.
        #[test]
        fn damaged_encodings_agree_with_the_reference(
            v in arb_json(),
            reorder in proptest::option::of(arb_reorder()),
            damages in prop::collection::vec(arb_damage(), 0..3),
        ) {
            let mut bytes = match reorder {
                Some(reorder) => reordered(&v, reorder),
                None => canonical_json(&v),
            };
            for d in &damages {
                damage(&mut bytes, d);
            }
            agrees(&bytes)?;
        }

        /// Short strings of JSON punctuation, digits and letters get the reference's answer.
        #[test]
        fn arbitrary_short_text_agrees_with_the_reference(
            bytes in prop::collection::vec(arb_json_byte(), 0..24),
        ) {
            agrees(&bytes)?;
        }

        /// Number-shaped tokens, well-formed or not, get the reference's answer.
        #[test]
        fn number_tokens_agree_with_the_reference(
            token in "-?[0-9]{1,24}(\\.[0-9]{0,6})?([eE][+-]?[0-9]{0,4})?",
        ) {
            for text in [token.clone(), format!("[{token}]"), format!("{{\"a\":{token}}}")] {
                agrees(text.as_bytes())?;
            }
        }

        /// Every finite float, as serde_json prints it, is accepted.
        #[test]
        fn printed_floats_are_accepted(f in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
            let text = Value::from(f).to_string();
            prop_assert_eq!(check_canonical_json(text.as_bytes()), Ok(()), "{}", text);
            prop_assert!(reference(text.as_bytes()));
        }
    }
}
