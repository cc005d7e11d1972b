//! JSON text on the event hot path. [`top_level_fields`] makes one pass over
//! a JSON object and picks out named top-level fields as raw JSON text: the
//! event validator's fast path. [`plain_len`] finds where a string stops
//! being copyable as it is, for readers and writers alike.
//!
//! `top_level_fields` answers only for plain input: strings without escapes, nesting up to
//! [`MAX_DEPTH`], no named field given twice. For anything else, including
//! every invalid document, it answers `None` and the caller asks serde_json,
//! which then decides and words the error. So the one promise here is that
//! whatever it accepts, serde_json accepts too, with the same field values.

/// Deepest nesting followed here; deeper documents go to serde_json.
const MAX_DEPTH: usize = 32;

/// Bytes that end the plain run of a JSON string: `"`, `\` and controls.
const STRING_STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = b < 0x20 || b == b'"' as usize || b == b'\\' as usize;
        b += 1;
    }
    t
};

/// How many bytes of `s` come before its first `"`, `\` or control byte
/// (`s.len()` if none): the part a JSON string holds as it is. Eight bytes
/// at a time, since strings are most of an event, read or written.
pub fn plain_len(s: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // High bit of each byte below `n`; exact up to the first such byte,
    // which is all that is used.
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * n as u64) & !w & HIGH;
    let mut chunks = s.chunks_exact(8);
    for (i, chunk) in chunks.by_ref().enumerate() {
        let w = u64::from_le_bytes(chunk.try_into().expect("chunks of eight"));
        let stop = below(w, 0x20) | below(w ^ (ONES * b'"' as u64), 1) | below(w ^ (ONES * b'\\' as u64), 1);
        if stop != 0 {
            return i * 8 + (stop.trailing_zeros() / 8) as usize;
        }
    }
    let tail = chunks.remainder();
    s.len() - tail.len() + tail.iter().position(|&b| STRING_STOP[b as usize]).unwrap_or(tail.len())
}

/// The raw JSON text of each named top-level field of the object `text`,
/// `null` read as absent; `slot` maps a key to its place in the answer.
/// `None`: not plain, valid JSON (see the module docs); ask serde_json.
pub(crate) fn top_level_fields<const N: usize>(
    text: &str,
    slot: impl Fn(&[u8]) -> Option<usize>,
) -> Option<[Option<&str>; N]> {
    let mut r = Reader { text, i: 0 };
    let mut out = [None; N];
    let mut seen = [false; N];
    r.ws();
    r.eat(b'{')?;
    r.ws();
    if r.eat(b'}').is_none() {
        loop {
            let key = r.string()?;
            r.ws();
            r.eat(b':')?;
            r.ws();
            let start = r.i;
            r.value(0)?;
            if let Some(k) = slot(key) {
                // A repeated field is serde's error to report.
                if std::mem::replace(seen.get_mut(k)?, true) {
                    return None;
                }
                let raw = text.get(start..r.i)?;
                out[k] = (raw != "null").then_some(raw);
            }
            r.ws();
            match r.next()? {
                b',' => r.ws(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    r.ws();
    (r.i == text.len()).then_some(out)
}

/// A cursor over the document; every step checks its bounds.
struct Reader<'a> {
    text: &'a str,
    i: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        Some(b)
    }

    /// Consumes `want` if it is next.
    fn eat(&mut self, want: u8) -> Option<()> {
        (self.peek()? == want).then(|| self.i += 1)
    }

    /// JSON whitespace: space, tab, line feed, carriage return.
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// The bytes from the cursor on.
    fn rest(&self) -> &'a [u8] {
        self.text.as_bytes().get(self.i..).unwrap_or_default()
    }

    /// A string without escapes; its content's bytes (compared, never
    /// sliced as text, so no char-boundary checks).
    fn string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let rest = self.rest();
        let len = plain_len(rest);
        let (content, after) = rest.split_at_checked(len)?;
        if after.first() != Some(&b'"') {
            return None;
        }
        self.i += len + 1;
        Some(content)
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' if depth < MAX_DEPTH => self.nested(b'}', |r| {
                r.string()?;
                r.ws();
                r.eat(b':')?;
                r.ws();
                r.value(depth + 1)
            }),
            b'[' if depth < MAX_DEPTH => self.nested(b']', |r| r.value(depth + 1)),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// An object or array: its opening byte, then `member`s separated by
    /// commas, then `close`.
    fn nested(&mut self, close: u8, member: impl Fn(&mut Self) -> Option<()>) -> Option<()> {
        self.i += 1;
        self.ws();
        if self.eat(close).is_some() {
            return Some(());
        }
        loop {
            member(self)?;
            self.ws();
            match self.next()? {
                b',' => self.ws(),
                b if b == close => return Some(()),
                _ => return None,
            }
        }
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        let end = self.i + word.len();
        (self.text.as_bytes().get(self.i..end)? == word.as_bytes()).then(|| self.i = end)
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Option<()> {
        let _ = self.eat(b'-');
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.eat(b'.').is_some() {
            self.digit()?;
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.digit()?;
            self.digits();
        }
        Some(())
    }

    fn digit(&mut self) -> Option<()> {
        self.peek()?.is_ascii_digit().then(|| self.i += 1)
    }

    fn digits(&mut self) {
        let rest = self.rest();
        self.i += rest.iter().position(|b| !b.is_ascii_digit()).unwrap_or(rest.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;
    use serde_json::value::RawValue;

    /// The reference: serde_json's view of the same three fields.
    #[derive(Deserialize)]
    struct Abc<'a> {
        #[serde(borrow, default)]
        a: Option<&'a RawValue>,
        #[serde(borrow, default)]
        b: Option<&'a RawValue>,
        #[serde(borrow, default)]
        c: Option<&'a RawValue>,
    }

    fn slot(key: &[u8]) -> Option<usize> {
        ["a", "b", "c"].iter().position(|k| k.as_bytes() == key)
    }

    fn fast(text: &str) -> Option<[Option<&str>; 3]> {
        top_level_fields(text, slot)
    }

    fn serde(text: &str) -> Option<[Option<&str>; 3]> {
        let v: Abc<'_> = serde_json::from_str(text).ok()?;
        Some([v.a, v.b, v.c].map(|f| f.map(RawValue::get)))
    }

    /// Plain input: valid for serde_json (so no repeated named field) and
    /// without a backslash anywhere.
    fn plain(text: &str) -> bool {
        !text.contains('\\') && serde(text).is_some()
    }

    #[test]
    fn plain_len_finds_the_first_stop_byte_anywhere() {
        let plain = |s: &[u8]| s.iter().position(|&b| STRING_STOP[b as usize]).unwrap_or(s.len());
        for len in 0..20 {
            for at in 0..=len {
                for stop in [b'"', b'\\', 0x00, 0x1f] {
                    for fill in [b'a', b' ', 0x7f, 0xc3, 0xff, b'!', b'#', b'[', b']'] {
                        let mut s = vec![fill; len];
                        if at < len {
                            s[at] = stop;
                        }
                        // A second stop byte later must not move the answer.
                        s.push(b'"');
                        assert_eq!(plain_len(&s), plain(&s), "{s:?}");
                        assert_eq!(plain_len(&s), at, "{s:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn picks_the_named_fields_as_raw_text() {
        let text = r#" { "a" : "x@y" ,"z":[1,{"a":2}],"c":{"k": [true, false, null]},"b":-0.5e+3 } "#;
        assert_eq!(fast(text), Some([Some("\"x@y\""), Some("-0.5e+3"), Some(r#"{"k": [true, false, null]}"#)]));
        assert_eq!(fast(text), serde(text));
    }

    #[test]
    fn null_is_absent_as_serde_reads_it() {
        let text = r#"{"a":null,"b":1}"#;
        assert_eq!(fast(text), Some([None, Some("1"), None]));
        assert_eq!(fast(text), serde(text));
    }

    #[test]
    fn leaves_anything_unusual_to_serde() {
        for text in [
            r#"{"a":"x\"y"}"#,       // escape in a value: serde_json accepts
            r#"{"\u0061":1}"#,       // escaped key: serde_json reads it as "a"
            r#"{"a":1,"a":2}"#,      // repeated field: serde_json rejects
            "{\"a\":\"tab\there\"}", // raw control byte: serde_json rejects
            r#"{"a":1,}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":-}"#,
            r#"{"a":1e}"#,
            r#"{"a":tru}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":{"k"}}"#,
            r#"{"a":1} x"#,
            r#"{"a":1"#,
            r#"["a",1]"#,
            "",
        ] {
            assert_eq!(fast(text), None, "{text}");
        }
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(fast(&deep), None);
        let shallow = format!("{{\"a\":{}1{}}}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(fast(&shallow), serde(&shallow));
        assert!(fast(&shallow).is_some());
    }

    /// Small JSON documents over the named keys and a few others.
    fn doc() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| f.to_string()),
            "[ -~é\\\\\"\t]{0,6}".prop_map(|s| serde_json::to_string(&s).expect("string")),
        ];
        let value = leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(" , "))),
                prop::collection::vec(("[a-d]", inner), 0..4).prop_map(|kv| {
                    let members: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{ {} }}", members.join(","))
                }),
            ]
        });
        prop::collection::vec(("[a-e]", value, "[ \t\n\r]{0,2}"), 0..6).prop_map(|kv| {
            let members: Vec<String> = kv.iter().map(|(k, v, ws)| format!("\"{k}\"{ws}:{ws}{v}")).collect();
            format!("{{{}}}", members.join(","))
        })
    }

    /// A document with one byte inserted, removed or replaced.
    fn mutated() -> impl Strategy<Value = String> {
        (
            doc(),
            any::<prop::sample::Index>(),
            0..3u8,
            prop::sample::select(b"{}[]\":,.-+eE0 \\ntfu\x01\x1f\x7f".to_vec()),
        )
            .prop_map(|(d, at, op, byte)| {
                let mut b = d.into_bytes();
                let i = at.index(b.len() + 1);
                match op {
                    0 => b.insert(i, byte),
                    1 if i < b.len() => drop(b.remove(i)),
                    _ if i < b.len() => b[i] = byte,
                    _ => {}
                }
                String::from_utf8_lossy(&b).into_owned()
            })
    }

    /// Whatever the fast path accepts, serde_json reads the same; and it
    /// accepts every plain document, or it would never be used.
    fn agrees(text: &str) -> Result<(), TestCaseError> {
        let got = fast(text);
        if got.is_some() {
            prop_assert_eq!(got, serde(text), "{}", text);
        }
        prop_assert_eq!(got.is_some(), plain(text), "{}", text);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        #[test]
        fn agrees_with_serde_json_on_documents(text in doc()) {
            agrees(&text)?;
        }

        #[test]
        fn agrees_with_serde_json_on_broken_documents(text in mutated()) {
            agrees(&text)?;
        }
    }
}
