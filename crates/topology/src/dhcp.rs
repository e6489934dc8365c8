//! The DHCP agent's side of a network, as Liberty's `neutron-dhcp-agent`
//! makes it (`agent/linux/dhcp.py`): the `qdhcp-<network uuid>` namespace,
//! its port, dnsmasq's command line and the files dnsmasq reads (`host`,
//! `addn_hosts`, `opts`); and the instances' side, busybox `udhcpc` (the
//! DHCP client of CirrOS, the image every Neutron walkthrough boots).
//!
//! Everything here is pure: names, file contents and argument lists.

use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::model::{Network, format_mac};
use crate::naming::{self, TAP};

/// The namespace prefix of a DHCP server.
pub const QDHCP: &str = "qdhcp-";
/// The prefix of the DHCP port's device in its namespace (`ovs_use_veth`).
pub const NS: &str = "ns-";
/// The domain the agent gives every host (`dhcp_domain`).
pub const DOMAIN: &str = "openstacklocal";
/// Lease time (`dhcp_lease_duration`, 86400 s).
pub const LEASE_SECONDS: u32 = 86_400;
/// The metadata service's address.
pub const METADATA_ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// The DHCP port of a network: `tap…` on br-int, its veth peer `ns-…` in
/// the qdhcp namespace (Neutron's `ovs_use_veth`, as for router ports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpPort {
    pub port: uuid::Uuid,
    /// `ns-…`, in the qdhcp namespace.
    pub device: String,
    /// `tap…`, on the node's br-int.
    pub tap: String,
    pub mac: [u8; 6],
}

impl DhcpPort {
    /// The DHCP port of `network`, which has DHCP on.
    pub fn of(network: &Network) -> Self {
        let ids = network
            .dhcp_port
            .expect("validated: a DHCP network has a DHCP port");
        DhcpPort {
            port: ids.uuid,
            device: naming::device_name(NS, &ids.uuid),
            tap: naming::device_name(TAP, &ids.uuid),
            mac: ids.mac,
        }
    }
}

/// The DHCP server namespace of a network: `<lab>.qdhcp-<network uuid>`.
pub fn namespace(lab: &str, network: &str) -> String {
    naming::namespace(
        lab,
        &format!("{QDHCP}{}", naming::network_uuid(lab, network)),
    )
}

/// One DHCP server: a network's dnsmasq and what it hands out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DhcpServerSpec {
    pub network: String,
    /// The node whose DHCP agent serves the network.
    pub node: String,
    pub namespace: String,
    /// `ns-…`: where dnsmasq listens.
    pub interface: String,
    pub subnet: Ipv4Net,
    /// The router option and the next hop of the default route.
    pub gateway: Ipv4Addr,
    /// The next hop of the metadata route: the gateway, or on an isolated
    /// network the DHCP port itself (which answers for 169.254.169.254).
    pub metadata_via: Ipv4Addr,
    pub dns_nameservers: Vec<Ipv4Addr>,
    /// Every port of the network with its fixed address, as the agent
    /// writes them (instances, router interfaces, the DHCP port itself).
    pub hosts: Vec<([u8; 6], Ipv4Addr)>,
}

/// `host-192-168-1-11`: the agent's name for a port without a DNS name.
fn hostname(ip: Ipv4Addr) -> String {
    format!("host-{}", ip.to_string().replace('.', "-"))
}

impl DhcpServerSpec {
    /// The `host` file (`--dhcp-hostsfile`): `mac,name.domain,ip` per port.
    pub fn host_file(&self) -> String {
        self.hosts
            .iter()
            .map(|(mac, ip)| format!("{},{}.{DOMAIN},{ip}\n", format_mac(mac), hostname(*ip)))
            .collect()
    }

    /// The `addn_hosts` file: `ip\tname.domain name` per port.
    pub fn addn_hosts(&self) -> String {
        self.hosts
            .iter()
            .map(|(_, ip)| {
                let name = hostname(*ip);
                format!("{ip}\t{name}.{DOMAIN} {name}\n")
            })
            .collect()
    }

    /// The `opts` file: DNS servers if any, the classless static routes
    /// (option 121, and 249 for Windows) with the metadata route, the
    /// router.
    pub fn opts(&self) -> String {
        let gw = self.gateway;
        let mut out = String::new();
        if !self.dns_nameservers.is_empty() {
            let dns: Vec<String> = self.dns_nameservers.iter().map(|d| d.to_string()).collect();
            out.push_str(&format!("tag:tag0,option:dns-server,{}\n", dns.join(",")));
        }
        let md = self.metadata_via;
        let routes = format!("{METADATA_ADDRESS}/32,{md},0.0.0.0/0,{gw}");
        out.push_str(&format!(
            "tag:tag0,option:classless-static-route,{routes}\n"
        ));
        out.push_str(&format!("tag:tag0,249,{routes}\n"));
        out.push_str(&format!("tag:tag0,option:router,{gw}\n"));
        out
    }

    /// The files dnsmasq reads, by name in its directory.
    pub fn files(&self) -> Vec<(&'static str, String)> {
        vec![
            ("host", self.host_file()),
            ("addn_hosts", self.addn_hosts()),
            ("opts", self.opts()),
        ]
    }

    /// dnsmasq's arguments as the agent gives them, with its files in
    /// `dir` (the agent's `<dhcp_confs>/<network id>`).
    pub fn dnsmasq_args(&self, dir: &Path) -> Vec<String> {
        let file = |name: &str| dir.join(name).display().to_string();
        let size = 1u64 << (32 - self.subnet.prefix_len());
        vec![
            "--no-hosts".into(),
            "--no-resolv".into(),
            "--strict-order".into(),
            "--except-interface=lo".into(),
            format!("--pid-file={}", file("pid")),
            format!("--dhcp-hostsfile={}", file("host")),
            format!("--addn-hosts={}", file("addn_hosts")),
            format!("--dhcp-optsfile={}", file("opts")),
            format!("--dhcp-leasefile={}", file("leases")),
            "--dhcp-match=set:ipxe,175".into(),
            "--bind-interfaces".into(),
            format!("--interface={}", self.interface),
            format!(
                "--dhcp-range=set:tag0,{},static,{LEASE_SECONDS}s",
                self.subnet.network()
            ),
            format!("--dhcp-lease-max={size}"),
            "--conf-file=".into(),
            format!("--domain={DOMAIN}"),
        ]
    }
}

/// An instance's DHCP client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DhcpClientSpec {
    pub instance: String,
    pub namespace: String,
    pub interface: String,
    /// Its reservation: the address it must end up with.
    pub address: Ipv4Net,
}

impl DhcpClientSpec {
    /// udhcpc's arguments: in the foreground (ovslabd supervises it), its
    /// pidfile in `dir`, events handed to `hook`, asking for the classless
    /// static routes, and retrying every second rather than every three.
    pub fn udhcpc_args(&self, dir: &Path, hook: &Path) -> Vec<String> {
        vec![
            "udhcpc".into(),
            "-f".into(),
            "-i".into(),
            self.interface.clone(),
            "-s".into(),
            hook.display().to_string(),
            "-p".into(),
            dir.join("pid").display().to_string(),
            "-t".into(),
            "3".into(),
            "-T".into(),
            "1".into(),
            "-A".into(),
            "1".into(),
            "-O".into(),
            "staticroutes".into(),
            "-x".into(),
            format!("hostname:{}", self.instance),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> DhcpServerSpec {
        DhcpServerSpec {
            network: "net1".into(),
            node: "network".into(),
            namespace: namespace("seed", "net1"),
            interface: "ns-0123456789a".into(),
            subnet: "10.0.0.0/24".parse().unwrap(),
            gateway: "10.0.0.1".parse().unwrap(),
            metadata_via: "10.0.0.1".parse().unwrap(),
            dns_nameservers: vec![],
            hosts: vec![
                ([0xfa, 0x16, 0x3e, 0, 0, 1], "10.0.0.1".parse().unwrap()),
                (
                    [0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56],
                    "10.0.0.5".parse().unwrap(),
                ),
            ],
        }
    }

    #[test]
    fn the_files_read_as_the_agent_writes_them() {
        let s = server();
        assert_eq!(
            s.host_file(),
            "fa:16:3e:00:00:01,host-10-0-0-1.openstacklocal,10.0.0.1\n\
             fa:16:3e:12:34:56,host-10-0-0-5.openstacklocal,10.0.0.5\n"
        );
        assert_eq!(
            s.addn_hosts(),
            "10.0.0.1\thost-10-0-0-1.openstacklocal host-10-0-0-1\n\
             10.0.0.5\thost-10-0-0-5.openstacklocal host-10-0-0-5\n"
        );
        assert_eq!(
            s.opts(),
            "tag:tag0,option:classless-static-route,169.254.169.254/32,10.0.0.1,0.0.0.0/0,10.0.0.1\n\
             tag:tag0,249,169.254.169.254/32,10.0.0.1,0.0.0.0/0,10.0.0.1\n\
             tag:tag0,option:router,10.0.0.1\n"
        );
        let with_dns = DhcpServerSpec {
            dns_nameservers: vec!["8.8.8.8".parse().unwrap(), "8.8.4.4".parse().unwrap()],
            ..server()
        };
        assert!(
            with_dns
                .opts()
                .starts_with("tag:tag0,option:dns-server,8.8.8.8,8.8.4.4\n")
        );
    }

    #[test]
    fn dnsmasq_runs_with_the_agents_command_line() {
        let args = server().dnsmasq_args(Path::new("/run/ovslab/seed/dhcp/net1"));
        assert_eq!(
            args.join(" "),
            "--no-hosts --no-resolv --strict-order --except-interface=lo \
             --pid-file=/run/ovslab/seed/dhcp/net1/pid \
             --dhcp-hostsfile=/run/ovslab/seed/dhcp/net1/host \
             --addn-hosts=/run/ovslab/seed/dhcp/net1/addn_hosts \
             --dhcp-optsfile=/run/ovslab/seed/dhcp/net1/opts \
             --dhcp-leasefile=/run/ovslab/seed/dhcp/net1/leases \
             --dhcp-match=set:ipxe,175 --bind-interfaces --interface=ns-0123456789a \
             --dhcp-range=set:tag0,10.0.0.0,static,86400s --dhcp-lease-max=256 \
             --conf-file= --domain=openstacklocal"
        );
    }

    #[test]
    fn the_dhcp_port_is_named_as_a_router_port_is() {
        let with_dhcp = crate::SEED_YAML.replace("dhcp: false", "dhcp: true");
        let topo = crate::parse("seed", &with_dhcp).unwrap();
        let p = DhcpPort::of(topo.network("net1").unwrap());
        assert!(p.tap.starts_with("tap") && p.tap.len() == 14, "{}", p.tap);
        assert!(
            p.device.starts_with("ns-") && p.device.len() == 14,
            "{}",
            p.device
        );
        assert_eq!(p.tap[3..], p.device[3..]);
        assert!(namespace("seed", "net1").starts_with("seed.qdhcp-"));
    }
}
