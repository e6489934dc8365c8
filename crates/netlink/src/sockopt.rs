//! `setsockopt(2)` for the two kinds of value this project sets: an
//! integer, and a timeout. Shared by the netlink sockets here, the packet
//! sockets of `ovslab-capture` and the probes' sockets.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

/// Sets an integer option (`SO_RCVBUF`, `PACKET_AUXDATA`, …).
pub fn set_int(
    socket: impl AsFd,
    level: libc::c_int,
    option: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    set(socket, level, option, &value)
}

/// Sets `SO_RCVTIMEO` or `SO_SNDTIMEO`: a blocking call on the socket
/// fails with `EAGAIN` once `timeout` has passed.
pub fn set_timeout(socket: impl AsFd, option: libc::c_int, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    set(socket, libc::SOL_SOCKET, option, &tv)
}

fn set<T>(socket: impl AsFd, level: libc::c_int, option: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: a descriptor borrowed for the call, and a plain value of the
    // size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            level,
            option,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
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
    use std::os::fd::{FromRawFd, OwnedFd};

    fn get(socket: &OwnedFd, option: libc::c_int) -> libc::c_int {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid buffer and its length.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&raw mut value).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        value
    }

    fn udp() -> OwnedFd {
        // SAFETY: plain socket(2), owned at once.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0);
        // SAFETY: fresh descriptor, owned by nothing else.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    #[test]
    fn an_integer_and_a_timeout_reach_the_socket() {
        let socket = udp();
        set_int(&socket, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1).unwrap();
        assert_eq!(get(&socket, libc::SO_REUSEADDR), 1);
        set_timeout(&socket, libc::SO_RCVTIMEO, Duration::from_millis(20)).unwrap();
        let mut buf = [0u8; 1];
        let started = std::time::Instant::now();
        // SAFETY: a valid buffer of its length.
        let n = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), 1, 0) };
        assert_eq!(n, -1);
        assert_eq!(io::Error::last_os_error().kind(), io::ErrorKind::WouldBlock);
        assert!(started.elapsed() >= Duration::from_millis(15));
    }

    #[test]
    fn a_refused_option_is_the_kernels_error() {
        let socket = udp();
        let e = set_int(&socket, libc::SOL_SOCKET, 0x7fff, 1).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOPROTOOPT));
    }
}
