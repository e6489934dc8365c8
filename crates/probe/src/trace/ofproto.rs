//! What an Open vSwitch does with a frame, asked of the bridge itself:
//! `ofproto/trace` (the flows each bridge took, following patch ports) and
//! `dpif/show` (port numbers to names), both over the vswitchd's control
//! socket, and their text turned into [`FlowStep`]s.

use std::collections::HashMap;

use ovslab_api::FlowStep;
use ovslab_capture::frame::format_mac;
use ovslab_capture::{Encapsulation, Frame, L4};

/// Port numbers of one vswitchd: OpenFlow numbers per bridge, and the
/// datapath numbers that `Datapath actions:` use.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PortNames {
    openflow: HashMap<(String, u32), String>,
    datapath: HashMap<u32, String>,
}

impl PortNames {
    /// Reads `dpif/show`: `    qvo138eea73-4d 2/1: (system)` under `  br-int:`.
    pub fn parse(dpif_show: &str) -> PortNames {
        let mut names = PortNames::default();
        let mut bridge = String::new();
        for line in dpif_show.lines() {
            let indent = line.len() - line.trim_start().len();
            let line = line.trim();
            if indent == 2 && line.ends_with(':') {
                bridge = line.trim_end_matches(':').to_string();
                continue;
            }
            let Some((name, rest)) = line.split_once(' ') else {
                continue;
            };
            let Some((numbers, _)) = rest.split_once(':') else {
                continue;
            };
            let Some((of, dp)) = numbers.split_once('/') else {
                continue;
            };
            if let Ok(of) = of.parse() {
                names
                    .openflow
                    .insert((bridge.clone(), of), name.to_string());
            }
            if let Ok(dp) = dp.parse() {
                names.datapath.insert(dp, name.to_string());
            }
        }
        names
    }

    fn openflow(&self, bridge: &str, port: &str) -> Option<&str> {
        let n = port.parse().ok()?;
        self.openflow
            .get(&(bridge.to_string(), n))
            .map(String::as_str)
    }
}

/// The flow `ofproto/trace` is asked about: the frame as it entered
/// `in_port`.
pub fn flow_of(in_port: &str, frame: &Frame) -> Option<String> {
    let (src, dst) = frame.ipv4()?;
    let mut flow = match frame.l4()? {
        L4::Icmp { kind, code, .. } => format!("icmp,icmp_type={kind},icmp_code={code}"),
        L4::Tcp {
            sport,
            dport,
            flags,
        } => format!("tcp,tp_src={sport},tp_dst={dport},tcp_flags=0x{flags:03x}"),
        // `ofproto/trace` wants UDP's own field names.
        L4::Udp { sport, dport, .. } => format!("udp,udp_src={sport},udp_dst={dport}"),
        // A GRE packet, as on an overlay uplink.
        L4::Other(proto) => format!("ip,nw_proto={proto}"),
    };
    flow.push_str(&format!(",in_port={in_port}"));
    if let Some(vlan) = frame.vlan {
        flow.push_str(&format!(",dl_vlan={vlan}"));
    }
    flow.push_str(&format!(
        ",dl_src={},dl_dst={},nw_src={src},nw_dst={dst},nw_ttl=64",
        format_mac(&frame.src_mac),
        format_mac(&frame.dst_mac)
    ));
    Some(flow)
}

/// The flow of a frame that arrived in a tunnel, as br-tun sees it once
/// the datapath has taken the encapsulation off: the inner frame entering
/// the tunnel port `in_port`, with the tunnel's key and endpoints.
pub fn tunnel_flow_of(in_port: &str, encapsulation: &Encapsulation) -> Option<String> {
    let key = encapsulation.tunnel.key?;
    let flow = flow_of(in_port, &encapsulation.inner)?;
    Some(format!(
        "{flow},tun_id={key:#x},tun_src={},tun_dst={}",
        encapsulation.outer_src, encapsulation.outer_dst
    ))
}

/// The flows of an `ofproto/trace` answer, bridge by bridge, and its
/// datapath actions, with port numbers named.
pub fn parse_trace(text: &str, names: &PortNames) -> (Vec<FlowStep>, String) {
    let mut steps: Vec<FlowStep> = Vec::new();
    let mut bridge = String::new();
    let mut datapath = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if let Some(name) = line
            .strip_prefix("bridge(\"")
            .and_then(|r| r.strip_suffix("\")"))
        {
            bridge = name.to_string();
        } else if let Some(actions) = line.strip_prefix("Datapath actions:") {
            datapath = name_datapath_ports(actions.trim(), names);
        } else if let Some((table, rest)) = flow_header(line) {
            steps.push(flow_step(&bridge, table, rest, names));
        } else if line.starts_with("Flow:")
            || line.starts_with("Final flow:")
            || line.starts_with("Megaflow:")
            || line.starts_with("---")
            || line.is_empty()
            || raw.len() == line.len()
        {
            // Headers and summaries; everything else is indented.
        } else if let Some(step) = steps.last_mut() {
            if let Some(note) = line.strip_prefix("->") {
                step.notes.push(note.trim().to_string());
            } else if line.starts_with(">>") {
                step.notes
                    .push(line.trim_start_matches('>').trim().to_string());
            } else {
                step.actions.push(action_text(line, &bridge, names));
            }
        }
    }
    (steps, datapath)
}

/// ` 0. in_port=1,dl_vlan=101, priority 3, cookie 0x…` → (0, the rest).
fn flow_header(line: &str) -> Option<(u8, &str)> {
    let (number, rest) = line.split_once(". ")?;
    let table = number.parse().ok()?;
    Some((table, rest))
}

fn flow_step(bridge: &str, table: u8, rest: &str, names: &PortNames) -> FlowStep {
    if rest.starts_with("No match") {
        return FlowStep {
            bridge: bridge.to_string(),
            table,
            priority: None,
            matches: "no flow matched".into(),
            actions: vec![],
            notes: vec![],
        };
    }
    let mut priority = None;
    let mut matches = Vec::new();
    for part in rest.split(", ") {
        if let Some(p) = part.strip_prefix("priority ") {
            priority = p.parse().ok();
        } else if !part.starts_with("cookie ") {
            matches.push(name_in_port(part, bridge, names));
        }
    }
    FlowStep {
        bridge: bridge.to_string(),
        table,
        priority,
        matches: if matches.is_empty() {
            "any".into()
        } else {
            matches.join(", ")
        },
        actions: vec![],
        notes: vec![],
    }
}

/// `in_port=1,dl_vlan=1` → `in_port=phy-br-vlan,dl_vlan=1`.
fn name_in_port(matches: &str, bridge: &str, names: &PortNames) -> String {
    matches
        .split(',')
        .map(|field| match field.strip_prefix("in_port=") {
            Some(n) => match names.openflow(bridge, n) {
                Some(name) => format!("in_port={name}"),
                None => field.to_string(),
            },
            None => field.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The agent's spelling of VLAN rewrites (`set_field:4197->vlan_vid` is
/// `mod_vlan_vid:101`) and tunnel ids (`set_field:0x64->tun_id` is
/// `set_tunnel:0x64`), output ports named.
fn action_text(action: &str, bridge: &str, names: &PortNames) -> String {
    if let Some(value) = action
        .strip_prefix("set_field:")
        .and_then(|a| a.strip_suffix("->vlan_vid"))
        && let Ok(vid) = value.parse::<u32>()
    {
        return format!("mod_vlan_vid:{}", vid & 0x0fff);
    }
    if let Some(id) = action
        .strip_prefix("set_field:")
        .and_then(|a| a.strip_suffix("->tun_id"))
    {
        return format!("set_tunnel:{id}");
    }
    if let Some(port) = action.strip_prefix("output:")
        && let Some(name) = names.openflow(bridge, port)
    {
        return format!("output:{name}");
    }
    action.to_string()
}

/// `pop_vlan,3` → `pop_vlan,qvo4967a8bb-91`.
fn name_datapath_ports(actions: &str, names: &PortNames) -> String {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut current = String::new();
    let mut finish = |token: &mut String| {
        let named = token
            .parse::<u32>()
            .ok()
            .and_then(|n| names.datapath.get(&n))
            .cloned()
            .unwrap_or_else(|| token.clone());
        out.push(named);
        token.clear();
    };
    for c in actions.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                finish(&mut current);
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.is_empty() {
        finish(&mut current);
    }
    out.join(",")
}

/// The VLAN rewrites of a trace: `(bridge, new id)`.
pub fn vlan_rewrites(steps: &[FlowStep]) -> Vec<(String, u16)> {
    steps
        .iter()
        .flat_map(|s| {
            s.actions.iter().filter_map(|a| {
                let vid = a.strip_prefix("mod_vlan_vid:")?.parse().ok()?;
                Some((s.bridge.clone(), vid))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_frame_from_a_tunnel_is_asked_about_on_its_tunnel_port_with_its_key() {
        // GRE with key 101 from 10.0.1.2 to 10.0.1.3, carrying an ICMP echo.
        let mut f = vec![2, 0, 0, 0, 0, 0x12, 2, 0, 0, 0, 0, 0x11, 8, 0];
        f.extend_from_slice(&[
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 47, 0, 0, 10, 0, 1, 2, 10, 0, 1, 3,
        ]);
        f.extend_from_slice(&[0x20, 0, 0x65, 0x58, 0, 0, 0, 101]);
        f.extend_from_slice(&[0xfa, 0x16, 0x3e, 0, 0, 2, 0xfa, 0x16, 0x3e, 0, 0, 1, 8, 0]);
        f.extend_from_slice(&[
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 192, 168, 1, 11, 192, 168, 1, 12,
        ]);
        f.extend_from_slice(&[8, 0, 0, 0, 0, 7, 0, 1]);
        let frame = Frame::parse(&f).unwrap();
        let e = frame.encapsulation().unwrap();
        assert_eq!(
            tunnel_flow_of("gre-0a000102", e).unwrap(),
            "icmp,icmp_type=8,icmp_code=0,in_port=gre-0a000102,dl_src=fa:16:3e:00:00:01,\
             dl_dst=fa:16:3e:00:00:02,nw_src=192.168.1.11,nw_dst=192.168.1.12,nw_ttl=64,\
             tun_id=0x65,tun_src=10.0.1.2,tun_dst=10.0.1.3"
        );
    }

    use super::*;

    const DPIF_SHOW: &str = "netdev@ovs-netdev: hit:39 missed:36
  br-int:
    br-int 65534/2: (tap)
    int-br-vlan 1/none: (patch: peer=phy-br-vlan)
    qvo138eea73-4d 2/1: (system)
    qvo4967a8bb-91 3/3: (system)
  br-vlan:
    br-vlan 65534/4: (tap)
    eth1 2/5: (system)
    phy-br-vlan 1/none: (patch: peer=int-br-vlan)
";

    const TRACE: &str =
        "Flow: icmp,in_port=2,dl_vlan=101,dl_vlan_pcp=0,vlan_tci1=0x0000,dl_src=fa:16:3e:17:4a:10

bridge(\"br-vlan\")
-----------------
 0. priority 0, cookie 0x755614439b6c5119
    NORMAL
     -> forwarding to learned port

bridge(\"br-int\")
----------------
 0. in_port=1,dl_vlan=101, priority 3, cookie 0x755614439b6c5119
    set_field:4097->vlan_vid
    NORMAL
     -> forwarding to learned port

Final flow: unchanged
Megaflow: recirc_id=0,eth,ip,in_port=2,dl_vlan=101
Datapath actions: pop_vlan,3
";

    #[test]
    fn port_numbers_are_read_per_bridge() {
        let names = PortNames::parse(DPIF_SHOW);
        assert_eq!(names.openflow("br-int", "1"), Some("int-br-vlan"));
        assert_eq!(names.openflow("br-vlan", "1"), Some("phy-br-vlan"));
        assert_eq!(names.openflow("br-vlan", "2"), Some("eth1"));
        assert_eq!(
            names.datapath.get(&3).map(String::as_str),
            Some("qvo4967a8bb-91")
        );
    }

    #[test]
    fn a_trace_becomes_named_flow_steps() {
        let names = PortNames::parse(DPIF_SHOW);
        let (steps, datapath) = parse_trace(TRACE, &names);
        assert_eq!(datapath, "pop_vlan,qvo4967a8bb-91");
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].bridge, "br-vlan");
        assert_eq!((steps[0].table, steps[0].priority), (0, Some(0)));
        assert_eq!(steps[0].matches, "any");
        assert_eq!(steps[0].actions, ["NORMAL"]);
        assert_eq!(steps[0].notes, ["forwarding to learned port"]);
        assert_eq!(steps[1].bridge, "br-int");
        assert_eq!(steps[1].matches, "in_port=int-br-vlan,dl_vlan=101");
        assert_eq!(steps[1].priority, Some(3));
        assert_eq!(steps[1].actions, ["mod_vlan_vid:1", "NORMAL"]);
        assert_eq!(vlan_rewrites(&steps), [("br-int".to_string(), 1)]);
    }

    #[test]
    fn unmatched_and_dropped_frames_say_so() {
        let text = "bridge(\"br-int\")\n----\n 0. No match.\n    drop\n\nDatapath actions: drop\n";
        let (steps, datapath) = parse_trace(text, &PortNames::default());
        assert_eq!(steps[0].priority, None);
        assert_eq!(steps[0].matches, "no flow matched");
        assert_eq!(steps[0].actions, ["drop"]);
        assert_eq!(datapath, "drop");
    }

    #[test]
    fn datapath_actions_keep_their_parentheses() {
        let names = PortNames::parse(DPIF_SHOW);
        assert_eq!(
            name_datapath_ports("1,push_vlan(vid=101,pcp=0),5,4", &names),
            "qvo138eea73-4d,push_vlan(vid=101,pcp=0),eth1,br-vlan"
        );
    }

    #[test]
    fn the_flow_asked_about_is_the_frame_as_it_entered() {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x81, 0, 0, 101, 8, 0];
        f.extend_from_slice(&[
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 192, 168, 1, 11, 192, 168, 1, 12,
        ]);
        f.extend_from_slice(&[8, 0, 0, 0, 0, 7, 0, 1]);
        let frame = Frame::parse(&f).unwrap();
        assert_eq!(
            flow_of("eth1", &frame).unwrap(),
            "icmp,icmp_type=8,icmp_code=0,in_port=eth1,dl_vlan=101,dl_src=02:00:00:00:00:01,\
             dl_dst=02:00:00:00:00:02,nw_src=192.168.1.11,nw_dst=192.168.1.12,nw_ttl=64"
        );
    }

    #[test]
    fn tunnel_ids_are_spelled_as_the_agent_does() {
        let names = PortNames::default();
        assert_eq!(
            action_text("set_field:0x64->tun_id", "br-tun", &names),
            "set_tunnel:0x64"
        );
        assert_eq!(
            action_text("set_tunnel:0x64", "br-tun", &names),
            "set_tunnel:0x64"
        );
    }

    #[test]
    fn a_gre_packet_is_asked_about_by_its_protocol() {
        let mut f = vec![2, 0, 0, 0, 0, 0x12, 2, 0, 0, 0, 0, 0x11, 8, 0];
        f.extend_from_slice(&[
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 47, 0, 0, 172, 16, 0, 11, 172, 16, 0, 12,
        ]);
        f.extend_from_slice(&[0x20, 0, 0x65, 0x58, 0, 0, 0, 0x64]);
        f.extend_from_slice(&[0xfa; 14]);
        let frame = Frame::parse(&f).unwrap();
        assert!(frame.encapsulation().is_some());
        assert_eq!(
            flow_of("eth3", &frame).unwrap(),
            "ip,nw_proto=47,in_port=eth3,dl_src=02:00:00:00:00:11,dl_dst=02:00:00:00:00:12,\
             nw_src=172.16.0.11,nw_dst=172.16.0.12,nw_ttl=64"
        );
    }
}
