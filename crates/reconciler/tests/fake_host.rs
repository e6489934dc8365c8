//! The engine over the in-memory host: converge, audit and `down` without
//! root. The fake applies the engine's changes to the same "actual state"
//! types the diff reads, so what a second converge, an audit or a failed
//! step leaves is checked on what the host holds.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use ovslab_reconciler::testing::{FakeHost, Step};
use ovslab_reconciler::{Engine, EngineConfig, ReconcileError, TeardownFailure};
use ovslab_topology::naming;
use ovslab_topology::plan::{LocalVlans, plan};

/// A run root of its own for each test, removed at the end.
struct Root(PathBuf);

impl Root {
    fn new(test: &str) -> Root {
        // Unique per call: tests run in parallel and some build twice.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("ovslab-fake-{}-{n}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Root(dir)
    }

    fn engine(&self) -> Engine<FakeHost> {
        self.engine_on(FakeHost::default())
    }

    /// An engine started on `host` (a daemon started again on what an
    /// earlier one left).
    fn engine_on(&self, host: FakeHost) -> Engine<FakeHost> {
        let mut config = EngineConfig::new(&self.0);
        config.dhcp_hook = Some(self.0.join(ovslab_topology::naming::DHCP_HOOK));
        Engine::with_host(config, host)
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn up(engine: &Engine<FakeHost>) -> Result<Vec<String>, ReconcileError> {
    let topology = ovslab_topology::seed();
    let report = engine.up(topology, ovslab_topology::SEED_YAML).await?;
    Ok(report.changes)
}

const LAB: &str = "seed";

fn node(name: &str) -> String {
    naming::namespace(LAB, name)
}

/// What the host holds, without the names it makes up (inodes, uuids,
/// ifindexes, MACs it chose): two hosts that hold the same lab print the
/// same.
fn summary(host: &FakeHost) -> String {
    let state = host.state();
    let mut out = String::new();
    for (name, ns) in &state.namespaces {
        let _ = writeln!(out, "namespace {name}");
        let mut links: Vec<_> = ns.links.links.iter().collect();
        links.sort_by(|a, b| a.name.cmp(&b.name));
        for l in links {
            let _ = writeln!(
                out,
                "  link {} {} master={:?} up={} tx={} {:?}",
                l.name, l.kind, l.master, l.up, l.tx_checksum, l.addresses
            );
        }
        let _ = writeln!(out, "  routes {:?}", ns.links.routes);
        let _ = writeln!(out, "  sysctls {:?}", ns.links.sysctls);
        let _ = writeln!(out, "  rules {:?} {:?}", ns.ruleset, ns.ipsets);
    }
    for (name, node) in &state.nodes {
        let _ = writeln!(
            out,
            "node {name} ovsdb={} vswitchd={} root={:?}",
            node.ovsdb_server, node.ovs_vswitchd, node.switch.root_other_config
        );
        let mut bridges: Vec<_> = node.switch.bridges.iter().collect();
        bridges.sort_by(|a, b| a.name.cmp(&b.name));
        for b in bridges {
            let _ = writeln!(
                out,
                "  bridge {} {} {:?} {:?} {:?}",
                b.name, b.datapath_type, b.fail_mode, b.protocols, b.external_ids
            );
            let mut ports: Vec<_> = b.ports.iter().collect();
            ports.sort_by(|a, b| a.name.cmp(&b.name));
            for p in ports {
                let _ = writeln!(
                    out,
                    "    port {} tag={:?} kind={} options={:?} {:?} {:?}",
                    p.name, p.tag, p.kind, p.options, p.interface_external_ids, p.port_other_config
                );
            }
        }
        for (bridge, flows) in &node.flows {
            let mut flows = flows.clone();
            flows.sort();
            let _ = writeln!(out, "  flows {bridge} {flows:?}");
        }
    }
    out
}

/// The host after one clean `up` of the seed lab.
async fn converged() -> String {
    let root = Root::new("reference");
    let engine = root.engine();
    up(&engine).await.expect("a clean up");
    summary(engine.host())
}

#[tokio::test]
async fn a_second_converge_changes_nothing() {
    let root = Root::new("second");
    let engine = root.engine();
    let first = up(&engine).await.unwrap();
    assert!(!first.is_empty());
    let built = summary(engine.host());
    assert!(built.contains("flows br-int"), "{built}");
    assert!(built.contains("rules Some("), "{built}");
    engine.host().take_calls();

    let second = up(&engine).await.unwrap();
    assert_eq!(second, Vec::<String>::new());
    let changing = [
        Step::CreateNamespace,
        Step::DeleteNamespace,
        Step::ApplyLink,
        Step::StopVswitchd,
        Step::StopAndRemove,
        Step::ApplySwitch,
        Step::ApplyFlows,
    ];
    let calls = engine.host().take_calls();
    assert!(
        !calls.iter().any(|c| changing.contains(&c.step)),
        "{calls:?}"
    );
    assert_eq!(summary(engine.host()), built);
    assert_eq!(engine.audit().await, Vec::<String>::new());
}

#[tokio::test]
async fn the_phases_run_in_order() {
    let root = Root::new("order");
    let engine = root.engine();
    up(&engine).await.unwrap();
    let calls = engine.host().take_calls();
    let at = |step: Step| -> Vec<usize> {
        let at: Vec<usize> = calls
            .iter()
            .enumerate()
            .filter(|(_, c)| c.step == step)
            .map(|(i, _)| i)
            .collect();
        assert!(!at.is_empty(), "no {step:?} in {calls:?}");
        at
    };
    let first = |step| at(step)[0];
    let last = |step| *at(step).last().unwrap();
    let before = |a: Step, b: Step| {
        assert!(
            last(a) < first(b),
            "every {a:?} comes before any {b:?}: {calls:?}"
        );
    };
    // The nodes' namespaces first, their databases next, then the others
    // (instances, routers, external hosts), before any link.
    let nodes = ["seed.network", "seed.compute1", "seed.compute2"];
    let creates: Vec<(usize, bool)> = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| c.step == Step::CreateNamespace)
        .map(|(i, c)| (i, nodes.contains(&c.target.as_str())))
        .collect();
    assert_eq!(creates.iter().filter(|(_, n)| *n).count(), nodes.len());
    for (i, of_node) in creates {
        match of_node {
            true => assert!(i < first(Step::EnsureDatabase), "{calls:?}"),
            false => assert!(i > last(Step::EnsureDatabase), "{calls:?}"),
        }
    }
    before(Step::CreateNamespace, Step::ApplyLink);
    before(Step::EnsureDatabase, Step::ApplyLink);
    before(Step::EnsureDatabase, Step::ConvergeRuleset);
    before(Step::ApplyLink, Step::ApplyFlows);
    before(Step::ConvergeRuleset, Step::ApplyFlows);
    before(Step::ApplySwitch, Step::ApplyFlows);
    // The metadata service listens on addresses the links phase gives,
    // and starts while the vswitchds start: before any flow is written,
    // not after the last vswitchd.
    before(Step::ApplyLink, Step::ServeMetadata);
    before(Step::ServeMetadata, Step::ApplyFlows);
    // From nothing, each node's vswitchd starts and gets its bridges
    // before the links are made (its datapath's start-up runs beside
    // them), and its ports once links and rules are done: rulesets are
    // written before any port is bound (its tag set), as Neutron's agent
    // sets up port filters before it binds devices.
    assert!(
        first(Step::EnsureVswitchd) < first(Step::ApplyLink),
        "{calls:?}"
    );
    // The seed's nodes hold few links: each one's vswitchd starts as soon
    // as its own database answers (its root settings written first, which
    // the fake checks), and gets its bridges then, before the plan
    // connects to every database.
    for node in nodes {
        let of = |step: Step| -> Vec<usize> {
            calls
                .iter()
                .enumerate()
                .filter(|(_, c)| c.step == step && c.target == node)
                .map(|(i, _)| i)
                .collect()
        };
        let (started, connected) = (of(Step::EnsureVswitchd), of(Step::ConnectSwitch));
        assert!(
            started.first() < connected.last(),
            "{node}: vswitchd started before the plan's connection: {calls:?}"
        );
        assert!(
            of(Step::EnsureDatabase)[0] < started[0],
            "{node}: {calls:?}"
        );
        assert!(
            started[0] < of(Step::ApplySwitch)[0] && of(Step::ApplySwitch)[0] < connected[1],
            "{node}: bridges committed right after vswitchd started: {calls:?}"
        );
        // Its flows followed its own vswitchd: the vswitchd phase, after
        // the last one, does not ask for it again.
        assert_eq!(started.len(), 1, "{node}: {calls:?}");
    }
    let nodes: std::collections::BTreeSet<&str> = calls
        .iter()
        .filter(|c| c.step == Step::ApplySwitch)
        .map(|c| c.target.as_str())
        .collect();
    for node in nodes {
        let commits: Vec<usize> = calls
            .iter()
            .enumerate()
            .filter(|(_, c)| c.step == Step::ApplySwitch && c.target == node)
            .map(|(i, _)| i)
            .collect();
        let (bridges, ports) = (commits[0], *commits.last().unwrap());
        assert!(bridges < ports, "{node}: bridges, then ports: {calls:?}");
        assert!(ports > last(Step::ApplyLink), "{node}: {calls:?}");
        assert!(ports > last(Step::ConvergeRuleset), "{node}: {calls:?}");
    }
}

/// From nothing, each node's flows are written as soon as its own
/// vswitchd has applied its bridges and ports: a node whose vswitchd is
/// still starting holds back its own flows, not the other nodes'.
#[tokio::test]
async fn a_node_s_flows_do_not_wait_for_another_node_s_vswitchd() {
    let root = Root::new("early-flows");
    let engine = std::sync::Arc::new(root.engine());
    let held = engine.host().hold_switch_waits(&node("compute2")).await;
    let upping = tokio::spawn({
        let engine = engine.clone();
        async move { up(&engine).await }
    });
    let flowed = |calls: &[ovslab_reconciler::testing::Call], of: &str| {
        calls
            .iter()
            .any(|c| c.step == Step::ApplyFlows && c.target.starts_with(&format!("{of}/")))
    };
    let mut calls = Vec::new();
    for _ in 0..500 {
        calls.extend(engine.host().take_calls());
        if flowed(&calls, &node("network")) && flowed(&calls, &node("compute1")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(flowed(&calls, &node("network")), "{calls:?}");
    assert!(flowed(&calls, &node("compute1")), "{calls:?}");
    assert!(!flowed(&calls, &node("compute2")), "{calls:?}");
    assert!(!upping.is_finished());
    drop(held);
    upping.await.unwrap().unwrap();
    calls.extend(engine.host().take_calls());
    assert!(flowed(&calls, &node("compute2")), "{calls:?}");
}

/// Breaks the lab behind the engine's back, then checks that one audit
/// repairs it and the next finds nothing.
async fn repaired_by_an_audit(test: &str, break_it: impl FnOnce(&FakeHost)) {
    let reference = converged().await;
    let root = Root::new(test);
    let engine = root.engine();
    up(&engine).await.unwrap();
    break_it(engine.host());
    assert_ne!(summary(engine.host()), reference, "nothing was broken");
    assert_eq!(engine.audit().await, vec![LAB.to_string()]);
    assert_eq!(summary(engine.host()), reference);
    assert_eq!(engine.audit().await, Vec::<String>::new());
}

#[tokio::test]
async fn an_audit_puts_back_a_deleted_namespace() {
    repaired_by_an_audit("namespace", |host| {
        host.delete_namespace_behind(&node("instance1"))
    })
    .await;
}

#[tokio::test]
async fn an_audit_puts_back_a_deleted_node_namespace() {
    repaired_by_an_audit("node-namespace", |host| {
        host.delete_namespace_behind(&node("compute1"))
    })
    .await;
}

#[tokio::test]
async fn an_audit_puts_back_a_deleted_port() {
    repaired_by_an_audit("port", |host| {
        let compute1 = node("compute1");
        let port = {
            let state = host.state();
            let br_int = state.nodes[&compute1]
                .switch
                .bridge(naming::BR_INT)
                .cloned()
                .unwrap();
            br_int
                .ports
                .iter()
                .find(|p| p.name != naming::BR_INT && p.kind.is_empty())
                .map(|p| p.name.clone())
                .unwrap()
        };
        host.delete_port_behind(&compute1, naming::BR_INT, &port);
    })
    .await;
}

#[tokio::test]
async fn an_audit_puts_back_deleted_flows() {
    repaired_by_an_audit("flows", |host| {
        host.delete_flows_behind(&node("compute1"), naming::BR_INT)
    })
    .await;
}

#[tokio::test]
async fn an_audit_puts_back_deleted_rules() {
    let desired = plan(&ovslab_topology::seed(), &LocalVlans::new());
    let router = desired.routers[0].namespace.clone();
    repaired_by_an_audit("rules", move |host| host.flush_rules_behind(&router)).await;
}

#[tokio::test]
async fn an_audit_restarts_a_killed_vswitchd_and_its_flows() {
    repaired_by_an_audit("vswitchd", |host| {
        host.kill_behind(
            &node("compute1"),
            ovslab_reconciler::ovs_process::OvsDaemon::OvsVswitchd,
        )
    })
    .await;
}

#[tokio::test]
async fn a_daemon_that_exits_wakes_the_audits_at_once() {
    let reference = converged().await;
    let root = Root::new("wake");
    let engine = std::sync::Arc::new(root.engine());
    up(&engine).await.unwrap();
    // An hour between audits: only the exit can start one in time.
    let audits = engine.spawn_audits(Duration::from_secs(3600), || {});
    engine.host().kill_behind(
        &node("compute1"),
        ovslab_reconciler::ovs_process::OvsDaemon::OvsVswitchd,
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while summary(engine.host()) != reference {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not repaired 10 s after the exit:\n{}",
            summary(engine.host())
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    audits.abort();
}

#[tokio::test]
async fn a_failed_step_leaves_what_the_next_converge_finishes() {
    let reference = converged().await;
    for step in [
        Step::CreateNamespace,
        Step::EnsureDatabase,
        Step::ReadLinks,
        Step::ApplyLink,
        Step::EnsureVswitchd,
        Step::ConnectSwitch,
        Step::ApplySwitch,
        Step::ReadFlows,
        Step::ApplyFlows,
        Step::ConvergeRuleset,
    ] {
        let root = Root::new(&format!("fail-{step:?}"));
        let engine = root.engine();
        engine.host().fail_always(step);
        let failed = up(&engine).await;
        assert!(failed.is_err(), "{step:?}: the up did not fail");
        engine.host().stop_failing();
        up(&engine)
            .await
            .unwrap_or_else(|e| panic!("{step:?}: the next up failed: {e}"));
        assert_eq!(summary(engine.host()), reference, "{step:?}");
        assert_eq!(
            up(&engine).await.unwrap(),
            Vec::<String>::new(),
            "{step:?}: the lab was not converged"
        );
    }
}

#[tokio::test]
async fn down_removes_everything_the_host_holds() {
    let root = Root::new("down");
    let engine = root.engine();
    up(&engine).await.unwrap();
    assert!(!engine.host().is_empty());
    let report = engine.down(LAB).await.unwrap();
    assert!(!report.removed.is_empty());
    assert!(engine.host().is_empty(), "{}", summary(engine.host()));
    assert!(!root.0.join(LAB).exists());
    assert!(engine.labs().await.is_empty());
    assert!(matches!(
        engine.down(LAB).await,
        Err(ReconcileError::UnknownLab(_))
    ));
}

#[tokio::test]
async fn down_after_a_failed_up_removes_what_it_made() {
    let root = Root::new("down-failed");
    let engine = root.engine();
    engine.host().fail_always(Step::ApplySwitch);
    assert!(up(&engine).await.is_err());
    engine.host().stop_failing();
    assert!(!engine.host().is_empty());
    engine.down(LAB).await.unwrap();
    assert!(engine.host().is_empty(), "{}", summary(engine.host()));
}

/// The engine over the fake with the self-service (VXLAN) lab.
async fn up_selfservice(engine: &Engine<FakeHost>) -> Result<Vec<String>, ReconcileError> {
    let text = include_str!("../../../lab-topologies/selfservice-vxlan.yaml");
    give_leases(engine, text);
    let topology = ovslab_topology::parse("selfservice", text).unwrap();
    Ok(engine.up(topology, text).await?.changes)
}

#[tokio::test]
async fn nodes_resolve_their_tunnel_endpoints_last_and_only_after_a_change() {
    let root = Root::new("endpoints");
    let engine = root.engine();
    up_selfservice(&engine).await.unwrap();
    let calls = engine.host().take_calls();
    let resolved: Vec<&str> = calls
        .iter()
        .filter(|c| c.step == Step::ResolveTunnelEndpoints)
        .map(|c| c.target.as_str())
        .collect();
    assert_eq!(
        resolved.len(),
        3,
        "each of the three nodes resolves its endpoints: {calls:?}"
    );
    let last_rules = calls
        .iter()
        .rposition(|c| c.step == Step::ConvergeRuleset)
        .unwrap();
    let first_resolve = calls
        .iter()
        .position(|c| c.step == Step::ResolveTunnelEndpoints)
        .unwrap();
    assert!(
        last_rules < first_resolve,
        "after every other phase: {calls:?}"
    );
    // A converge that changes nothing sends nothing.
    assert!(up_selfservice(&engine).await.unwrap().is_empty());
    assert!(
        !engine
            .host()
            .take_calls()
            .iter()
            .any(|c| c.step == Step::ResolveTunnelEndpoints)
    );
    // The seed lab has no tunnels: no node resolves anything.
    let seed = Root::new("endpoints-seed");
    let engine = seed.engine();
    up(&engine).await.unwrap();
    assert!(
        !engine
            .host()
            .take_calls()
            .iter()
            .any(|c| c.step == Step::ResolveTunnelEndpoints)
    );
}

#[tokio::test]
async fn a_namespace_down_could_not_delete_is_named_and_the_next_down_finishes() {
    let root = Root::new("down-fails");
    let engine = root.engine();
    up(&engine).await.unwrap();
    engine.host().fail_once(Step::DeleteNamespace);
    match engine.down(LAB).await {
        Err(ReconcileError::Teardown { lab, failures }) => {
            assert_eq!(lab, LAB);
            assert!(
                matches!(failures.as_slice(), [TeardownFailure::Namespace { name, .. }]
                    if name.starts_with(&naming::namespace_prefix(LAB))),
                "{failures:?}"
            );
        }
        other => panic!("expected a teardown failure, got {other:?}"),
    }
    // Still known, its run directory kept, and the next `down` finishes.
    assert_eq!(engine.labs().await.len(), 1);
    assert!(root.0.join(LAB).exists());
    engine.down(LAB).await.unwrap();
    assert!(engine.host().is_empty(), "{}", summary(engine.host()));
    assert!(!root.0.join(LAB).exists());
}

#[tokio::test]
async fn status_shows_why_the_last_audit_could_not_repair_the_lab() {
    let root = Root::new("audit-error");
    let engine = root.engine();
    up(&engine).await.unwrap();
    engine
        .host()
        .delete_flows_behind(&node("compute1"), naming::BR_INT);
    engine.host().fail_times(Step::ApplyFlows, 2);
    assert_eq!(engine.audit().await, Vec::<String>::new());
    let error = engine.status(LAB).await.unwrap().audit_error;
    assert!(
        error.as_deref().is_some_and(|e| e.contains("ApplyFlows")),
        "{error:?}"
    );
    assert_eq!(engine.audit().await, vec![LAB.to_string()]);
    assert_eq!(engine.status(LAB).await.unwrap().audit_error, None);
}

// --- DHCP -------------------------------------------------------------------

/// The seed lab with DHCP on both networks.
fn dhcp_seed() -> String {
    ovslab_topology::SEED_YAML.replace("    dhcp: false\n", "")
}

async fn up_text(engine: &Engine<FakeHost>, text: &str) -> Result<Vec<String>, ReconcileError> {
    let topology = ovslab_topology::parse("dhcp", text).unwrap();
    Ok(engine.up(topology, text).await?.changes)
}

/// Every instance of the seed gets its reservation when its client starts.
fn give_leases(engine: &Engine<FakeHost>, text: &str) {
    let topo = ovslab_topology::parse("dhcp", text).unwrap();
    let mut state = engine.host().state();
    for i in &topo.instances {
        let net = topo.network(&i.network).unwrap();
        state.leases.insert(
            (format!("{}.{}", topo.lab, i.name), "eth0".into()),
            ipnet::Ipv4Net::new(i.address, net.cidr.prefix_len()).unwrap(),
        );
    }
}

/// The first agent directory whose name starts with `prefix`.
fn first_agent_dir(engine: &Engine<FakeHost>, prefix: &str) -> std::path::PathBuf {
    engine
        .host()
        .state()
        .agents
        .keys()
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .cloned()
        .unwrap_or_else(|| panic!("no agent directory {prefix}*"))
}

fn agent_dirs(engine: &Engine<FakeHost>, prefix: &str) -> Vec<String> {
    engine
        .host()
        .state()
        .agents
        .keys()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

#[tokio::test]
async fn dhcp_servers_start_before_their_clients_and_every_client_gets_its_lease() {
    let root = Root::new("dhcp-up");
    let engine = root.engine();
    let text = dhcp_seed();
    give_leases(&engine, &text);
    let changes = up_text(&engine, &text).await.unwrap();
    assert_eq!(agent_dirs(&engine, "qdhcp-").len(), 2, "{changes:#?}");
    assert_eq!(agent_dirs(&engine, "udhcpc.").len(), 4);
    let started: Vec<&String> = changes.iter().filter(|c| c.starts_with("start ")).collect();
    let first_client = started.iter().position(|c| c.contains("udhcpc")).unwrap();
    assert!(
        started[..first_client]
            .iter()
            .filter(|c| c.contains("dnsmasq"))
            .count()
            == 2,
        "{started:?}"
    );
    // The files dnsmasq reads, written as the agent writes them.
    let server = engine
        .host()
        .state()
        .agents
        .values()
        .find(|a| {
            a.files
                .get("host")
                .is_some_and(|h| h.contains(",192.168.1.11\n"))
        })
        .cloned()
        .expect("net1's dnsmasq");
    assert!(server.files["opts"].contains("tag:tag0,option:router,192.168.1.1"));
    assert!(server.files["args"].contains("--dhcp-range=set:tag0,192.168.1.0,static,86400s"));
    // Nothing to do the second time.
    let again = up_text(&engine, &text).await.unwrap();
    assert!(again.is_empty(), "{again:#?}");
}

#[tokio::test]
async fn an_instance_without_a_lease_is_reported_by_name() {
    let root = Root::new("dhcp-nolease");
    let engine = root.engine();
    let text = dhcp_seed();
    give_leases(&engine, &text);
    engine
        .host()
        .state()
        .leases
        .remove(&(format!("{LAB}.instance2"), "eth0".into()));
    let topology = ovslab_topology::parse("dhcp", &text).unwrap();
    let outcome = engine.up(topology, &text).await.unwrap();
    assert_eq!(
        outcome.warnings,
        ["instance instance2 holds no DHCP lease after 5 s"],
        "{:#?}",
        outcome.changes
    );
    // `status` tells it too, and the lab is not healthy for it.
    let leases = |status: &ovslab_api::LabStatus| {
        status
            .instances
            .iter()
            .map(|i| (i.name.clone(), i.dhcp_lease))
            .collect::<Vec<_>>()
    };
    let status = engine.status(LAB).await.unwrap();
    assert_eq!(
        leases(&status),
        [
            ("instance1".to_string(), Some(true)),
            ("instance2".to_string(), Some(false)),
            ("instance3".to_string(), Some(true)),
            ("instance4".to_string(), Some(true)),
        ]
    );
    // Its client gets it at last: the next converge (an audit) says so.
    {
        let mut state = engine.host().state();
        let ns = state
            .namespaces
            .get_mut(&format!("{LAB}.instance2"))
            .unwrap();
        let eth0 = ns.links.links.iter_mut().find(|l| l.name == "eth0");
        eth0.unwrap().addresses = vec!["192.168.2.11/24".parse().unwrap()];
    }
    engine.audit().await;
    let status = engine.status(LAB).await.unwrap();
    assert!(
        leases(&status)
            .iter()
            .all(|(_, lease)| *lease == Some(true)),
        "{:?}",
        leases(&status)
    );
}

#[tokio::test]
async fn an_instance_off_dhcp_has_no_lease_to_show() {
    let root = Root::new("dhcp-static");
    let engine = root.engine();
    let text = ovslab_topology::SEED_YAML;
    let topology = ovslab_topology::parse("dhcp", text).unwrap();
    engine.up(topology, text).await.unwrap();
    let status = engine.status(LAB).await.unwrap();
    assert!(status.instances.iter().all(|i| i.dhcp_lease.is_none()));
}

#[tokio::test]
async fn a_changed_reservation_reloads_dnsmasq_and_restarts_only_that_client() {
    let root = Root::new("dhcp-edit");
    let engine = root.engine();
    let text = dhcp_seed();
    give_leases(&engine, &text);
    up_text(&engine, &text).await.unwrap();
    let edited = text.replace("address: 192.168.1.11", "address: 192.168.1.21");
    give_leases(&engine, &edited);
    engine.host().take_calls();
    let changes = up_text(&engine, &edited).await.unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c == "dnsmasq of net1: wrote host, addn_hosts, reloaded (SIGHUP)"),
        "{changes:#?}"
    );
    let starts: Vec<String> = engine
        .host()
        .take_calls()
        .into_iter()
        .filter(|c| c.step == Step::StartAgent)
        .map(|c| c.target)
        .collect();
    assert_eq!(starts, ["udhcpc of instance1"]);
    let state = engine.host().state();
    let eth0 = state.namespaces[&format!("{LAB}.instance1")]
        .links
        .link("eth0")
        .unwrap()
        .addresses
        .clone();
    assert_eq!(eth0, ["192.168.1.21/24".parse::<ipnet::Ipv4Net>().unwrap()]);
}

#[tokio::test]
async fn a_killed_dnsmasq_is_started_again_and_dhcp_goes_with_its_network() {
    let root = Root::new("dhcp-heal");
    let engine = root.engine();
    let text = dhcp_seed();
    give_leases(&engine, &text);
    up_text(&engine, &text).await.unwrap();
    let dir = first_agent_dir(&engine, "qdhcp-");
    engine.host().kill_agent_behind(&dir);
    let changes = up_text(&engine, &text).await.unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c.starts_with("start dnsmasq") && c.ends_with("again (it had died)")),
        "{changes:#?}"
    );
    // net2 without DHCP: its server and its instance's client stop.
    let net2_static = text.replacen(
        "    gateway: 192.168.2.1\n",
        "    gateway: 192.168.2.1\n    dhcp: false\n",
        1,
    );
    up_text(&engine, &net2_static).await.unwrap();
    assert_eq!(agent_dirs(&engine, "qdhcp-").len(), 1);
    assert_eq!(
        agent_dirs(&engine, "udhcpc."),
        ["udhcpc.instance1", "udhcpc.instance3", "udhcpc.instance4"]
    );
    engine.down(LAB).await.unwrap();
    assert!(engine.host().is_empty(), "{}", summary(engine.host()));
}

/// One agent that cannot start (here net1's dnsmasq) fails the converge,
/// but every other agent is still set up: once, the first failure ended
/// the phase, and keepalived's whole phase after it.
#[tokio::test]
async fn an_agent_that_cannot_start_holds_back_no_other() {
    let root = Root::new("dhcp-apart");
    let engine = root.engine();
    let text = dhcp_seed();
    give_leases(&engine, &text);
    up_text(&engine, &text).await.unwrap();
    let dirs: Vec<std::path::PathBuf> = engine.host().state().agents.keys().cloned().collect();
    for dir in &dirs {
        engine.host().kill_agent_behind(dir);
    }
    engine.host().fail_on(Step::StartAgent, "dnsmasq of net1");
    let err = up_text(&engine, &text).await.unwrap_err();
    assert!(format!("{err:?}").contains("dnsmasq of net1"), "{err:?}");
    let state = engine.host().state();
    let running: Vec<String> = state
        .agents
        .iter()
        .filter(|(_, a)| a.running)
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    // net2's dnsmasq and the four clients run; net1's dnsmasq alone not.
    assert_eq!(running.len(), dirs.len() - 1, "{running:?}");
    assert_eq!(
        running.iter().filter(|d| d.starts_with("udhcpc.")).count(),
        4
    );
}

/// An agent killed is started again at once; killed again soon after
/// that restart it waits RESTART_AFTER (from the restart) before the next
/// one: a crash loop costs a start a while, not one per audit.
#[tokio::test]
async fn an_agent_that_dies_again_soon_after_its_restart_waits_before_the_next() {
    let root = Root::new("dhcp-backoff");
    let engine = root.engine();
    let text = dhcp_seed();
    give_leases(&engine, &text);
    up_text(&engine, &text).await.unwrap();
    let dir = first_agent_dir(&engine, "qdhcp-");
    let starts = |engine: &Engine<FakeHost>| engine.host().state().agents[&dir].starts;
    engine.host().kill_agent_behind(&dir);
    let changes = up_text(&engine, &text).await.unwrap();
    assert!(
        changes.iter().any(|c| c.ends_with("again (it had died)")),
        "{changes:#?}"
    );
    assert_eq!(starts(&engine), 2);

    engine.host().kill_agent_behind(&dir);
    let err = up_text(&engine, &text).await.unwrap_err().to_string();
    assert!(
        err.contains("started again less than 10 s ago, and not running")
            && err.contains("next start in"),
        "{err}"
    );
    assert_eq!(starts(&engine), 2, "started again at once");

    // RESTART_AFTER later, it is.
    engine
        .host()
        .state()
        .agents
        .get_mut(&dir)
        .unwrap()
        .started_at = Some(std::time::Instant::now() - ovslab_reconciler::agents::RESTART_AFTER);
    let changes = up_text(&engine, &text).await.unwrap();
    assert!(
        changes.iter().any(|c| c.ends_with("again (it had died)")),
        "{changes:#?}"
    );
    assert_eq!(starts(&engine), 3);
}

/// A running client without its lease is started again once in
/// LEASE_RETRY, and a converge that started nothing says so at once
/// instead of holding the lab for the lease wait: each restart woke
/// another audit, which restarted it again and waited 5 s, for ever.
#[tokio::test]
async fn a_client_without_its_lease_is_started_again_once_in_a_while() {
    let root = Root::new("dhcp-storm");
    let engine = root.engine();
    let text = dhcp_seed();
    give_leases(&engine, &text);
    up_text(&engine, &text).await.unwrap();
    let key = (format!("{LAB}.instance2"), "eth0".to_string());
    engine.host().state().leases.remove(&key);
    {
        let mut state = engine.host().state();
        let eth0 = state
            .namespaces
            .get_mut(&key.0)
            .unwrap()
            .links
            .links
            .iter_mut()
            .find(|l| l.name == "eth0")
            .unwrap();
        eth0.addresses.clear();
    }
    let restarts = |engine: &Engine<FakeHost>| {
        engine
            .host()
            .take_calls()
            .into_iter()
            .filter(|c| c.step == Step::StartAgent && c.target == "udhcpc of instance2")
            .count()
    };
    engine.host().take_calls();
    let changes = up_text(&engine, &text).await.unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c.starts_with("restart udhcpc of instance2 (it held no lease")),
        "{changes:#?}"
    );
    // Its server forgets whatever it declined (a neighbour can decline an
    // address for another instance).
    assert!(
        changes
            .iter()
            .any(|c| c == "dnsmasq of net2: reloaded (SIGHUP) for instance2, which held no lease"),
        "{changes:#?}"
    );
    assert_eq!(restarts(&engine), 1);

    let started = std::time::Instant::now();
    let topology = ovslab_topology::parse("dhcp", &text).unwrap();
    let outcome = engine.up(topology, &text).await.unwrap();
    assert!(outcome.changes.is_empty(), "{:#?}", outcome.changes);
    assert_eq!(restarts(&engine), 0, "restarted again within LEASE_RETRY");
    assert_eq!(
        outcome.warnings,
        ["instance instance2 holds no DHCP lease after 5 s"]
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "waited for a lease nothing was done to bring"
    );
}

/// An audit of the part notices marked (issue #18) reads and repairs that
/// part only: compute2's broken flows are put back, and nothing of
/// compute1 is even read, so its deleted instance waits for the full
/// audit, which repairs it.
#[tokio::test]
async fn an_audit_of_one_node_reads_and_repairs_that_node_only() {
    let reference = converged().await;
    let root = Root::new("part");
    let engine = root.engine();
    up(&engine).await.unwrap();
    engine
        .host()
        .delete_flows_behind(&node("compute2"), "br-int");
    engine
        .host()
        .delete_namespace_behind(&naming::namespace(LAB, "instance1"));
    engine.host().take_calls();
    let dirty = ovslab_reconciler::watch::Dirty {
        nodes: ["compute2".to_string()].into(),
        ..Default::default()
    };
    let (repaired, busy) = engine.audit_dirty([(LAB.to_string(), dirty)].into()).await;
    assert_eq!(repaired, vec![LAB.to_string()]);
    assert!(!busy);
    let hosts = ovslab_topology::plan::namespace_hosts(&ovslab_topology::seed());
    let on_compute1: Vec<&String> = hosts
        .iter()
        .filter(|(_, node)| *node == "compute1")
        .map(|(ns, _)| ns)
        .collect();
    assert!(on_compute1.len() >= 3, "{on_compute1:?}");
    for call in engine.host().take_calls() {
        assert!(
            on_compute1
                .iter()
                .all(|ns| !call.target.contains(ns.as_str())),
            "an audit of compute2 touched compute1: {call:?}"
        );
    }
    let after = summary(engine.host());
    assert_ne!(after, reference, "instance1 is still missing");
    assert!(
        after.contains(&node("compute2")),
        "compute2 is there: {after}"
    );
    assert_eq!(engine.audit().await, vec![LAB.to_string()]);
    assert_eq!(summary(engine.host()), reference);
}

/// A node's namespace deleted while its Open vSwitch keeps it alive: the
/// audit of that node makes it again, and with it the links whose other
/// ends outlived it, in the physical network's namespace (which no node
/// hosts) and in the instances' (with their routes), in one pass.
#[tokio::test]
async fn an_audit_of_a_node_whose_namespace_outlived_its_name_repairs_it_in_one_pass() {
    let reference = converged().await;
    let root = Root::new("held");
    let engine = root.engine();
    up(&engine).await.unwrap();
    engine
        .host()
        .delete_namespace_held_behind(&node("compute1"));
    assert_ne!(summary(engine.host()), reference, "nothing was broken");
    let dirty = ovslab_reconciler::watch::Dirty {
        nodes: ["compute1".to_string()].into(),
        ..Default::default()
    };
    let (repaired, busy) = engine.audit_dirty([(LAB.to_string(), dirty)].into()).await;
    assert_eq!(repaired, vec![LAB.to_string()]);
    assert!(!busy);
    assert_eq!(summary(engine.host()), reference);
}

/// The seed lab up, its saved topology cut short, and a daemon started
/// again on what the first left.
async fn restarted_with_a_cut_topology(root: &Root) -> Engine<FakeHost> {
    let first = root.engine();
    up(&first).await.unwrap();
    std::fs::write(
        root.0.join(LAB).join("topology.yaml"),
        "lab: seed\nnodes: [",
    )
    .unwrap();
    let left = std::mem::take(&mut *first.host().state());
    drop(first);
    let host = FakeHost::default();
    *host.state() = left;
    root.engine_on(host)
}

/// A lab whose saved topology no longer reads is known all the same, by
/// its manifest, and says why in `status`; audits leave it alone (an empty
/// plan would remove it). An `up` of that name takes its manifest over, so
/// that its namespaces are still its own, instead of writing a new one
/// over it (which made them all foreign: the `up` was refused, and the
/// lab's processes and namespaces were left for good).
#[tokio::test]
async fn an_up_takes_over_a_lab_whose_saved_topology_does_not_read() {
    let reference = converged().await;
    let root = Root::new("unadoptable");
    let second = restarted_with_a_cut_topology(&root).await;
    assert_eq!(second.labs().await, [LAB]);
    let status = second.status(LAB).await.unwrap();
    assert!(!status.healthy);
    let error = status.audit_error.unwrap_or_default();
    assert!(
        error.contains("its saved topology cannot be read") && error.contains("ovslab down seed"),
        "{error}"
    );
    assert!(second.audit().await.is_empty());
    assert_eq!(summary(second.host()), reference, "an audit changed it");
    up(&second).await.unwrap();
    assert_eq!(summary(second.host()), reference);
    assert_eq!(second.status(LAB).await.unwrap().audit_error, None);
    second.down(LAB).await.unwrap();
    assert!(second.host().is_empty(), "{}", summary(second.host()));
}

/// ...and `down` removes it: before, no command reached it (`status`
/// said "no labs", `down` "not known"), and it ran for good.
#[tokio::test]
async fn a_lab_whose_saved_topology_does_not_read_can_be_taken_down() {
    let root = Root::new("unreadable-down");
    let second = restarted_with_a_cut_topology(&root).await;
    assert!(!second.host().is_empty());
    second.down(LAB).await.unwrap();
    assert!(second.host().is_empty(), "{}", summary(second.host()));
    assert!(second.labs().await.is_empty());
    assert!(!root.0.join(LAB).exists());
}

/// A veth end in a lab's namespace that the plan does not know goes, but
/// not one whose other end is in the host's namespace (someone wired the
/// lab to the host): deleting an end deletes the other with it.
#[tokio::test]
async fn a_veth_wired_to_the_host_is_left_alone_and_any_other_stray_one_goes() {
    let root = Root::new("host-veth");
    let engine = root.engine();
    up(&engine).await.unwrap();
    let network = node("network");
    engine
        .host()
        .add_veth_to_elsewhere_behind(&network, "to-host", true);
    engine
        .host()
        .add_veth_to_elsewhere_behind(&network, "stray", false);
    engine.audit().await;
    let links: Vec<String> = engine.host().state().namespaces[&network]
        .links
        .links
        .iter()
        .map(|l| l.name.clone())
        .collect();
    assert!(links.contains(&"to-host".to_string()), "{links:?}");
    assert!(!links.contains(&"stray".to_string()), "{links:?}");
}

#[tokio::test]
async fn each_audit_is_announced_with_its_repairs() {
    let root = Root::new("events");
    let engine = root.engine();
    let mut events = engine.subscribe();
    up(&engine).await.unwrap();
    assert!(events.try_recv().is_err(), "an up is no audit");
    engine.audit().await;
    let quiet = events.try_recv().unwrap();
    assert_eq!((quiet.lab.as_str(), quiet.audit), (LAB, 1));
    assert!(
        quiet.repairs.is_empty() && quiet.error.is_none(),
        "{quiet:?}"
    );
    engine.host().delete_namespace_behind(&node("instance1"));
    engine.audit().await;
    let repaired = events.try_recv().unwrap();
    assert_eq!(repaired.audit, 2);
    assert!(
        repaired
            .repairs
            .iter()
            .any(|r| r.contains(&format!("create namespace {}", node("instance1")))),
        "{repaired:?}"
    );
    assert!(events.try_recv().is_err(), "one event per audit");
}

/// The link reads the host was asked for since the last call.
fn link_reads(host: &FakeHost) -> Vec<ovslab_reconciler::testing::Call> {
    host.take_calls()
        .into_iter()
        .filter(|c| c.step == Step::ReadLinks)
        .collect()
}

/// A round of the full audit that finds the lab busy with an `up` leaves
/// the lab to it (issue #18), and so does the next round, `every` after
/// it: the `up` converged the whole lab, and a large lab must not be read
/// again, whole, right after.
#[tokio::test]
async fn a_full_audit_that_finds_an_up_at_work_leaves_the_lab_to_it() {
    let every = Duration::from_millis(400);
    let root = Root::new("round-up");
    let engine = std::sync::Arc::new(root.engine());
    up(&engine).await.unwrap();
    let held = engine.host().hold_link_reads().await;
    let upping = tokio::spawn({
        let engine = engine.clone();
        async move { up(&engine).await }
    });
    // The up takes the lab and waits at its first link read; the audits'
    // first round, at once, finds the lab busy.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let audits = engine.spawn_audits(every, || {});
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(held);
    upping.await.unwrap().unwrap();
    engine.host().take_calls();
    // The next round comes within this, less than `every` after the up.
    tokio::time::sleep(every - Duration::from_millis(50)).await;
    let reads = link_reads(engine.host());
    assert!(reads.is_empty(), "read again after the up: {reads:?}");
    audits.abort();
}

/// A round that finds the lab busy with something else (a partial audit
/// here; a check or a status query) just after an `up` leaves it too: the
/// `up` converged it whole less than the audit interval ago.
#[tokio::test]
async fn a_full_audit_round_that_finds_the_lab_busy_just_after_an_up_leaves_it() {
    let every = Duration::from_millis(400);
    let root = Root::new("round-busy");
    let engine = std::sync::Arc::new(root.engine());
    up(&engine).await.unwrap();
    let held = engine.host().hold_link_reads().await;
    let part = ovslab_reconciler::watch::Dirty {
        nodes: ["compute1".to_string()].into(),
        ..Default::default()
    };
    let auditing = tokio::spawn({
        let engine = engine.clone();
        async move { engine.audit_dirty([(LAB.to_string(), part)].into()).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    // The first round, at once, finds the lab busy with that audit.
    let audits = engine.spawn_audits(every, || {});
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(held);
    auditing.await.unwrap();
    engine.host().take_calls();
    tokio::time::sleep(every - Duration::from_millis(100)).await;
    let reads = link_reads(engine.host());
    assert!(
        reads.is_empty(),
        "read whole again right after the up: {reads:?}"
    );
    audits.abort();
}

/// A round that found the lab busy is done by any converge of the whole
/// lab that ends after it, and otherwise by a whole audit once the lab is
/// free.
#[tokio::test]
async fn a_full_audit_round_is_done_once_by_whatever_converges_the_whole_lab_next() {
    let reference = converged().await;
    let root = Root::new("round");
    let engine = root.engine();
    up(&engine).await.unwrap();
    let round = |at| ovslab_reconciler::watch::Dirty {
        round: Some(at),
        ..Default::default()
    };
    let found_busy = std::time::Instant::now();
    up(&engine).await.unwrap();
    engine
        .host()
        .delete_flows_behind(&node("compute2"), "br-int");
    engine.host().take_calls();
    let (repaired, busy) = engine
        .audit_dirty([(LAB.to_string(), round(found_busy))].into())
        .await;
    assert!(repaired.is_empty() && !busy);
    assert_eq!(engine.host().take_calls(), [], "the up did the round");
    let found_busy = std::time::Instant::now();
    let (repaired, busy) = engine
        .audit_dirty([(LAB.to_string(), round(found_busy))].into())
        .await;
    assert_eq!((repaired, busy), (vec![LAB.to_string()], false));
    assert_eq!(summary(engine.host()), reference);
}

// --- Nodes failed on purpose ---------------------------------------------------

/// A daemon stopped half-way through `node fail` recorded the node failed
/// but left its Open vSwitch running: `node fail` again, and any audit,
/// stop it. Before, `node fail` said "already failed" and did nothing, and
/// audits left a failed node alone, running.
#[tokio::test]
async fn a_failed_node_found_running_its_open_vswitch_is_stopped() {
    let root = Root::new("fail-half");
    let engine = root.engine();
    up(&engine).await.unwrap();
    let report = engine.set_node_failed(LAB, "compute2", true).await.unwrap();
    assert!(report.changes.contains(&"failed node compute2".to_string()));
    let running = |engine: &Engine<FakeHost>| {
        let state = engine.host().state();
        let n = &state.nodes[&node("compute2")];
        (n.ovsdb_server, n.ovs_vswitchd)
    };
    assert_eq!(running(&engine), (false, false));
    let run_again = |engine: &Engine<FakeHost>| {
        let mut state = engine.host().state();
        let n = state.nodes.get_mut(&node("compute2")).unwrap();
        n.ovsdb_server = true;
        n.ovs_vswitchd = true;
    };
    run_again(&engine);
    let again = engine.set_node_failed(LAB, "compute2", true).await.unwrap();
    assert!(
        again
            .changes
            .contains(&"stopped ovs-vswitchd of compute2".to_string()),
        "{:?}",
        again.changes
    );
    assert_eq!(running(&engine), (false, false));
    run_again(&engine);
    engine.audit().await;
    assert_eq!(running(&engine), (false, false));
    // Nothing left to do: failing it once more changes nothing.
    let third = engine.set_node_failed(LAB, "compute2", true).await.unwrap();
    assert!(third.changes.is_empty(), "{:?}", third.changes);
    // The reverse: recovered, but what it runs is not running (a
    // `node recover` cut short, audits off): `node recover` again starts it.
    engine
        .set_node_failed(LAB, "compute2", false)
        .await
        .unwrap();
    assert_eq!(running(&engine), (true, true));
    engine.host().kill_behind(
        &node("compute2"),
        ovslab_reconciler::ovs_process::OvsDaemon::OvsVswitchd,
    );
    let recover = engine
        .set_node_failed(LAB, "compute2", false)
        .await
        .unwrap();
    assert!(
        recover.changes.iter().any(|c| c.contains("ovs-vswitchd")),
        "{:?}",
        recover.changes
    );
    assert_eq!(running(&engine), (true, true));
}

/// A lab found at start keeps the name of the file it was brought up
/// from (`status` said `from <run dir>/<lab>/topology.yaml` after a
/// restart).
#[tokio::test]
async fn a_lab_found_at_start_names_the_file_it_came_from() {
    let root = Root::new("source");
    let first = root.engine();
    let topology = ovslab_topology::parse("labs/seed-copy.yaml", ovslab_topology::SEED_YAML);
    first
        .up(topology.unwrap(), ovslab_topology::SEED_YAML)
        .await
        .unwrap();
    let left = std::mem::take(&mut *first.host().state());
    drop(first);
    let host = FakeHost::default();
    *host.state() = left;
    let second = root.engine_on(host);
    assert_eq!(
        second.status(LAB).await.unwrap().source,
        "labs/seed-copy.yaml"
    );
}
