//! What exists, as pure data: read by the drivers, compared by [`crate::diff`].

use std::collections::BTreeMap;

use ipnet::Ipv4Net;
use ovslab_topology::plan::{FlowSpec, RouteSpec};

/// One link as netlink reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActualLink {
    pub name: String,
    pub ifindex: u32,
    /// `veth`, `bridge`, `tun`, … (empty when the kernel gives no kind).
    pub kind: String,
    pub master: Option<String>,
    pub up: bool,
    pub promisc: bool,
    pub mac: Option<[u8; 6]>,
    pub addresses: Vec<Ipv4Net>,
    pub tx_checksum: bool,
    pub mtu: u32,
    /// IPv6 makes no addresses on it (`addrgenmode none`).
    pub ipv6_addr_gen_none: bool,
    /// The ifindex of its other end, when that is in another namespace.
    pub peer_elsewhere: Option<u32>,
}

/// One namespace's links and routes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActualNamespace {
    pub links: Vec<ActualLink>,
    pub routes: Vec<RouteSpec>,
    pub sysctls: BTreeMap<String, String>,
}

impl ActualNamespace {
    pub fn link(&self, name: &str) -> Option<&ActualLink> {
        self.links.iter().find(|l| l.name == name)
    }
}

/// One OVS port (with its single interface) as OVSDB holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActualPort {
    pub uuid: String,
    pub interface_uuid: String,
    pub name: String,
    pub tag: Option<u16>,
    /// The interface's `type` ("" for a system port).
    pub kind: String,
    /// The interface's `options` (a patch port's `peer`, a tunnel's
    /// endpoints and keys).
    pub options: BTreeMap<String, String>,
    pub interface_external_ids: BTreeMap<String, String>,
    pub port_other_config: BTreeMap<String, String>,
    /// OpenFlow port number, once vswitchd has assigned one.
    pub ofport: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActualBridge {
    pub uuid: String,
    pub name: String,
    pub datapath_type: String,
    pub fail_mode: Option<String>,
    pub protocols: Vec<String>,
    pub external_ids: BTreeMap<String, String>,
    pub ports: Vec<ActualPort>,
}

impl ActualBridge {
    pub fn port(&self, name: &str) -> Option<&ActualPort> {
        self.ports.iter().find(|p| p.name == name)
    }
}

/// A node's OVSDB contents that ovslab manages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActualSwitch {
    /// The `Open_vSwitch` root row, if the database has one.
    pub root_uuid: Option<String>,
    /// The root row's `other_config` (datapath options such as userspace TSO).
    pub root_other_config: BTreeMap<String, String>,
    /// The root row's identity as `ovs-ctl` sets it: `ovs_version` and
    /// `external_ids:system-id`.
    pub root_identity: RootIdentity,
    pub bridges: Vec<ActualBridge>,
}

impl ActualSwitch {
    pub fn bridge(&self, name: &str) -> Option<&ActualBridge> {
        self.bridges.iter().find(|b| b.name == name)
    }
}

/// What `ovs-ctl` writes into a switch's root row when it starts it, and
/// `ovs-vsctl show` and the agents read back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RootIdentity {
    pub ovs_version: Option<String>,
    pub system_id: Option<String>,
}

/// A flow read back from a bridge: translated to a [`FlowSpec`] when it is
/// one the planner could have made, kept raw otherwise (and then removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActualFlow {
    Known { spec: FlowSpec, cookie: u64 },
    Foreign { description: String },
}
