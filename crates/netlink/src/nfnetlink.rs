//! An nfnetlink socket whose every send and receive has a deadline, and
//! nfnetlink messages on top of netlink-packet-core.
//!
//! The kernel answers nfnetlink requests (ipset, nf_tables' generation)
//! synchronously, in microseconds; a request still unanswered after
//! [`DEADLINE`] means a kernel stuck on a lock, and the caller is told so
//! instead of waiting with it.

use std::convert::Infallible;
use std::io;
use std::time::Duration;

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, ErrorMessage, NetlinkBuffer, NetlinkDeserializable,
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable, NlaBuffer, NlasIterator,
};
use rtnetlink::sys::Socket;
use rtnetlink::sys::protocols::NETLINK_NETFILTER;

/// How long one send or receive may block.
pub const DEADLINE: Duration = Duration::from_secs(2);

/// A blocking nfnetlink socket of the calling thread's namespace, with
/// `SO_SNDTIMEO` and `SO_RCVTIMEO` set to `deadline`.
pub(crate) fn socket(deadline: Duration) -> io::Result<Socket> {
    let socket = Socket::new(NETLINK_NETFILTER)?;
    for option in [libc::SO_SNDTIMEO, libc::SO_RCVTIMEO] {
        crate::sockopt::set_timeout(&socket, option, deadline)?;
    }
    Ok(socket)
}

/// Receives one datagram; a receive that outlived the socket's deadline
/// is an error of kind [`io::ErrorKind::TimedOut`].
pub(crate) fn recv(socket: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    socket.recv(&mut &mut buf[..], 0).map_err(timed_out)
}

/// Sends one datagram, likewise bounded.
pub(crate) fn send(socket: &Socket, datagram: &[u8]) -> io::Result<usize> {
    socket.send(datagram, 0).map_err(timed_out)
}

fn timed_out(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the kernel did not answer within {} s",
                DEADLINE.as_secs_f64()
            ),
        )
    } else {
        e
    }
}

/// `sizeof(struct nlmsghdr)`.
const HEADER_LEN: usize = 16;
/// `sizeof(struct nfgenmsg)`.
const NFGENMSG_LEN: usize = 4;
/// `NFNETLINK_V0`, the only version of `struct nfgenmsg`.
const NFNETLINK_V0: u8 = 0;

/// What follows the netlink header of an nfnetlink message: `struct
/// nfgenmsg` (family, version, resource id 0), then attributes.
/// netlink-packet-core does the rest: the header, acknowledgements and
/// refusals (`NLMSG_ERROR`), the end of a dump (`NLMSG_DONE`), and the
/// attributes' encoding and walking.
///
/// These 4 bytes are ours because netlink-packet-netfilter 0.4 (which has
/// them, on the same netlink-packet-core 0.9) would not save more: ipset is
/// none of its subsystems, so a listed set would come as `DefaultNla`s,
/// which do not hand out their values, and it refuses a message with one
/// malformed attribute where the replies here read what is whole; all that
/// for five more crates (it, derive_more and the latter's build helpers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Body {
    /// The netlink message type: `subsystem << 8 | command`.
    pub message_type: u16,
    /// `nfgen_family`.
    pub family: u8,
    /// The attributes, encoded ([`attributes`]; read with [`nlas`]).
    pub attributes: Vec<u8>,
}

impl NetlinkSerializable for Body {
    fn message_type(&self) -> u16 {
        self.message_type
    }

    fn buffer_len(&self) -> usize {
        NFGENMSG_LEN + self.attributes.len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        // The resource id, big endian, is 0.
        buffer[..NFGENMSG_LEN].copy_from_slice(&[self.family, NFNETLINK_V0, 0, 0]);
        buffer[NFGENMSG_LEN..].copy_from_slice(&self.attributes);
    }
}

impl NetlinkDeserializable for Body {
    type Error = Infallible;

    /// Never fails: a payload too short for `nfgenmsg` has no attributes,
    /// and the caller, missing what it looks for, says so.
    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Self, Infallible> {
        Ok(Body {
            message_type: header.message_type,
            family: payload.first().copied().unwrap_or_default(),
            attributes: payload.get(NFGENMSG_LEN..).unwrap_or_default().to_vec(),
        })
    }
}

/// A request as it goes on the wire: header (its length and type filled
/// in, port 0: the kernel's), `body`.
pub(crate) fn encode(body: Body, flags: u16, sequence_number: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = sequence_number;
    let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(body));
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

/// `nlas` encoded one after another, each padded to 4 bytes: a message's
/// attributes, or a nested attribute's value.
pub(crate) fn attributes(nlas: &[DefaultNla]) -> Vec<u8> {
    let mut bytes = vec![0; nlas.buffer_len()];
    nlas.emit(&mut bytes);
    bytes
}

/// The attributes in `bytes` up to the first that is not whole (a length
/// shorter than its header or past the end): what came whole is read, the
/// rest ignored. The last one's padding may be missing.
pub(crate) fn nlas(bytes: &[u8]) -> impl Iterator<Item = NlaBuffer<&[u8]>> {
    NlasIterator::new(bytes).map_while(Result::ok)
}

/// The messages of one datagram. netlink-packet-core reads one message;
/// walking a datagram of several is its user's. Every header is checked
/// first (a lying length anywhere is an error before any message is
/// read), then each message is parsed as it is reached.
pub(crate) fn messages(
    datagram: &[u8],
) -> io::Result<impl Iterator<Item = io::Result<NetlinkMessage<Body>>>> {
    let mut framed = Vec::new();
    let mut rest = datagram;
    while rest.len() >= HEADER_LEN {
        let length = NetlinkBuffer::new_checked(rest).map_err(invalid)?.length() as usize;
        framed.push(&rest[..length]);
        // NLMSG_ALIGN: the last message's padding may be missing.
        rest = rest.get(length.next_multiple_of(4)..).unwrap_or_default();
    }
    Ok(framed.into_iter().map(parse))
}

/// The first message of `datagram` (the rest, if any, unread).
pub(crate) fn parse(datagram: &[u8]) -> io::Result<NetlinkMessage<Body>> {
    NetlinkMessage::deserialize(datagram).map_err(invalid)
}

/// The errno of a refusal, 0 for an acknowledgement: the kernel's code
/// negated. Not `ErrorMessage::to_io`: its `abs()` overflows on a lying
/// `i32::MIN` (a panic where overflow is checked, as in the fuzz targets).
pub(crate) fn errno(error: &ErrorMessage) -> i32 {
    error.raw_code().wrapping_neg()
}

fn invalid(e: DecodeError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("nfnetlink: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_nobody_answers_times_out() {
        // Nothing was sent, so nothing comes: the receive must end at the
        // deadline, not block.
        let Ok(socket) = socket(Duration::from_millis(100)) else {
            return; // no nfnetlink in this sandbox
        };
        let started = std::time::Instant::now();
        let mut buf = [0u8; 64];
        let err = recv(&socket, &mut buf).expect_err("nothing to receive");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
