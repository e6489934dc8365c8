//! An nfnetlink socket whose every send and receive has a deadline.
//!
//! The kernel answers nfnetlink requests (ipset, nf_tables' generation)
//! synchronously, in microseconds; a request still unanswered after
//! [`DEADLINE`] means a kernel stuck on a lock, and the caller is told so
//! instead of waiting with it.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use rtnetlink::sys::Socket;
use rtnetlink::sys::protocols::NETLINK_NETFILTER;

/// How long one send or receive may block.
pub const DEADLINE: Duration = Duration::from_secs(2);

/// A blocking nfnetlink socket of the calling thread's namespace, with
/// `SO_SNDTIMEO` and `SO_RCVTIMEO` set to `deadline`.
pub(crate) fn socket(deadline: Duration) -> io::Result<Socket> {
    let socket = Socket::new(NETLINK_NETFILTER)?;
    let timeout = libc::timeval {
        tv_sec: deadline.as_secs() as libc::time_t,
        tv_usec: deadline.subsec_micros() as libc::suseconds_t,
    };
    for option in [libc::SO_SNDTIMEO, libc::SO_RCVTIMEO] {
        // SAFETY: a valid socket fd we own, and a timeval of the size we
        // pass.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&raw const timeout).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
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
