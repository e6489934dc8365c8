//! What the kernel says when parts of a lab change, for the daemon's
//! supervision: the link, address and route notifications of every lab
//! namespace (rtnetlink multicast groups, rtnetlink(7)), received on one
//! socket in a namespace of its own ([`AllNamespaces`]); the nf_tables
//! commits of one namespace (`NFNLGRP_NFTABLES`, what `nft monitor`
//! hears); and deletions of named namespaces (inotify(7) on `/run/netns`).
//! All are plain non-blocking file descriptors; the caller polls them and
//! decodes what it reads.
//!
//! Why one rtnetlink socket for all namespaces rather than one in each:
//! the kernel keeps every netlink socket bound to a multicast group, of
//! every namespace, on one list per protocol, and walks the whole list for
//! each notification and each bind (`netlink_broadcast_filtered`,
//! `netlink_update_listeners`). With a socket in each of a 10,000-instance
//! lab's namespaces, a broadcast frame that taught 5000 Linux bridges its
//! source cost 5000 notifications, each a walk of 10,000 sockets: the
//! first ARP request between two instances took 3–4 s to be answered.
//! `NETLINK_LISTEN_ALL_NSID` gives one socket the notifications of every
//! namespace that has an id in its own (`ip netns set NAME auto`), with
//! that id beside each. The socket lives in an unnamed namespace made for
//! it, so the ids are given there, not in the host's namespace.
//!
//! A socket holds a reference to its namespace: while it is open, an
//! `ip netns del` of that namespace only removes the name, and the
//! namespace (with its links) lives on. Whoever holds a [`rules`] socket
//! closes it when the name goes. An id does not hold its namespace.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use crate::netns;

/// `RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE`: the legacy group
/// bits of links, IPv4 addresses and IPv4 routes (rtnetlink(7)).
const RTMGRP_LAB: u32 =
    (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV4_ROUTE) as u32;
/// `NFNLGRP_NFTABLES` (7) as a legacy group bit: every nf_tables commit.
const NFNLGRP_NFTABLES_BIT: u32 = 1 << (7 - 1);
/// The socket option, and control message, of notifications from other
/// namespaces (netlink(7); not in the `libc` crate for Linux).
const NETLINK_LISTEN_ALL_NSID: libc::c_int = 8;
/// `NETNSA_NSID` and `NETNSA_FD`, attributes of `RTM_*NSID` messages.
const NETNSA_NSID: u16 = 1;
const NETNSA_FD: u16 = 3;
/// `NETNSA_NSID_NOT_ASSIGNED`.
const NO_ID: i32 = -1;
/// How much a notification socket may hold unread: the notices of a large
/// converge arrive faster than one task reads them.
const NOTICE_BUFFER: libc::c_int = 16 * 1024 * 1024;

/// Subscribes, in each namespace (given by its open file), to its
/// nf_tables commits (iptables-nft's `iptables-restore`, `iptables -F`,
/// …): a netfilter socket each, on another list than rtnetlink's, made
/// from one thread that enters each namespace in turn (a thread each cost
/// a lab's watch some 150 µs per namespace, on the tail of an `up`).
pub fn rules(namespaces: &[&std::fs::File]) -> Vec<io::Result<OwnedFd>> {
    netns::run_in_each(namespaces, || {
        bound(libc::NETLINK_NETFILTER, NFNLGRP_NFTABLES_BIT)
    })
}

/// The link, address and route notifications of every namespace with an
/// id in the socket's own namespace ([`AllNamespaces::id_of`] gives one),
/// on one socket.
#[derive(Debug)]
pub struct AllNamespaces {
    socket: OwnedFd,
    /// For `RTM_GETNSID` and `RTM_NEWNSID`; blocking, with a deadline.
    requests: OwnedFd,
    /// The sequence number of the last request: an answer that came after
    /// its deadline is not taken for the next one's.
    sequence: std::sync::atomic::AtomicU32,
}

impl AllNamespaces {
    /// Subscribes, from a network namespace of its own: made for these
    /// two sockets, unnamed, and kept alive by them alone. The ids given
    /// to the namespaces watched live there, so that no other namespace
    /// (the host's included) changes.
    pub fn subscribe() -> io::Result<Self> {
        std::thread::scope(|s| {
            s.spawn(|| {
                // Only this thread moves, and it ends once the sockets
                // are made.
                // SAFETY: unshare(2) with a constant flag.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } < 0 {
                    return Err(io::Error::last_os_error());
                }
                Self::subscribe_here()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the subscribing thread panicked")))
        })
    }

    fn subscribe_here() -> io::Result<Self> {
        let socket = bound(libc::NETLINK_ROUTE, RTMGRP_LAB)?;
        crate::sockopt::set_int(&socket, libc::SOL_NETLINK, NETLINK_LISTEN_ALL_NSID, 1)?;
        if crate::sockopt::set_int(
            &socket,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            NOTICE_BUFFER,
        )
        .is_err()
        {
            crate::sockopt::set_int(&socket, libc::SOL_SOCKET, libc::SO_RCVBUF, NOTICE_BUFFER)?;
        }
        // SAFETY: socket(2) with constant arguments; the fd is owned at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
        let requests = unsafe { OwnedFd::from_raw_fd(fd) };
        crate::sockopt::set_timeout(
            &requests,
            libc::SO_RCVTIMEO,
            std::time::Duration::from_secs(1),
        )?;
        Ok(AllNamespaces {
            socket,
            requests,
            sequence: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// The socket to poll and [`read_notice`] from.
    pub fn notices(&self) -> &OwnedFd {
        &self.socket
    }

    /// The id that namespace `namespace` (an open `/run/netns` file) has
    /// in this socket's namespace, given one first if it has none (as `ip
    /// netns set NAME auto` does there). Its notifications reach this
    /// socket from then on, with that id.
    ///
    /// One request when the namespace has no id yet: `RTM_NEWNSID` with
    /// `NLM_F_ECHO` answers with the id given. The kernel finds a
    /// namespace's id by walking every id of the namespace that holds
    /// them, so each request costs in proportion to the namespaces
    /// watched.
    pub fn id_of(&self, namespace: impl AsFd) -> io::Result<i32> {
        let fd = namespace.as_fd().as_raw_fd() as u32;
        let given = self.request(
            libc::RTM_NEWNSID,
            libc::NLM_F_ECHO as u16,
            &[
                (NETNSA_FD, fd.to_ne_bytes()),
                (NETNSA_NSID, NO_ID.to_ne_bytes()),
            ],
        );
        match given {
            Ok(id) if id != NO_ID => return Ok(id),
            // Given one before; or a kernel that does not echo.
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e),
        }
        match self.request(libc::RTM_GETNSID, 0, &[(NETNSA_FD, fd.to_ne_bytes())])? {
            NO_ID => Err(io::Error::other("the kernel gave the namespace no id")),
            id => Ok(id),
        }
    }

    /// One `RTM_*NSID` request with 4-byte attributes; the `NETNSA_NSID`
    /// of its answer (`NO_ID` for a bare acknowledgement).
    fn request(&self, kind: u16, flags: u16, attributes: &[(u16, [u8; 4])]) -> io::Result<i32> {
        let sequence = 1 + self
            .sequence
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut message = Vec::with_capacity(64);
        let length = 16 + 4 + attributes.len() * 8;
        message.extend_from_slice(&(length as u32).to_ne_bytes());
        message.extend_from_slice(&kind.to_ne_bytes());
        message.extend_from_slice(&(libc::NLM_F_REQUEST as u16 | flags).to_ne_bytes());
        message.extend_from_slice(&sequence.to_ne_bytes());
        message.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel's
        message.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]); // rtgenmsg
        for (kind, value) in attributes {
            message.extend_from_slice(&8u16.to_ne_bytes());
            message.extend_from_slice(&kind.to_ne_bytes());
            message.extend_from_slice(value);
        }
        // SAFETY: `message` is valid for its length; the kernel is the
        // default destination of an unconnected netlink socket.
        let sent = unsafe {
            libc::send(
                self.requests.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut answer = [0u8; 512];
        loop {
            // SAFETY: `answer` is valid for its length and outlives the call.
            let n = unsafe {
                libc::recv(
                    self.requests.as_raw_fd(),
                    answer.as_mut_ptr().cast(),
                    answer.len(),
                    0,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let answer = &answer[..n as usize];
            if answer.len() >= 12 && u32_at(answer, 8) == sequence {
                return nsid_answer(answer);
            }
        }
    }
}

/// The id in an answer to an `RTM_*NSID` request: an `RTM_NEWNSID`
/// message's `NETNSA_NSID`, or an error (`NLMSG_ERROR` with an errno;
/// with 0, an acknowledgement: [`NO_ID`]).
fn nsid_answer(answer: &[u8]) -> io::Result<i32> {
    let short = || io::Error::other("a short answer from the kernel");
    if answer.len() < 20 {
        return Err(short());
    }
    let length = (u32_at(answer, 0) as usize).min(answer.len());
    let kind = u16::from_ne_bytes([answer[4], answer[5]]);
    if kind == libc::NLMSG_ERROR as u16 {
        return match i32::from_ne_bytes([answer[16], answer[17], answer[18], answer[19]]) {
            0 => Ok(NO_ID),
            e => Err(io::Error::from_raw_os_error(-e)),
        };
    }
    let mut at = 20;
    while at + 4 <= length {
        let size = u16::from_ne_bytes([answer[at], answer[at + 1]]) as usize;
        let kind = u16::from_ne_bytes([answer[at + 2], answer[at + 3]]);
        if size < 4 || at + size > length {
            break;
        }
        if kind == NETNSA_NSID && size >= 8 {
            return Ok(i32::from_ne_bytes([
                answer[at + 4],
                answer[at + 5],
                answer[at + 6],
                answer[at + 7],
            ]));
        }
        at += (size + 3) & !3;
    }
    Err(short())
}

/// Reads one datagram from an [`AllNamespaces`] socket into `buf`: its
/// length and the id of the namespace it came from (`None` for the
/// caller's own namespace).
pub fn read_notice(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<(usize, Option<i32>)> {
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid; its buffers are set below.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = &raw mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.as_mut_ptr().cast();
    header.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: every buffer the header points to outlives the call.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &raw mut header, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut id = None;
    // SAFETY: the CMSG_* walk stays inside the control buffer the kernel
    // filled, whose length it set in the header.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const header);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_NETLINK
                && (*cmsg).cmsg_type == NETLINK_LISTEN_ALL_NSID
            {
                id = Some(std::ptr::read_unaligned(
                    libc::CMSG_DATA(cmsg).cast::<i32>(),
                ));
            }
            cmsg = libc::CMSG_NXTHDR(&raw const header, cmsg);
        }
    }
    Ok((n as usize, id))
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

/// The message types in one datagram read from an [`AllNamespaces`] socket
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
    fn an_nsid_answer_gives_its_id_an_error_its_errno() {
        // RTM_NEWNSID: header, rtgenmsg, then NETNSA_NSID = 7 after
        // another attribute.
        let mut answer = Vec::new();
        answer.extend_from_slice(&36u32.to_ne_bytes());
        answer.extend_from_slice(&libc::RTM_NEWNSID.to_ne_bytes());
        answer.extend_from_slice(&[0; 10]);
        answer.extend_from_slice(&[0; 4]);
        answer.extend_from_slice(&8u16.to_ne_bytes());
        answer.extend_from_slice(&2u16.to_ne_bytes());
        answer.extend_from_slice(&0u32.to_ne_bytes());
        answer.extend_from_slice(&8u16.to_ne_bytes());
        answer.extend_from_slice(&NETNSA_NSID.to_ne_bytes());
        answer.extend_from_slice(&7i32.to_ne_bytes());
        assert_eq!(nsid_answer(&answer).unwrap(), 7);
        // Cut before its id: no id.
        assert!(nsid_answer(&answer[..28]).is_err());
        // NLMSG_ERROR: 0 is an acknowledgement, else -errno.
        let mut error = message(libc::NLMSG_ERROR as u16, 4);
        error[16..20].copy_from_slice(&(-libc::EEXIST).to_ne_bytes());
        let e = nsid_answer(&error).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        error[16..20].copy_from_slice(&0i32.to_ne_bytes());
        assert_eq!(nsid_answer(&error).unwrap(), NO_ID);
        assert!(nsid_answer(&[0; 8]).is_err());
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
