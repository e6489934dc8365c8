//! The client against a real, private ovs-vswitchd (userspace datapath),
//! with `ovs-ofctl -O OpenFlow13` as the independent observer.
//!
//! Ports are referred to by numbers that need not exist: OVS accepts an
//! in_port match on any port number, which keeps these tests free of tap
//! devices.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use ovslab_openflow::{
    Action, Client, ETH_TYPE_ARP, ETH_TYPE_IPV4, FlowMod, FlowStats, FlowStatsRequest, Instruction,
    Match, OFPTT_ALL, OpenflowError,
};
use ovslab_testkit::{OvsSandbox, require_root};

const BRIDGE: &str = "br-int";

fn sandbox() -> OvsSandbox {
    let sb = OvsSandbox::start();
    sb.add_bridge(BRIDGE);
    sb
}

async fn client(sb: &OvsSandbox) -> Client {
    Client::connect(&sb.mgmt_socket(BRIDGE))
        .await
        .expect("connect to br-int")
}

/// Flow lines of `ovs-ofctl dump-flows --no-stats`, without the reply header.
fn ofctl_flows(sb: &OvsSandbox, rest: &[&str]) -> Vec<String> {
    let mut args = vec!["--no-stats"];
    args.extend_from_slice(rest);
    sb.ofctl("dump-flows", BRIDGE, &args)
        .lines()
        .map(str::trim)
        .filter(|l| l.contains("actions="))
        .map(str::to_string)
        .collect()
}

/// The Neutron-like flows of the reference: VLAN translation, drop,
/// NORMAL and an ARP-spoofing rule.
fn neutron_flows(cookie: u64) -> Vec<FlowMod> {
    vec![
        FlowMod::add(
            0,
            4,
            Match::new().in_port(2).vlan_vid(Some(1)),
            vec![Action::set_vlan_vid(101), Action::normal()],
        ),
        FlowMod::add(0, 2, Match::new().in_port(2), vec![]),
        FlowMod::add(0, 0, Match::new(), vec![Action::normal()]),
        FlowMod::add(
            24,
            2,
            Match::new()
                .eth_type(ETH_TYPE_ARP)
                .in_port(5)
                .arp_spa(Ipv4Addr::new(10, 0, 0, 3)),
            vec![Action::normal()],
        ),
        FlowMod::add(
            0,
            10,
            Match::new().eth_type(ETH_TYPE_ARP).in_port(5),
            vec![Action::resubmit_table(24)],
        ),
        FlowMod::add(0, 3, Match::new().in_port(3), vec![])
            .with_instructions(vec![Instruction::GotoTable(60)]),
    ]
    .into_iter()
    .map(|fm| fm.with_cookie(cookie))
    .collect()
}

/// What identifies a flow, for set comparisons.
fn key(table: u8, priority: u16, cookie: u64, m: &Match, i: &[Instruction]) -> String {
    format!("{table}/{priority}/{cookie:#x}/{m:?}/{i:?}")
}

fn dumped_keys(flows: &[FlowStats]) -> BTreeSet<String> {
    flows
        .iter()
        .map(|f| key(f.table_id, f.priority, f.cookie, &f.match_, &f.instructions))
        .collect()
}

fn wanted_keys(mods: &[FlowMod]) -> BTreeSet<String> {
    mods.iter()
        .map(|f| key(f.table_id, f.priority, f.cookie, &f.match_, &f.instructions))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn connect_and_features() {
    require_root("connect_and_features");
    let sb = sandbox();
    let c = client(&sb).await;
    let f = c.features().await.expect("features");
    assert_ne!(f.datapath_id, 0, "datapath id");
    assert!(f.n_tables > 0);
    c.barrier().await.expect("bare barrier");
    // A clone shares the connection.
    let c2 = c.clone();
    assert_eq!(
        c2.features().await.expect("features").datapath_id,
        f.datapath_id
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn bridge_without_openflow13_is_refused_clearly() {
    require_root("bridge_without_openflow13_is_refused_clearly");
    let sb = sandbox();
    sb.vsctl(&["set", "bridge", BRIDGE, "protocols=OpenFlow10"]);
    let mgmt = sb.mgmt_socket(BRIDGE);
    // vswitchd applies the new protocols asynchronously; a connection made
    // before that would still negotiate 1.3.
    let mut last = None;
    for _ in 0..100 {
        match Client::connect(&mgmt).await {
            Err(e @ OpenflowError::Version { .. }) => {
                last = Some(e);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let err = last.expect("connect must fail with Version once OpenFlow10 only");
    let OpenflowError::Version { peer_versions } = &err else {
        unreachable!()
    };
    assert_eq!(peer_versions, &[1]);
    assert!(err.to_string().contains("OpenFlow 1.3"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_missing_socket_names_the_path() {
    let path = std::env::temp_dir().join("ovslab-no-such-bridge.mgmt");
    let err = Client::connect(&path).await.expect_err("no socket");
    assert!(matches!(err, OpenflowError::Connect { .. }));
    assert!(
        err.to_string().contains("ovslab-no-such-bridge.mgmt"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn neutron_flows_are_installed_and_dumped_back_equal() {
    require_root("neutron_flows_are_installed_and_dumped_back_equal");
    let sb = sandbox();
    let c = client(&sb).await;
    let mods = neutron_flows(0x1234);
    c.apply(mods.clone()).await.expect("apply");

    // Independent observer.
    let lines = ofctl_flows(&sb, &[]);
    eprintln!("ovs-ofctl:\n{}", lines.join("\n"));
    assert_eq!(lines.len(), mods.len(), "{lines:#?}");
    let has = |needles: &[&str]| lines.iter().any(|l| needles.iter().all(|n| l.contains(n)));
    assert!(has(&[
        "cookie=0x1234",
        "priority=4",
        "in_port=2",
        "dl_vlan=1",
        "NORMAL"
    ]));
    assert!(has(&["4197->vlan_vid"]) || has(&["mod_vlan_vid:101"]));
    assert!(has(&["priority=2", "in_port=2", "actions=drop"]));
    assert!(has(&["priority=0", "actions=NORMAL"]));
    assert!(has(&["table=24", "arp", "arp_spa=10.0.0.3", "in_port=5"]));
    assert!(has(&["priority=10", "arp", "resubmit(,24)"]));
    assert!(has(&["priority=3", "in_port=3", "goto_table:60"]));

    // Our own dump returns exactly what we sent, in whatever order OVS
    // wrote the match fields.
    let flows = c
        .dump_flows(FlowStatsRequest::default())
        .await
        .expect("dump");
    for f in &flows {
        eprintln!("dumped: {f}");
    }
    assert_eq!(dumped_keys(&flows), wanted_keys(&mods));
    for fm in &mods {
        assert!(flows.iter().any(|f| f.same_flow_as(fm)), "missing {fm}");
    }

    // Applying the same flows again changes nothing.
    c.apply(mods.clone()).await.expect("second apply");
    let again = c
        .dump_flows(FlowStatsRequest::default())
        .await
        .expect("dump");
    assert_eq!(dumped_keys(&again), wanted_keys(&mods));

    // A filtered dump: one table only.
    let t24 = c
        .dump_flows(FlowStatsRequest {
            table_id: 24,
            ..FlowStatsRequest::default()
        })
        .await
        .expect("dump table 24");
    assert_eq!(t24.len(), 1);
    assert_eq!(t24[0].table_id, 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn delete_strict_removes_exactly_one() {
    require_root("delete_strict_removes_exactly_one");
    let sb = sandbox();
    let c = client(&sb).await;
    c.apply(neutron_flows(0x1)).await.expect("apply");
    let before = ofctl_flows(&sb, &[]).len();
    // priority=2,in_port=2 is covered (non-strictly) by other flows'
    // matches too; strict deletes only it.
    c.apply(vec![FlowMod::delete_strict(0, 2, Match::new().in_port(2))])
        .await
        .expect("delete_strict");
    let after = ofctl_flows(&sb, &[]);
    assert_eq!(after.len(), before - 1, "{after:#?}");
    assert!(
        !after.iter().any(|l| l.contains("priority=2,in_port=2 ")),
        "{after:#?}"
    );
    assert!(
        after
            .iter()
            .any(|l| l.contains("priority=4,in_port=2,dl_vlan=1"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn delete_by_cookie_removes_only_that_cookie() {
    require_root("delete_by_cookie_removes_only_that_cookie");
    let sb = sandbox();
    let c = client(&sb).await;
    let ours = neutron_flows(0xaaaa);
    let theirs = vec![
        FlowMod::add(0, 50, Match::new().in_port(9), vec![Action::normal()]).with_cookie(0xbbbb),
        FlowMod::add(23, 0, Match::new(), vec![]).with_cookie(0xbbbb),
    ];
    c.apply(ours.iter().chain(&theirs).cloned().collect())
        .await
        .expect("apply");
    assert_eq!(ofctl_flows(&sb, &[]).len(), ours.len() + theirs.len());

    // Only our cookie, via a dump filtered by cookie.
    let mine = c
        .dump_flows(FlowStatsRequest::by_cookie(0xaaaa))
        .await
        .expect("dump by cookie");
    assert_eq!(dumped_keys(&mine), wanted_keys(&ours));

    c.apply(vec![FlowMod::delete_by_cookie(0xaaaa)])
        .await
        .expect("delete by cookie");
    let left = ofctl_flows(&sb, &[]);
    assert_eq!(left.len(), theirs.len(), "{left:#?}");
    assert!(
        left.iter().all(|l| l.contains("cookie=0xbbbb")),
        "{left:#?}"
    );

    // A partial mask: delete everything whose low byte is 0xbb.
    c.apply(vec![
        FlowMod::delete(OFPTT_ALL, Match::new()).with_cookie_match(0xbb, 0xff),
    ])
    .await
    .expect("delete by masked cookie");
    assert!(ofctl_flows(&sb, &[]).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn bad_flow_mod_is_rejected_with_its_index() {
    require_root("bad_flow_mod_is_rejected_with_its_index");
    let sb = sandbox();
    let c = client(&sb).await;
    let good1 = FlowMod::add(0, 1, Match::new().in_port(1), vec![Action::normal()]);
    // ipv4_src without eth_type=0x0800: a missing prerequisite.
    let bad = FlowMod::add(
        0,
        1,
        Match::new().ipv4_src(Ipv4Addr::new(10, 0, 0, 1)),
        vec![Action::normal()],
    );
    let good2 = FlowMod::add(
        0,
        1,
        Match::new()
            .eth_type(ETH_TYPE_IPV4)
            .ipv4_src(Ipv4Addr::new(10, 0, 0, 1)),
        vec![Action::normal()],
    );
    let err = c
        .apply(vec![good1, bad, good2])
        .await
        .expect_err("bad prerequisite must be rejected");
    eprintln!("{err}");
    let OpenflowError::Rejected { errors } = &err else {
        panic!("expected Rejected, got {err:?}");
    };
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, 1, "index of the bad flow_mod");
    assert_eq!(errors[0].1.to_string(), "BAD_MATCH/BAD_PREREQ");
    assert_eq!(
        err.to_string(),
        "switch rejected message #1: BAD_MATCH/BAD_PREREQ"
    );
    // Without bundles the good ones around it were applied.
    assert_eq!(ofctl_flows(&sb, &[]).len(), 2);
    // The connection is still usable.
    c.barrier().await.expect("barrier after rejection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn thousands_of_flows_in_one_apply_and_one_multipart_dump() {
    require_root("thousands_of_flows_in_one_apply_and_one_multipart_dump");
    let sb = sandbox();
    let c = client(&sb).await;
    // 1200 entries of 88 bytes each do not fit one 64 KiB reply, so OVS
    // must answer the dump in several parts flagged REPLY_MORE.
    let n: u32 = 1200;
    let mods: Vec<FlowMod> = (1..=n)
        .map(|port| {
            FlowMod::add(1, 100, Match::new().in_port(port), vec![Action::normal()])
                .with_cookie(0x77)
        })
        .collect();
    c.apply(mods.clone()).await.expect("apply 1200 flows");
    let lines = ofctl_flows(&sb, &["table=1"]);
    assert_eq!(lines.len(), 1200);

    let flows = c
        .dump_flows(FlowStatsRequest::default())
        .await
        .expect("dump");
    assert_eq!(flows.len(), 1200);
    assert_eq!(dumped_keys(&flows), wanted_keys(&mods));

    // And 1000 rejected flow_mods in one batch do not deadlock: OVS stops
    // reading while many replies are queued, so the client must read while
    // it writes.
    let bad: Vec<FlowMod> = (0..1000u16)
        .map(|i| FlowMod::add(0, 1, Match::new().tcp_dst(i), vec![Action::normal()]))
        .collect();
    let err = c.apply(bad).await.expect_err("all rejected");
    let OpenflowError::Rejected { errors } = err else {
        panic!("expected Rejected, got {err:?}");
    };
    assert_eq!(errors.len(), 1000);
    let indexes: Vec<usize> = errors.iter().map(|(i, _)| *i).collect();
    assert_eq!(indexes, (0..1000).collect::<Vec<_>>());

    c.apply(vec![FlowMod::delete_by_cookie(0x77)])
        .await
        .expect("delete all");
    assert!(ofctl_flows(&sb, &[]).is_empty());
}

/// Neutron's br-tun actions written by ovs-ofctl from the agent's text
/// come back over OpenFlow 1.3 as exactly the actions our helpers build:
/// OVS's encoding of learn, move and set_field tunnel_id is ours.
/// (`Action::set_tunnel`, the Nicira form, is checked against OVS's
/// OpenFlow 1.0 text in the reconciler's br-tun test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn ovs_encodes_br_tun_actions_as_our_helpers_do() {
    use ovslab_openflow::{NxmField, OxmField, RegMove};
    require_root("ovs_encodes_br_tun_actions_as_our_helpers_do");
    let sb = sandbox();
    let target = format!("unix:{}", sb.mgmt_socket(BRIDGE).display());
    for flow in [
        "table=4,priority=1,tun_id=0x64 actions=set_tunnel:0x64,output:1",
        "table=10,priority=1 actions=learn(table=20,hard_timeout=300,priority=1,\
         NXM_OF_VLAN_TCI[0..11],NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:0->NXM_OF_VLAN_TCI[],\
         load:NXM_NX_TUN_ID[]->NXM_NX_TUN_ID[],output:NXM_OF_IN_PORT[]),output:1",
        "table=21,priority=1,arp actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],\
         move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],IN_PORT",
    ] {
        ovslab_testkit::run(
            "ovs-ofctl",
            &["-O", "OpenFlow13", "add-flow", &target, flow],
        );
    }
    let c = client(&sb).await;
    let flows = c
        .dump_flows(FlowStatsRequest::default())
        .await
        .expect("dump");
    let actions = |table: u8| -> Vec<Action> {
        let f = flows
            .iter()
            .find(|f| f.table_id == table)
            .expect("the flow");
        match f.instructions.as_slice() {
            [Instruction::ApplyActions(a)] => a.clone(),
            other => panic!("{other:?}"),
        }
    };

    let t4 = flows.iter().find(|f| f.table_id == 4).expect("table 4");
    assert_eq!(t4.match_, Match::new().tunnel_id(0x64));
    assert_eq!(t4.match_.fields()[0], OxmField::TunnelId(0x64, None));
    // `set_tunnel` comes back over 1.3 as set_field tunnel_id, whatever
    // form it was written in.
    assert_eq!(
        actions(4),
        [
            Action::set_field(OxmField::TunnelId(0x64, None)),
            Action::output(1)
        ]
    );

    // Liberty's learn, read back typed: in the agent's words, and our
    // encoding of what was read is OVS's own bytes.
    let t10 = actions(10);
    let learn = t10[0].as_learn().expect("a typed learn action");
    assert_eq!(
        learn.to_string(),
        "learn(table=20,hard_timeout=300,priority=1,NXM_OF_VLAN_TCI[0..11],\
         NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:0->NXM_OF_VLAN_TCI[],\
         load:NXM_NX_TUN_ID[]->NXM_NX_TUN_ID[],output:NXM_OF_IN_PORT[])"
    );
    assert_eq!(t10, [Action::learn(&learn), Action::output(1)]);

    let mv = |a, b| Action::reg_move(&RegMove::whole(a, b).expect("same width"));
    assert_eq!(
        actions(21),
        [
            mv(NxmField::ETH_SRC, NxmField::ETH_DST),
            mv(NxmField::ARP_SHA, NxmField::ARP_THA),
            mv(NxmField::ARP_SPA, NxmField::ARP_TPA),
            Action::output(ovslab_openflow::OFPP_IN_PORT),
        ]
    );

    // And what we send, OVS stores: a second add of the same flows from
    // our helpers leaves the dump as it was.
    let ours: Vec<FlowMod> = flows
        .iter()
        .map(|f| {
            FlowMod::add(f.table_id, f.priority, f.match_.clone(), vec![])
                .with_instructions(f.instructions.clone())
        })
        .collect();
    let before = ofctl_flows(&sb, &[]);
    c.apply(ours).await.expect("apply");
    assert_eq!(ofctl_flows(&sb, &[]), before);
}

/// The largest bridge of a lab, a br-tun with l2population and the ARP
/// responder at 20,000 instances (the most the daemon's namespace quota
/// allows; the 10,000-instance lab's network node has about 10,000
/// flows): 10,000 unicast flows and 10,000 ARP replies as Liberty's agent
/// writes them, dumped in one request. Its reply is far under
/// `MAX_DUMP_BYTES`, which is what makes the cap safe to have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_dump_of_the_largest_lab_bridge_is_well_under_the_cap() {
    use ovslab_openflow::{MAX_DUMP_BYTES, Message, MultipartReply, MultipartReplyBody};
    require_root("a_dump_of_the_largest_lab_bridge_is_well_under_the_cap");
    let sb = sandbox();
    let n: u32 = 10_000;
    let mut text = String::new();
    for i in 0..n {
        let (vlan, key) = (1 + i % 2, 101 + i % 2);
        let mac = format!(
            "fa:16:3e:{:02x}:{:02x}:{:02x}",
            i >> 16,
            (i >> 8) & 0xff,
            i & 0xff
        );
        let ip = Ipv4Addr::from(0xc0a8_0000 + i + 10);
        text.push_str(&format!(
            "table=20,priority=2,dl_vlan={vlan},dl_dst={mac},\
             actions=strip_vlan,set_tunnel:{key},output:{}\n",
            2 + i % 200
        ));
        text.push_str(&format!(
            "table=21,priority=1,arp,dl_vlan={vlan},arp_tpa={ip},\
             actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],mod_dl_src:{mac},\
             load:0x2->NXM_OF_ARP_OP[],move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],\
             move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],load:0xfa163e{:06x}->NXM_NX_ARP_SHA[],\
             load:{:#x}->NXM_OF_ARP_SPA[],in_port\n",
            i,
            u32::from(ip)
        ));
    }
    let file = sb.dir.join("flows.txt");
    std::fs::write(&file, text).expect("write the flows");
    let target = format!("unix:{}", sb.mgmt_socket(BRIDGE).display());
    ovslab_testkit::run(
        "ovs-ofctl",
        &[
            "-O",
            "OpenFlow13",
            "add-flows",
            &target,
            &file.display().to_string(),
        ],
    );
    let c = client(&sb).await;
    let flows = c
        .dump_flows(FlowStatsRequest::default())
        .await
        .expect("dump");
    assert_eq!(flows.len(), 2 * n as usize);
    // The reply's size, as the switch sent it: each flow's entry plus a
    // part's header per 64 KiB.
    let entries: usize = flows
        .iter()
        .map(|f| {
            let part = Message::MultipartReply(MultipartReply {
                flags: 0,
                body: MultipartReplyBody::Flow(vec![f.clone()]),
            });
            part.encode(0).expect("encode").len() - 16
        })
        .sum();
    let bytes = entries + 16 * entries.div_ceil(65_000);
    eprintln!("{} flows: a reply of {bytes} bytes", flows.len());
    assert!(bytes * 16 < MAX_DUMP_BYTES, "{bytes} bytes");
}
