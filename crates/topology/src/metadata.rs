//! The metadata service's side of the plan: where it listens and what each
//! instance reads from it. As Liberty wires it, an instance behind a
//! router reaches 169.254.169.254:80 through the router's namespace, where
//! the L3 agent redirects it to the metadata proxy on port 9697; an
//! instance on a network without a Neutron router reaches it in the
//! network's qdhcp namespace, where the proxy listens on its DHCP port's
//! 169.254.169.254 (which every DHCP port holds, with
//! `enable_isolated_metadata`). Which instance asks is told by the
//! request's source address, as the proxy's `X-Forwarded-For` tells Nova.

use std::net::{Ipv4Addr, SocketAddrV4};

use serde::Serialize;

use crate::dhcp::{self, METADATA_ADDRESS};
use crate::model::{Instance, Topology};
use crate::naming;
use crate::plan::router_copies;

/// The port the L3 agent's metadata proxy listens on in a router.
pub const ROUTER_PROXY_PORT: u16 = 9697;

/// One place the metadata service answers, and for whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetadataSpec {
    pub namespace: String,
    pub listen: SocketAddrV4,
    /// `router router1`, `network net1`: for messages.
    pub serves: String,
    /// The instances that reach it, by fixed address.
    pub instances: Vec<InstanceMetadata>,
}

/// What one instance reads from the metadata service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceMetadata {
    /// Nova's instance UUID.
    pub uuid: String,
    pub name: String,
    pub fixed_ip: Ipv4Addr,
    pub floating_ip: Option<Ipv4Addr>,
    pub ssh_keys: Vec<String>,
    pub user_data: Option<String>,
}

impl InstanceMetadata {
    fn of(lab: &str, i: &Instance) -> Self {
        InstanceMetadata {
            uuid: naming::instance_uuid(lab, &i.name).to_string(),
            name: i.name.clone(),
            fixed_ip: i.address,
            floating_ip: i.floating_ip,
            ssh_keys: i.ssh_keys.clone(),
            user_data: i.user_data.clone(),
        }
    }
}

/// Whether a network is isolated: no Neutron router has an interface on it.
pub fn isolated(topo: &Topology, network: &str) -> bool {
    !topo
        .routers
        .iter()
        .any(|r| r.interfaces.iter().any(|n| n == network))
}

/// Every place the metadata service answers in the lab: each router (the
/// L3 agent's `enable_metadata_proxy`, on by default), and each isolated
/// DHCP network's qdhcp namespace.
pub fn plan(topo: &Topology) -> Vec<MetadataSpec> {
    let lab = topo.lab.as_str();
    let mut out = Vec::new();
    for router in &topo.routers {
        let instances: Vec<InstanceMetadata> = topo
            .instances
            .iter()
            .filter(|i| router.interfaces.contains(&i.network))
            .map(|i| InstanceMetadata::of(lab, i))
            .collect();
        // Every copy of an HA router answers: its rules redirect there
        // whichever copy is master.
        for (_, namespace) in router_copies(lab, router) {
            out.push(MetadataSpec {
                namespace,
                listen: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, ROUTER_PROXY_PORT),
                serves: format!("router {}", router.name),
                instances: instances.clone(),
            });
        }
    }
    for net in &topo.networks {
        if !net.dhcp || net.dhcp_address.is_none() || !isolated(topo, &net.name) {
            continue;
        }
        let instances: Vec<InstanceMetadata> = topo
            .instances
            .iter()
            .filter(|i| i.network == net.name)
            .map(|i| InstanceMetadata::of(lab, i))
            .collect();
        out.push(MetadataSpec {
            namespace: dhcp::namespace(lab, &net.name),
            listen: SocketAddrV4::new(METADATA_ADDRESS, 80),
            serves: format!("network {}", net.name),
            instances,
        });
    }
    out
}

/// The answer to `GET path` from `source`: its content type and body, or
/// `None` (404). The OpenStack paths (`/openstack/latest/…`) and the EC2
/// ones (`/latest/meta-data/…`, `/latest/user-data`) that cloud-init reads.
pub fn answer(
    instances: &[InstanceMetadata],
    source: Ipv4Addr,
    path: &str,
) -> Option<(&'static str, String)> {
    let i = instances.iter().find(|i| i.fixed_ip == source)?;
    let text = |s: String| Some(("text/plain", s));
    let hostname = format!("{}.novalocal", i.name);
    let path = path.split('?').next().unwrap_or_default();
    let trimmed = path.trim_end_matches('/');
    match trimmed {
        "" => text("latest\n".into()),
        "/openstack" => text("latest".into()),
        "/openstack/latest" => text("meta_data.json\nuser_data".into()),
        "/openstack/latest/meta_data.json" => {
            let keys: serde_json::Map<String, serde_json::Value> = i
                .ssh_keys
                .iter()
                .enumerate()
                .map(|(n, k)| (format!("key{n}"), serde_json::Value::String(k.clone())))
                .collect();
            let body = serde_json::json!({
                "uuid": i.uuid,
                "name": i.name,
                "hostname": hostname,
                "launch_index": 0,
                "availability_zone": "nova",
                "public_keys": keys,
            });
            Some(("application/json", body.to_string()))
        }
        "/openstack/latest/user_data" | "/latest/user-data" => i.user_data.clone().and_then(&text),
        "/latest" => text("meta-data/\nuser-data".into()),
        "/latest/meta-data" => {
            let mut items = vec![
                "hostname",
                "instance-id",
                "local-hostname",
                "local-ipv4",
                "public-ipv4",
            ];
            if !i.ssh_keys.is_empty() {
                items.push("public-keys/");
            }
            text(items.join("\n"))
        }
        "/latest/meta-data/instance-id" => {
            let short: String = i.uuid.chars().filter(|c| *c != '-').take(8).collect();
            text(format!("i-{short}"))
        }
        "/latest/meta-data/hostname" | "/latest/meta-data/local-hostname" => text(hostname),
        "/latest/meta-data/local-ipv4" => text(i.fixed_ip.to_string()),
        "/latest/meta-data/public-ipv4" => {
            text(i.floating_ip.map(|f| f.to_string()).unwrap_or_default())
        }
        "/latest/meta-data/public-keys" if !i.ssh_keys.is_empty() => text(
            (0..i.ssh_keys.len())
                .map(|n| format!("{n}=key{n}"))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        other => {
            let rest = other.strip_prefix("/latest/meta-data/public-keys/")?;
            let (n, file) = rest.split_once('/').unwrap_or((rest, ""));
            let key = i.ssh_keys.get(n.parse::<usize>().ok()?)?;
            match file {
                "" => text("openssh-key".into()),
                "openssh-key" => text(key.clone()),
                _ => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one() -> Vec<InstanceMetadata> {
        vec![InstanceMetadata {
            uuid: "8c2f1a3b-4d5e-5f60-8a1b-2c3d4e5f6a7b".into(),
            name: "instance1".into(),
            fixed_ip: "192.168.1.11".parse().unwrap(),
            floating_ip: Some("203.0.113.102".parse().unwrap()),
            ssh_keys: vec!["ssh-ed25519 AAAAC3Nz demo@lab".into()],
            user_data: Some("#cloud-config\n".into()),
        }]
    }

    #[test]
    fn each_instance_reads_its_own_identity() {
        let md = one();
        let me: Ipv4Addr = "192.168.1.11".parse().unwrap();
        let get = |p: &str| answer(&md, me, p).map(|(_, b)| b);
        assert_eq!(get("/latest/meta-data/instance-id").unwrap(), "i-8c2f1a3b");
        assert_eq!(get("/latest/meta-data/local-ipv4").unwrap(), "192.168.1.11");
        assert_eq!(
            get("/latest/meta-data/public-ipv4").unwrap(),
            "203.0.113.102"
        );
        assert_eq!(
            get("/latest/meta-data/hostname").unwrap(),
            "instance1.novalocal"
        );
        assert_eq!(get("/latest/meta-data/public-keys/").unwrap(), "0=key0");
        assert_eq!(
            get("/latest/meta-data/public-keys/0/openssh-key").unwrap(),
            "ssh-ed25519 AAAAC3Nz demo@lab"
        );
        assert_eq!(get("/latest/user-data").unwrap(), "#cloud-config\n");
        let json: serde_json::Value =
            serde_json::from_str(&get("/openstack/latest/meta_data.json").unwrap()).unwrap();
        assert_eq!(json["uuid"], "8c2f1a3b-4d5e-5f60-8a1b-2c3d4e5f6a7b");
        assert_eq!(json["public_keys"]["key0"], "ssh-ed25519 AAAAC3Nz demo@lab");
        // A stranger, or a path that does not exist: nothing.
        assert!(
            answer(
                &md,
                "192.168.1.99".parse().unwrap(),
                "/latest/meta-data/local-ipv4"
            )
            .is_none()
        );
        assert!(get("/latest/meta-data/public-keys/1/openssh-key").is_none());
        assert!(get("/latest/meta-data/nothing").is_none());
    }
}
