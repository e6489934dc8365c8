//! The L3 agent's side of an HA router, as Liberty's `ha_router.py` and
//! `agent/linux/keepalived.py` make it: each copy's `ha-` port on the HA
//! network, and the keepalived configuration of the copy — one VRRP
//! instance, `state BACKUP` and `nopreempt` on every copy, so the first
//! copy to miss three advertisements becomes master and stays so.
//!
//! Everything here is pure: names, file contents and argument lists.

use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::model::Router;
use crate::naming::{self, HA, TAP};

/// `ha_vrrp_advert_int`: seconds between advertisements.
pub const ADVERT_INT: u32 = 2;
/// `HA_DEFAULT_PRIORITY`: every copy's, so none preempts another.
pub const PRIORITY: u32 = 50;
/// `GARP_MASTER_DELAY`: the second round of gratuitous ARPs after a copy
/// became master.
pub const GARP_MASTER_DELAY: u32 = 60;
/// Where the L3 agent finds a free /24 for the primary VIPs
/// (`PRIVATE_CIDR_RANGE`), less the metadata address and DVR's
/// floating-IP link range, which it excludes.
const PRIVATE_CIDR_RANGE: &str = "169.254.0.0/16";
const EXCLUDED_FROM_VIPS: [&str; 2] = ["169.254.169.254/32", "169.254.64.0/18"];

/// The prefix of a keepalived directory under the lab's run directory:
/// `ha_confs.<node>.<router uuid>` (the agent's `ha_confs_path/<router id>`,
/// one per node).
pub const CONF_DIR_PREFIX: &str = "ha_confs.";

/// The keepalived directory of `router`'s copy on `node` (see
/// [`KeepalivedSpec::dir_name`]).
pub fn copy_dir_name(lab: &str, router: &str, node: &str) -> String {
    format!(
        "{CONF_DIR_PREFIX}{node}.{}",
        naming::object_uuid(lab, "router", router)
    )
}

/// A copy's port on the HA network: `tap…` on its node's br-int, its veth
/// peer `ha-…` in the copy's namespace (`network:router_ha_interface`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaPort {
    pub port: uuid::Uuid,
    /// `ha-…`, in the router copy's namespace.
    pub device: String,
    /// `tap…`, on the node's br-int.
    pub tap: String,
    pub mac: [u8; 6],
}

impl HaPort {
    /// The `ha-` port of HA router `router`'s copy on `node`.
    pub fn of(router: &Router, node: &str) -> Self {
        let ids = router
            .ha
            .as_ref()
            .and_then(|ha| ha.port_on(node))
            .expect("validated: an HA router has a port per copy");
        HaPort {
            port: ids.uuid,
            device: naming::device_name(HA, &ids.uuid),
            tap: naming::device_name(TAP, &ids.uuid),
            mac: ids.mac,
        }
    }
}

/// The /24 the primary VIPs come from: the first free one of
/// 169.254.0.0/16 once the metadata address, DVR's range and the HA
/// network are left out (the agent's `get_free_range`); `None` when the HA
/// network leaves none.
pub fn primary_vip_range(ha_cidr: Ipv4Net) -> Option<Ipv4Net> {
    let parent: Ipv4Net = PRIVATE_CIDR_RANGE.parse().expect("a valid range");
    let excluded: Vec<Ipv4Net> = EXCLUDED_FROM_VIPS
        .iter()
        .map(|c| c.parse().expect("a valid range"))
        .chain(std::iter::once(ha_cidr))
        .collect();
    parent.subnets(24).ok()?.find(|block| {
        !excluded
            .iter()
            .any(|e| e.contains(block) || block.contains(e))
    })
}

/// One HA router copy's keepalived: where it runs, and its configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeepalivedSpec {
    pub router: String,
    pub node: String,
    pub namespace: String,
    pub vrid: u8,
    /// The copy's `ha-…` device.
    pub interface: String,
    /// The primary VIP on `interface`: `<first free /24> + vrid`.
    pub vip: Ipv4Net,
    /// Every other address the master holds: (address, device).
    pub excluded: Vec<(Ipv4Net, String)>,
    /// The master's routes: (destination, next hop, device).
    pub routes: Vec<(Ipv4Net, Ipv4Addr, String)>,
}

impl KeepalivedSpec {
    /// The directory of this copy's keepalived under the lab's run
    /// directory: `ha_confs.<node>.<router uuid>`.
    pub fn dir_name(&self, lab: &str) -> String {
        copy_dir_name(lab, &self.router, &self.node)
    }

    /// `keepalived.conf` as the agent writes it (`KeepalivedConf`); the
    /// excluded addresses sorted as the agent sorts them, by their text.
    pub fn config(&self) -> String {
        let mut lines = vec![
            format!("vrrp_instance VR_{} {{", self.vrid),
            "    state BACKUP".to_string(),
            format!("    interface {}", self.interface),
            format!("    virtual_router_id {}", self.vrid),
            format!("    priority {PRIORITY}"),
            format!("    garp_master_delay {GARP_MASTER_DELAY}"),
            "    nopreempt".to_string(),
            format!("    advert_int {ADVERT_INT}"),
            "    track_interface {".to_string(),
            format!("        {}", self.interface),
            "    }".to_string(),
            "    virtual_ipaddress {".to_string(),
            format!("        {} dev {}", self.vip, self.interface),
            "    }".to_string(),
        ];
        if !self.excluded.is_empty() {
            let mut vips: Vec<(String, &str)> = self
                .excluded
                .iter()
                .map(|(a, dev)| (a.to_string(), dev.as_str()))
                .collect();
            vips.sort();
            lines.push("    virtual_ipaddress_excluded {".to_string());
            lines.extend(vips.iter().map(|(a, dev)| format!("        {a} dev {dev}")));
            lines.push("    }".to_string());
        }
        if !self.routes.is_empty() {
            lines.push("    virtual_routes {".to_string());
            lines.extend(
                self.routes
                    .iter()
                    .map(|(dst, via, dev)| format!("        {dst} via {via} dev {dev}")),
            );
            lines.push("    }".to_string());
        }
        lines.push("}".to_string());
        lines.join("\n")
    }

    /// keepalived's arguments as the agent runs it (`-P -f <conf> -p <pid>
    /// -r <pid>-vrrp`), with `dir` its directory; ovslabd keeps it in the
    /// foreground (`-n`, its child, as it supervises it) and its log on
    /// the console (`-l`, into the directory's log).
    pub fn keepalived_args(&self, dir: &Path) -> Vec<String> {
        let path = |name: &str| dir.join(name).display().to_string();
        vec![
            "-n".into(),
            "-l".into(),
            "-P".into(),
            "-f".into(),
            path("keepalived.conf"),
            "-p".into(),
            path("pid"),
            "-r".into(),
            path("pid-vrrp"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_primary_vips_come_from_the_first_free_slash_24() {
        let default: Ipv4Net = naming::L3_HA_NET_CIDR.parse().unwrap();
        assert_eq!(
            primary_vip_range(default),
            Some("169.254.0.0/24".parse().unwrap())
        );
        // An HA network at the start of the range pushes them past it.
        assert_eq!(
            primary_vip_range("169.254.0.0/18".parse().unwrap()),
            Some("169.254.128.0/24".parse().unwrap())
        );
        assert_eq!(primary_vip_range("169.254.0.0/16".parse().unwrap()), None);
    }

    #[test]
    fn the_configuration_is_the_agents() {
        let spec = KeepalivedSpec {
            router: "router1".into(),
            node: "network1".into(),
            namespace: "lab.network1.qrouter-x".into(),
            vrid: 1,
            interface: "ha-0123abcd-ef".into(),
            vip: "169.254.0.1/24".parse().unwrap(),
            excluded: vec![
                ("192.168.1.1/24".parse().unwrap(), "qr-1".into()),
                ("203.0.113.101/24".parse().unwrap(), "qg-1".into()),
                ("203.0.113.11/32".parse().unwrap(), "qg-1".into()),
            ],
            routes: vec![(
                "0.0.0.0/0".parse().unwrap(),
                "203.0.113.1".parse().unwrap(),
                "qg-1".into(),
            )],
        };
        assert_eq!(
            spec.config(),
            "vrrp_instance VR_1 {
    state BACKUP
    interface ha-0123abcd-ef
    virtual_router_id 1
    priority 50
    garp_master_delay 60
    nopreempt
    advert_int 2
    track_interface {
        ha-0123abcd-ef
    }
    virtual_ipaddress {
        169.254.0.1/24 dev ha-0123abcd-ef
    }
    virtual_ipaddress_excluded {
        192.168.1.1/24 dev qr-1
        203.0.113.101/24 dev qg-1
        203.0.113.11/32 dev qg-1
    }
    virtual_routes {
        0.0.0.0/0 via 203.0.113.1 dev qg-1
    }
}"
        );
    }
}
