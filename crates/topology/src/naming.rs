//! Names as Neutron, Nova and os-vif give them, derived deterministically
//! from the lab and object names so that they are stable across runs.
//!
//! - Port devices: a 3-character prefix + the first 11 characters of the
//!   port UUID (os-vif `NIC_NAME_LEN` = 14; Linux allows 15).
//! - Namespaces: `<lab>.<object>`, so two labs never collide and a lab's
//!   namespaces are found by prefix; routers are `<lab>.qrouter-<uuid>`.
//! - MACs: `fa:16:3e` + three bytes of the port UUID.
//!
//! These are each object's first candidates. Port UUIDs and MACs are cut
//! short enough to collide in a large lab, so the topology carries the
//! ones [`identifiers`](crate::identifiers) settled for the whole lab;
//! read them there (`Instance::port`, `Router::port_on`, …), never derive
//! them again from an object's name alone.

use uuid::Uuid;

/// The UUID namespace (RFC 9562 §5.5) under which every ovslab object UUID
/// is derived.
const OVSLAB_UUID_NAMESPACE: Uuid = Uuid::from_u128(0x5d1c_0b2e_8f3a_4c61_9e2d_7a40_1b6f_c0de);

/// Linux's interface name limit (`IFNAMSIZ` - 1).
pub const IFNAME_MAX: usize = 15;

/// Neutron's device-name prefixes.
pub const TAP: &str = "tap";
pub const QBR: &str = "qbr";
pub const QVB: &str = "qvb";
pub const QVO: &str = "qvo";
pub const QR: &str = "qr-";
pub const QG: &str = "qg-";
/// An HA router copy's port on the HA network.
pub const HA: &str = "ha-";

/// Bridges and patch ports every node has.
pub const BR_INT: &str = "br-int";
pub const BR_VLAN: &str = "br-vlan";
pub const BR_EX: &str = "br-ex";
pub const INT_BR_VLAN: &str = "int-br-vlan";
pub const PHY_BR_VLAN: &str = "phy-br-vlan";
/// A node's uplink to the physical network (a port of br-vlan).
pub const UPLINK: &str = "eth1";
/// A physical router's Open vSwitch bridge: its trunk to the physical
/// network ([`UPLINK`]) and an internal port per provider network.
pub const BR_TRUNK: &str = "br-eth1";
/// The network node's uplink to the external network (a port of br-ex).
pub const EXTERNAL_UPLINK: &str = "eth2";
/// A node's uplink to the overlay network, where its tunnels run (a port of
/// [`BR_OVERLAY`]).
pub const OVERLAY_UPLINK: &str = "eth3";
/// The bridge that holds a node's tunnel endpoint address (the agent's
/// `local_ip`) on its internal port and the overlay uplink: the userspace
/// datapath routes and encapsulates tunnel traffic itself, from addresses
/// on its own bridges.
pub const BR_OVERLAY: &str = "br-overlay";
/// The overlay's name (its namespace and switch) when the file gives none.
pub const DEFAULT_OVERLAY: &str = "overlay";
/// br-tun and its patch pair with br-int.
pub const BR_TUN: &str = "br-tun";
pub const PATCH_TUN: &str = "patch-tun";
pub const PATCH_INT: &str = "patch-int";
/// An instance's or external host's NIC, inside its own namespace.
pub const GUEST_NIC: &str = "eth0";
/// Every namespace's loopback device.
pub const LOOPBACK: &str = "lo";
/// The tap device `ovs-vswitchd` makes for its userspace datapath, in every
/// node's namespace.
pub const USERSPACE_DATAPATH: &str = "ovs-netdev";

/// Interface names that exist in a lab's namespaces whatever the topology
/// says; an object named so would meet one of them where its name becomes an
/// interface (a node's, physical or external network's, external host's).
pub const RESERVED_NAMES: &[&str] = &[
    LOOPBACK,
    USERSPACE_DATAPATH,
    BR_INT,
    BR_VLAN,
    BR_EX,
    INT_BR_VLAN,
    PHY_BR_VLAN,
    GUEST_NIC,
    UPLINK,
    EXTERNAL_UPLINK,
    OVERLAY_UPLINK,
    BR_OVERLAY,
    BR_TUN,
    BR_TRUNK,
    PATCH_TUN,
    PATCH_INT,
];

/// Names the kernel will not give a link in a lab's namespaces: `all` and
/// `default` are its per-device settings' own (`/proc/sys/net/ipv4/conf/`),
/// the rest the fallback devices a tunnel or bonding module makes in every
/// namespace when it is loaded. An object named so gets no link where its
/// name becomes one.
pub const KERNEL_NAMES: &[&str] = &[
    "all",
    "default",
    "bonding_masters",
    "gre0",
    "gretap0",
    "erspan0",
    "tunl0",
    "sit0",
    "ip6tnl0",
    "ip6gre0",
    "ip_vti0",
    "ip6_vti0",
];

/// The record of a lab's failed nodes, a file in the lab's run directory
/// beside its nodes' directories: no node may take its name.
pub const FAILED_NODES_RECORD: &str = "failed-nodes";

/// A router's namespace is `<lab>.qrouter-<router uuid>`.
pub const QROUTER: &str = "qrouter-";

/// Prefixes of generated namespaces: `qrouter-` (legacy routers) now, and
/// those the DHCP agent (`qdhcp-`) and DVR (`snat-`, `fip-`) will add. An
/// object named with one would take a generated namespace's name.
pub const NAMESPACE_PREFIXES: &[&str] = &[QROUTER, "qdhcp-", "snat-", "fip-"];

/// Prefixes of generated router devices: `qr-`, `qg-` and `ha-`.
pub const ROUTER_DEVICE_PREFIXES: &[&str] = &[QR, QG, HA];

/// The HA network's subnet unless the file says (`l3_ha_net_cidr`).
pub const L3_HA_NET_CIDR: &str = "169.254.192.0/18";

/// The record under the daemon's run directory listing the labs that came
/// from `--labs-dir`; it sits beside the labs' own directories, so no lab may
/// take its name.
pub const LABS_DIR_RECORD: &str = "from-labs-dir";

/// Names of entries in the daemon's run directory other than labs' (names
/// with a `.`, like `ovslabd.sock`, cannot be lab names anyway).
pub const RESERVED_LAB_NAMES: &[&str] = &[LABS_DIR_RECORD];

/// The DHCP clients' hook in the daemon's run directory: a link to the
/// `ovslabd` binary, which acts as the hook when called by this name (a
/// `.` in it: no lab can be named so).
pub const DHCP_HOOK: &str = "udhcpc.hook";

/// The daemon's run directory unless `--run-dir` says otherwise.
pub const DEFAULT_RUN_ROOT: &str = "/run/ovslab";

/// The longest path a unix socket may have: `sun_path` holds 108 bytes,
/// the terminating NUL included (unix(7)).
pub const SOCKET_PATH_MAX: usize = 107;

/// The longest name of a socket OVS makes in a node's run directory: the
/// control socket `ovs-vswitchd.<pid>.ctl` (or `ovsdb-server.<pid>.ctl`)
/// with a 7-digit pid, `pid_max` being at most 2^22. `db.sock` and the
/// bridges' `<bridge>.mgmt` are shorter.
pub const LONGEST_SOCKET_NAME: &str = "ovs-vswitchd.4194304.ctl";

/// Neutron's hybrid firewall names a port's chains `i`/`o`/`s` + the device
/// name without its prefix, cut to 11 (`MAX_IPTABLES_CHAIN_LEN_WRAP`): so
/// they keep only this many characters of the port UUID, one fewer than
/// the device names.
pub const CHAIN_PORT_CHARS: usize = 10;

/// A stable UUID for an object of a lab (`kind` is e.g. "port", "router").
pub fn object_uuid(lab: &str, kind: &str, name: &str) -> Uuid {
    Uuid::new_v5(
        &OVSLAB_UUID_NAMESPACE,
        format!("ovslab:{lab}:{kind}:{name}").as_bytes(),
    )
}

/// The Nova instance UUID (`vm-uuid` in OVSDB).
pub fn instance_uuid(lab: &str, instance: &str) -> Uuid {
    object_uuid(lab, "instance", instance)
}

/// The Neutron network UUID (`net_uuid` in the agent's port `other_config`).
pub fn network_uuid(lab: &str, network: &str) -> Uuid {
    object_uuid(lab, "network", network)
}

/// `prefix` + the first 11 characters of `uuid`: `qvo8c2f1a3b-4d`.
pub fn device_name(prefix: &str, uuid: &Uuid) -> String {
    let text = uuid.hyphenated().to_string();
    format!("{prefix}{}", &text[..11])
}

/// The ipset of a remote security group: `NIPv4` + the group's UUID, cut
/// to 29 characters, as Liberty's `IpsetManager` names it
/// (`IPSET_NAME_MAX_LENGTH = 31 - len('-n')`, room for its swap set).
pub fn ipset_name(lab: &str, group: &str) -> String {
    let uuid = object_uuid(lab, "security-group", group)
        .hyphenated()
        .to_string();
    format!("NIPv4{}", &uuid[..24])
}

/// The namespace of one object of a lab: `<lab>.<object>`.
pub fn namespace(lab: &str, object: &str) -> String {
    format!("{lab}.{object}")
}

/// The prefix every namespace of `lab` starts with.
pub fn namespace_prefix(lab: &str) -> String {
    format!("{lab}.")
}

/// The project every object of a lab belongs to: its id, as Keystone
/// writes one (32 hex digits).
pub fn project_id(lab: &str) -> String {
    object_uuid(lab, "project", lab).simple().to_string()
}

/// The HA network's name, as Neutron names it: `HA network tenant <project>`.
pub fn ha_network_name(lab: &str) -> String {
    format!("HA network tenant {}", project_id(lab))
}

/// The namespace of an HA router's copy on a node:
/// `<lab>.<node>.qrouter-<router uuid>` (on a real node, `qrouter-<uuid>`).
pub fn ha_router_namespace(lab: &str, node: &str, router: &str) -> String {
    namespace(
        lab,
        &format!("{node}.{QROUTER}{}", object_uuid(lab, "router", router)),
    )
}

/// The lab's run directory for a node's Open vSwitch: `<root>/<lab>/<node>`.
pub fn node_rundir(root: &std::path::Path, lab: &str, node: &str) -> std::path::PathBuf {
    root.join(lab).join(node)
}

/// The longest socket path of a node's Open vSwitch under `root`.
pub fn longest_socket_path(root: &std::path::Path, lab: &str, node: &str) -> std::path::PathBuf {
    node_rundir(root, lab, node).join(LONGEST_SOCKET_NAME)
}

/// `fa:16:3e` + three bytes of the port UUID.
pub fn derived_mac(port: &Uuid) -> [u8; 6] {
    let b = port.as_bytes();
    [0xfa, 0x16, 0x3e, b[13], b[14], b[15]]
}

/// The IPv6 link-local address of a MAC (modified EUI-64, RFC 4291):
/// `fe80::f816:3eff:fe12:3456` for `fa:16:3e:12:34:56`.
pub fn link_local(mac: [u8; 6]) -> std::net::Ipv6Addr {
    let [a, b, c, d, e, f] = mac;
    std::net::Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        a ^ 0x02,
        b,
        c,
        0xff,
        0xfe,
        d,
        e,
        f,
    ])
}

/// A physical router's interface on a provider network: an internal port
/// of its [`BR_TRUNK`], as the 802.1Q sub-interface would be named
/// (`eth1.101`), or `eth1.flat` for the untagged (flat) network.
pub fn trunk_interface(vlan: Option<u16>) -> String {
    match vlan {
        Some(id) => format!("{UPLINK}.{id}"),
        None => format!("{UPLINK}.flat"),
    }
}

/// The cookie every flow of the lab carries (never 0, never all ones).
pub fn lab_cookie(lab: &str) -> u64 {
    let uuid = object_uuid(lab, "lab", lab);
    let bytes: [u8; 8] = uuid.as_bytes()[..8].try_into().expect("eight bytes");
    let cookie = u64::from_be_bytes(bytes);
    match cookie {
        0 | u64::MAX => 1,
        c => c,
    }
}

/// The cookie of a node's OVS agent's flows: each agent stamps its own
/// (Liberty's `agent_uuid_stamp`, drawn at each start there; derived from
/// the lab and node here, so that a restarted daemon knows its flows).
pub fn agent_cookie(lab: &str, node: &str) -> u64 {
    let uuid = object_uuid(lab, "ovs-agent", node);
    let bytes: [u8; 8] = uuid.as_bytes()[..8].try_into().expect("eight bytes");
    match u64::from_be_bytes(bytes) {
        0 | u64::MAX => 1,
        c => c,
    }
}

/// The devices of an instance's hybrid plug, all named after its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HybridPlug {
    pub port: Uuid,
    /// Host end of the instance NIC, a port of `qbr`.
    pub tap: String,
    /// The per-port Linux bridge where the iptables firewall applies.
    pub qbr: String,
    /// The veth end on `qbr`.
    pub qvb: String,
    /// The veth end on `br-int`.
    pub qvo: String,
}

impl HybridPlug {
    /// The plug of the instance whose port is `port`
    /// ([`Instance::plug`](crate::Instance::plug)).
    pub fn new(port: Uuid) -> Self {
        HybridPlug {
            port,
            tap: device_name(TAP, &port),
            qbr: device_name(QBR, &port),
            qvb: device_name(QVB, &port),
            qvo: device_name(QVO, &port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_are_prefix_plus_eleven_uuid_characters() {
        let uuid = Uuid::parse_str("8c2f1a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b").unwrap();
        assert_eq!(device_name(QVO, &uuid), "qvo8c2f1a3b-4d");
        assert_eq!(device_name(QR, &uuid), "qr-8c2f1a3b-4d");
        assert_eq!(device_name(TAP, &uuid).len(), 14);
    }

    #[test]
    fn names_are_stable_and_distinct_per_lab() {
        let port = |lab, name| object_uuid(lab, "port", name);
        let a = HybridPlug::new(port("seed", "instance1"));
        assert_eq!(a, HybridPlug::new(port("seed", "instance1")));
        assert_ne!(a.port, port("other", "instance1"));
        assert_ne!(a.port, port("seed", "instance2"));
        for name in [&a.tap, &a.qbr, &a.qvb, &a.qvo] {
            assert!(name.len() <= IFNAME_MAX, "{name}");
        }
    }

    #[test]
    fn link_local_addresses_are_modified_eui_64() {
        assert_eq!(
            link_local([0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56]).to_string(),
            "fe80::f816:3eff:fe12:3456"
        );
    }

    #[test]
    fn macs_are_openstack_macs() {
        let mac = derived_mac(&object_uuid("seed", "port", "instance1"));
        assert_eq!(&mac[..3], &[0xfa, 0x16, 0x3e]);
    }

    #[test]
    fn cookies_differ_per_lab_and_are_never_wildcards() {
        assert_ne!(lab_cookie("seed"), lab_cookie("seed2"));
        assert_ne!(lab_cookie("seed"), 0);
        assert_eq!(lab_cookie("seed"), lab_cookie("seed"));
    }

    #[test]
    fn namespaces_are_lab_prefixed() {
        assert_eq!(namespace("seed", "compute1"), "seed.compute1");
        assert!(namespace("seed", "x").starts_with(&namespace_prefix("seed")));
        assert!(!namespace("seed-2", "x").starts_with(&namespace_prefix("seed")));
    }
}
