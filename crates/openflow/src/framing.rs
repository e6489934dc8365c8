//! Cutting a byte stream into OpenFlow messages.
//!
//! A read from the socket may hold half a message, or several; the 16-bit
//! length in every header (OpenFlow 1.3.5 §7.1) says where each ends.

use bytes::{Buf, BytesMut};

use crate::message::{Header, Message, OFP_HEADER_LEN};
use crate::wire::DecodeError;

/// Accumulates bytes from a stream and yields whole messages.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
}

impl FrameDecoder {
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Appends bytes as they came from the stream.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as a message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole message as raw bytes, or `None` until more arrive.
    /// An error means the stream is corrupt (a header whose length is
    /// below 8); the connection cannot recover from that.
    pub fn next_frame(&mut self) -> Result<Option<BytesMut>, DecodeError> {
        if self.buf.len() < OFP_HEADER_LEN {
            return Ok(None);
        }
        let header = Header::parse(&self.buf[..OFP_HEADER_LEN])?;
        let len = usize::from(header.length);
        if self.buf.len() < len {
            self.buf.reserve(len - self.buf.len());
            return Ok(None);
        }
        Ok(Some(self.buf.split_to(len)))
    }

    /// The next whole message decoded, with its xid.
    pub fn next_message(&mut self) -> Result<Option<(u32, Message)>, DecodeError> {
        match self.next_frame()? {
            Some(frame) => Message::decode(&frame).map(Some),
            None => Ok(None),
        }
    }

    /// Drops everything buffered.
    pub fn clear(&mut self) {
        self.buf.advance(self.buf.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::Action;
    use crate::flow::FlowMod;
    use crate::message::Hello;
    use crate::oxm::Match;

    fn stream() -> (Vec<u8>, Vec<(u32, Message)>) {
        let msgs = vec![
            (1, Message::Hello(Hello::of13())),
            (2, Message::EchoRequest(vec![9; 5])),
            (
                3,
                Message::FlowMod(FlowMod::add(
                    0,
                    4,
                    Match::new().in_port(2).vlan_vid(Some(1)),
                    vec![Action::set_vlan_vid(101), Action::normal()],
                )),
            ),
            (4, Message::BarrierReply),
        ];
        let mut bytes = Vec::new();
        for (xid, m) in &msgs {
            m.encode_into(*xid, &mut bytes).expect("encode");
        }
        (bytes, msgs)
    }

    fn drain(d: &mut FrameDecoder, out: &mut Vec<(u32, Message)>) {
        while let Some(m) = d.next_message().expect("valid stream") {
            out.push(m);
        }
    }

    #[test]
    fn several_messages_in_one_read() {
        let (bytes, msgs) = stream();
        let mut d = FrameDecoder::new();
        d.extend(&bytes);
        let mut got = Vec::new();
        drain(&mut d, &mut got);
        assert_eq!(got, msgs);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn messages_split_across_reads_at_every_size() {
        let (bytes, msgs) = stream();
        for chunk in 1..bytes.len() {
            let mut d = FrameDecoder::new();
            let mut got = Vec::new();
            for piece in bytes.chunks(chunk) {
                d.extend(piece);
                drain(&mut d, &mut got);
            }
            assert_eq!(got, msgs, "chunk size {chunk}");
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn corrupt_length_is_an_error() {
        let mut d = FrameDecoder::new();
        d.extend(&[4, 0, 0, 2, 0, 0, 0, 0]);
        assert!(d.next_frame().is_err());
        d.clear();
        assert_eq!(d.buffered(), 0);
        assert_eq!(d.next_frame(), Ok(None));
    }
}
