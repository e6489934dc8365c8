//! Splitting the OVSDB byte stream into messages.
//!
//! RFC 7047 §4 sends JSON-RPC 1.0 messages over a stream with no framing at
//! all: objects simply follow each other, with optional whitespace between
//! them. A read may therefore end in the middle of a message, or contain
//! several. [`MessageSplitter`] finds message boundaries incrementally by
//! tracking nesting depth, whether it is inside a string, and whether the
//! previous string byte was a backslash; it never re-scans bytes it has seen,
//! so a large message arriving in many small reads costs linear time.
//!
//! It works on raw bytes: in UTF-8 every byte of a multi-byte character has
//! its high bit set, so none can be mistaken for `{`, `}`, `"` or `\`.
//! Validating the JSON (and the UTF-8) is left to `serde_json`, which parses
//! each complete message.

use bytes::{Buf, Bytes, BytesMut};

/// The stream can no longer be split: something other than an object or
/// whitespace appeared between messages. The connection cannot recover,
/// since the next message boundary is unknown.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("OVSDB stream has byte {byte:#04x} outside a JSON object at offset {offset}")]
pub struct FrameError {
    pub byte: u8,
    pub offset: u64,
}

/// Incremental splitter of concatenated JSON objects.
#[derive(Debug, Default)]
pub struct MessageSplitter {
    /// Unconsumed input; always starts at the first byte of a message
    /// (leading whitespace is dropped as soon as it is seen).
    buf: BytesMut,
    /// How many bytes of `buf` have already been scanned.
    scanned: usize,
    /// Nesting depth of `{`/`[` at `scanned`; zero between messages.
    depth: usize,
    in_string: bool,
    /// The previous byte was a backslash inside a string.
    escaped: bool,
    /// Bytes consumed from the stream before `buf`, for error messages.
    consumed: u64,
}

impl MessageSplitter {
    /// The buffer to read into. Callers may only append to it (as
    /// `AsyncReadExt::read_buf` does); scanned bytes must stay as they are.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Appends input.
    #[cfg(test)]
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Returns the next complete message, `None` when more input is needed.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, FrameError> {
        while self.scanned < self.buf.len() {
            let byte = self.buf[self.scanned];
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if byte == b'\\' {
                    self.escaped = true;
                } else if byte == b'"' {
                    self.in_string = false;
                }
                self.scanned += 1;
                continue;
            }
            if self.depth == 0 {
                // Between messages: `scanned` is 0 here because both
                // whitespace and finished messages are cut off the front.
                match byte {
                    b' ' | b'\t' | b'\n' | b'\r' => {
                        self.buf.advance(1);
                        self.consumed += 1;
                        continue;
                    }
                    b'{' => {}
                    _ => {
                        return Err(FrameError {
                            byte,
                            offset: self.consumed + self.scanned as u64,
                        });
                    }
                }
            }
            self.scanned += 1;
            match byte {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        let message = self.buf.split_to(self.scanned).freeze();
                        self.consumed += self.scanned as u64;
                        self.scanned = 0;
                        return Ok(Some(message));
                    }
                }
                _ => {}
            }
        }
        Ok(None)
    }

    /// True when a message has started but not ended, i.e. an EOF now
    /// would cut it off.
    pub fn is_mid_message(&self) -> bool {
        !self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// Feeds `chunks` one by one and collects every message, parsed.
    fn split(chunks: &[&[u8]]) -> Vec<Value> {
        let mut splitter = MessageSplitter::default();
        let mut out = Vec::new();
        for chunk in chunks {
            splitter.extend(chunk);
            while let Some(m) = splitter.next_message().expect("valid stream") {
                out.push(serde_json::from_slice(&m).expect("message is valid JSON"));
            }
        }
        assert!(!splitter.is_mid_message(), "input left over");
        out
    }

    #[test]
    fn one_message_arriving_byte_by_byte() {
        let text = br#"{"id":1,"result":[{"rows":[{"name":"br-int"}]}],"error":null}"#;
        let chunks: Vec<&[u8]> = text.chunks(1).collect();
        let mut splitter = MessageSplitter::default();
        for (i, chunk) in chunks.iter().enumerate() {
            splitter.extend(chunk);
            let got = splitter.next_message().expect("valid stream");
            if i + 1 < chunks.len() {
                assert!(got.is_none(), "message ended early at byte {i}");
                assert!(splitter.is_mid_message());
            } else {
                assert_eq!(got.as_deref(), Some(&text[..]));
            }
        }
    }

    #[test]
    fn several_messages_in_one_read() {
        let got = split(&[br#"{"id":1}{"id":2}{"method":"echo","params":[],"id":"echo"}"#]);
        assert_eq!(
            got,
            vec![
                json!({"id": 1}),
                json!({"id": 2}),
                json!({"method": "echo", "params": [], "id": "echo"})
            ]
        );
    }

    #[test]
    fn braces_inside_strings_do_not_count() {
        let got = split(&[br#"{"a":"}}}{{{[]"}"#, br#"{"b":"{"}"#]);
        assert_eq!(got, vec![json!({"a": "}}}{{{[]"}), json!({"b": "{"})]);
    }

    #[test]
    fn escaped_quotes_do_not_end_strings() {
        let got = split(&[br#"{"a":"say \"}\" twice"}{"b":1}"#]);
        assert_eq!(got, vec![json!({"a": "say \"}\" twice"}), json!({"b": 1})]);
    }

    #[test]
    fn an_escaped_backslash_before_a_quote_ends_the_string() {
        // `"x\\"` is the string `x\`: the quote after the pair closes it,
        // so the `}` that follows closes the message.
        let got = split(&[br#"{"a":"x\\"}{"b":"\\\"}\\"}"#]);
        assert_eq!(got, vec![json!({"a": "x\\"}), json!({"b": "\\\"}\\"})]);
    }

    #[test]
    fn escapes_split_across_reads() {
        let got = split(&[br#"{"a":"x\"#, br#""}"#, br#""}"#]);
        assert_eq!(got, vec![json!({"a": "x\"}"})]);
    }

    #[test]
    fn whitespace_between_and_inside_messages() {
        let got = split(&[b" \n{ \"a\" : [ 1 , 2 ] }\r\n\t", b"  {\n}\n"]);
        assert_eq!(got, vec![json!({"a": [1, 2]}), json!({})]);
    }

    #[test]
    fn multi_byte_utf8_split_inside_a_character() {
        let text = r#"{"name":"brücke-日本-🦀","q":"\"}"}"#.as_bytes();
        let chunks: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(
            split(&chunks),
            vec![json!({"name": "brücke-日本-🦀", "q": "\"}"})]
        );
    }

    #[test]
    fn garbage_between_messages_is_an_error_with_its_offset() {
        let mut splitter = MessageSplitter::default();
        splitter.extend(b"{}  x{}");
        assert!(splitter.next_message().expect("first message").is_some());
        assert_eq!(
            splitter.next_message(),
            Err(FrameError {
                byte: b'x',
                offset: 4
            })
        );
    }

    /// Arbitrary JSON without floats (whose text form need not round-trip
    /// exactly), with strings full of the characters the splitter cares
    /// about.
    fn json_value() -> impl Strategy<Value = Value> {
        // A `&str` strategy generates strings matching it as a regex.
        let text = r#"[a-z{}\[\]"\\ é日🦀\n]{0,12}"#;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            text.prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(text, inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn json_object() -> impl Strategy<Value = Value> {
        prop::collection::btree_map("[a-z\"{}\\\\]{0,6}", json_value(), 0..5)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    proptest! {
        #[test]
        fn concatenated_objects_split_anywhere_decode_back(
            messages in prop::collection::vec((json_object(), any::<bool>(), "[ \n\t\r]{0,3}"), 0..8),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let mut stream = Vec::new();
            for (m, pretty, gap) in &messages {
                let text = if *pretty { serde_json::to_vec_pretty(m) } else { serde_json::to_vec(m) };
                stream.extend(text.expect("serialise"));
                stream.extend(gap.as_bytes());
            }
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            cuts.push(0);
            cuts.push(stream.len());
            cuts.sort_unstable();
            let chunks: Vec<&[u8]> = cuts.windows(2).map(|w| &stream[w[0]..w[1]]).collect();
            let want: Vec<Value> = messages.into_iter().map(|(m, _, _)| m).collect();
            prop_assert_eq!(split(&chunks), want);
        }
    }
}
