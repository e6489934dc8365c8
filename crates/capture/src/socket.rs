//! An AF_PACKET socket bound to one interface of one namespace.
//!
//! The socket is made on a thread that entered the namespace and keeps
//! working from any thread afterwards. It asks the kernel for
//! `PACKET_AUXDATA` (the VLAN tag taken off on receive) and for nanosecond
//! receive times, so that frames seen on different devices can be put in
//! the order they happened. A promiscuous socket (for a Linux bridge, which
//! only sees what it forwards when promiscuous) adds a membership that the
//! kernel drops when the socket closes: nothing is left changed.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// Each socket's receive buffer: 8 MiB, thousands of frames. A bound,
/// not an allocation: the kernel takes memory only for frames queued.
const RECEIVE_BUFFER: libc::c_int = 8 << 20;

/// The most frames one [`PacketSocket::drain`] returns: a few
/// milliseconds of reading.
pub const DRAIN_FRAMES: usize = 4096;

/// The most bytes of frames one [`PacketSocket::drain`] returns (a frame
/// may be a 64 KiB GSO aggregate).
pub const DRAIN_BYTES: usize = 4 << 20;

/// The most frames a socket's queue can hold at once: the kernel counts
/// twice the buffer asked for (its bookkeeping, socket(7) `SO_RCVBUF`) and
/// each frame's whole allocation, more than 512 bytes however small the
/// frame. [`PacketSocket::drain_queued`] reads no more than this: any
/// frame beyond arrived after it began.
pub const QUEUED_FRAMES_MAX: usize = 2 * RECEIVE_BUFFER as usize / 512;

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
        netns::run_in(ns, move || Self::open_here(&name, promiscuous))
            .map_err(|e| in_namespace(ns, interface, e))
    }

    /// Opens a socket on `interface` inside namespace `ns` if the namespace
    /// has an interface of that name; `None` when it has not (an optional
    /// device, such as a node's overlay uplink in a lab without tunnels).
    /// A namespace that does not exist is an error, as for [`Self::open`].
    pub fn open_if_present(
        ns: &str,
        interface: &str,
        promiscuous: bool,
    ) -> io::Result<Option<Self>> {
        let name = interface.to_string();
        netns::run_in(ns, move || match Self::open_here(&name, promiscuous) {
            Ok(socket) => Ok(Some(socket)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .map_err(|e| in_namespace(ns, interface, e))
    }

    /// Opens a socket on `interface` in the calling thread's namespace. An
    /// interface that does not exist is an error of kind `NotFound`.
    pub fn open_here(interface: &str, promiscuous: bool) -> io::Result<Self> {
        let proto = ETH_P_ALL.to_be() as libc::c_int;
        let c_name = std::ffi::CString::new(interface).map_err(io::Error::other)?;
        // SAFETY: a valid C string.
        let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
        if index == 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no interface {interface}"),
            ));
        }
        // SAFETY: plain socket(2); the fd is owned at once.
        let fd =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
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
        ovslab_netlink::sockopt::set_int(&fd, libc::SOL_PACKET, libc::PACKET_AUXDATA, 1)?;
        ovslab_netlink::sockopt::set_int(&fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)?;
        // Room for a burst: a frame costs its buffer's whole truesize (about
        // 1 KiB for a small one), so the default 208 KiB overflows at a few
        // hundred, as when a large lab's nodes first resolve their tunnel
        // endpoints and flood their first ARPs while a check watches. Root
        // may go past rmem_max; anyone else gets what the limit allows.
        if ovslab_netlink::sockopt::set_int(
            &fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            RECEIVE_BUFFER,
        )
        .is_err()
        {
            let _ = ovslab_netlink::sockopt::set_int(
                &fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                RECEIVE_BUFFER,
            );
        }
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

    /// The frames queued now, oldest first, but at most [`DRAIN_FRAMES`]
    /// of them and [`DRAIN_BYTES`] in all; the rest stay queued for the
    /// next call. A socket flooded faster than it is read so never keeps
    /// its caller: the caller gets control back, looks at its deadline and
    /// reads again.
    pub fn drain(&self) -> io::Result<Vec<Packet>> {
        Ok(batch(|| self.try_recv())?.0)
    }

    /// Reads what was queued when it was called, [`Self::drain`] by
    /// [`Self::drain`], handing each frame to `each`: until the queue is
    /// empty, but at most [`QUEUED_FRAMES_MAX`] frames (a flood refills
    /// the queue as fast as it is read, with frames that came later), and
    /// no more batches once `deadline` has passed (one is always read).
    /// Says whether it emptied the queue.
    pub fn drain_queued(
        &self,
        deadline: Instant,
        mut each: impl FnMut(Packet),
    ) -> io::Result<bool> {
        let mut read = 0;
        loop {
            let (packets, emptied) = batch(|| self.try_recv())?;
            read += packets.len();
            packets.into_iter().for_each(&mut each);
            if emptied {
                return Ok(true);
            }
            if read >= QUEUED_FRAMES_MAX || Instant::now() >= deadline {
                return Ok(false);
            }
        }
    }

    /// How many frames the kernel dropped for this socket since it was
    /// opened or last asked (`PACKET_STATISTICS`, which counts from zero
    /// again once read): frames that came while its queue was full, which
    /// no reading of it will ever see.
    pub fn dropped(&self) -> io::Result<u32> {
        // SAFETY: tpacket_stats is plain data; zeroes are valid.
        let mut stats: libc::tpacket_stats = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: a buffer of the size passed, owned for the call.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut stats as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stats.tp_drops)
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
        SCRATCH.with_borrow_mut(|scratch| self.recv_into(scratch, flags))
    }

    /// Receives one frame into `scratch` ([`SNAPLEN`] long: longer frames
    /// are cut to it) and returns a right-sized copy of it.
    fn recv_into(&self, scratch: &mut [u8], flags: libc::c_int) -> io::Result<Option<Packet>> {
        // u64s: control messages must be aligned for their headers.
        let mut control = [0u64; 16];
        // SAFETY: sockaddr_ll is plain data; zeroes are valid.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: scratch.as_mut_ptr().cast(),
            iov_len: scratch.len(),
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
        // A right-sized copy (with room for a VLAN tag put back): a kept
        // packet must not hold on to the whole snap length (a check keeps
        // hundreds of frames of a busy lab).
        let kept = &scratch[..wire_len.min(scratch.len())];
        let mut buf = Vec::with_capacity(kept.len() + 4);
        buf.extend_from_slice(kept);
        // SAFETY: recvmsg(2) just filled `msg`'s control buffer, which
        // outlives the call.
        let (tag, time) = unsafe { control_messages(&msg) };
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

thread_local! {
    /// The buffer frames are received into, one per thread and zeroed
    /// once: each frame is then copied out at its own size.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SNAPLEN]);
}

/// The frames `next` gives until it has none left, [`DRAIN_FRAMES`] of
/// them or [`DRAIN_BYTES`], whichever comes first; and whether `next` ran
/// out (the queue is empty).
fn batch(mut next: impl FnMut() -> io::Result<Option<Packet>>) -> io::Result<(Vec<Packet>, bool)> {
    let mut packets = Vec::new();
    let mut bytes = 0;
    while packets.len() < DRAIN_FRAMES && bytes < DRAIN_BYTES {
        let Some(packet) = next()? else {
            return Ok((packets, true));
        };
        bytes += packet.data.len();
        packets.push(packet);
    }
    Ok((packets, false))
}

/// A failure to open a socket on `interface` in `ns`, named so. The kind
/// follows the errno (EPERM: PermissionDenied), so that a caller can tell
/// a missing privilege from the rest.
fn in_namespace(ns: &str, interface: &str, e: ovslab_netlink::NetlinkError) -> io::Error {
    let kind = e.errno().map_or(io::ErrorKind::Other, |n| {
        io::Error::from_raw_os_error(n).kind()
    });
    io::Error::new(kind, format!("{interface} in {ns}: {e}"))
}

/// The VLAN tag (TPID, TCI) and the receive time in the control messages
/// of `msg`. A control message too short for the structure its kind names,
/// or running past the buffer, is skipped rather than read past; a time
/// that does not fit a `SystemTime` is no time.
///
/// # Safety
///
/// `msg.msg_control` points at `msg.msg_controllen` readable bytes, as
/// after recvmsg(2).
unsafe fn control_messages(msg: &libc::msghdr) -> (Option<(u16, u16)>, Option<SystemTime>) {
    let mut tag = None;
    let mut time = None;
    let start = msg.msg_control as usize;
    // `msg_controllen` is a usize with glibc, a u32 with musl.
    #[allow(clippy::unnecessary_cast)]
    let end = start + msg.msg_controllen as usize;
    // SAFETY: CMSG_FIRSTHDR and CMSG_NXTHDR only return headers that lie
    // inside the control buffer, which the caller vouches for; each data
    // read is first checked to lie inside the message and the buffer, and
    // is unaligned, as the kernel's layout does not promise alignment.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            let len = (*cmsg).cmsg_len as usize;
            let holds = |size: usize| {
                let needed = libc::CMSG_LEN(size as u32) as usize;
                len >= needed && (cmsg as usize).saturating_add(needed) <= end
            };
            let data = libc::CMSG_DATA(cmsg);
            match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                (libc::SOL_PACKET, libc::PACKET_AUXDATA)
                    if holds(std::mem::size_of::<libc::tpacket_auxdata>()) =>
                {
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
                (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS)
                    if holds(std::mem::size_of::<libc::timespec>()) =>
                {
                    let ts = std::ptr::read_unaligned(data as *const libc::timespec);
                    time = since_epoch(ts.tv_sec, ts.tv_nsec);
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    (tag, time)
}

/// A kernel timestamp as a `SystemTime`; `None` for one before the epoch or
/// too large (adding it to the epoch would panic).
fn since_epoch(seconds: libc::time_t, nanoseconds: libc::c_long) -> Option<SystemTime> {
    let seconds = u64::try_from(seconds).ok()?;
    let nanoseconds = u32::try_from(nanoseconds)
        .ok()
        .filter(|n| *n < 1_000_000_000)?;
    UNIX_EPOCH.checked_add(Duration::new(seconds, nanoseconds))
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

    fn packet(len: usize) -> Packet {
        Packet {
            data: vec![0; len],
            wire_len: len,
            direction: Direction::In,
            time: UNIX_EPOCH,
        }
    }

    #[test]
    fn a_batch_ends_at_its_frame_or_byte_cap_however_many_are_queued() {
        // An endless queue of small frames: DRAIN_FRAMES, and more left.
        let (small, emptied) = batch(|| Ok(Some(packet(60)))).unwrap();
        assert_eq!((small.len(), emptied), (DRAIN_FRAMES, false));
        // Of 64 KiB aggregates: DRAIN_BYTES' worth.
        let (large, emptied) = batch(|| Ok(Some(packet(SNAPLEN)))).unwrap();
        assert_eq!((large.len(), emptied), (DRAIN_BYTES / SNAPLEN, false));
        // A queue that runs out: all of it.
        let mut left = 3;
        let next = || {
            Ok((left > 0).then(|| {
                left -= 1;
                packet(60)
            }))
        };
        let (few, emptied) = batch(next).unwrap();
        assert_eq!((few.len(), emptied), (3, true));
    }

    /// A msghdr whose control buffer holds one control message of `level`
    /// and `kind` claiming `claimed` data bytes (the buffer's length says
    /// the same), with `data` written after its header.
    fn with_control(
        buf: &mut [u64; 16],
        level: libc::c_int,
        kind: libc::c_int,
        claimed: usize,
        data: &[u8],
    ) -> libc::msghdr {
        let header = std::mem::size_of::<libc::cmsghdr>();
        let bytes: &mut [u8; 128] =
            // SAFETY: [u64; 16] and [u8; 128] have the same size, and any
            // bytes are valid u8s.
            unsafe { &mut *(buf as *mut [u64; 16]).cast::<[u8; 128]>() };
        // SAFETY: a cmsghdr is plain data; all zeroes is valid.
        let mut cmsg: libc::cmsghdr = unsafe { std::mem::zeroed() };
        // SAFETY: CMSG_LEN only computes a length.
        cmsg.cmsg_len = unsafe { libc::CMSG_LEN(claimed as u32) } as _;
        cmsg.cmsg_level = level;
        cmsg.cmsg_type = kind;
        // SAFETY: the buffer is 128 bytes, larger than a cmsghdr, and
        // aligned for it (it is made of u64s).
        unsafe { std::ptr::write(bytes.as_mut_ptr().cast::<libc::cmsghdr>(), cmsg) };
        bytes[header..header + data.len()].copy_from_slice(data);
        // SAFETY: msghdr is plain data; all zeroes is valid.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_control = buf.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE only computes a length.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(claimed as u32) } as _;
        msg
    }

    #[test]
    fn a_timestamp_out_of_range_is_no_time_not_a_panic() {
        let mut buf = [0u64; 16];
        let mut ts = Vec::new();
        ts.extend_from_slice(&(-1 as libc::time_t).to_ne_bytes());
        ts.extend_from_slice(&(999_999_999 as libc::c_long).to_ne_bytes());
        let size = ts.len();
        let msg = with_control(&mut buf, libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, size, &ts);
        // SAFETY: `msg` points at `buf`, alive and as long as it says.
        assert_eq!(unsafe { control_messages(&msg) }, (None, None));
        assert_eq!(since_epoch(-5, 0), None);
        assert_eq!(since_epoch(1, 2_000_000_000), None);
        assert_eq!(since_epoch(5, 6), Some(UNIX_EPOCH + Duration::new(5, 6)));
    }

    #[test]
    fn a_short_auxdata_message_is_not_read_past() {
        // tp_status says "VLAN valid", but the message claims 4 data bytes
        // only: the rest of a tpacket_auxdata (and its TCI) is not there.
        let mut buf = [0u64; 16];
        let mut aux = libc::TP_STATUS_VLAN_VALID.to_ne_bytes().to_vec();
        aux.extend_from_slice(&[0xff; 20]);
        let msg = with_control(&mut buf, libc::SOL_PACKET, libc::PACKET_AUXDATA, 4, &aux);
        // SAFETY: as above.
        assert_eq!(unsafe { control_messages(&msg) }.0, None);
        // The same message whole carries the tag.
        let size = std::mem::size_of::<libc::tpacket_auxdata>();
        let msg = with_control(&mut buf, libc::SOL_PACKET, libc::PACKET_AUXDATA, size, &aux);
        // SAFETY: as above.
        let (tag, _) = unsafe { control_messages(&msg) };
        assert_eq!(tag, Some((TPID_8021Q, 0xffff)));
    }
}
