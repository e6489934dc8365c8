//! `ovslab trace [--lab LAB] SRC DST [--tcp PORT | --udp PORT | --http PORT] [--json]`,
//! or `ovslab trace [--lab LAB] SRC --dhcp`: follow one real probe through a running lab, hop by hop.

use std::fmt::Write as _;
use std::process::ExitCode;

use ovslab_api::{TraceHop, TraceProtocol, TraceReport, TraceRequest};
use ovslab_topology::printable_lines;

use crate::client::Client;
use crate::commands::{lab_or_only, segment};

/// Follow one probe (and its answer) through the lab, device by device.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Send one real probe from SRC to DST and follow it, and its answer, through the \
lab: every device it crossed (instance NIC, tap, qbr, qvb, qvo, the nodes' eth1 and the physical \
network, qr-/qg- in the router, eth2 and the external network, eth3 where tunnels run), with \
the direction, VLAN tag, MACs and addresses seen there, and on eth3 the VXLAN or GRE tunnel the \
probe travelled in (its key and endpoints). Where it entered an Open vSwitch bridge, the bridge's own \
ofproto/trace shows which flows it took (VLAN rewrites spelled mod_vlan_vid:N). Conclusions \
follow: whether the network node was crossed, the tags on the physical network, the NAT done \
by the router. A lost probe is reported where it was last seen, with the next device on the \
expected path.\n\n\
The probe is an ICMP echo, or a TCP connection (--tcp) or UDP datagram (--udp) to a listener \
the trace opens at the destination, an HTTP GET to a service that is there (--http, e.g. the \
metadata service at 169.254.169.254), or a whole DHCP exchange from an instance to its network's \
DHCP server (--dhcp). Nothing in the lab is changed.\n\n\
Examples:\n  ovslab trace instance1 instance3\n  ovslab trace instance3 internet\n  \
ovslab trace internet 203.0.113.102 --tcp 22\n  ovslab trace --lab selfservice instance3 --dhcp\n  \
ovslab trace --lab selfservice instance3 169.254.169.254 --http 80",
    override_usage = "ovslab trace [--lab LAB] SRC DST [--tcp PORT | --udp PORT | --http PORT] [--json]\n       ovslab trace [--lab LAB] SRC --dhcp [--json]",
    after_help = "Exit status: 0 the probe was answered, 1 it was not (the trace still shows \
where it went) or the daemon is unreachable, 2 a bad argument."
)]
pub struct Args {
    /// The lab to trace in; default: the only lab running.
    #[arg(long, value_name = "LAB")]
    pub lab: Option<String>,
    /// Where the probe starts: an instance or external host.
    #[arg(value_name = "SRC")]
    pub from: String,
    /// Where it goes: an instance, external host or router, or an IPv4
    /// address (none with --dhcp).
    #[arg(
        value_name = "DST",
        required_unless_present = "dhcp",
        conflicts_with = "dhcp"
    )]
    pub to: Option<String>,
    /// Open a TCP connection to PORT instead of an ICMP echo.
    #[arg(long, value_name = "PORT", conflicts_with_all = ["udp", "http", "dhcp"], value_parser = port)]
    pub tcp: Option<u16>,
    /// Send a UDP datagram to PORT instead of an ICMP echo.
    #[arg(long, value_name = "PORT", conflicts_with_all = ["http", "dhcp"], value_parser = port)]
    pub udp: Option<u16>,
    /// GET /latest/meta-data/instance-id over HTTP from PORT (e.g. 80 to
    /// 169.254.169.254, the metadata service).
    #[arg(long, value_name = "PORT", conflicts_with = "dhcp", value_parser = port)]
    pub http: Option<u16>,
    /// A DHCP exchange (DISCOVER to ACK) from SRC, an instance on a DHCP
    /// network, to its network's DHCP server.
    #[arg(long)]
    pub dhcp: bool,
    /// Print the trace as JSON: {"lab", "from", "to", "destination",
    /// "protocol", "tag", "answered", "hops": [{"number", "leg", "place",
    /// "namespace", "device", "direction", "vlan", "src_mac", "dst_mac",
    /// "src_ip", "dst_ip", "encapsulation", "time_us", "bridge": {"bridge",
    /// "flows", "datapath_actions"}, "notes", "flooded"}], "conclusions",
    /// "lost": {"last_seen", "next_expected"}, "elapsed_ms"}.
    #[arg(long)]
    pub json: bool,
}

/// A TCP or UDP port: 1–65535 (the daemon refuses 0).
fn port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(0) => Err("a port is 1–65535".into()),
        Ok(port) => Ok(port),
        Err(e) => Err(format!("{e} (a port is 1–65535)")),
    }
}

pub fn exec(client: &Client, args: Args) -> anyhow::Result<ExitCode> {
    let protocol = match (args.tcp, args.udp, args.http, args.dhcp) {
        (Some(port), ..) => TraceProtocol::Tcp(port),
        (_, Some(port), ..) => TraceProtocol::Udp(port),
        (_, _, Some(port), _) => TraceProtocol::Http(port),
        (.., true) => TraceProtocol::Dhcp,
        _ => TraceProtocol::Icmp,
    };
    let request = TraceRequest {
        from: args.from,
        // A DHCP probe goes to the server the daemon finds.
        to: args.to.unwrap_or_else(|| "0.0.0.0".to_string()),
        protocol,
    };
    let lab = lab_or_only(client, args.lab, "ovslab trace --lab LAB SRC DST")?;
    let report: TraceReport =
        client.post(&format!("/v1/labs/{}/trace", segment(&lab)), &request)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", printable_lines(&format_report(&report)));
    }
    Ok(if report.answered {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The walkthrough: hops numbered and grouped by where they are, the flows
/// of each bridge under the port the frame entered, then the conclusions.
pub fn format_report(r: &TraceReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "trace {} → {} ({}), {}, probe tag {}, lab {}",
        r.from, r.to, r.destination, r.protocol, r.tag, r.lab
    );
    let device_width = r.hops.iter().map(|h| h.device.len()).max().unwrap_or(0);
    let mut leg = "";
    let mut place = "";
    for h in &r.hops {
        if h.leg != leg {
            leg = &h.leg;
            place = "";
            let _ = writeln!(
                out,
                "\n{}",
                if leg == "request" {
                    "request"
                } else {
                    "answer"
                }
            );
        }
        if h.place != place {
            place = &h.place;
            let _ = writeln!(out, "  {place}");
        }
        hop_lines(&mut out, h, device_width);
    }
    if r.hops.is_empty() {
        let _ = writeln!(out, "\n(the probe was seen nowhere)");
    }
    out.push('\n');
    if let Some(lost) = &r.lost {
        let _ = writeln!(
            out,
            "LOST: last seen at {}; next on the expected path: {}",
            lost.last_seen, lost.next_expected
        );
    }
    for c in &r.conclusions {
        let _ = writeln!(out, "{c}");
    }
    out
}

fn hop_lines(out: &mut String, h: &TraceHop, width: usize) {
    let tag = h
        .vlan
        .map_or_else(|| "untagged".to_string(), |v| format!("vlan {v}"));
    let _ = writeln!(
        out,
        "  {:>3}  {:width$}  {:<3}  {:<8}  {} → {}  {} → {}",
        h.number, h.device, h.direction, tag, h.src_mac, h.dst_mac, h.src_ip, h.dst_ip
    );
    let indent = " ".repeat(9);
    if let Some(e) = &h.encapsulation {
        let _ = writeln!(out, "{indent}in tunnel {e}");
    }
    if let Some(b) = &h.bridge {
        for f in &b.flows {
            let priority = f
                .priority
                .map_or_else(String::new, |p| format!(" priority {p}"));
            let actions = if f.actions.is_empty() {
                String::new()
            } else {
                format!(" ⇒ {}", f.actions.join(", "))
            };
            let notes = if f.notes.is_empty() {
                String::new()
            } else {
                format!("  ({})", f.notes.join("; "))
            };
            let _ = writeln!(
                out,
                "{indent}{} table {}{priority}: {}{actions}{notes}",
                f.bridge, f.table, f.matches
            );
        }
        let _ = writeln!(out, "{indent}datapath actions: {}", b.datapath_actions);
    }
    for note in &h.notes {
        let _ = writeln!(out, "{indent}» {note}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ovslab_api::{BridgeTrace, FlowStep, TraceEncapsulation, TraceLoss};

    #[test]
    fn a_port_is_1_to_65535() {
        assert_eq!(port("22"), Ok(22));
        assert_eq!(port("65535"), Ok(65535));
        assert_eq!(port("0"), Err("a port is 1–65535".to_string()));
        assert!(port("65536").unwrap_err().ends_with("(a port is 1–65535)"));
    }

    fn hop(number: usize, leg: &str, place: &str, device: &str, vlan: Option<u16>) -> TraceHop {
        TraceHop {
            number,
            leg: leg.into(),
            place: place.into(),
            namespace: format!("seed.{place}"),
            device: device.into(),
            direction: "out".into(),
            vlan,
            src_mac: "fa:16:3e:00:00:01".into(),
            dst_mac: "fa:16:3e:00:00:02".into(),
            src_ip: "192.168.1.11".into(),
            dst_ip: "192.168.1.12".into(),
            time_us: 10,
            encapsulation: None,
            bridge: None,
            notes: vec![],
            flooded: false,
        }
    }

    #[test]
    fn hops_are_grouped_by_place_with_bridges_and_conclusions() {
        let mut qvo = hop(2, "request", "compute1", "qvo1", None);
        qvo.direction = "in".into();
        qvo.bridge = Some(BridgeTrace {
            bridge: "br-int".into(),
            flows: vec![FlowStep {
                bridge: "br-vlan".into(),
                table: 0,
                priority: Some(4),
                matches: "in_port=phy-br-vlan,dl_vlan=1".into(),
                actions: vec!["mod_vlan_vid:101".into(), "NORMAL".into()],
                notes: vec!["forwarding to learned port".into()],
            }],
            datapath_actions: "push_vlan(vid=101,pcp=0),eth1".into(),
        });
        qvo.notes = vec!["br-vlan rewrites VLAN 1 → 101".into()];
        let report = TraceReport {
            lab: "seed".into(),
            from: "instance1".into(),
            to: "instance3".into(),
            destination: "192.168.1.12".into(),
            protocol: TraceProtocol::Icmp,
            tag: 40001,
            answered: false,
            hops: vec![
                hop(1, "request", "instance1", "eth0", None),
                qvo,
                hop(3, "request", "compute1", "eth1", Some(101)),
                hop(4, "reply", "instance3", "eth0", None),
            ],
            conclusions: vec!["crossed the network node: no".into()],
            lost: Some(TraceLoss {
                last_seen: "compute1 eth1 (out)".into(),
                next_expected: "physnet1 compute1 (in)".into(),
            }),
            elapsed_ms: 300,
        };
        let text = format_report(&report);
        let expected = "\
trace instance1 → instance3 (192.168.1.12), ICMP echo, probe tag 40001, lab seed

request
  instance1
    1  eth0  out  untagged  fa:16:3e:00:00:01 → fa:16:3e:00:00:02  192.168.1.11 → 192.168.1.12
  compute1
    2  qvo1  in   untagged  fa:16:3e:00:00:01 → fa:16:3e:00:00:02  192.168.1.11 → 192.168.1.12
         br-vlan table 0 priority 4: in_port=phy-br-vlan,dl_vlan=1 ⇒ mod_vlan_vid:101, NORMAL  (forwarding to learned port)
         datapath actions: push_vlan(vid=101,pcp=0),eth1
         » br-vlan rewrites VLAN 1 → 101
    3  eth1  out  vlan 101  fa:16:3e:00:00:01 → fa:16:3e:00:00:02  192.168.1.11 → 192.168.1.12

answer
  instance3
    4  eth0  out  untagged  fa:16:3e:00:00:01 → fa:16:3e:00:00:02  192.168.1.11 → 192.168.1.12

LOST: last seen at compute1 eth1 (out); next on the expected path: physnet1 compute1 (in)
crossed the network node: no
";
        assert_eq!(text, expected);
    }

    #[test]
    fn a_hop_in_a_tunnel_shows_the_tunnel_under_the_probe() {
        let mut eth3 = hop(2, "request", "compute1", "eth3", None);
        eth3.encapsulation = Some(TraceEncapsulation {
            kind: "vxlan".into(),
            key: Some(101),
            src_ip: "172.16.0.11".into(),
            dst_ip: "172.16.0.12".into(),
        });
        eth3.notes = vec!["encapsulated: vxlan 101, 172.16.0.11 → 172.16.0.12".into()];
        let mut out = String::new();
        hop_lines(&mut out, &eth3, 4);
        assert_eq!(
            out,
            "    2  eth3  out  untagged  fa:16:3e:00:00:01 → fa:16:3e:00:00:02  \
             192.168.1.11 → 192.168.1.12
         in tunnel vxlan 101, 172.16.0.11 → 172.16.0.12
         » encapsulated: vxlan 101, 172.16.0.11 → 172.16.0.12
"
        );
    }
}
