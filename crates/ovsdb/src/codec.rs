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

/// The longest message accepted: 64 MiB. The largest a lab's server
/// sends is the read of a node's whole switch, 0.7 MB for a node of 1000
/// instances (1026 ports with os-vif's `external_ids`, measured), the
/// most `ovslab generate` puts on one node; a compute node of the
/// 10,000-instance lab (256 ports) is about a quarter of that. A message
/// still growing past a hundred times the largest is a server gone
/// wrong: the stream cannot be split any more, rather than buffered for
/// as long as the server sends.
pub const MAX_MESSAGE: usize = 64 << 20;

/// The stream can no longer be split, and the connection cannot recover,
/// since the next message boundary is unknown.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// Something other than an object or whitespace appeared between
    /// messages.
    #[error("OVSDB stream has byte {byte:#04x} outside a JSON object at offset {offset}")]
    Garbage { byte: u8, offset: u64 },
    /// A message went on past the longest accepted without ending.
    #[error(
        "OVSDB message at offset {offset} is longer than {}, the most accepted",
        size(*limit)
    )]
    TooLong { offset: u64, limit: usize },
}

/// `64 MiB`, `1000 bytes`.
fn size(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// Incremental splitter of concatenated JSON objects.
#[derive(Debug)]
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
    /// The longest message accepted.
    limit: usize,
}

impl Default for MessageSplitter {
    fn default() -> Self {
        MessageSplitter::with_limit(MAX_MESSAGE)
    }
}

impl MessageSplitter {
    /// A splitter that refuses a message longer than `limit` bytes
    /// ([`MAX_MESSAGE`] by default).
    pub fn with_limit(limit: usize) -> MessageSplitter {
        MessageSplitter {
            buf: BytesMut::new(),
            scanned: 0,
            depth: 0,
            in_string: false,
            escaped: false,
            consumed: 0,
            limit,
        }
    }

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
    /// A message that has grown past the limit without ending is an error
    /// as soon as its next byte is seen, so no more than the limit and one
    /// read is ever buffered.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, FrameError> {
        while self.scanned < self.buf.len() {
            // Inside a message `buf` starts with it: `scanned` is its length
            // so far.
            if self.depth > 0 && self.scanned >= self.limit {
                return Err(FrameError::TooLong {
                    offset: self.consumed,
                    limit: self.limit,
                });
            }
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
                        return Err(FrameError::Garbage {
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
            Err(FrameError::Garbage {
                byte: b'x',
                offset: 4
            })
        );
    }

    #[test]
    fn a_message_longer_than_the_limit_is_an_error_once_past_it() {
        // At the limit exactly: a message.
        let mut splitter = MessageSplitter::with_limit(10);
        splitter.extend(br#"{"a":"12"}"#);
        assert_eq!(
            splitter.next_message().unwrap().as_deref(),
            Some(&br#"{"a":"12"}"#[..])
        );
        // One byte more, whether the rest is inside a string or not, and
        // the stream cannot be split any more; it says where the message
        // began. Whitespace between messages is not a message.
        for long in [&br#"  {"a":"123"}"#[..], br#"  {"a": [1,2]}"#] {
            let mut splitter = MessageSplitter::with_limit(10);
            splitter.extend(br#"{}"#);
            assert!(splitter.next_message().unwrap().is_some());
            splitter.extend(long);
            assert_eq!(
                splitter.next_message(),
                Err(FrameError::TooLong {
                    offset: 4,
                    limit: 10
                })
            );
        }
        // Unended, with the real limit: an error once past 64 MiB, whatever
        // comes after.
        let mut splitter = MessageSplitter::default();
        splitter.extend(br#"{"result":""#);
        let chunk = vec![b'a'; 1 << 20];
        let mut fed = 11;
        let error = loop {
            splitter.extend(&chunk);
            fed += chunk.len();
            match splitter.next_message() {
                Ok(None) => assert!(fed <= MAX_MESSAGE, "{fed} bytes buffered"),
                Ok(Some(_)) => panic!("no message ended"),
                Err(e) => break e,
            }
        };
        assert_eq!(
            error.to_string(),
            "OVSDB message at offset 0 is longer than 64 MiB, the most accepted"
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
