//! Packet capture inside a lab's namespaces, with VLAN tags kept.
//!
//! The kernel takes the 802.1Q tag out of a received frame before packet
//! sockets see it; [`PacketSocket`] asks for `PACKET_AUXDATA` and puts the
//! tag back, so what it returns is the frame as it was on the wire. Used by
//! `ovslab check` and `ovslab trace` (in the daemon) and `ovslab capture`.
//!
//! - [`socket`]: an AF_PACKET socket on one interface of one namespace.
//! - [`frame`]: what a frame carries (MACs, tag, IPv4, ICMP/TCP/UDP/ARP,
//!   and inside a VXLAN or GRE tunnel, the frame it carries).
//! - [`pcap`]: writing captures for Wireshark and tcpdump.

pub mod frame;
pub mod pcap;
pub mod socket;

pub use frame::{Dhcp, Encapsulation, Frame, L4, Payload, Tunnel, TunnelKind};
pub use pcap::PcapWriter;
pub use socket::{Direction, Packet, PacketSocket};
