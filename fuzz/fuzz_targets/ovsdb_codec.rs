//! What an ovsdb-server sends: the byte stream, cut into reads of a size
//! the first byte picks, split into messages and parsed as JSON-RPC. Must
//! end in messages, a framing error or a parse error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ovslab_ovsdb::decode::{Incoming, MessageSplitter};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut splitter = MessageSplitter::default();
    for read in stream.chunks(chunk) {
        splitter.buffer_mut().extend_from_slice(read);
        loop {
            match splitter.next_message() {
                Ok(Some(message)) => {
                    // Every message the splitter cuts is one JSON object:
                    // it starts with `{` and ends with `}` or `]`.
                    assert_eq!(message.first(), Some(&b'{'));
                    assert!(matches!(message.last(), Some(b'}' | b']')));
                    let _ = Incoming::parse(&message);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = splitter.is_mid_message();
});
