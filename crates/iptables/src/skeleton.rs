//! What Liberty's `IptablesManager.__init__` (7.2.0,
//! `neutron/agent/linux/iptables_manager.py`, not `state_less`) creates in
//! every namespace an agent manages, before the agent adds a rule of its
//! own: each built-in chain of filter, nat, mangle and raw jumps to a chain
//! wrapped with the agent's binary name; filter's `FORWARD` and `OUTPUT`
//! first jump to the shared `neutron-filter-top`, which jumps to
//! `<binary>-local`; nat's `POSTROUTING` ends with the shared
//! `neutron-postrouting-bottom`, which jumps (commented) to `<binary>-snat`,
//! whose first rule jumps to `<binary>-float-snat`; mangle's wrapped
//! `PREROUTING` jumps to `<binary>-mark`.

use crate::ruleset::{Ruleset, Table};

/// Liberty's comment on the jump to the SNAT chain
/// (`iptables_comments.SNAT_OUT`).
pub const SNAT_OUT: &str = "Perform source NAT on outgoing traffic.";

/// The built-in chains `IptablesManager` wraps, table by table.
const WRAPPED: [(Table, &[&str]); 4] = [
    (Table::Filter, &["INPUT", "OUTPUT", "FORWARD"]),
    (
        Table::Mangle,
        &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
    ),
    (Table::Nat, &["PREROUTING", "OUTPUT", "POSTROUTING"]),
    (Table::Raw, &["PREROUTING", "OUTPUT"]),
];

/// `<binary>-<name>`.
pub fn wrapped(binary: &str, name: &str) -> String {
    format!("{binary}-{name}")
}

/// A ruleset holding the skeleton of an agent whose wrap name is `binary`
/// (its binary name cut to 16 characters).
pub fn skeleton(binary: &str) -> Ruleset {
    let mut r = Ruleset::new();
    let filter_top = "neutron-filter-top";
    let bottom = "neutron-postrouting-bottom";
    r.add_chain(Table::Filter, filter_top);
    r.add_chain(Table::Filter, &wrapped(binary, "local"));
    // `top=True`: before the wrapped chain's jump.
    r.append(Table::Filter, "FORWARD", format!("-j {filter_top}"));
    r.append(Table::Filter, "OUTPUT", format!("-j {filter_top}"));
    r.append(
        Table::Filter,
        filter_top,
        format!("-j {}", wrapped(binary, "local")),
    );
    for (table, chains) in WRAPPED {
        for chain in chains {
            let own = wrapped(binary, chain);
            r.add_chain(table, &own);
            r.append(table, chain, format!("-j {own}"));
        }
    }
    let snat = wrapped(binary, "snat");
    r.add_chain(Table::Nat, bottom);
    r.add_chain(Table::Nat, &snat);
    r.add_chain(Table::Nat, &wrapped(binary, "float-snat"));
    r.append(Table::Nat, "POSTROUTING", format!("-j {bottom}"));
    r.append(
        Table::Nat,
        bottom,
        format!("-m comment --comment \"{SNAT_OUT}\" -j {snat}"),
    );
    r.append(
        Table::Nat,
        &snat,
        format!("-j {}", wrapped(binary, "float-snat")),
    );
    let mark = wrapped(binary, "mark");
    r.add_chain(Table::Mangle, &mark);
    r.append(
        Table::Mangle,
        &wrapped(binary, "PREROUTING"),
        format!("-j {mark}"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_skeleton_is_the_managers() {
        let r = skeleton("neutron-l3-agent");
        r.validate().unwrap();
        insta::assert_snapshot!(r.render_save_like());
    }
}
