//! Root tests: a real veth pair in a private namespace.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ovslab_capture::socket::{DRAIN_FRAMES, QUEUED_FRAMES_MAX};
use ovslab_capture::{Direction, Frame, L4, PacketSocket, PcapWriter, Tunnel, TunnelKind};
use ovslab_testkit::{TestNetns, require_root};

/// A tagged ICMP echo request from fa:16:3e:00:00:01 to ff:ff:ff:ff:ff:ff.
fn tagged_echo(vlan: u16) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0xfa, 0x16, 0x3e, 0, 0, 1, 0x81, 0x00]);
    f.extend_from_slice(&vlan.to_be_bytes());
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&[
        0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ]);
    f.extend_from_slice(&[8, 0, 0, 0, 0x12, 0x34, 0, 1]);
    f
}

/// The first frame carrying our echo (IPv6 noise may come first).
fn ours(socket: &PacketSocket) -> Option<ovslab_capture::Packet> {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        if let Some(p) = socket.recv_timeout(Duration::from_millis(100)).unwrap()
            && Frame::parse(&p.data)
                .is_some_and(|f| matches!(f.l4(), Some(L4::Icmp { id: 0x1234, .. })))
        {
            return Some(p);
        }
    }
    None
}

#[test]
#[ignore = "needs root"]
fn vlan_tags_survive_capture_on_both_ends_of_a_veth() {
    require_root("vlan_tags_survive_capture_on_both_ends_of_a_veth");
    let ns = TestNetns::new();
    ns.exec(&[
        "ip", "link", "add", "cap-a", "type", "veth", "peer", "name", "cap-b",
    ]);
    ns.exec(&["ip", "link", "set", "cap-a", "up"]);
    ns.exec(&["ip", "link", "set", "cap-b", "up"]);
    let a = PacketSocket::open(&ns.name, "cap-a", false).unwrap();
    let b = PacketSocket::open(&ns.name, "cap-b", true).unwrap();
    // A packet socket does not see what it sends itself: another watches.
    let watch_a = PacketSocket::open(&ns.name, "cap-a", false).unwrap();
    a.send(&tagged_echo(101)).unwrap();

    let sent = ours(&watch_a);
    let received = ours(&b);
    let (sent, received) = (
        sent.expect("seen leaving"),
        received.expect("seen arriving"),
    );
    assert_eq!(sent.direction, Direction::Out);
    assert_eq!(received.direction, Direction::In);
    // The receiving kernel moved the tag out of the frame; it is back.
    assert_eq!(received.data, tagged_echo(101));
    let frame = Frame::parse(&received.data).unwrap();
    assert_eq!(frame.vlan, Some(101));
    assert!(matches!(
        frame.l4(),
        Some(L4::Icmp {
            kind: 8,
            id: 0x1234,
            ..
        })
    ));
    eprintln!("sent {:?} received {:?}", sent.time, received.time);

    let mut pcap = PcapWriter::new(Vec::new()).unwrap();
    pcap.write(&received).unwrap();
    let bytes = pcap.into_inner();
    assert_eq!(&bytes[24 + 16..], &tagged_echo(101)[..]);

    // Closing the promiscuous socket leaves the interface as it was.
    drop(b);
    let flags = ns.exec(&["ip", "-o", "link", "show", "cap-b"]);
    assert!(!flags.contains("PROMISC"), "{flags}");
}

#[test]
#[ignore = "needs root"]
fn an_unknown_interface_is_named_in_the_error() {
    require_root("an_unknown_interface_is_named_in_the_error");
    let ns = TestNetns::new();
    let e = PacketSocket::open(&ns.name, "nope0", false).unwrap_err();
    assert!(e.to_string().contains("nope0"), "{e}");
}

#[test]
#[ignore = "needs root"]
fn an_optional_interface_that_is_not_there_is_none_but_a_missing_namespace_is_an_error() {
    require_root(
        "an_optional_interface_that_is_not_there_is_none_but_a_missing_namespace_is_an_error",
    );
    let ns = TestNetns::new();
    assert!(
        PacketSocket::open_if_present(&ns.name, "eth3", false)
            .unwrap()
            .is_none()
    );
    ns.exec(&[
        "ip", "link", "add", "eth3", "type", "veth", "peer", "name", "p3",
    ]);
    let socket = PacketSocket::open_if_present(&ns.name, "eth3", false).unwrap();
    assert_eq!(
        socket.map(|s| s.interface().to_string()).as_deref(),
        Some("eth3")
    );
    let gone = ovslab_testkit::unique_name("ovslab-gone-");
    assert!(PacketSocket::open_if_present(&gone, "eth3", false).is_err());
}

/// Whether `packet` is our echo with ICMP identifier `id`.
fn echo_with_id(packet: &ovslab_capture::Packet, id: u16) -> bool {
    Frame::parse(&packet.data)
        .is_some_and(|f| matches!(f.l4(), Some(L4::Icmp { id: i, .. }) if i == id))
}

/// `tagged_echo` with ICMP identifier `id`.
fn echo_of(id: u16) -> Vec<u8> {
    let mut f = tagged_echo(101);
    f[42..44].copy_from_slice(&id.to_be_bytes());
    f
}

/// A drain returns at most `DRAIN_FRAMES`, leaving the rest queued for
/// the next (it once read until the queue was empty, however long a
/// flood kept it full); `drain_queued` reads what was queued, and under
/// a flood it still returns, long before its deadline, with the frames
/// that were there first.
#[test]
#[ignore = "needs root"]
fn a_drain_is_bounded_and_leaves_the_rest_queued_even_under_a_flood() {
    require_root("a_drain_is_bounded_and_leaves_the_rest_queued_even_under_a_flood");
    let ns = TestNetns::new();
    ns.exec(&[
        "ip", "link", "add", "dr-a", "type", "veth", "peer", "name", "dr-b",
    ]);
    ns.exec(&["ip", "link", "set", "dr-a", "up"]);
    ns.exec(&["ip", "link", "set", "dr-b", "up"]);
    let sender = PacketSocket::open(&ns.name, "dr-a", false).unwrap();
    // Sees what the sender sends (and whatever the namespace's IPv6 adds).
    let watch = PacketSocket::open(&ns.name, "dr-a", false).unwrap();
    let sent = DRAIN_FRAMES + 1000;
    for _ in 0..sent {
        sender.send(&echo_of(0x1234)).unwrap();
    }
    let first = watch.drain().unwrap();
    assert_eq!(first.len(), DRAIN_FRAMES);
    assert_eq!(watch.dropped().unwrap(), 0, "room for every frame");
    let mut rest = 0;
    let emptied = watch
        .drain_queued(Instant::now() + Duration::from_secs(5), |p| {
            rest += usize::from(echo_with_id(&p, 0x1234));
        })
        .unwrap();
    assert!(emptied);
    let ours = first.iter().filter(|p| echo_with_id(p, 0x1234)).count();
    assert_eq!(ours + rest, sent, "every frame read, none twice");

    // One frame, then a flood behind it.
    sender.send(&echo_of(0x4321)).unwrap();
    let flooding = AtomicBool::new(true);
    std::thread::scope(|s| {
        s.spawn(|| {
            let until = Instant::now() + Duration::from_secs(20);
            while flooding.load(Ordering::Relaxed) && Instant::now() < until {
                let _ = sender.send(&echo_of(0x9999));
            }
        });
        // The queue fills.
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        let (mut first_seen, mut read) = (false, 0);
        watch
            .drain_queued(started + Duration::from_secs(10), |p| {
                first_seen |= echo_with_id(&p, 0x4321);
                read += 1;
            })
            .unwrap();
        let took = started.elapsed();
        let batch = watch.drain().unwrap().len();
        flooding.store(false, Ordering::Relaxed);
        eprintln!("under a flood: {read} frames in {took:?}, then a batch of {batch}");
        assert!(first_seen, "the frame before the flood was read");
        assert!(read <= QUEUED_FRAMES_MAX + DRAIN_FRAMES, "{read} frames");
        // Bounded by the frames, not by the 10 s deadline the flood would
        // otherwise have run it to.
        assert!(took < Duration::from_secs(8), "{took:?} for {read} frames");
        assert!(batch <= DRAIN_FRAMES);
    });
    // The flood overran the queue while nobody read it: the kernel says
    // how many frames it dropped, once.
    let dropped = watch.dropped().unwrap();
    assert!(dropped > 0, "a flood of 300 ms unread drops frames");
    assert_eq!(watch.dropped().unwrap(), 0, "counted from zero again");
}

/// Two namespaces joined by a veth, `tun-a` 172.16.0.11/24 and `tun-b`
/// 172.16.0.12/24, as two nodes' tunnel endpoints.
fn endpoints() -> (TestNetns, TestNetns) {
    let (a, b) = (TestNetns::new(), TestNetns::new());
    ovslab_testkit::run(
        "ip",
        &[
            "-n", &a.name, "link", "add", "tun-a", "type", "veth", "peer", "name", "tun-b",
            "netns", &b.name,
        ],
    );
    a.exec(&["ip", "addr", "add", "172.16.0.11/24", "dev", "tun-a"]);
    b.exec(&["ip", "addr", "add", "172.16.0.12/24", "dev", "tun-b"]);
    a.exec(&["ip", "link", "set", "tun-a", "up"]);
    b.exec(&["ip", "link", "set", "tun-b", "up"]);
    (a, b)
}

/// The first frame on `socket` whose innermost frame is our echo.
fn tunnelled(socket: &PacketSocket) -> Option<Frame> {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        if let Some(p) = socket.recv_timeout(Duration::from_millis(100)).unwrap()
            && let Some(f) = Frame::parse(&p.data)
            && f.encapsulation().is_some()
            && matches!(f.innermost().l4(), Some(L4::Icmp { id: 0x1234, .. }))
        {
            return Some(f);
        }
    }
    None
}

#[test]
#[ignore = "needs root"]
fn a_vxlan_datagram_is_decapsulated_as_captured_on_the_far_end() {
    require_root("a_vxlan_datagram_is_decapsulated_as_captured_on_the_far_end");
    let (a, b) = endpoints();
    let watch = PacketSocket::open(&b.name, "tun-b", false).unwrap();
    let mut datagram = vec![0x08, 0, 0, 0, 0, 0, 101, 0];
    datagram.extend_from_slice(&tagged_echo(5));
    ovslab_netlink::netns::run_in(&a.name, move || {
        let socket = std::net::UdpSocket::bind("172.16.0.11:0")?;
        socket.send_to(&datagram, "172.16.0.12:4789").map(drop)
    })
    .unwrap();
    let f = tunnelled(&watch).expect("the VXLAN datagram arrived");
    let e = f.encapsulation().unwrap();
    assert_eq!(
        e.tunnel,
        Tunnel {
            kind: TunnelKind::Vxlan,
            key: Some(101)
        }
    );
    assert_eq!(
        (e.outer_src.to_string(), e.outer_dst.to_string()),
        ("172.16.0.11".into(), "172.16.0.12".into())
    );
    assert_eq!(e.inner, Frame::parse(&tagged_echo(5)).unwrap());
    assert_eq!(f.innermost().vlan, Some(5));
}

#[test]
#[ignore = "needs root"]
fn a_gre_packet_is_decapsulated_as_captured_on_the_far_end() {
    require_root("a_gre_packet_is_decapsulated_as_captured_on_the_far_end");
    let (a, b) = endpoints();
    let watch = PacketSocket::open(&b.name, "tun-b", false).unwrap();
    // Key bit, protocol 0x6558, key 0x64.
    let mut packet = vec![0x20, 0, 0x65, 0x58, 0, 0, 0, 0x64];
    packet.extend_from_slice(&tagged_echo(5));
    ovslab_netlink::netns::run_in(&a.name, move || {
        // SAFETY: plain socket(2); the fd is owned at once.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 47) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let to = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([172, 16, 0, 12]),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: the buffer and address outlive the call.
        let n = unsafe {
            libc::sendto(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&to as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    })
    .unwrap();
    let f = tunnelled(&watch).expect("the GRE packet arrived");
    let e = f.encapsulation().unwrap();
    assert_eq!(
        e.tunnel,
        Tunnel {
            kind: TunnelKind::Gre,
            key: Some(100)
        }
    );
    assert_eq!(e.outer_dst.to_string(), "172.16.0.12");
    assert_eq!(f.innermost(), &Frame::parse(&tagged_echo(5)).unwrap());
}
