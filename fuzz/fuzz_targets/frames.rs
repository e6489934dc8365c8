//! Packets received in a lab: Ethernet frames from packet sockets (capture,
//! check, trace) and what a raw ICMP socket returns to a ping probe. The
//! first two bytes are the probe's tag. Tunnel packets (VXLAN, GRE) are
//! decapsulated, and the frames inside them decoded in turn. Must never
//! panic.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use ovslab_capture::Frame;
use ovslab_probe::probes::{Probe, is_echo_reply, is_probe_frame, leg};

fuzz_target!(|data: &[u8]| {
    let Some((tag, packet)) = data.split_first_chunk::<2>() else {
        return;
    };
    let tag = u16::from_be_bytes(*tag);
    let _ = is_echo_reply(packet, tag, Ipv4Addr::new(192, 168, 1, 11));
    let Some(frame) = Frame::parse(packet) else {
        return;
    };
    let _ = frame.to_string();
    // Every tunnel level: each carried frame is a frame like any other.
    let mut at = &frame;
    while let Some(e) = at.encapsulation() {
        let _ = (e.tunnel.to_string(), e.outer_src, e.outer_dst);
        assert_eq!(at.inner(), Some(&e.inner));
        at = &e.inner;
    }
    assert_eq!(frame.innermost(), at);
    for probe in [Probe::Icmp, Probe::Tcp(22), Probe::Udp(53)] {
        let _ = leg(&frame, probe, tag);
        let _ = is_probe_frame(&frame, probe, tag);
    }
});
