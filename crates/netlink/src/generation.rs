//! Whether a namespace's firewall changed, without reading it: nf_tables
//! counts every committed ruleset change in a namespace (its generation,
//! `NFT_MSG_GETGEN` over nfnetlink), and `iptables-nft` commits through
//! nf_tables. Paired with the namespace's cookie (`SO_NETNS_COOKIE`, never
//! reused while the host runs), an unchanged pair means nothing was changed
//! since, by anyone.

use std::io;
use std::os::fd::AsRawFd;

use netlink_packet_core::{NLM_F_REQUEST, NetlinkPayload};
use rtnetlink::sys::Socket;

use crate::NetlinkError;
use crate::netns;
use crate::nfnetlink::{self, Body};

const NFNL_SUBSYS_NFTABLES: u16 = libc::NFNL_SUBSYS_NFTABLES as u16;
const NFT_MSG_GETGEN: u16 = libc::NFT_MSG_GETGEN as u16;
const NFT_MSG_NEWGEN: u16 = libc::NFT_MSG_NEWGEN as u16;
const NFTA_GEN_ID: u16 = 1;
const AF_UNSPEC: u8 = libc::AF_UNSPEC as u8;
/// `SO_NETNS_COOKIE` (Linux 5.14), not in every libc yet.
const SO_NETNS_COOKIE: libc::c_int = 71;

/// A namespace's firewall generation: equal values mean the same ruleset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Generation {
    /// The namespace's cookie: a namespace made again gets another.
    pub cookie: u64,
    /// nf_tables' count of committed changes in it.
    pub id: u32,
}

/// The firewall generation of namespace `name`.
pub fn generation(name: &str) -> Result<Generation, NetlinkError> {
    netns::run_in(name, || {
        let socket = nfnetlink::socket(nfnetlink::DEADLINE)?;
        let cookie = netns_cookie(&socket)?;
        nfnetlink::send(&socket, &request())?;
        let mut buf = vec![0u8; 4096];
        let n = nfnetlink::recv(&socket, &mut buf)?;
        let id = parse_reply(&buf[..n])?;
        Ok(Generation { cookie, id })
    })
}

fn netns_cookie(socket: &Socket) -> io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into our u64.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

/// `NFT_MSG_GETGEN`: a netlink header and an empty `nfgenmsg`.
fn request() -> Vec<u8> {
    let body = Body {
        message_type: NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETGEN,
        family: AF_UNSPEC,
        attributes: Vec::new(),
    };
    nfnetlink::encode(body, NLM_F_REQUEST, 1)
}

/// The generation id in a `NFT_MSG_NEWGEN` reply. Public (hidden) for the
/// fuzz target in `fuzz/`: whatever the kernel sends, this must not panic.
#[doc(hidden)]
pub fn parse_reply(reply: &[u8]) -> io::Result<u32> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    match nfnetlink::parse(reply)?.payload {
        NetlinkPayload::Error(error) => Err(io::Error::from_raw_os_error(nfnetlink::errno(&error))),
        NetlinkPayload::InnerMessage(body)
            if body.message_type == NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWGEN =>
        {
            // Big endian; a value longer than 4 bytes is read for its first 4.
            nfnetlink::nlas(&body.attributes)
                .filter(|a| a.kind() == NFTA_GEN_ID)
                .find_map(|a| a.value().first_chunk().copied().map(u32::from_be_bytes))
                .ok_or_else(|| bad("no generation id in the reply"))
        }
        _ => Err(bad("unexpected nfnetlink reply")),
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::NLMSG_ERROR;

    use super::*;

    fn reply(kind: u16, attrs: &[u8]) -> Vec<u8> {
        let mut msg = Vec::new();
        msg.extend_from_slice(&((20 + attrs.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&[0; 10]);
        msg.extend_from_slice(&[0; 4]);
        msg.extend_from_slice(attrs);
        msg
    }

    #[test]
    fn the_request_asks_nf_tables_for_its_generation() {
        let r = request();
        assert_eq!(r.len(), 20);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), 10 << 8 | 16);
    }

    /// The request byte for byte, as `nft` sends it (and as this module
    /// sent it before it was built on netlink-packet-core).
    #[test]
    #[cfg(target_endian = "little")]
    #[rustfmt::skip]
    fn the_request_on_the_wire() {
        assert_eq!(request(), [
            20, 0, 0, 0, 16, 10, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, // GETGEN, REQUEST, seq 1
            0, 0, 0, 0, // nfgenmsg: AF_UNSPEC, NFNETLINK_V0, resource 0
        ]);
    }

    #[test]
    fn the_id_is_read_past_other_attributes() {
        let mut attrs = Vec::new();
        // NFTA_GEN_PROC_NAME "nft" (padded), then NFTA_GEN_ID 7 (big endian).
        attrs.extend_from_slice(&8u16.to_ne_bytes());
        attrs.extend_from_slice(&3u16.to_ne_bytes());
        attrs.extend_from_slice(b"nft\0");
        attrs.extend_from_slice(&8u16.to_ne_bytes());
        attrs.extend_from_slice(&1u16.to_ne_bytes());
        attrs.extend_from_slice(&7u32.to_be_bytes());
        assert_eq!(parse_reply(&reply(10 << 8 | 15, &attrs)).unwrap(), 7);
    }

    #[test]
    fn errors_and_strangers_are_errors() {
        let mut err = reply(NLMSG_ERROR, &[]);
        err[16..20].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
        assert_eq!(
            parse_reply(&err).unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
        assert!(parse_reply(&reply(10 << 8 | 15, &[])).is_err());
        assert!(parse_reply(&reply(99, &[])).is_err());
        assert!(parse_reply(&[1, 2, 3]).is_err());
    }

    #[test]
    fn an_unpadded_last_attribute_is_not_read_past() {
        // NFTA_GEN_PROC_NAME of 5 bytes, unpadded, at the very end: its
        // aligned length (8) runs past the reply.
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&5u16.to_ne_bytes());
        attrs.extend_from_slice(&3u16.to_ne_bytes());
        attrs.push(b'n');
        assert!(parse_reply(&reply(10 << 8 | 15, &attrs)).is_err());
    }

    #[test]
    fn an_error_code_of_i32_min_is_an_error_not_an_overflow() {
        let mut err = reply(NLMSG_ERROR, &[]);
        err[16..20].copy_from_slice(&i32::MIN.to_ne_bytes());
        assert!(parse_reply(&err).is_err());
    }
}
