//! What the kernel says when parts of a lab go away, for the daemon's
//! supervision: link notifications of one namespace (rtnetlink multicast
//! group `RTNLGRP_LINK`, rtnetlink(7)) and deletions of named namespaces
//! (inotify(7) on `/run/netns`). Both are plain non-blocking file
//! descriptors; the caller polls them and decodes what it reads.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::{NetlinkError, netns};

/// `RTMGRP_LINK`: the legacy group bit of `RTNLGRP_LINK` (rtnetlink(7)).
const RTMGRP_LINK: u32 = libc::RTMGRP_LINK as u32;
const RTM_NEWLINK: u16 = libc::RTM_NEWLINK;
const RTM_DELLINK: u16 = libc::RTM_DELLINK;
/// `struct nlmsghdr` is 16 bytes; `ifinfomsg.ifi_flags` is at offset 8 of
/// the payload (family, pad, type: 4 bytes; index: 4 bytes).
const NLMSG_HDRLEN: usize = 16;
const IFI_FLAGS: usize = 8;
const IFF_UP: u32 = libc::IFF_UP as u32;

/// A socket in namespace `namespace` on which the kernel reports every
/// link created, changed or deleted there. Non-blocking.
pub fn link_events(namespace: &str) -> Result<OwnedFd, NetlinkError> {
    netns::run_in(namespace, || {
        // SAFETY: socket(2) with constant arguments; the fd is owned at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an all-zero sockaddr_nl is valid; the fields are set below.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = RTMGRP_LINK;
        // SAFETY: `addr` is a valid sockaddr_nl of the length given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    })
}

/// How a link notification can mean that something of a lab was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkLoss {
    /// `RTM_DELLINK`: the link is gone (or moved to another namespace).
    Deleted { index: u32 },
    /// `RTM_NEWLINK` of a link that is not up (set down, or just made).
    Down { index: u32 },
}

/// The losses among the notifications of one datagram read from a
/// [`link_events`] socket; other messages are skipped.
pub fn link_losses(datagram: &[u8]) -> Vec<LinkLoss> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + NLMSG_HDRLEN <= datagram.len() {
        let len = u32_at(datagram, at) as usize;
        if len < NLMSG_HDRLEN || at + len > datagram.len() {
            break;
        }
        let kind = u16::from_ne_bytes([datagram[at + 4], datagram[at + 5]]);
        let payload = at + NLMSG_HDRLEN;
        if matches!(kind, RTM_NEWLINK | RTM_DELLINK) && payload + IFI_FLAGS + 4 <= at + len {
            let index = u32_at(datagram, payload + 4);
            let flags = u32_at(datagram, payload + IFI_FLAGS);
            if kind == RTM_DELLINK {
                out.push(LinkLoss::Deleted { index });
            } else if flags & IFF_UP == 0 {
                out.push(LinkLoss::Down { index });
            }
        }
        // NLMSG_ALIGN: messages start on 4-byte boundaries.
        at += (len + 3) & !3;
    }
    out
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// An inotify descriptor reporting every namespace removed from
/// `/run/netns` (as `ip netns del` or a `down` does). Non-blocking.
pub fn namespace_deletions() -> io::Result<OwnedFd> {
    std::fs::create_dir_all(netns::NETNS_DIR)?;
    // SAFETY: inotify_init1(2) with constant flags; the fd is owned at once.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by inotify_init1(2), owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let dir = std::ffi::CString::new(netns::NETNS_DIR).map_err(io::Error::other)?;
    // SAFETY: `dir` is a NUL-terminated path that outlives the call.
    let rc = unsafe {
        libc::inotify_add_watch(
            fd.as_raw_fd(),
            dir.as_ptr(),
            libc::IN_DELETE | libc::IN_MOVED_FROM,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// The names in the inotify events of one read from
/// [`namespace_deletions`] (`struct inotify_event`: wd, mask, cookie, len,
/// then `len` bytes of NUL-padded name).
pub fn deleted_names(events: &[u8]) -> Vec<String> {
    const HEADER: usize = 16;
    let mut out = Vec::new();
    let mut at = 0;
    while at + HEADER <= events.len() {
        let len = u32_at(events, at + 12) as usize;
        let end = (at + HEADER + len).min(events.len());
        let name = &events[at + HEADER..end];
        let name = name.split(|&b| b == 0).next().unwrap_or_default();
        if !name.is_empty() {
            out.push(String::from_utf8_lossy(name).into_owned());
        }
        at += HEADER + len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One rtnetlink message: header, then an ifinfomsg (and `extra` bytes
    /// of attributes), padded to 4 bytes.
    fn message(kind: u16, index: u32, flags: u32, extra: usize) -> Vec<u8> {
        let len = (NLMSG_HDRLEN + 16 + extra) as u32;
        let mut m = Vec::new();
        m.extend_from_slice(&len.to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]); // flags, seq, pid
        m.extend_from_slice(&[0, 0, 1, 0]); // family, pad, type
        m.extend_from_slice(&index.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes()); // change
        m.extend(std::iter::repeat_n(0xaa, extra));
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    #[test]
    fn deleted_and_down_links_are_losses_up_ones_are_not() {
        let mut datagram = message(RTM_NEWLINK, 7, IFF_UP | 0x1000, 5);
        datagram.extend(message(RTM_DELLINK, 8, IFF_UP, 0));
        datagram.extend(message(RTM_NEWLINK, 9, 0, 2));
        datagram.extend(message(20, 10, 0, 0)); // RTM_NEWADDR: not ours
        assert_eq!(
            link_losses(&datagram),
            vec![LinkLoss::Deleted { index: 8 }, LinkLoss::Down { index: 9 }]
        );
    }

    #[test]
    fn a_truncated_datagram_yields_what_is_whole() {
        let mut datagram = message(RTM_DELLINK, 3, 0, 0);
        datagram.extend(&message(RTM_DELLINK, 4, 0, 0)[..10]);
        assert_eq!(link_losses(&datagram), vec![LinkLoss::Deleted { index: 3 }]);
        assert!(link_losses(&[]).is_empty());
    }

    #[test]
    fn inotify_names_are_read_without_padding() {
        let mut events = Vec::new();
        for name in ["lab.instance1", "x"] {
            let mut padded = name.as_bytes().to_vec();
            padded.resize(16, 0);
            events.extend_from_slice(&1i32.to_ne_bytes());
            events.extend_from_slice(&(libc::IN_DELETE).to_ne_bytes());
            events.extend_from_slice(&0u32.to_ne_bytes());
            events.extend_from_slice(&(padded.len() as u32).to_ne_bytes());
            events.extend_from_slice(&padded);
        }
        assert_eq!(deleted_names(&events), vec!["lab.instance1", "x"]);
    }
}
