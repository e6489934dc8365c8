//! Derived identifiers that must not collide within a lab, settled once
//! for the whole lab when a topology is validated.
//!
//! Every port UUID and MAC of a lab is a hash of the lab's and an object's
//! names ([`naming::object_uuid`]): stable across runs and hosts, but cut
//! short where it is used. A port's devices keep 11 characters of its UUID
//! (`tap`/`qbr`/`qvb`/`qvo`/`qr-`/`qg-`/`ha-`/`ns-` + `8c2f1a3b-4d`) and the
//! hybrid firewall's chains 10 (36 bits), and a derived MAC keeps 24 bits
//! (`fa:16:3e` + 3 bytes). By the birthday bound 24 bits collide at a few
//! thousand ports, so, as Neutron retries a MAC that is taken, the objects
//! that would share one are given another:
//!
//! 1. A MAC given in the file (an instance's `mac:`) is the instance's;
//!    validation refuses two equal given MACs.
//! 2. Every other object derives its *first candidate* as ovslab always
//!    did, and keeps it unless a given MAC, or the first candidate of an
//!    object earlier in lab order (`assign`), is the same.
//! 3. Those that lost derive their next candidates (`<name>#1`, `#2`, …
//!    for a port UUID; a hash of the port UUID and the attempt for a MAC)
//!    in lab order, each taking the first that is no object's first
//!    candidate, no given MAC and not taken by an earlier retry.
//!
//! Port UUIDs are settled first, on their first 36 bits (so device names
//! and chain names differ lab-wide), then MACs, whose first candidate is
//! three bytes of the settled port UUID. The outcome depends on the file
//! only: the same file gives the same identifiers, and a lab that had no
//! collision keeps exactly the identifiers it always had. An object whose
//! first candidate nobody else shares keeps it through any edit, except
//! one that brings in an object with the same first candidate that comes
//! earlier in lab order (or a given MAC equal to its MAC); appending an
//! instance never changes another object's identifiers.
//!
//! Other UUIDs are used whole (instances' `vm-uuid`, networks, routers'
//! namespaces: 122 bits) or nearly (the security groups' ipsets keep 24
//! characters, 76 bits, and validation refuses two equal ones): no
//! collision to expect in any lab.

use std::collections::HashSet;
use std::hash::Hash;

use uuid::Uuid;

use crate::model::{PortIds, Topology};
use crate::naming;

/// One object of the lab whose identifiers are derived: a Neutron port
/// (a UUID and a MAC), or a NIC with a MAC only (an external host's, a
/// physical router's interface).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Claim {
    /// `kind` and `name` of [`naming::object_uuid`].
    kind: &'static str,
    name: String,
    /// A Neutron port, whose UUID names devices.
    port: bool,
    /// The MAC the file gives it.
    given_mac: Option<[u8; 6]>,
}

/// The first 36 bits of a port UUID: the 10 characters the firewall's
/// chain names keep (`8c2f1a3b-4`), one fewer than device names do. Ports
/// apart on these are apart on both.
fn port_key(uuid: &Uuid) -> u64 {
    let b = uuid.as_bytes();
    u64::from_be_bytes([0, 0, 0, b[0], b[1], b[2], b[3], b[4]]) >> 4
}

/// Gives each claimant (`Some` in `first`) its first candidate's value
/// unless its key is `reserved` or an earlier claimant's first key; the
/// others then take, in order, the first of their retries (`retry(index,
/// attempt)`, attempt 1, 2, …) whose key is no first key, not reserved
/// and not taken by an earlier retry.
///
/// The retries end as long as there are fewer claimants and reserved keys
/// than keys; the smallest key space here is the 2^24 derived MACs, far
/// above what a topology file the daemon accepts (4 MiB) can hold.
fn settle<K: Copy + Eq + Hash, V>(
    first: Vec<Option<(K, V)>>,
    reserved: HashSet<K>,
    mut retry: impl FnMut(usize, u32) -> (K, V),
) -> Vec<Option<V>> {
    let mut taken = reserved;
    let mut lost = Vec::new();
    let mut out = Vec::with_capacity(first.len());
    for (i, candidate) in first.into_iter().enumerate() {
        match candidate {
            Some((key, value)) if taken.insert(key) => out.push(Some(value)),
            Some(_) => {
                lost.push(i);
                out.push(None);
            }
            None => out.push(None),
        }
    }
    for i in lost {
        out[i] = (1..).find_map(|attempt| {
            let (key, value) = retry(i, attempt);
            taken.insert(key).then_some(value)
        });
    }
    out
}

/// Settles the identifiers of `claims`, in lab order: the port UUIDs on
/// their first 36 bits, then the MACs.
fn resolve(lab: &str, claims: &[Claim]) -> Vec<PortIds> {
    let derived = |c: &Claim, attempt: u32| match attempt {
        0 => naming::object_uuid(lab, c.kind, &c.name),
        n => naming::object_uuid(lab, c.kind, &format!("{}#{n}", c.name)),
    };
    let first: Vec<Uuid> = claims.iter().map(|c| derived(c, 0)).collect();
    let ports = settle(
        claims
            .iter()
            .zip(&first)
            .map(|(c, uuid)| c.port.then(|| (port_key(uuid), *uuid)))
            .collect(),
        HashSet::new(),
        |i, attempt| {
            let uuid = derived(&claims[i], attempt);
            (port_key(&uuid), uuid)
        },
    );
    let uuids: Vec<Uuid> = ports
        .into_iter()
        .zip(first)
        .map(|(settled, first)| settled.unwrap_or(first))
        .collect();
    let given: HashSet<[u8; 6]> = claims.iter().filter_map(|c| c.given_mac).collect();
    let macs = settle(
        claims
            .iter()
            .zip(&uuids)
            .map(|(c, uuid)| {
                let mac = naming::derived_mac(uuid);
                c.given_mac.is_none().then_some((mac, mac))
            })
            .collect(),
        given,
        |i, attempt| {
            let again = Uuid::new_v5(&uuids[i], format!("mac#{attempt}").as_bytes());
            let mac = naming::derived_mac(&again);
            (mac, mac)
        },
    );
    claims
        .iter()
        .zip(uuids)
        .zip(macs)
        .map(|((c, uuid), mac)| PortIds {
            uuid,
            mac: c.given_mac.or(mac).expect("every claim gets a MAC"),
        })
        .collect()
}

/// Settles the identifiers of every object of `topo` and writes them into
/// it. `given_macs` holds each instance's `mac:` from the file, in order;
/// no two are equal.
///
/// Lab order, which says who keeps a candidate two objects share: external
/// hosts, physical routers' interfaces, DHCP ports, router ports (each
/// router's `qr-` ports in the order of its `interfaces`, then its `qg-`,
/// then an HA router's `ha-` port of each copy in the order of its
/// `nodes`), instances; each kind in file order. So the lab's own ports
/// keep theirs whatever instances come and go.
pub(crate) fn assign(topo: &mut Topology, given_macs: &[Option<[u8; 6]>]) {
    let claim = |kind, name: String, port, given_mac| Claim {
        kind,
        name,
        port,
        given_mac,
    };
    let mut claims = Vec::new();
    for h in &topo.external_hosts {
        claims.push(claim("external-host", h.name.clone(), false, None));
    }
    for r in &topo.physical_routers {
        for i in &r.interfaces {
            let name = format!("{}:{}", r.name, i.network);
            claims.push(claim("physical-router-interface", name, false, None));
        }
    }
    for n in topo.networks.iter().filter(|n| n.dhcp) {
        claims.push(claim("dhcp-port", n.name.clone(), true, None));
    }
    for r in &topo.routers {
        for network in &r.interfaces {
            let name = format!("{}:{network}", r.name);
            claims.push(claim("router-port", name, true, None));
        }
        if r.external_gateway.is_some() {
            let name = format!("{}:gateway", r.name);
            claims.push(claim("router-port", name, true, None));
        }
        if r.ha.is_some() {
            for node in &r.nodes {
                let name = format!("{}@{node}", r.name);
                claims.push(claim("ha-port", name, true, None));
            }
        }
    }
    for (i, instance) in topo.instances.iter().enumerate() {
        let given = given_macs.get(i).copied().flatten();
        claims.push(claim("port", instance.name.clone(), true, given));
    }

    let mut settled = resolve(&topo.lab, &claims).into_iter();
    let mut next = || settled.next().expect("one per claim");
    for h in &mut topo.external_hosts {
        h.mac = next().mac;
    }
    for r in &mut topo.physical_routers {
        for i in &mut r.interfaces {
            i.mac = next().mac;
        }
    }
    for n in topo.networks.iter_mut().filter(|n| n.dhcp) {
        n.dhcp_port = Some(next());
    }
    for r in &mut topo.routers {
        r.interface_ports = r.interfaces.iter().map(|_| next()).collect();
        r.gateway_port = r.external_gateway.as_ref().map(|_| next());
        if let Some(ha) = &mut r.ha {
            ha.ports = r.nodes.iter().map(|n| (n.clone(), next())).collect();
        }
    }
    for instance in &mut topo.instances {
        let ids = next();
        instance.port = ids.uuid;
        instance.mac = ids.mac;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: &str) -> Claim {
        Claim {
            kind: "port",
            name: name.to_string(),
            port: true,
            given_mac: None,
        }
    }

    #[test]
    fn the_port_key_is_the_characters_chains_keep() {
        let uuid = Uuid::parse_str("8c2f1a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b").unwrap();
        assert_eq!(format!("{:09x}", port_key(&uuid)), "8c2f1a3b4");
        let text = uuid.hyphenated().to_string();
        assert_eq!(&text[..naming::CHAIN_PORT_CHARS], "8c2f1a3b-4");
    }

    #[test]
    fn a_shared_first_candidate_stays_with_the_earlier_claimant() {
        // Keys 1 and 1 collide; key 5 is reserved; retries count up from 10.
        let first = vec![Some((1, "a")), Some((1, "b")), None, Some((5, "d"))];
        let out = settle(first, HashSet::from([5]), |i, attempt| {
            (10 + attempt, ["a1", "b1", "c1", "d1"][i])
        });
        assert_eq!(out, [Some("a"), Some("b1"), None, Some("d1")]);
    }

    #[test]
    fn a_retry_never_takes_anyone_s_first_candidate() {
        // b loses to a; its first retry would be c's first candidate
        // (which comes later), its second is taken by nobody.
        let first = vec![Some((1, "a")), Some((1, "b")), Some((2, "c"))];
        let out = settle(first, HashSet::new(), |_, attempt| {
            (attempt + 1, ["", "b1", "b2"][attempt as usize])
        });
        assert_eq!(out, [Some("a"), Some("b2"), Some("c")]);
    }

    #[test]
    fn first_candidates_are_what_ovslab_always_derived() {
        let ids = resolve("seed", &[port("instance1"), port("instance2")]);
        for (ids, name) in ids.iter().zip(["instance1", "instance2"]) {
            let uuid = naming::object_uuid("seed", "port", name);
            assert_eq!(ids.uuid, uuid);
            assert_eq!(ids.mac, naming::derived_mac(&uuid));
        }
    }

    #[test]
    fn a_given_mac_is_kept_and_an_equal_derived_one_is_derived_again() {
        let derived = naming::derived_mac(&naming::object_uuid("seed", "port", "a"));
        let b = Claim {
            given_mac: Some(derived),
            ..port("b")
        };
        let ids = resolve("seed", &[port("a"), b]);
        assert_eq!(ids[1].mac, derived);
        assert_ne!(ids[0].mac, derived);
        assert_eq!(&ids[0].mac[..3], &[0xfa, 0x16, 0x3e]);
        // The port itself keeps its UUID: only the MAC was taken.
        assert_eq!(ids[0].uuid, naming::object_uuid("seed", "port", "a"));
    }

    #[test]
    fn one_name_claimed_twice_gets_two_ports() {
        // A router with an interface on a network named `gateway` and an
        // external gateway derived the same name twice before.
        let claim = |name: &str| Claim {
            kind: "router-port",
            ..port(name)
        };
        let ids = resolve("seed", &[claim("r:gateway"), claim("r:gateway")]);
        assert_eq!(
            ids[0].uuid,
            naming::object_uuid("seed", "router-port", "r:gateway")
        );
        assert_ne!(port_key(&ids[0].uuid), port_key(&ids[1].uuid));
        assert_ne!(ids[0].mac, ids[1].mac);
    }
}
