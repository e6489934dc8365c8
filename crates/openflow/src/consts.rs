//! Numbers from the OpenFlow 1.3.5 specification that callers need, under
//! the spec's own names so they can be looked up there.

/// The wire version of OpenFlow 1.3 (§7.1).
pub const OFP_VERSION_1_3: u8 = 0x04;

/// Highest regular port number (§7.2.1, `ofp_port_no`).
pub const OFPP_MAX: u32 = 0xffff_ff00;
/// Send the packet out the port it came in on.
pub const OFPP_IN_PORT: u32 = 0xffff_fff8;
/// Submit the packet to the first flow table (packet-out only).
pub const OFPP_TABLE: u32 = 0xffff_fff9;
/// The switch's traditional L2/L3 pipeline; OVS does MAC learning here.
pub const OFPP_NORMAL: u32 = 0xffff_fffa;
/// All ports except the input port and those disabled by STP.
pub const OFPP_FLOOD: u32 = 0xffff_fffb;
/// All ports except the input port.
pub const OFPP_ALL: u32 = 0xffff_fffc;
/// Send to the controller as a packet-in.
pub const OFPP_CONTROLLER: u32 = 0xffff_fffd;
/// The switch's local (bridge) port.
pub const OFPP_LOCAL: u32 = 0xffff_fffe;
/// Wildcard port, for `out_port` of deletes and stats requests.
pub const OFPP_ANY: u32 = 0xffff_ffff;

/// Wildcard group, for `out_group` of deletes and stats requests (§7.3.4.2).
pub const OFPG_ANY: u32 = 0xffff_ffff;
/// Wildcard table: "all tables" in deletes and stats requests (§7.3.4.1).
pub const OFPTT_ALL: u8 = 0xff;
/// `buffer_id` meaning the flow_mod refers to no buffered packet.
pub const OFP_NO_BUFFER: u32 = 0xffff_ffff;
/// `max_len` of an output to the controller: send the whole packet.
pub const OFPCML_NO_BUFFER: u16 = 0xffff;

/// Bit of an OXM `vlan_vid` set for "a VLAN header is present" (§7.2.3.8).
pub const OFPVID_PRESENT: u16 = 0x1000;
/// OXM `vlan_vid` value matching packets without a VLAN header.
pub const OFPVID_NONE: u16 = 0x0000;

/// Flow-mod flag: send flow_removed when the flow expires (§7.3.4.1).
pub const OFPFF_SEND_FLOW_REM: u16 = 1 << 0;
/// Flow-mod flag: refuse an add that overlaps an existing flow.
pub const OFPFF_CHECK_OVERLAP: u16 = 1 << 1;
/// Flow-mod flag: reset packet and byte counters of a modified flow.
pub const OFPFF_RESET_COUNTS: u16 = 1 << 2;
/// Flow-mod flag: do not count packets.
pub const OFPFF_NO_PKT_COUNTS: u16 = 1 << 3;
/// Flow-mod flag: do not count bytes.
pub const OFPFF_NO_BYT_COUNTS: u16 = 1 << 4;

/// Multipart flag: more parts of this reply follow (§7.3.5).
pub const OFPMPF_REPLY_MORE: u16 = 1;
/// Multipart flag on requests: more parts of this request follow.
pub const OFPMPF_REQ_MORE: u16 = 1;

/// Ethertype of IPv4.
pub const ETH_TYPE_IPV4: u16 = 0x0800;
/// Ethertype of ARP.
pub const ETH_TYPE_ARP: u16 = 0x0806;
/// Ethertype of an 802.1Q VLAN tag, the usual argument of push_vlan.
pub const ETH_TYPE_VLAN: u16 = 0x8100;
/// Ethertype of IPv6.
pub const ETH_TYPE_IPV6: u16 = 0x86dd;

/// IP protocol number of ICMP.
pub const IP_PROTO_ICMP: u8 = 1;
/// IP protocol number of ICMPv6.
pub const IP_PROTO_ICMPV6: u8 = 58;
/// ICMPv6 type of a neighbour advertisement.
pub const ICMPV6_NEIGHBOR_ADVERT: u8 = 136;
/// IP protocol number of TCP.
pub const IP_PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IP_PROTO_UDP: u8 = 17;

/// Experimenter id of Nicira, the vendor of OVS's own extensions (NXAST_*).
pub const NX_VENDOR_ID: u32 = 0x0000_2320;
