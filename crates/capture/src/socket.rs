//! An AF_PACKET socket bound to one interface of one namespace.
//!
//! The socket is made on a thread that entered the namespace and keeps
//! working from any thread afterwards. It asks the kernel for
//! `PACKET_AUXDATA` (the VLAN tag taken off on receive) and for nanosecond
//! receive times, so that frames seen on different devices can be put in
//! the order they happened. A promiscuous socket (for a Linux bridge, which
//! only sees what it forwards when promiscuous) adds a membership that the
//! kernel drops when the socket closes: nothing is left changed.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ovslab_netlink::netns;

/// Which way a frame went through the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Received by the interface.
    In,
    /// Sent by the interface.
    Out,
}

/// One captured frame, VLAN tag restored.
#[derive(Debug, Clone)]
pub struct Packet {
    /// The frame as on the wire (without the FCS).
    pub data: Vec<u8>,
    /// Length on the wire; larger than `data` when the frame was cut.
    pub wire_len: usize,
    pub direction: Direction,
    /// When the kernel saw the frame.
    pub time: SystemTime,
}

/// An AF_PACKET socket on one interface.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    interface: String,
}

const ETH_P_ALL: u16 = libc::ETH_P_ALL as u16;
const TPID_8021Q: u16 = 0x8100;
/// Larger than any frame of a lab (MTU 1500 plus headers), smaller than GSO
/// aggregates, which are cut to this.
const SNAPLEN: usize = 65_536;

impl PacketSocket {
    /// Opens a socket on `interface` inside namespace `ns` (a name under
    /// `/run/netns`). `promiscuous` also shows frames the interface only
    /// forwards (needed on a Linux bridge).
    pub fn open(ns: &str, interface: &str, promiscuous: bool) -> io::Result<Self> {
        let name = interface.to_string();
        // The kind follows the errno (EPERM: PermissionDenied), so that a
        // caller can tell a missing privilege from the rest.
        netns::run_in(ns, move || Self::open_here(&name, promiscuous)).map_err(|e| {
            let kind = e.errno().map_or(io::ErrorKind::Other, |n| {
                io::Error::from_raw_os_error(n).kind()
            });
            io::Error::new(kind, format!("{interface} in {ns}: {e}"))
        })
    }

    /// Opens a socket on `interface` in the calling thread's namespace.
    pub fn open_here(interface: &str, promiscuous: bool) -> io::Result<Self> {
        let proto = ETH_P_ALL.to_be() as libc::c_int;
        // SAFETY: plain socket(2); the fd is owned at once.
        let fd =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let c_name = std::ffi::CString::new(interface).map_err(io::Error::other)?;
        // SAFETY: a valid C string.
        let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
        if index == 0 {
            return Err(io::Error::other(format!("no interface {interface}")));
        }
        // SAFETY: sockaddr_ll is plain data; zeroes are valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = index as i32;
        // SAFETY: a valid address of the right size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        set_int_option(&fd, libc::SOL_PACKET, libc::PACKET_AUXDATA, 1)?;
        set_int_option(&fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)?;
        if promiscuous {
            // SAFETY: packet_mreq is plain data; zeroes are valid.
            let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
            mreq.mr_ifindex = index as i32;
            mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
            // SAFETY: a valid option buffer of the right size.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_ADD_MEMBERSHIP,
                    (&mreq as *const libc::packet_mreq).cast(),
                    std::mem::size_of::<libc::packet_mreq>() as u32,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(PacketSocket {
            fd,
            interface: interface.to_string(),
        })
    }

    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The next queued frame, without waiting.
    pub fn try_recv(&self) -> io::Result<Option<Packet>> {
        self.recv_flags(libc::MSG_DONTWAIT)
    }

    /// The next frame, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> io::Result<Option<Packet>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(None)
            } else {
                Err(e)
            };
        }
        if rc == 0 {
            return Ok(None);
        }
        self.try_recv()
    }

    /// Every frame queued now.
    pub fn drain(&self) -> io::Result<Vec<Packet>> {
        let mut packets = Vec::new();
        while let Some(p) = self.try_recv()? {
            packets.push(p);
        }
        Ok(packets)
    }

    /// Sends one whole Ethernet frame out of the interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: the frame outlives the call; the socket is bound.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn recv_flags(&self, flags: libc::c_int) -> io::Result<Option<Packet>> {
        let mut buf = vec![0u8; SNAPLEN];
        // u64s: control messages must be aligned for their headers.
        let mut control = [0u64; 16];
        // SAFETY: sockaddr_ll is plain data; zeroes are valid.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data; zeroes are valid before filling in.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut from as *mut libc::sockaddr_ll).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: every buffer outlives the call.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, flags | libc::MSG_TRUNC) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            };
        }
        let wire_len = n as usize;
        buf.truncate(wire_len.min(SNAPLEN));
        let mut tag = None;
        let mut time = None;
        // SAFETY: walking the control messages the kernel just wrote, each
        // read as the type its level and kind say it holds.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                let data = libc::CMSG_DATA(cmsg);
                match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                    (libc::SOL_PACKET, libc::PACKET_AUXDATA) => {
                        let aux = std::ptr::read_unaligned(data as *const libc::tpacket_auxdata);
                        if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
                            let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                                aux.tp_vlan_tpid
                            } else {
                                TPID_8021Q
                            };
                            tag = Some((tpid, aux.tp_vlan_tci));
                        }
                    }
                    (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) => {
                        let ts = std::ptr::read_unaligned(data as *const libc::timespec);
                        time =
                            Some(UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
                    }
                    _ => {}
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        let mut wire_len = wire_len;
        if let Some((tpid, tci)) = tag {
            restore_tag(&mut buf, tpid, tci);
            wire_len += 4;
        }
        Ok(Some(Packet {
            data: buf,
            wire_len,
            direction: if from.sll_pkttype == libc::PACKET_OUTGOING {
                Direction::Out
            } else {
                Direction::In
            },
            time: time.unwrap_or_else(SystemTime::now),
        }))
    }
}

/// Puts an 802.1Q tag back after the two MAC addresses.
fn restore_tag(frame: &mut Vec<u8>, tpid: u16, tci: u16) {
    if frame.len() < 12 {
        return;
    }
    let mut tag = [0u8; 4];
    tag[..2].copy_from_slice(&tpid.to_be_bytes());
    tag[2..].copy_from_slice(&tci.to_be_bytes());
    frame.splice(12..12, tag);
}

fn set_int_option(
    fd: &OwnedFd,
    level: libc::c_int,
    option: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: a valid option buffer of the right size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restored_tag_sits_after_the_macs() {
        let mut f: Vec<u8> = (0..12).chain([0x08, 0x00, 0x45]).collect();
        restore_tag(&mut f, 0x8100, 101);
        assert_eq!(&f[12..16], &[0x81, 0x00, 0x00, 101]);
        assert_eq!(&f[16..], &[0x08, 0x00, 0x45]);
        assert_eq!(&f[..12], &(0..12).collect::<Vec<u8>>()[..]);
    }
}
