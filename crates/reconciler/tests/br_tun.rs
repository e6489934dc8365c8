//! The flow driver against a real, private ovs-vswitchd: Liberty's br-tun
//! (a patch port and two VXLAN tunnels) installed, observed with
//! `ovs-ofctl -O OpenFlow13`, read back, and left alone once the learn
//! action has filled table 20.

use std::collections::BTreeMap;
use std::time::Duration;

use ovslab_openflow::{Client, FlowStatsRequest};
use ovslab_reconciler::diff::diff_flows;
use ovslab_reconciler::drivers::flows::{self, FlowClient, is_learned};
use ovslab_reconciler::ovs_process::NodeOvs;
use ovslab_reconciler::testing::liberty_br_tun;
use ovslab_testkit::{OvsSandbox, require_root, run, wait_until};
use ovslab_topology::plan::FlowSpec;

const BRIDGE: &str = "br-tun";
const COOKIE: u64 = 0x0b57_0001;

/// br-tun and its peer br-int joined by patch-int/patch-tun, and two
/// VXLAN ports as Neutron's agent makes them, numbered as in the
/// reference's listing.
fn sandbox() -> OvsSandbox {
    let sb = OvsSandbox::start();
    sb.add_bridge(BRIDGE);
    sb.add_bridge("br-int");
    sb.vsctl(&[
        "add-port",
        "br-int",
        "patch-tun",
        "--",
        "set",
        "interface",
        "patch-tun",
        "type=patch",
        "options:peer=patch-int",
    ]);
    sb.vsctl(&[
        "add-port",
        BRIDGE,
        "patch-int",
        "--",
        "set",
        "interface",
        "patch-int",
        "type=patch",
        "options:peer=patch-tun",
        "ofport_request=1",
    ]);
    for (port, remote, ofport) in [
        ("vxlan-0a000002", "172.16.0.2", "2"),
        ("vxlan-0a000003", "172.16.0.3", "3"),
    ] {
        sb.vsctl(&[
            "add-port",
            BRIDGE,
            port,
            "--",
            "set",
            "interface",
            port,
            "type=vxlan",
            &format!("options:remote_ip={remote}"),
            "options:local_ip=172.16.0.1",
            "options:in_key=flow",
            "options:out_key=flow",
            "options:df_default=true",
            &format!("ofport_request={ofport}"),
        ]);
    }
    sb
}

/// The bridge's ports and their OpenFlow numbers, from OVSDB.
fn ports(sb: &OvsSandbox) -> BTreeMap<String, u32> {
    ["patch-int", "vxlan-0a000002", "vxlan-0a000003"]
        .into_iter()
        .map(|p| {
            let n = sb.vsctl(&["get", "interface", p, "ofport"]);
            let n: u32 = n.trim().parse().expect("an ofport");
            (p.to_string(), n)
        })
        .collect()
}

fn node(sb: &OvsSandbox) -> NodeOvs {
    NodeOvs {
        node: "network".into(),
        namespace: sb
            .netns
            .as_ref()
            .map(|n| n.name.clone())
            .unwrap_or_default(),
        rundir: sb.dir.clone(),
    }
}

/// `ovs-ofctl -O OpenFlow13 dump-flows --no-stats --names` lines, cookie
/// left out, sorted.
fn ofctl_flows(sb: &OvsSandbox, rest: &[&str]) -> Vec<String> {
    let mut args = vec!["--no-stats", "--names"];
    args.extend_from_slice(rest);
    let mut lines: Vec<String> = sb
        .ofctl("dump-flows", BRIDGE, &args)
        .lines()
        .map(str::trim)
        .filter(|l| l.contains("actions="))
        .map(|l| match l.split_once(", ") {
            Some((cookie, rest)) if cookie.starts_with("cookie=") => rest.to_string(),
            _ => l.to_string(),
        })
        .collect();
    lines.sort();
    lines
}

/// How OVS 3.1 prints the flows of [`liberty_br_tun`] over OpenFlow 1.3:
/// the OpenFlow 1.0 words of the agent (`mod_vlan_vid`, `strip_vlan`,
/// `set_tunnel`, `mod_dl_src`, `load:` of whole fields) become
/// `push_vlan`+`set_field`, `pop_vlan` and `set_field`.
fn expected_dump() -> Vec<String> {
    let mut lines: Vec<String> = [
        r#"priority=1,in_port="patch-int" actions=resubmit(,2)"#,
        r#"priority=1,in_port="vxlan-0a000002" actions=resubmit(,4)"#,
        r#"priority=1,in_port="vxlan-0a000003" actions=resubmit(,4)"#,
        "priority=0 actions=drop",
        "table=2, priority=1,arp,dl_dst=ff:ff:ff:ff:ff:ff actions=resubmit(,21)",
        "table=2, priority=0,dl_dst=00:00:00:00:00:00/01:00:00:00:00:00 actions=resubmit(,20)",
        "table=2, priority=0,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=resubmit(,22)",
        "table=3, priority=0 actions=drop",
        "table=4, priority=1,tun_id=0x64 \
         actions=push_vlan:0x8100,set_field:4097->vlan_vid,resubmit(,10)",
        "table=4, priority=0 actions=drop",
        "table=6, priority=0 actions=drop",
        r#"table=10, priority=1 actions=learn(table=20,hard_timeout=300,priority=1,cookie=0xb570001,NXM_OF_VLAN_TCI[0..11],NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:0->NXM_OF_VLAN_TCI[],load:NXM_NX_TUN_ID[]->NXM_NX_TUN_ID[],output:NXM_OF_IN_PORT[]),output:"patch-int""#,
        r#"table=20, priority=2,dl_vlan=1,dl_dst=fa:16:3e:00:00:22 actions=pop_vlan,set_field:0x64->tun_id,output:"vxlan-0a000002""#,
        "table=20, priority=0 actions=resubmit(,22)",
        "table=21, priority=1,arp,dl_vlan=1,arp_tpa=192.168.1.22 \
         actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:fa:16:3e:00:00:22->eth_src,\
         set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],\
         move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],set_field:fa:16:3e:00:00:22->arp_sha,\
         set_field:192.168.1.22->arp_spa,IN_PORT",
        "table=21, priority=0 actions=resubmit(,22)",
        r#"table=22, dl_vlan=1 actions=pop_vlan,set_field:0x64->tun_id,output:"vxlan-0a000002",output:"vxlan-0a000003""#,
        "table=22, priority=0 actions=drop",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    lines.sort();
    lines
}

/// The specs read back through the driver, sorted; panics on a flow the
/// driver does not recognise or one with another cookie.
async fn read_specs(client: &FlowClient, ports: &BTreeMap<String, u32>) -> Vec<FlowSpec> {
    let mut specs: Vec<FlowSpec> = flows::read(client, BRIDGE, ports)
        .await
        .expect("read flows")
        .into_iter()
        .map(|(spec, raw)| {
            let (spec, cookie) = spec.unwrap_or_else(|| panic!("not recognised: {raw}"));
            assert_eq!(cookie, COOKIE, "{raw}");
            spec
        })
        .collect();
    specs.sort();
    specs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn liberty_br_tun_is_installed_read_back_and_its_learned_flows_kept() {
    require_root("liberty_br_tun_is_installed_read_back_and_its_learned_flows_kept");
    let sb = sandbox();
    let ports = ports(&sb);
    assert_eq!(
        ports.values().copied().collect::<Vec<_>>(),
        [1, 2, 3],
        "patch-int, vxlan-0a000002, vxlan-0a000003"
    );
    let client = flows::connect(&node(&sb), BRIDGE).await.expect("connect");
    let mut wanted = liberty_br_tun();
    wanted.sort();

    // First converge: everything to add, nothing to delete.
    let present = flows::read(&client, BRIDGE, &ports).await.expect("read");
    let (add, delete) = diff_flows(&wanted, COOKIE, &present);
    assert_eq!(add.len(), wanted.len());
    assert!(delete.is_empty());
    flows::apply(&client, BRIDGE, COOKIE, &ports, &add, &delete)
        .await
        .expect("apply");

    // Independent observer: ovs-ofctl's text, flow by flow.
    let dumped = ofctl_flows(&sb, &[]);
    eprintln!("ovs-ofctl:\n{}", dumped.join("\n"));
    let want = expected_dump();
    for (got, want) in dumped.iter().zip(&want) {
        assert_eq!(got, want);
    }
    assert_eq!(dumped.len(), want.len(), "{dumped:#?}");
    let with_cookie = sb.ofctl("dump-flows", BRIDGE, &["--no-stats"]);
    assert_eq!(
        with_cookie
            .lines()
            .filter(|l| l.trim().starts_with(&format!("cookie={COOKIE:#x},")))
            .count(),
        wanted.len(),
        "{with_cookie}"
    );

    // Read back: the same specs, so a second converge changes nothing.
    assert_eq!(read_specs(&client, &ports).await, wanted);
    let present = flows::read(&client, BRIDGE, &ports).await.expect("read");
    let (add, delete) = diff_flows(&wanted, COOKIE, &present);
    assert!(add.is_empty(), "{add:#?}");
    assert!(delete.is_empty());

    // A frame out of vxlan-0a000002 with VNI 0x64: table 10 learns where
    // its source MAC lives.
    let ctl = sb.dir.join("ovs-vswitchd.ctl");
    let trace = run(
        "ovs-appctl",
        &[
            "-t",
            &ctl.display().to_string(),
            "ofproto/trace",
            BRIDGE,
            "in_port=2,tun_id=0x64,dl_src=fa:16:3e:00:00:33,dl_dst=fa:16:3e:00:00:11",
            "-generate",
        ],
    );
    assert!(trace.contains("learn(table=20"), "{trace}");
    let mut learned = Vec::new();
    wait_until(
        Duration::from_secs(10),
        "a learned flow in table 20",
        || {
            learned = ofctl_flows(&sb, &["table=20"])
                .into_iter()
                .filter(|l| l.contains("hard_timeout=300"))
                .collect();
            !learned.is_empty()
        },
    );
    assert_eq!(
        learned,
        [
            r#"table=20, hard_timeout=300, priority=1,vlan_tci=0x0001/0x0fff,dl_dst=fa:16:3e:00:00:33 actions=load:0->NXM_OF_VLAN_TCI[],load:0x64->NXM_NX_TUN_ID[],output:"vxlan-0a000002""#
        ]
    );

    // Our own dump sees it, with the agent's cookie that the learn action
    // gave it, and recognises it as learned.
    let raw = Client::connect(&sb.mgmt_socket(BRIDGE))
        .await
        .expect("connect");
    let all = raw
        .dump_flows(FlowStatsRequest::default())
        .await
        .expect("dump");
    let learned: Vec<_> = all.iter().filter(|f| is_learned(f)).collect();
    assert_eq!(learned.len(), 1, "{all:#?}");
    assert_eq!((learned[0].cookie, learned[0].table_id), (COOKIE, 20));
    assert_eq!(
        learned[0]
            .to_string()
            .split_once("priority=")
            .map(|(_, r)| r),
        Some(
            "1,dl_dst=fa:16:3e:00:00:33,vlan_vid=0x0001/0x0fff \
             actions=load:0->NXM_OF_VLAN_TCI[],load:0x64->NXM_NX_TUN_ID[],output:2"
        )
    );

    // The driver does not list it, so the converge leaves it alone.
    assert_eq!(read_specs(&client, &ports).await, wanted);
    let present = flows::read(&client, BRIDGE, &ports).await.expect("read");
    let (add, delete) = diff_flows(&wanted, COOKIE, &present);
    assert!(add.is_empty() && delete.is_empty());
    flows::apply(&client, BRIDGE, COOKIE, &ports, &add, &delete)
        .await
        .expect("empty apply");
    assert_eq!(
        ofctl_flows(&sb, &["table=20"])
            .iter()
            .filter(|l| l.contains("hard_timeout=300"))
            .count(),
        1
    );

    // Over OpenFlow 1.0, as a plain `ovs-ofctl dump-flows br-tun` on a
    // lab's bridge reads it (last: the change of protocols closes the
    // driver's connection), the tunnel key is the agent's `set_tunnel`
    // (NXAST_SET_TUNNEL), not a `load:` into NXM_NX_TUN_ID.
    sb.vsctl(&["set", "bridge", BRIDGE, "protocols=OpenFlow10,OpenFlow13"]);
    let target = format!("unix:{}", sb.mgmt_socket(BRIDGE).display());
    let of10 = run(
        "ovs-ofctl",
        &["-O", "OpenFlow10", "dump-flows", &target, "--no-stats"],
    );
    let to_tunnels: Vec<&str> = of10
        .lines()
        .filter(|l| l.contains("table=20, priority=2") || l.contains("table=22, dl_vlan"))
        .collect();
    assert_eq!(to_tunnels.len(), 2, "{of10}");
    for line in to_tunnels {
        assert!(
            line.contains("actions=strip_vlan,set_tunnel:0x64,output:"),
            "{line}"
        );
    }
}

/// The agent's own text (the reference's listing, ports by number),
/// replayed the way the agent did it, with `ovs-ofctl add-flows` over
/// OpenFlow 1.0, reads back through the driver as the same specs: the
/// driver's OpenFlow 1.3 vocabulary is OVS's own translation of Neutron's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn the_agents_own_br_tun_text_reads_back_as_the_plan() {
    require_root("the_agents_own_br_tun_text_reads_back_as_the_plan");
    let sb = sandbox();
    sb.vsctl(&["set", "bridge", BRIDGE, "protocols=OpenFlow10,OpenFlow13"]);
    let ports = ports(&sb);
    let learn = format!(
        "learn(cookie={COOKIE:#x},table=20,priority=1,hard_timeout=300,NXM_OF_VLAN_TCI[0..11],\
         NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:0->NXM_OF_VLAN_TCI[],\
         load:NXM_NX_TUN_ID[]->NXM_NX_TUN_ID[],output:NXM_OF_IN_PORT[])"
    );
    let text = [
        "table=0,priority=1,in_port=1 actions=resubmit(,2)".to_string(),
        "table=0,priority=1,in_port=2 actions=resubmit(,4)".into(),
        "table=0,priority=1,in_port=3 actions=resubmit(,4)".into(),
        "table=0,priority=0 actions=drop".into(),
        "table=2,priority=1,arp,dl_dst=ff:ff:ff:ff:ff:ff actions=resubmit(,21)".into(),
        "table=2,priority=0,dl_dst=00:00:00:00:00:00/01:00:00:00:00:00 actions=resubmit(,20)"
            .into(),
        "table=2,priority=0,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=resubmit(,22)"
            .into(),
        "table=3,priority=0 actions=drop".into(),
        "table=4,priority=1,tun_id=0x64 actions=mod_vlan_vid:1,resubmit(,10)".into(),
        "table=4,priority=0 actions=drop".into(),
        "table=6,priority=0 actions=drop".into(),
        format!("table=10,priority=1 actions={learn},output:1"),
        "table=20,priority=2,dl_vlan=1,dl_dst=fa:16:3e:00:00:22 \
         actions=strip_vlan,set_tunnel:0x64,output:2"
            .into(),
        "table=20,priority=0 actions=resubmit(,22)".into(),
        "table=21,priority=1,arp,dl_vlan=1,arp_tpa=192.168.1.22 \
         actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],mod_dl_src:fa:16:3e:00:00:22,\
         load:0x2->NXM_OF_ARP_OP[],move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],\
         move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],load:0xfa163e000022->NXM_NX_ARP_SHA[],\
         load:0xc0a80116->NXM_OF_ARP_SPA[],IN_PORT"
            .into(),
        "table=21,priority=0 actions=resubmit(,22)".into(),
        "table=22,dl_vlan=1 actions=strip_vlan,set_tunnel:0x64,output:2,output:3".into(),
        "table=22,priority=0 actions=drop".into(),
    ];
    let file = sb.dir.join("br-tun.flows");
    let lines: Vec<String> = text
        .iter()
        .map(|l| format!("cookie={COOKIE:#x},{l}"))
        .collect();
    std::fs::write(&file, lines.join("\n") + "\n").expect("write flows file");
    let target = format!("unix:{}", sb.mgmt_socket(BRIDGE).display());
    run(
        "ovs-ofctl",
        &[
            "-O",
            "OpenFlow10",
            "add-flows",
            &target,
            &file.display().to_string(),
        ],
    );

    let client = flows::connect(&node(&sb), BRIDGE).await.expect("connect");
    let mut wanted = liberty_br_tun();
    wanted.sort();
    let got = read_specs(&client, &ports).await;
    for (got, want) in got.iter().zip(&wanted) {
        assert_eq!(got, want, "{}", flows::describe(want));
    }
    assert_eq!(got.len(), wanted.len());
    // describe() is the agent's text, ports by name (the learn's cookie,
    // the flow's own, left out like the flow's).
    let described: Vec<String> = liberty_br_tun().iter().map(flows::describe).collect();
    let without_cookie = learn
        .replace(&format!("cookie={COOKIE:#x},"), "")
        .replace("priority=1,hard_timeout=300", "hard_timeout=300,priority=1");
    assert!(described.contains(&format!(
        "table=10, priority=1 actions={without_cookie},output:patch-int"
    )));
}
