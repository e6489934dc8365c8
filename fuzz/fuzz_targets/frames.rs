//! Packets received in a lab: Ethernet frames from packet sockets (capture,
//! check, trace) and what a raw ICMP socket returns to a ping probe. The
//! first two bytes are the probe's tag. Must never panic.
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
    for probe in [Probe::Icmp, Probe::Tcp(22), Probe::Udp(53)] {
        let _ = leg(&frame, probe, tag);
        let _ = is_probe_frame(&frame, probe, tag);
    }
});
