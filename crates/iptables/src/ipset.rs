//! The ipsets of remote security groups, as Liberty's `IpsetManager`
//! keeps them on a compute node (`enable_ipset = True`, its default): one
//! `hash:net family inet` set per remote group, named `NIPv4` + the
//! group's id, holding the addresses of the group's members. A rule that
//! admits a remote group then matches the set instead of one rule per
//! member, which keeps a 1000-instance group at one rule per port.
//!
//! Sets are read with `ipset save` and changed with at most one
//! `ipset restore` per namespace: created when missing, members added and
//! deleted one by one (existing members are never flushed, so traffic
//! matching them never sees a gap). Sets whose name starts with
//! [`IPSET_PREFIX`] and that are no longer wanted are destroyed after the
//! iptables rules that used them are gone ([`remove_stale_ipsets`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::IptablesError;
use crate::apply::{run_for_output, run_with_input};

/// Neutron's prefix for IPv4 remote-group sets; every set with it is ours.
pub const IPSET_PREFIX: &str = "NIPv4";
const IPSET: &str = "ipset";

/// One remote group's set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSet {
    pub name: String,
    pub members: Vec<Ipv4Addr>,
}

/// Our sets in namespace `ns`, with their members.
pub fn read_ipsets(ns: &str) -> Result<BTreeMap<String, BTreeSet<Ipv4Addr>>, IptablesError> {
    Ok(parse_save(&run_for_output(ns, IPSET, &["save"])?))
}

fn parse_save(text: &str) -> BTreeMap<String, BTreeSet<Ipv4Addr>> {
    let mut sets: BTreeMap<String, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("create"), Some(name), _) if name.starts_with(IPSET_PREFIX) => {
                sets.entry(name.to_string()).or_default();
            }
            (Some("add"), Some(name), Some(member)) if name.starts_with(IPSET_PREFIX) => {
                let address = member.trim_end_matches("/32");
                if let Ok(ip) = address.parse() {
                    sets.entry(name.to_string()).or_default().insert(ip);
                }
            }
            _ => {}
        }
    }
    sets
}

/// What `ipset restore` must do to turn `actual` into `wanted` (stale sets
/// aside), and one human line per change.
fn plan(actual: &BTreeMap<String, BTreeSet<Ipv4Addr>>, wanted: &[IpSet]) -> (String, Vec<String>) {
    let mut script = String::new();
    let mut changes = Vec::new();
    for set in wanted {
        let want: BTreeSet<Ipv4Addr> = set.members.iter().copied().collect();
        let have = match actual.get(&set.name) {
            Some(have) => have.clone(),
            None => {
                let _ = writeln!(script, "create {} hash:net family inet", set.name);
                changes.push(format!(
                    "create ipset {} ({} members)",
                    set.name,
                    want.len()
                ));
                BTreeSet::new()
            }
        };
        for ip in want.difference(&have) {
            let _ = writeln!(script, "add {} {ip}", set.name);
            if actual.contains_key(&set.name) {
                changes.push(format!("ipset {}: add {ip}", set.name));
            }
        }
        for ip in have.difference(&want) {
            let _ = writeln!(script, "del {} {ip}", set.name);
            changes.push(format!("ipset {}: delete {ip}", set.name));
        }
    }
    (script, changes)
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
    let (script, changes) = plan(&actual, wanted);
    if !script.is_empty() {
        restore(ns, &script)?;
    }
    Ok((changes, actual))
}

/// Destroys our sets in `ns` that are not in `wanted` (call it after the
/// iptables rules no longer use them); `actual` is what
/// [`converge_ipsets`] read, so no second `ipset save` is needed (sets it
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

    const SAVE: &str = "create NIPv4abc hash:net family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x8feb7a6f
add NIPv4abc 192.168.1.11
add NIPv4abc 192.168.1.12
create other hash:ip family inet hashsize 1024 maxelem 65536
add other 10.0.0.1
create NIPv4empty hash:net family inet hashsize 1024 maxelem 65536
";

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn only_our_sets_are_read() {
        let sets = parse_save(SAVE);
        assert_eq!(sets.len(), 2);
        assert_eq!(
            sets["NIPv4abc"],
            BTreeSet::from([ip("192.168.1.11"), ip("192.168.1.12")])
        );
        assert!(sets["NIPv4empty"].is_empty());
    }

    #[test]
    fn members_are_added_and_deleted_never_flushed() {
        let actual = parse_save(SAVE);
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
        let (script, changes) = plan(&actual, &wanted);
        assert_eq!(
            script,
            "add NIPv4abc 192.168.1.13\ndel NIPv4abc 192.168.1.11\n\
             create NIPv4new hash:net family inet\nadd NIPv4new 10.1.1.1\n"
        );
        assert_eq!(
            changes,
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
        assert_eq!(plan(&actual, &converged), (String::new(), vec![]));
    }
}
