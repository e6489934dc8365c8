//! The two ioctls netlink does not cover here: interface flags for a new
//! namespace's loopback, and ethtool's TX checksum offload.
//!
//! The userspace datapath reads packets from veths with `AF_PACKET`; without
//! virtio-net headers on those sockets, a packet whose checksum the sending
//! veth left for "hardware" to fill in would cross OVS with a bad checksum.
//! ovslab runs OVS with userspace TSO (which adds those headers) and keeps
//! the offload on; the switch is here to hold it in the planned state.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SIOCETHTOOL: libc::c_ulong = libc::SIOCETHTOOL;
const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_STXCSUM: u32 = 0x17;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// A datagram socket of the namespace it was created in; ioctls on it act
/// on that namespace's devices.
pub(crate) fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the returned fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name too long: {name}"),
        ));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

/// Sets interface `name` up in the calling thread's namespace.
pub(crate) fn set_up(name: &str) -> io::Result<()> {
    let sock = control_socket()?;
    let mut req = ifreq(name)?;
    // SAFETY: `req` is a valid ifreq naming the interface; the kernel fills
    // in the flags member of the union.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member, so reading it is sound.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above, with the flags to set.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn ethtool(sock: &OwnedFd, name: &str, value: &mut EthtoolValue) -> io::Result<()> {
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_data = (value as *mut EthtoolValue).cast();
    // SAFETY: `req` names the device and points at an ethtool_value that
    // outlives the call, as SIOCETHTOOL expects.
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether TX checksum offload is on for `name`.
pub(crate) fn tx_checksum(sock: &OwnedFd, name: &str) -> io::Result<bool> {
    let mut value = EthtoolValue {
        cmd: ETHTOOL_GTXCSUM,
        data: 0,
    };
    ethtool(sock, name, &mut value)?;
    Ok(value.data != 0)
}

/// Turns TX checksum offload on or off for `name` (`ethtool -K name tx …`).
pub(crate) fn set_tx_checksum(sock: &OwnedFd, name: &str, on: bool) -> io::Result<()> {
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: u32::from(on),
    };
    ethtool(sock, name, &mut value)
}
