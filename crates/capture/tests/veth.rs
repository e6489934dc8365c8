//! Root tests: a real veth pair in a private namespace.

use std::time::Duration;

use ovslab_capture::{Direction, Frame, L4, PacketSocket, PcapWriter};
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
