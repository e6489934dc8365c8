//! What the kernel says when parts of a lab change, for the daemon's
//! supervision: the link, address and route notifications of one namespace
//! (rtnetlink multicast groups, rtnetlink(7)), its nf_tables commits
//! (`NFNLGRP_NFTABLES`, what `nft monitor` hears), and deletions of named
//! namespaces (inotify(7) on `/run/netns`). All are plain non-blocking
//! file descriptors; the caller polls them and decodes what it reads.
//!
//! A socket holds a reference to its namespace: while it is open, an
//! `ip netns del` of that namespace only removes the name, and the
//! namespace (with its links) lives on. Whoever holds these sockets closes
//! them when the name goes.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::{NetlinkError, netns};

/// `RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE`: the legacy group
/// bits of links, IPv4 addresses and IPv4 routes (rtnetlink(7)).
const RTMGRP_LAB: u32 =
    (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV4_ROUTE) as u32;
/// `NFNLGRP_NFTABLES` (7) as a legacy group bit: every nf_tables commit.
const NFNLGRP_NFTABLES_BIT: u32 = 1 << (7 - 1);

/// The notification sockets of one namespace.
#[derive(Debug)]
pub struct Subscription {
    /// Links created, changed or deleted; IPv4 addresses and routes added
    /// or removed.
    pub routing: OwnedFd,
    /// nf_tables commits (iptables-nft's `iptables-restore`, `iptables
    /// -F`, …), when asked for.
    pub rules: Option<OwnedFd>,
}

/// Subscribes, in namespace `namespace`, to its link, address and route
/// notifications and, with `rules`, to its nf_tables commits.
pub fn subscribe(namespace: &str, rules: bool) -> Result<Subscription, NetlinkError> {
    netns::run_in(namespace, || {
        Ok(Subscription {
            routing: bound(libc::NETLINK_ROUTE, RTMGRP_LAB)?,
            rules: if rules {
                Some(bound(libc::NETLINK_NETFILTER, NFNLGRP_NFTABLES_BIT)?)
            } else {
                None
            },
        })
    })
}

/// A non-blocking netlink socket of `protocol` bound to `groups`.
fn bound(protocol: i32, groups: u32) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the fd is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            protocol,
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
    addr.nl_groups = groups;
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
}

/// The message types in one datagram read from a [`Subscription`] socket
/// (`nlmsg_type` of each `struct nlmsghdr`, in order).
pub fn message_types(datagram: &[u8]) -> Vec<u16> {
    const NLMSG_HDRLEN: usize = 16;
    let mut out = Vec::new();
    let mut at = 0;
    while at + NLMSG_HDRLEN <= datagram.len() {
        let len = u32_at(datagram, at) as usize;
        if len < NLMSG_HDRLEN || at + len > datagram.len() {
            break;
        }
        out.push(u16::from_ne_bytes([datagram[at + 4], datagram[at + 5]]));
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

    /// One rtnetlink message of `kind` with `body` bytes, padded to 4.
    fn message(kind: u16, body: usize) -> Vec<u8> {
        let len = (16 + body) as u32;
        let mut m = Vec::new();
        m.extend_from_slice(&len.to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]); // flags, seq, pid
        m.extend(std::iter::repeat_n(0xaa, body));
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    #[test]
    fn every_message_of_a_datagram_is_read_and_a_cut_one_is_not() {
        let mut datagram = message(libc::RTM_NEWLINK, 21);
        datagram.extend(message(libc::RTM_DELADDR, 8));
        datagram.extend(&message(libc::RTM_NEWROUTE, 12)[..10]);
        assert_eq!(
            message_types(&datagram),
            vec![libc::RTM_NEWLINK, libc::RTM_DELADDR]
        );
        assert!(message_types(&[]).is_empty());
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
