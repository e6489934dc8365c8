//! A node's OVSDB: read the bridges, ports and interfaces of the lab, and
//! apply a diff as one transaction (RFC 7047 §5.2), then wait until
//! `ovs-vswitchd` has acted on it (`cur_cfg` reaching `next_cfg`, as
//! `ovs-vsctl` waits).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ovslab_ovsdb::Client;
use ovslab_topology::Topology;
use ovslab_topology::naming;
use ovslab_topology::plan::{OvsBridge, OvsPort};
use serde_json::{Value, json};

use crate::ReconcileError;
use crate::actual::{ActualBridge, ActualPort, ActualSwitch, RootIdentity};
use crate::diff::{DATAPATH_TYPE, FAIL_MODE, LAB_MARK, OvsChange, PROTOCOLS, ROOT_OTHER_CONFIG};
use crate::ovs_process::NodeOvs;

const DB: &str = "Open_vSwitch";

/// An OVSDB connection to one node.
#[derive(Debug, Clone)]
pub struct SwitchClient {
    pub node: String,
    client: Client,
    /// The node's processes, to tell a slow vswitchd from a hung one.
    ovs: NodeOvs,
}

impl SwitchClient {
    fn err(&self, source: ovslab_ovsdb::OvsdbError) -> ReconcileError {
        ReconcileError::ovsdb(&self.node, source)
    }

    async fn transact(&self, ops: Vec<Value>) -> Result<Vec<Value>, ReconcileError> {
        // How long transactions take, against their deadline.
        let (count, started) = (ops.len(), std::time::Instant::now());
        let result = self.client.transact(DB, ops).await.map_err(|e| self.err(e));
        tracing::debug!(
            node = self.node,
            ops = count,
            ms = started.elapsed().as_millis() as u64,
            "ovsdb transaction"
        );
        result
    }
}

/// Connects to a node's database; the connect and every request of the
/// client are bounded by [`ovslab_ovsdb::DEFAULT_DEADLINE`].
pub async fn connect(node: &NodeOvs) -> Result<SwitchClient, ReconcileError> {
    connect_with_deadline(node, ovslab_ovsdb::DEFAULT_DEADLINE).await
}

/// Like [`connect`], with another deadline (status asks with a short one).
pub async fn connect_with_deadline(
    node: &NodeOvs,
    deadline: Duration,
) -> Result<SwitchClient, ReconcileError> {
    let client = Client::connect_with_deadline(&node.db_socket(), deadline)
        .await
        .map_err(|source| ReconcileError::ovsdb(&node.node, source))?;
    Ok(SwitchClient {
        node: node.node.clone(),
        client,
        ovs: node.clone(),
    })
}

/// Whether the node's `ovsdb-server` answers an `echo` on this connection.
pub async fn echo(client: &SwitchClient) -> Result<(), ReconcileError> {
    client.client.echo().await.map_err(|e| client.err(e))
}

fn select(table: &str, columns: &[&str]) -> Value {
    json!({"op": "select", "table": table, "where": [], "columns": columns})
}

fn rows(result: &Value) -> &[Value] {
    result
        .get("rows")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn uuid_of(v: &Value) -> Option<String> {
    match v {
        Value::Array(a) if a.len() == 2 && a[0] == "uuid" => a[1].as_str().map(str::to_string),
        _ => None,
    }
}

/// An OVSDB set (or a single atom standing for a one-element set), RFC 7047 §5.1.
fn set_members(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) if a.len() == 2 && a[0] == "set" => a[1]
            .as_array()
            .map(|s| s.iter().collect())
            .unwrap_or_default(),
        other => vec![other],
    }
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Value::Array(a) = v
        && a.len() == 2
        && a[0] == "map"
        && let Some(pairs) = a[1].as_array()
    {
        for pair in pairs {
            if let (Some(k), Some(v)) = (
                pair.get(0).and_then(Value::as_str),
                pair.get(1).and_then(Value::as_str),
            ) {
                out.insert(k.to_string(), v.to_string());
            }
        }
    }
    out
}

fn map_value(map: &BTreeMap<String, String>) -> Value {
    json!([
        "map",
        map.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>()
    ])
}

fn optional_string(v: &Value) -> Option<String> {
    set_members(v)
        .first()
        .and_then(|x| x.as_str())
        .map(str::to_string)
}

/// Reads the switch: the root row, every bridge with its ports and their
/// (single) interfaces.
pub async fn read(client: &SwitchClient) -> Result<ActualSwitch, ReconcileError> {
    let results = client
        .transact(vec![
            select(
                DB,
                &["_uuid", "other_config", "external_ids", "ovs_version"],
            ),
            select(
                "Bridge",
                &[
                    "_uuid",
                    "name",
                    "ports",
                    "datapath_type",
                    "fail_mode",
                    "protocols",
                    "external_ids",
                ],
            ),
            select(
                "Port",
                &["_uuid", "name", "interfaces", "tag", "other_config"],
            ),
            select(
                "Interface",
                &["_uuid", "name", "type", "options", "external_ids", "ofport"],
            ),
        ])
        .await?;
    let [root, bridges, ports, interfaces] = results.as_slice() else {
        return Err(ReconcileError::UnexpectedReply {
            node: client.node.clone(),
            what: format!("expected 4 results from the read, got {}", results.len()),
        });
    };
    let interfaces: BTreeMap<String, &Value> = rows(interfaces)
        .iter()
        .filter_map(|r| Some((uuid_of(&r["_uuid"])?, r)))
        .collect();
    let ports: BTreeMap<String, ActualPort> = rows(ports)
        .iter()
        .filter_map(|r| {
            let uuid = uuid_of(&r["_uuid"])?;
            let iface_uuid = set_members(&r["interfaces"])
                .first()
                .and_then(|v| uuid_of(v))?;
            let iface = interfaces.get(&iface_uuid)?;
            let options = string_map(&iface["options"]);
            Some((
                uuid.clone(),
                ActualPort {
                    uuid,
                    interface_uuid: iface_uuid,
                    name: r["name"].as_str()?.to_string(),
                    tag: set_members(&r["tag"])
                        .first()
                        .and_then(|v| v.as_u64())
                        .map(|t| t as u16),
                    kind: iface["type"].as_str().unwrap_or_default().to_string(),
                    options,
                    interface_external_ids: string_map(&iface["external_ids"]),
                    port_other_config: string_map(&r["other_config"]),
                    ofport: set_members(&iface["ofport"])
                        .first()
                        .and_then(|v| v.as_i64()),
                },
            ))
        })
        .collect();
    let bridges = rows(bridges)
        .iter()
        .filter_map(|r| {
            Some(ActualBridge {
                uuid: uuid_of(&r["_uuid"])?,
                name: r["name"].as_str()?.to_string(),
                datapath_type: r["datapath_type"].as_str().unwrap_or_default().to_string(),
                fail_mode: optional_string(&r["fail_mode"]),
                protocols: set_members(&r["protocols"])
                    .into_iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                external_ids: string_map(&r["external_ids"]),
                ports: set_members(&r["ports"])
                    .into_iter()
                    .filter_map(|v| ports.get(&uuid_of(v)?).cloned())
                    .collect(),
            })
        })
        .collect();
    Ok(ActualSwitch {
        root_uuid: rows(root).first().and_then(|r| uuid_of(&r["_uuid"])),
        root_other_config: rows(root)
            .first()
            .map(|r| string_map(&r["other_config"]))
            .unwrap_or_default(),
        root_identity: rows(root)
            .first()
            .map(|r| RootIdentity {
                ovs_version: optional_string(&r["ovs_version"]),
                system_id: string_map(&r["external_ids"]).remove("system-id"),
            })
            .unwrap_or_default(),
        bridges,
    })
}

/// Writes `ovs_version` and `external_ids:system-id` into the root row
/// (which [`ensure_root_config`] made), leaving its other keys alone;
/// vswitchd needs no restart for them.
pub async fn ensure_root_identity(
    client: &SwitchClient,
    actual: &mut ActualSwitch,
    wanted: &RootIdentity,
) -> Result<(), ReconcileError> {
    let Some(uuid) = &actual.root_uuid else {
        return Ok(());
    };
    let root = json!([["_uuid", "==", ["uuid", uuid]]]);
    let mut ops = Vec::new();
    if let Some(version) = &wanted.ovs_version {
        ops.push(json!({"op": "update", "table": DB, "where": root,
            "row": {"ovs_version": version}}));
    }
    if let Some(id) = &wanted.system_id {
        ops.push(json!({"op": "mutate", "table": DB, "where": root,
            "mutations": [["external_ids", "delete", ["set", ["system-id"]]]]}));
        ops.push(json!({"op": "mutate", "table": DB, "where": root,
            "mutations": [["external_ids", "insert", ["map", [["system-id", id]]]]]}));
    }
    client.transact(ops).await?;
    actual.root_identity = wanted.clone();
    Ok(())
}

/// The local VLAN ids the running switch uses, from the agent-style
/// `other_config` of br-int's ports (`net_uuid`, `tag`).
pub fn local_vlans(topo: &Topology, actual: &ActualSwitch) -> BTreeMap<String, u16> {
    let ports = actual
        .bridge(naming::BR_INT)
        .map(|b| b.ports.as_slice())
        .unwrap_or_default();
    local_vlans_of(topo, ports.iter().map(|p| &p.port_other_config))
}

/// [`local_vlans`] read from the switch, reading only br-int's ports'
/// `other_config`: what `status` shows. A whole [`read`] of every node at
/// once made the status of a 10,000-instance lab cost the daemon about
/// 80 MB.
pub async fn read_local_vlans(
    client: &SwitchClient,
    topo: &Topology,
) -> Result<BTreeMap<String, u16>, ReconcileError> {
    let results = client
        .transact(vec![
            json!({"op": "select", "table": "Bridge",
                "where": [["name", "==", naming::BR_INT]], "columns": ["ports"]}),
            select("Port", &["_uuid", "other_config"]),
        ])
        .await?;
    let [bridge, ports] = results.as_slice() else {
        return Err(ReconcileError::UnexpectedReply {
            node: client.node.clone(),
            what: format!("expected 2 results from the read, got {}", results.len()),
        });
    };
    let on_br_int: BTreeSet<String> = rows(bridge)
        .iter()
        .flat_map(|b| set_members(&b["ports"]))
        .filter_map(uuid_of)
        .collect();
    let configs: Vec<BTreeMap<String, String>> = rows(ports)
        .iter()
        .filter(|p| uuid_of(&p["_uuid"]).is_some_and(|u| on_br_int.contains(&u)))
        .map(|p| string_map(&p["other_config"]))
        .collect();
    Ok(local_vlans_of(topo, configs.iter()))
}

fn local_vlans_of<'a>(
    topo: &Topology,
    ports: impl Iterator<Item = &'a BTreeMap<String, String>>,
) -> BTreeMap<String, u16> {
    let by_uuid: BTreeMap<String, &str> = topo
        .networks
        .iter()
        .map(|n| {
            (
                naming::network_uuid(&topo.lab, &n.name).to_string(),
                n.name.as_str(),
            )
        })
        .collect();
    let mut out = BTreeMap::new();
    for other_config in ports {
        let net = other_config.get("net_uuid").and_then(|u| by_uuid.get(u));
        let tag = other_config.get("tag").and_then(|t| t.parse().ok());
        if let (Some(net), Some(tag)) = (net, tag) {
            out.insert(net.to_string(), tag);
        }
    }
    out
}

/// OpenFlow port numbers of a bridge's ports, by name.
pub fn ofports(actual: &ActualSwitch, bridge: &str) -> BTreeMap<String, u32> {
    actual
        .bridge(bridge)
        .map(|b| {
            b.ports
                .iter()
                .filter_map(|p| Some((p.name.clone(), u32::try_from(p.ofport?).ok()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// A `uuid-name` (RFC 7047 §5.2.1: letters, digits and `_` only).
fn uuid_name(prefix: &str, n: usize) -> String {
    format!("{prefix}{n}")
}

struct TxBuilder {
    ops: Vec<Value>,
    next: usize,
}

impl TxBuilder {
    /// Inserts an Interface and its Port; returns the Port's uuid-name.
    fn insert_port(&mut self, port: &OvsPort) -> String {
        self.next += 1;
        let iface = uuid_name("iface", self.next);
        let port_name = uuid_name("port", self.next);
        let mut iface_row = json!({
            "name": port.name,
            "external_ids": map_value(&port.interface_external_ids),
        });
        let kind = port.interface_type();
        if !kind.is_empty() {
            iface_row["type"] = json!(kind);
            iface_row["options"] = map_value(&port.interface_options());
        }
        self.ops.push(
            json!({"op": "insert", "table": "Interface", "row": iface_row, "uuid-name": iface}),
        );
        let mut port_row = json!({
            "name": port.name,
            "interfaces": ["named-uuid", iface],
            "other_config": map_value(&port.port_other_config),
        });
        if let Some(tag) = port.tag {
            port_row["tag"] = json!(tag);
        }
        self.ops.push(
            json!({"op": "insert", "table": "Port", "row": port_row, "uuid-name": port_name}),
        );
        port_name
    }

    fn insert_internal_port(&mut self, name: &str) -> String {
        self.next += 1;
        let iface = uuid_name("iface", self.next);
        let port_name = uuid_name("port", self.next);
        self.ops.push(json!({"op": "insert", "table": "Interface", "row": {"name": name, "type": "internal"}, "uuid-name": iface}));
        self.ops.push(json!({"op": "insert", "table": "Port", "row": {"name": name, "interfaces": ["named-uuid", iface]}, "uuid-name": port_name}));
        port_name
    }
}

fn bridge_settings(lab: &str, standalone: bool) -> Value {
    let fail_mode = if standalone {
        json!(["set", []])
    } else {
        json!(FAIL_MODE)
    };
    json!({
        "datapath_type": DATAPATH_TYPE,
        "fail_mode": fail_mode,
        "protocols": ["set", PROTOCOLS],
        "external_ids": ["map", [[LAB_MARK, lab]]],
    })
}

fn add_bridge(tx: &mut TxBuilder, lab: &str, bridge: &OvsBridge, root: &Value) {
    let mut ports = vec![json!(["named-uuid", tx.insert_internal_port(&bridge.name)])];
    for p in &bridge.ports {
        ports.push(json!(["named-uuid", tx.insert_port(p)]));
    }
    tx.next += 1;
    let br = uuid_name("bridge", tx.next);
    let mut row = bridge_settings(lab, bridge.standalone);
    row["name"] = json!(bridge.name);
    row["ports"] = json!(["set", ports]);
    tx.ops
        .push(json!({"op": "insert", "table": "Bridge", "row": row, "uuid-name": br}));
    tx.ops.push(json!({
        "op": "mutate", "table": DB, "where": [["_uuid", "==", root]],
        "mutations": [["bridges", "insert", ["set", [["named-uuid", br]]]]],
    }));
}

/// Applies a node's changes as one transaction and waits for vswitchd.
pub async fn apply(
    client: &SwitchClient,
    lab: &str,
    changes: &[OvsChange],
) -> Result<(), ReconcileError> {
    let cfg = commit(client, lab, changes).await?;
    wait_cur_cfg(client, cfg).await
}

/// Commits `changes` in one transaction, without waiting for vswitchd to
/// apply them; returns the `next_cfg` that [`wait`] waits for.
pub async fn commit(
    client: &SwitchClient,
    lab: &str,
    changes: &[OvsChange],
) -> Result<i64, ReconcileError> {
    let mut tx = TxBuilder {
        ops: Vec::new(),
        next: 0,
    };
    let current_root = read_root(client).await?;
    let root = match &current_root {
        Some(uuid) => json!(["uuid", uuid]),
        None => json!(["named-uuid", "root"]),
    };
    for change in changes {
        match change {
            OvsChange::EnsureRoot => {
                if current_root.is_none() {
                    tx.ops.push(json!({"op": "insert", "table": DB, "row": {}, "uuid-name": "root"}));
                }
            }
            OvsChange::AddBridge { bridge } => add_bridge(&mut tx, lab, bridge, &root),
            OvsChange::UpdateBridge {
                uuid, standalone, ..
            } => tx.ops.push(json!({
                "op": "update", "table": "Bridge", "where": [["_uuid", "==", ["uuid", uuid]]], "row": bridge_settings(lab, *standalone),
            })),
            OvsChange::DeleteBridge { uuid, .. } => tx.ops.push(json!({
                "op": "mutate", "table": DB, "where": [["_uuid", "==", root]],
                "mutations": [["bridges", "delete", ["set", [["uuid", uuid]]]]],
            })),
            OvsChange::AddPort { bridge_uuid, port, .. } => {
                let p = tx.insert_port(port);
                tx.ops.push(json!({
                    "op": "mutate", "table": "Bridge", "where": [["_uuid", "==", ["uuid", bridge_uuid]]],
                    "mutations": [["ports", "insert", ["set", [["named-uuid", p]]]]],
                }));
            }
            OvsChange::UpdatePort {
                port_uuid,
                interface_uuid,
                port,
            } => {
                let tag = match port.tag {
                    Some(t) => json!(t),
                    None => json!(["set", []]),
                };
                tx.ops.push(json!({
                    "op": "update", "table": "Port", "where": [["_uuid", "==", ["uuid", port_uuid]]],
                    "row": {"tag": tag, "other_config": map_value(&port.port_other_config)},
                }));
                let (kind, options) = (port.interface_type(), map_value(&port.interface_options()));
                tx.ops.push(json!({
                    "op": "update", "table": "Interface", "where": [["_uuid", "==", ["uuid", interface_uuid]]],
                    "row": {"type": kind, "options": options, "external_ids": map_value(&port.interface_external_ids)},
                }));
            }
            OvsChange::DeletePort { bridge_uuid, port_uuid, .. } => tx.ops.push(json!({
                "op": "mutate", "table": "Bridge", "where": [["_uuid", "==", ["uuid", bridge_uuid]]],
                "mutations": [["ports", "delete", ["set", [["uuid", port_uuid]]]]],
            })),
        }
    }
    // Ask vswitchd to report when it has applied this transaction.
    tx.ops.push(json!({
        "op": "mutate", "table": DB, "where": [["_uuid", "==", root]],
        "mutations": [["next_cfg", "+=", 1]],
    }));
    tx.ops.push(json!({"op": "select", "table": DB, "where": [["_uuid", "==", root]], "columns": ["next_cfg"]}));
    tx.ops
        .push(json!({"op": "comment", "comment": format!("ovslab: converge lab {lab}")}));
    let results = client.transact(tx.ops).await?;
    Ok(results
        .iter()
        .rev()
        .find_map(|r| rows(r).first().and_then(|row| row["next_cfg"].as_i64()))
        .unwrap_or(0))
}

/// Waits until vswitchd has applied configuration `cfg` (see [`commit`]).
pub async fn wait(client: &SwitchClient, cfg: i64) -> Result<(), ReconcileError> {
    wait_cur_cfg(client, cfg).await
}

/// The bridge a spare node's vswitchd makes its userspace datapath on
/// (see [`warm_datapath`]); no lab has a bridge of this name.
pub const WARMING_BRIDGE: &str = "br-spare";

/// Makes the node's vswitchd create its userspace datapath once, on a
/// bridge made and removed again, and waits for each: the datapath's first
/// creation in a process sleeps 100 ms (OVS estimates the TSC frequency,
/// once per process), later ones do not. The database is left with no
/// bridge, as a new node's is. For the spare nodes
/// ([`crate::spare`]); the root row must exist.
pub async fn warm_datapath(client: &SwitchClient) -> Result<(), ReconcileError> {
    let next_cfg = || {
        [
            json!({"op": "mutate", "table": DB, "where": [], "mutations": [["next_cfg", "+=", 1]]}),
            select(DB, &["next_cfg"]),
        ]
    };
    let cfg_of = |results: &[Value]| {
        results
            .iter()
            .rev()
            .find_map(|r| rows(r).first().and_then(|row| row["next_cfg"].as_i64()))
            .unwrap_or(0)
    };
    let mut ops = vec![
        json!({"op": "insert", "table": "Bridge", "uuid-name": "warming",
            "row": {"name": WARMING_BRIDGE, "datapath_type": DATAPATH_TYPE}}),
        json!({"op": "mutate", "table": DB, "where": [],
            "mutations": [["bridges", "insert", ["set", [["named-uuid", "warming"]]]]]}),
    ];
    ops.extend(next_cfg());
    let results = client.transact(ops).await?;
    let bridge = results
        .first()
        .and_then(|r| uuid_of(&r["uuid"]))
        .ok_or_else(|| ReconcileError::UnexpectedReply {
            node: client.node.clone(),
            what: "the warming bridge's insert named no row".into(),
        })?;
    wait_cur_cfg(client, cfg_of(&results)).await?;
    let mut ops = vec![json!({"op": "mutate", "table": DB, "where": [],
        "mutations": [["bridges", "delete", ["set", [["uuid", bridge]]]]]})];
    ops.extend(next_cfg());
    let results = client.transact(ops).await?;
    wait_cur_cfg(client, cfg_of(&results)).await
}

/// The datapath options of [`ROOT_OTHER_CONFIG`] the root row lacks (or
/// holds with another value), as `key=value`.
pub fn missing_root_config(actual: &ActualSwitch) -> Vec<String> {
    ROOT_OTHER_CONFIG
        .iter()
        .filter(|(k, v)| actual.root_other_config.get(*k).map(String::as_str) != Some(*v))
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

/// Writes [`ROOT_OTHER_CONFIG`] into the root row (creating the row if the
/// database has none), leaving its other keys alone; updates `actual`.
/// Must happen before `ovs-vswitchd` starts: it reads these options once.
pub async fn ensure_root_config(
    client: &SwitchClient,
    actual: &mut ActualSwitch,
) -> Result<(), ReconcileError> {
    let wanted: BTreeMap<String, String> = ROOT_OTHER_CONFIG
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // A map "insert" mutation leaves a key that exists alone: delete first.
    let ops = match &actual.root_uuid {
        None => {
            vec![json!({"op": "insert", "table": DB, "row": {"other_config": map_value(&wanted)}})]
        }
        Some(uuid) => {
            let root = json!([["_uuid", "==", ["uuid", uuid]]]);
            let keys: Vec<&String> = wanted.keys().collect();
            vec![
                json!({"op": "mutate", "table": DB, "where": root,
                    "mutations": [["other_config", "delete", ["set", keys]]]}),
                json!({"op": "mutate", "table": DB, "where": root,
                    "mutations": [["other_config", "insert", map_value(&wanted)]]}),
            ]
        }
    };
    let results = client.transact(ops).await?;
    // The row inserted is named by the insert's result, the row mutated
    // was there if the mutation counted it: a second read only otherwise.
    let inserted = results.first().and_then(|r| uuid_of(&r["uuid"]));
    let mutated = results.last().and_then(|r| r["count"].as_u64()) == Some(1);
    actual.root_uuid = match (&actual.root_uuid, inserted) {
        (None, Some(uuid)) => Some(uuid),
        (Some(uuid), _) if mutated => Some(uuid.clone()),
        _ => read_root(client).await?,
    };
    actual.root_other_config.extend(wanted);
    Ok(())
}

async fn read_root(client: &SwitchClient) -> Result<Option<String>, ReconcileError> {
    let results = client.transact(vec![select(DB, &["_uuid"])]).await?;
    Ok(results
        .first()
        .and_then(|r| rows(r).first())
        .and_then(|r| uuid_of(&r["_uuid"])))
}

/// Fails unless the node's `ovsdb-server` still answers on this connection.
/// vswitchd answers no OpenFlow request while its database is gone, so the
/// flows of a node whose database died during a converge wait for the
/// next one (which restarts it) rather than for an OpenFlow timeout.
pub async fn still_connected(client: &SwitchClient) -> Result<(), ReconcileError> {
    client.transact(vec![select(DB, &["_uuid"])]).await?;
    Ok(())
}

/// Waits until a (re)started vswitchd has applied the configuration the
/// database holds: its bridges, ports and `.mgmt` sockets then exist.
///
/// `next_cfg` is raised first, as `ovs-vsctl` does: a vswitchd that died
/// left `cur_cfg` equal to `next_cfg`, which would end the wait before the
/// new one has read anything (and the flows would find no `.mgmt` socket).
pub async fn wait_applied(client: &SwitchClient) -> Result<(), ReconcileError> {
    let results = client
        .transact(vec![
            json!({"op": "mutate", "table": DB, "where": [], "mutations": [["next_cfg", "+=", 1]]}),
            select(DB, &["next_cfg"]),
        ])
        .await?;
    let next_cfg = results
        .get(1)
        .and_then(|r| rows(r).first())
        .and_then(|r| r["next_cfg"].as_i64())
        .unwrap_or(0);
    wait_cur_cfg(client, next_cfg).await
}

/// How long vswitchd may take to apply a configuration. Generous: while
/// the kernel destroys a large lab's namespaces, a vswitchd just started
/// waits seconds for the locks every link operation needs.
const APPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one OVSDB `wait` for `cur_cfg` lasts (well inside the
/// client's deadline) before the wait looks at vswitchd's liveness.
const WAIT_STEP: Duration = Duration::from_millis(500);

/// How often a long wait for vswitchd asks whether it still answers.
const LIVENESS_EVERY: Duration = Duration::from_secs(1);

/// Waits until vswitchd's `cur_cfg` reaches `next_cfg`. A vswitchd that is
/// stopped (SIGSTOP) meanwhile ends the wait at once with
/// [`ReconcileError::NotAnswering`], one that died with
/// [`ReconcileError::VswitchdExited`], instead of after [`APPLY_TIMEOUT`].
async fn wait_cur_cfg(client: &SwitchClient, next_cfg: i64) -> Result<(), ReconcileError> {
    use crate::ovs_process::{Liveness, OvsDaemon, PROBE_DEADLINE, is_stopped};
    let deadline = tokio::time::Instant::now() + APPLY_TIMEOUT;
    let mut next_probe = tokio::time::Instant::now() + LIVENESS_EVERY;
    while tokio::time::Instant::now() < deadline {
        if tokio::time::Instant::now() >= next_probe {
            let program = OvsDaemon::OvsVswitchd;
            // Only a stopped one: a vswitchd just started, or applying a
            // large configuration on a loaded host, may be slow to answer,
            // and APPLY_TIMEOUT bounds the wait anyway.
            if let Liveness::NotAnswering(pid, what) =
                client.ovs.probe(program, PROBE_DEADLINE).await
                && is_stopped(pid)
            {
                return Err(ReconcileError::NotAnswering {
                    node: client.node.clone(),
                    program: program.program(),
                    request: format!("{what} (while applying configuration {next_cfg})"),
                    after: PROBE_DEADLINE,
                });
            }
            // Dead after it wrote its pidfile: it will not apply anything.
            if client.ovs.died(program) {
                return Err(ReconcileError::VswitchdExited {
                    node: client.node.clone(),
                    cfg: next_cfg,
                });
            }
            next_probe = tokio::time::Instant::now() + LIVENESS_EVERY;
        }
        // Asked to wait (RFC 7047 `wait`: until no root row has a lower
        // `cur_cfg`), ovsdb-server answers the moment vswitchd writes it;
        // reading it every few milliseconds instead cost each wait half a
        // pause on average, three waits on the path of an `up` from
        // nothing. A wait that ends unmet is asked again, after the
        // liveness checks above when they are due.
        let wait = json!({
            "op": "wait", "table": DB, "where": [["cur_cfg", "<", next_cfg]],
            "columns": ["cur_cfg"], "until": "==", "rows": [],
            "timeout": WAIT_STEP.as_millis() as u64,
        });
        match client.client.transact(DB, vec![wait]).await {
            Ok(_) => return Ok(()),
            Err(ovslab_ovsdb::OvsdbError::Transaction { error, .. }) if error == "timed out" => {}
            Err(e) => return Err(client.err(e)),
        }
    }
    Err(ReconcileError::NotApplied {
        node: client.node.clone(),
        cfg: next_cfg,
        after: APPLY_TIMEOUT,
    })
}
