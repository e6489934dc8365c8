//! The ipsets of remote security groups, as Liberty's `IpsetManager`
//! keeps them on a compute node (`enable_ipset = True`, its default): one
//! `hash:net family inet` set per remote group, named `NIPv4` + the
//! group's id, holding the addresses of the group's members. A rule that
//! admits a remote group then matches the set instead of one rule per
//! member, which keeps a 1000-instance group at one rule per port.
//!
//! Sets are read, and their members added and deleted, over nfnetlink
//! (`ovslab_netlink::ipsets`, `change_ipset`): only the members that
//! differ, a thousand to a request, so existing members are never flushed
//! and traffic matching them never sees a gap. A missing set is created with `ipset restore`. Sets whose name
//! starts with [`IPSET_PREFIX`] and that are no longer wanted are destroyed
//! after the iptables rules that used them are gone
//! ([`remove_stale_ipsets`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::IptablesError;
use crate::apply::run_with_input;

/// Neutron's prefix for IPv4 remote-group sets; every set with it is ours.
pub const IPSET_PREFIX: &str = "NIPv4";
const IPSET: &str = "ipset";

/// One remote group's set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSet {
    pub name: String,
    pub members: Vec<Ipv4Addr>,
}

/// Our sets in namespace `ns`, with their members (single addresses; a
/// wider network someone put in is not ours and stays).
pub fn read_ipsets(ns: &str) -> Result<BTreeMap<String, BTreeSet<Ipv4Addr>>, IptablesError> {
    let sets = ovslab_netlink::ipsets(ns).map_err(|source| IptablesError::Ipset {
        namespace: ns.to_string(),
        what: "list".to_string(),
        source,
    })?;
    Ok(sets
        .into_iter()
        .filter(|(name, _)| name.starts_with(IPSET_PREFIX))
        .map(|(name, members)| {
            let addresses = members
                .into_iter()
                .filter(|net| net.prefix_len() == 32)
                .map(|net| net.addr())
                .collect();
            (name, addresses)
        })
        .collect())
}

/// What turns `actual` into `wanted` (stale sets aside).
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    /// `ipset restore` lines creating missing sets.
    create: String,
    /// Per set: members to add, members to delete.
    members: Vec<(String, Vec<Ipv4Addr>, Vec<Ipv4Addr>)>,
    /// One human line per change.
    changes: Vec<String>,
}

fn plan(actual: &BTreeMap<String, BTreeSet<Ipv4Addr>>, wanted: &[IpSet]) -> Plan {
    let mut plan = Plan::default();
    for set in wanted {
        let want: BTreeSet<Ipv4Addr> = set.members.iter().copied().collect();
        let have = match actual.get(&set.name) {
            Some(have) => have.clone(),
            None => {
                let _ = writeln!(
                    plan.create,
                    "create {} hash:net family inet{}",
                    set.name,
                    hashsize(want.len())
                );
                plan.changes.push(format!(
                    "create ipset {} ({} members)",
                    set.name,
                    want.len()
                ));
                BTreeSet::new()
            }
        };
        let add: Vec<Ipv4Addr> = want.difference(&have).copied().collect();
        let delete: Vec<Ipv4Addr> = have.difference(&want).copied().collect();
        if actual.contains_key(&set.name) {
            plan.changes
                .extend(add.iter().map(|ip| format!("ipset {}: add {ip}", set.name)));
        }
        plan.changes.extend(
            delete
                .iter()
                .map(|ip| format!("ipset {}: delete {ip}", set.name)),
        );
        if !add.is_empty() || !delete.is_empty() {
            plan.members.push((set.name.clone(), add, delete));
        }
    }
    plan
}

/// The kernel's own hash size for a new set, which it doubles (with an
/// RCU grace period waited for under the ipset subsystem's one mutex, every
/// namespace's requests waiting behind it) when a bucket overflows.
const KERNEL_HASHSIZE: usize = 1024;

/// The `hashsize` option of a new set of `members`: room for them from the
/// start (about four to a bucket, what the kernel itself grows a set of
/// 10,000 members to), so that filling it never resizes it; nothing for a
/// set the kernel's own size fits, whose line then stays Neutron's. The
/// 200 compute nodes of a 10,000-instance lab each fill a set of 10,000:
/// two resizes each, 400 grace periods in a row (docs/performance.md).
fn hashsize(members: usize) -> String {
    let buckets = members.div_ceil(4).next_power_of_two();
    if buckets > KERNEL_HASHSIZE {
        format!(" hashsize {buckets}")
    } else {
        String::new()
    }
}

/// Our sets of a namespace as read by [`converge_ipsets`].
pub type ActualIpSets = BTreeMap<String, BTreeSet<Ipv4Addr>>;

/// Makes the wanted sets of namespace `ns` exist with exactly their
/// members; returns one line per change (none when nothing ran), and the
/// sets as they were read, for [`remove_stale_ipsets`].
pub fn converge_ipsets(
    ns: &str,
    wanted: &[IpSet],
) -> Result<(Vec<String>, ActualIpSets), IptablesError> {
    let actual = read_ipsets(ns)?;
    let plan = plan(&actual, wanted);
    if !plan.create.is_empty() {
        restore(ns, &plan.create)?;
    }
    for (set, add, delete) in &plan.members {
        ovslab_netlink::change_ipset(ns, set, add, delete).map_err(|source| {
            IptablesError::Ipset {
                namespace: ns.to_string(),
                what: format!("{set}: add/delete members"),
                source,
            }
        })?;
    }
    Ok((plan.changes, actual))
}

/// Destroys our sets in `ns` that are not in `wanted` (call it after the
/// iptables rules no longer use them); `actual` is what
/// [`converge_ipsets`] read, so no second listing is needed (sets it
/// created are wanted, hence never stale).
pub fn remove_stale_ipsets(
    ns: &str,
    actual: &ActualIpSets,
    wanted: &[IpSet],
) -> Result<Vec<String>, IptablesError> {
    let mut script = String::new();
    let mut changes = Vec::new();
    for name in actual.keys() {
        if !wanted.iter().any(|s| &s.name == name) {
            let _ = writeln!(script, "destroy {name}");
            changes.push(format!("destroy ipset {name}"));
        }
    }
    if !script.is_empty() {
        restore(ns, &script)?;
    }
    Ok(changes)
}

fn restore(ns: &str, script: &str) -> Result<(), IptablesError> {
    let (out, written) = run_with_input(ns, IPSET, &["restore", "-exist"], script)?;
    if out.status.success() {
        return written.map_err(|source| IptablesError::Spawn {
            namespace: ns.to_string(),
            command: "ipset restore",
            source,
        });
    }
    Err(IptablesError::Command {
        namespace: ns.to_string(),
        command: "ipset restore",
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn actual() -> BTreeMap<String, BTreeSet<Ipv4Addr>> {
        BTreeMap::from([
            (
                "NIPv4abc".to_string(),
                BTreeSet::from([ip("192.168.1.11"), ip("192.168.1.12")]),
            ),
            ("NIPv4empty".to_string(), BTreeSet::new()),
        ])
    }

    #[test]
    fn a_large_new_set_is_made_with_room_for_its_members() {
        let members =
            |n: u32| -> Vec<Ipv4Addr> { (0..n).map(|i| Ipv4Addr::from(0x0a00_0000 + i)).collect() };
        let create = |n| {
            plan(
                &BTreeMap::new(),
                &[IpSet {
                    name: "NIPv4big".into(),
                    members: members(n),
                }],
            )
            .create
        };
        assert_eq!(create(4096), "create NIPv4big hash:net family inet\n");
        assert_eq!(
            create(4097),
            "create NIPv4big hash:net family inet hashsize 2048\n"
        );
        assert_eq!(
            create(10_000),
            "create NIPv4big hash:net family inet hashsize 4096\n"
        );
        // An existing set is left at its size: only its members change.
        let have = BTreeMap::from([("NIPv4big".to_string(), BTreeSet::new())]);
        let grown = plan(
            &have,
            &[IpSet {
                name: "NIPv4big".into(),
                members: members(10_000),
            }],
        );
        assert_eq!(grown.create, "");
        assert_eq!(grown.members[0].1.len(), 10_000);
    }

    #[test]
    fn members_are_added_and_deleted_never_flushed() {
        let wanted = [
            IpSet {
                name: "NIPv4abc".into(),
                members: vec![ip("192.168.1.12"), ip("192.168.1.13")],
            },
            IpSet {
                name: "NIPv4new".into(),
                members: vec![ip("10.1.1.1")],
            },
        ];
        let plan = plan(&actual(), &wanted);
        assert_eq!(plan.create, "create NIPv4new hash:net family inet\n");
        assert_eq!(
            plan.members,
            [
                (
                    "NIPv4abc".to_string(),
                    vec![ip("192.168.1.13")],
                    vec![ip("192.168.1.11")]
                ),
                ("NIPv4new".to_string(), vec![ip("10.1.1.1")], vec![]),
            ]
        );
        assert_eq!(
            plan.changes,
            [
                "ipset NIPv4abc: add 192.168.1.13",
                "ipset NIPv4abc: delete 192.168.1.11",
                "create ipset NIPv4new (1 members)"
            ]
        );
        let converged = [IpSet {
            name: "NIPv4abc".into(),
            members: vec![ip("192.168.1.11"), ip("192.168.1.12")],
        }];
        assert_eq!(plan_of(&converged), Plan::default());
    }

    fn plan_of(wanted: &[IpSet]) -> Plan {
        plan(&actual(), wanted)
    }
}
