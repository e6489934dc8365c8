//! `ovslab status [LAB] [--json]`: a lab's nodes, instances and health, or
//! the list of labs.

use std::process::ExitCode;

use comfy_table::{Table, presets};
use ovslab_api::{LabStatus, NodeStatus};
use ovslab_topology::{printable, printable_lines};

use crate::client::Client;
use crate::commands::segment;
use crate::style::Style;

/// Show a lab's nodes, instances and health; without LAB, the only lab running (or the list of labs).
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Show a lab's nodes, instances and health. Without LAB: the only lab running, \
or, when none or several run, the list of the labs the daemon manages.\n\n\
A lab is healthy when every namespace exists, every node's ovsdb-server and ovs-vswitchd run \
and every instance on a DHCP network held its lease when the daemon last converged the lab \
(its address reads \"(DHCP)\", or \"(NO DHCP LEASE)\"). \
An HA router's row names its active copy's node (none while no copy is master), and a table \
lists each copy's ha_state as `l3-agent-list-hosting-router` does (active, standby; unknown \
when its keepalived does not run or its node is failed). A node failed on purpose \
(`ovslab node fail`) is marked so, and counts as healthy. \
A node's OVS process that died and was started again shows how often (\"restarted 2×\"); \
one that runs but did not answer within its deadline (stopped or stuck) shows \"NOT ANSWERING\" \
(the next audit kills it and starts it again). \
The last lines say how many audits ran and what the last one cost, why the last one could not \
repair the lab (if it could not), and list what the daemon's \
audits found broken and repaired (a dead OVS process, a deleted link, flow or rule).\n\n\
--json prints the daemon's answer as it is: with LAB, the lab's status (an object: lab, source, \
nodes, instances, routers, dhcp, metadata, healthy, repairs, repair_count, audits, \
audit_error); without LAB, always the list of lab names (an array), however many run.",
    after_help = "Exit status: 0 shown (healthy or not), 1 the daemon is unreachable or does not know LAB."
)]
pub struct Args {
    /// The lab to show; without it, the only lab running, or the list.
    #[arg(value_name = "LAB")]
    pub lab: Option<String>,

    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

pub fn exec(client: &Client, args: Args) -> anyhow::Result<ExitCode> {
    let lab = match args.lab {
        Some(lab) => lab,
        None => {
            let labs: Vec<String> = client.get("/v1/labs")?;
            match labs.as_slice() {
                [only] if !args.json => only.clone(),
                _ if args.json => {
                    println!("{}", serde_json::to_string_pretty(&labs)?);
                    return Ok(ExitCode::SUCCESS);
                }
                _ => {
                    print!("{}", printable_lines(&format_labs(&labs)));
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
    };
    let status: LabStatus = client.get(&format!("/v1/labs/{}", segment(&lab)))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        let text = format_status(&status);
        let text = printable_lines(&text);
        print!("{}", paint_health(&text, Style::for_stdout()));
    }
    Ok(ExitCode::SUCCESS)
}

/// The headline's verdict in colour (after escaping, which would show the
/// colour's escape sequences as text).
fn paint_health(text: &str, style: Style) -> String {
    let (headline, rest) = text.split_once('\n').unwrap_or((text, ""));
    for (verdict, paint) in [
        (": NOT healthy", Style::bad as fn(&Style, &str) -> String),
        (": healthy", Style::good),
    ] {
        if let Some(head) = headline.strip_suffix(verdict) {
            return format!("{head}: {}\n{rest}", paint(&style, &verdict[2..]));
        }
    }
    text.to_string()
}

pub fn format_labs(labs: &[String]) -> String {
    if labs.is_empty() {
        return "no labs\n".to_string();
    }
    labs.iter().map(|l| format!("{l}\n")).collect()
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_HORIZONTAL_ONLY)
        .set_header(header.to_vec());
    t
}

fn namespace_cell(name: &str, exists: bool) -> String {
    if exists {
        name.to_string()
    } else {
        format!("{name} (missing)")
    }
}

fn pid_cell(pid: Option<u32>) -> String {
    pid.map_or_else(|| "not running".to_string(), |p| format!("pid {p}"))
}

/// `pid 42`, `not running`, with `, NOT ANSWERING` when it runs but did
/// not answer, and `, restarted 2×` when it was.
fn process_cell(node: &NodeStatus, program: &str, pid: Option<u32>) -> String {
    let process = node.processes.iter().find(|p| p.program == program);
    let restarts = process.map_or(0, |p| p.restarts);
    let mut cell = pid_cell(pid);
    if pid.is_some() && process.is_some_and(|p| p.state == "not answering") {
        cell.push_str(", NOT ANSWERING");
    }
    if restarts > 0 {
        cell.push_str(&format!(", restarted {restarts}×"));
    }
    cell
}

pub fn format_status(s: &LabStatus) -> String {
    let health = if s.healthy { "healthy" } else { "NOT healthy" };
    let mut out = format!(
        "lab {} (from {}): {health}\n",
        printable(&s.lab),
        printable(&s.source)
    );
    let mut nodes = table(&[
        "NODE",
        "ROLE",
        "NAMESPACE",
        "OVSDB-SERVER",
        "OVS-VSWITCHD",
        "LOCAL VLANS",
    ]);
    for n in &s.nodes {
        let vlans: Vec<String> = n
            .local_vlans
            .iter()
            .map(|(net, tag)| format!("{net}={tag}"))
            .collect();
        let role = if n.failed {
            format!("{} (FAILED on purpose)", n.role)
        } else {
            n.role.clone()
        };
        nodes.add_row(vec![
            n.name.clone(),
            role,
            namespace_cell(&n.namespace, n.namespace_exists),
            process_cell(n, "ovsdb-server", n.ovsdb_server_pid),
            process_cell(n, "ovs-vswitchd", n.ovs_vswitchd_pid),
            vlans.join(" "),
        ]);
    }
    out.push_str(&format!("{nodes}\n"));
    if !s.instances.is_empty() {
        let mut instances = table(&["INSTANCE", "NODE", "NETWORK", "ADDRESS", "MAC", "NAMESPACE"]);
        for i in &s.instances {
            instances.add_row(vec![
                i.name.clone(),
                i.node.clone(),
                i.network.clone(),
                match i.dhcp_lease {
                    Some(false) => format!("{} (NO DHCP LEASE)", i.address),
                    Some(true) => format!("{} (DHCP)", i.address),
                    None => i.address.clone(),
                },
                i.mac.clone(),
                namespace_cell(&i.namespace, i.namespace_exists),
            ]);
        }
        out.push_str(&format!("{instances}\n"));
    }
    if !s.routers.is_empty() {
        let mut routers = table(&["ROUTER", "NODE", "ADDRESSES", "NAMESPACE"]);
        for r in &s.routers {
            routers.add_row(vec![
                r.name.clone(),
                r.node.clone(),
                r.addresses.join("\n"),
                namespace_cell(&r.namespace, r.namespace_exists),
            ]);
        }
        out.push_str(&format!("{routers}\n"));
    }
    let copies: Vec<_> = s
        .routers
        .iter()
        .flat_map(|r| r.copies.iter().map(move |c| (r, c)))
        .collect();
    if !copies.is_empty() {
        let mut ha = table(&["HA ROUTER", "NODE", "HA_STATE", "KEEPALIVED", "NAMESPACE"]);
        for (r, c) in copies {
            ha.add_row(vec![
                r.name.clone(),
                c.node.clone(),
                c.ha_state.clone(),
                c.keepalived_pid
                    .map_or_else(|| "not running".to_string(), |p| format!("pid {p}")),
                namespace_cell(&c.namespace, c.namespace_exists),
            ]);
        }
        out.push_str(&format!("{ha}\n"));
    }
    if !s.dhcp.is_empty() {
        let mut dhcp = table(&["DHCP", "NODE", "ADDRESS", "DNSMASQ", "LEASES", "NAMESPACE"]);
        for d in &s.dhcp {
            dhcp.add_row(vec![
                d.network.clone(),
                d.node.clone(),
                d.address.clone(),
                d.dnsmasq_pid
                    .map_or_else(|| "NOT RUNNING".to_string(), |p| format!("pid {p}")),
                d.leases.join("\n"),
                namespace_cell(&d.namespace, d.namespace_exists),
            ]);
        }
        out.push_str(&format!("{dhcp}\n"));
    }
    for m in &s.metadata {
        out.push_str(&format!("metadata: {m}\n"));
    }
    match &s.audits {
        Some(a) => out.push_str(&format!(
            "audits: {} since the daemon started; the last ended {} and took {} ms\n",
            a.count, a.last_at, a.last_ms
        )),
        None => out.push_str("audits: none yet\n"),
    }
    if let Some(e) = &s.audit_error {
        out.push_str(&format!("audit error: {}\n", printable(e)));
    }
    if s.repair_count == 0 {
        out.push_str("repairs: none\n");
    } else {
        out.push_str(&format!(
            "repairs: {} since the daemon started; the latest:\n",
            s.repair_count
        ));
        for r in &s.repairs {
            out.push_str(&format!("  {}\n", printable(r)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use ovslab_api::{AuditStatus, InstanceStatus, ProcessStatus};

    use super::*;

    fn sample(healthy: bool) -> LabStatus {
        LabStatus {
            lab: "seed".into(),
            source: "lab-topologies/seed.yaml".into(),
            nodes: vec![NodeStatus {
                name: "compute1".into(),
                role: "compute".into(),
                namespace: "seed.compute1".into(),
                namespace_exists: true,
                ovsdb_server_pid: Some(42),
                ovs_vswitchd_pid: if healthy { Some(43) } else { None },
                local_vlans: vec![("net1".into(), 1), ("net2".into(), 2)],
                processes: vec![
                    ProcessStatus {
                        program: "ovsdb-server".into(),
                        pid: Some(42),
                        running: true,
                        state: if healthy { "running" } else { "not answering" }.into(),
                        restarts: 0,
                    },
                    ProcessStatus {
                        program: "ovs-vswitchd".into(),
                        pid: if healthy { Some(43) } else { None },
                        running: healthy,
                        state: if healthy { "running" } else { "dead" }.into(),
                        restarts: u64::from(!healthy) * 2,
                    },
                ],
                failed: false,
            }],
            instances: vec![InstanceStatus {
                name: "instance1".into(),
                node: "compute1".into(),
                network: "net1".into(),
                address: "192.168.1.11".into(),
                mac: "fa:16:3e:00:00:01".into(),
                namespace: "seed.instance1".into(),
                namespace_exists: healthy,
                dhcp_lease: Some(healthy),
            }],
            routers: vec![],
            dhcp: vec![],
            metadata: vec![],
            healthy,
            repairs: if healthy {
                vec![]
            } else {
                vec!["2026-11-25T03:59:01Z start ovs-vswitchd on compute1".into()]
            },
            repair_count: u64::from(!healthy),
            audits: healthy.then(|| AuditStatus {
                count: 7,
                last_at: "2026-11-25T03:59:01Z".into(),
                last_ms: 18,
            }),
            audit_error: (!healthy).then(|| "namespace seed.compute1: no such file".into()),
        }
    }

    #[test]
    fn a_process_that_does_not_answer_is_named() {
        let text = format_status(&sample(false));
        assert!(text.contains("pid 42, NOT ANSWERING"), "{text}");
        assert!(text.contains("not running, restarted 2×"), "{text}");
        assert!(!format_status(&sample(true)).contains("NOT ANSWERING"));
    }

    #[test]
    fn repairs_are_listed_newest_last() {
        assert!(format_status(&sample(true)).ends_with("repairs: none\n"));
        let text = format_status(&sample(false));
        assert!(
            text.ends_with(
                "repairs: 1 since the daemon started; the latest:\n  \
                 2026-11-25T03:59:01Z start ovs-vswitchd on compute1\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_source_and_repairs_are_shown_escaped() {
        let mut status = sample(false);
        status.source = "evil\u{1b}[2J.yaml".into();
        status.repairs = vec!["fixed\u{1b}[1A\rall".into()];
        let text = format_status(&status);
        assert!(text.contains("(from evil\\x1b[2J.yaml)"), "{text}");
        assert!(text.contains("  fixed\\x1b[1A\\x0dall\n"), "{text}");
        assert!(!text.contains('\u{1b}') && !text.contains('\r'), "{text:?}");
    }

    #[test]
    fn no_labs_says_so() {
        assert_eq!(format_labs(&[]), "no labs\n");
        assert_eq!(format_labs(&["a".into(), "b".into()]), "a\nb\n");
    }

    #[test]
    fn a_healthy_lab_shows_its_nodes_and_instances() {
        let text = format_status(&sample(true));
        assert!(
            text.starts_with("lab seed (from lab-topologies/seed.yaml): healthy\n"),
            "{text}"
        );
        let node_row = text
            .lines()
            .find(|l| l.contains("compute1") && l.contains("compute "))
            .unwrap();
        for cell in ["seed.compute1", "pid 42", "pid 43", "net1=1 net2=2"] {
            assert!(node_row.contains(cell), "{node_row}");
        }
        let instance_row = text.lines().find(|l| l.contains("instance1")).unwrap();
        for cell in [
            "net1",
            "192.168.1.11",
            "fa:16:3e:00:00:01",
            "seed.instance1",
        ] {
            assert!(instance_row.contains(cell), "{instance_row}");
        }
        assert!(!text.contains("missing"), "{text}");
        assert!(!text.contains("restarted"), "{text}");
        assert!(!text.contains("audit error"), "{text}");
        assert!(
            text.contains("audits: 7 since the daemon started; the last ended 2026-11-25T03:59:01Z and took 18 ms"),
            "{text}"
        );
    }

    #[test]
    fn an_unhealthy_lab_shows_what_is_missing() {
        let text = format_status(&sample(false));
        assert!(text.contains(": NOT healthy"), "{text}");
        assert!(text.contains("not running, restarted 2×"), "{text}");
        assert!(text.contains("audits: none yet"), "{text}");
        assert!(
            text.contains("audit error: namespace seed.compute1: no such file"),
            "{text}"
        );
        assert!(text.contains("seed.instance1 (missing)"), "{text}");
        assert!(text.contains("192.168.1.11 (NO DHCP LEASE)"), "{text}");
    }
}
