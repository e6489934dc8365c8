//! A namespace's links, addresses, routes and sysctls: read through
//! netlink into [`ActualNamespace`], and [`LinkChange`]s applied back.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use ovslab_netlink::{Netlink, NetlinkError, netns};
use ovslab_topology::plan::{NamespaceSpec, RouteSpec};

use crate::ReconcileError;
use crate::actual::{ActualLink, ActualNamespace};
use crate::diff::LinkChange;

/// Netlink connections by namespace, made on first use and shared by the
/// reads and changes of one converge. At most [`Handles::KEPT`] stay open:
/// each connection holds buffers of its own, and a large lab has a
/// thousand namespaces; the oldest is closed (when nobody uses it) to make
/// room.
#[derive(Debug, Default)]
pub struct Handles {
    open: Mutex<(BTreeMap<String, Netlink>, VecDeque<String>)>,
}

impl Handles {
    pub const KEPT: usize = 64;

    pub async fn get(&self, namespace: &str) -> Result<Netlink, ReconcileError> {
        Ok(self.get_reading_sysctls(namespace, &[]).await?.0)
    }

    /// [`get`](Self::get), and sysctls `keys` read while connecting (`None`
    /// when the connection was already open: read them yourself).
    async fn get_reading_sysctls(
        &self,
        namespace: &str,
        keys: &[String],
    ) -> Result<(Netlink, Option<Vec<Option<String>>>), ReconcileError> {
        if let Some(nl) = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .get(namespace)
        {
            return Ok((nl.clone(), None));
        }
        let (nl, values) = Netlink::connect_reading_sysctls(namespace, keys).await?;
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (by_name, order) = &mut *open;
        if by_name.insert(namespace.to_string(), nl.clone()).is_none() {
            order.push_back(namespace.to_string());
        }
        while order.len() > Self::KEPT {
            if let Some(oldest) = order.pop_front() {
                by_name.remove(&oldest);
            }
        }
        Ok((nl, Some(values)))
    }
}

/// How long one namespace's read, or one change, may take. The kernel
/// answers rtnetlink in microseconds, but holds its rtnl lock for seconds
/// while it destroys a large lab's namespaces; a request still unanswered
/// after 10 s is stuck.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The veths of the daemon's own namespace (the host's) whose other end
/// is in another namespace: `(ifindex, the other end's ifindex)`. Read on
/// a runtime thread, which never enters a lab's namespace.
pub async fn host_veth_ends() -> Result<std::collections::BTreeSet<(u32, u32)>, ReconcileError> {
    const HOST: &str = "(the host's)";
    within(HOST, || "read its links".to_string(), async {
        let nl = Netlink::connect_here().await?;
        Ok(nl
            .links()
            .await?
            .into_iter()
            .filter_map(|l| l.peer_elsewhere.map(|peer| (l.index, peer)))
            .collect())
    })
    .await
}

/// Runs `work` for namespace `namespace` for at most [`DEADLINE`].
async fn within<T>(
    namespace: &str,
    what: impl Fn() -> String,
    work: impl std::future::Future<Output = Result<T, ReconcileError>>,
) -> Result<T, ReconcileError> {
    tokio::time::timeout(DEADLINE, work).await.map_err(|_| {
        ReconcileError::Netlink(NetlinkError::Timeout {
            namespace: namespace.to_string(),
            what: what(),
            after: DEADLINE,
        })
    })?
}

/// What namespace `spec.name` holds now: every link (with its master by
/// name and, for links the plan configures, TX checksumming), the gateway
/// routes, and the sysctls the plan sets; at most [`DEADLINE`].
pub async fn read(
    handles: &Handles,
    spec: &NamespaceSpec,
) -> Result<ActualNamespace, ReconcileError> {
    within(
        &spec.name,
        || "read links, addresses and routes".to_string(),
        read_unbounded(handles, spec),
    )
    .await
}

async fn read_unbounded(
    handles: &Handles,
    spec: &NamespaceSpec,
) -> Result<ActualNamespace, ReconcileError> {
    let keys: Vec<String> = spec.sysctls.iter().map(|(k, _)| k.clone()).collect();
    let (nl, values) = handles.get_reading_sysctls(&spec.name, &keys).await?;
    let raw = nl.links().await?;
    let names: BTreeMap<u32, String> = raw.iter().map(|l| (l.index, l.name.clone())).collect();
    let mut links = Vec::with_capacity(raw.len());
    for l in raw {
        let checked = spec
            .links
            .iter()
            .any(|s| s.name == l.name && s.tx_checksum.is_some());
        let tx_checksum = if checked {
            nl.tx_checksum(&l.name)?
        } else {
            true
        };
        links.push(ActualLink {
            master: l.master.and_then(|m| names.get(&m).cloned()),
            name: l.name,
            ifindex: l.index,
            kind: l.kind,
            up: l.up,
            promisc: l.promisc,
            mac: l.mac,
            addresses: l.addresses,
            tx_checksum,
            mtu: l.mtu,
            ipv6_addr_gen_none: l.ipv6_addr_gen_none,
            peer_elsewhere: l.peer_elsewhere,
        });
    }
    let routes = nl
        .routes()
        .await?
        .into_iter()
        .map(|r| RouteSpec {
            destination: r.destination,
            gateway: r.gateway,
        })
        .collect();
    let values = match values {
        Some(values) => values,
        None if keys.is_empty() => Vec::new(),
        None => {
            let name = spec.name.clone();
            let keys = keys.clone();
            tokio::task::spawn_blocking(move || netns::read_sysctls(&name, &keys))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default()
        }
    };
    let sysctls: BTreeMap<String, String> = keys
        .into_iter()
        .zip(values)
        .filter_map(|(k, v)| Some((k, v?)))
        .collect();
    Ok(ActualNamespace {
        links,
        routes,
        sysctls,
    })
}

/// Applies one change inside namespace `namespace`, in at most [`DEADLINE`].
pub async fn apply(
    handles: &Handles,
    namespace: &str,
    change: &LinkChange,
) -> Result<(), ReconcileError> {
    within(
        namespace,
        || change.to_string(),
        apply_unbounded(handles, namespace, change),
    )
    .await
}

async fn apply_unbounded(
    handles: &Handles,
    namespace: &str,
    change: &LinkChange,
) -> Result<(), ReconcileError> {
    let nl = handles.get(namespace).await?;
    match change {
        LinkChange::WriteSysctl { key, value } => {
            let (ns, key, value) = (namespace.to_string(), key.clone(), value.clone());
            tokio::task::spawn_blocking(move || netns::write_sysctl(&ns, &key, &value))
                .await
                .map_err(|source| ReconcileError::Task {
                    of: format!("namespace {namespace}"),
                    what: "sysctl",
                    source,
                })??;
        }
        LinkChange::DeleteLink { name } => nl.del_link(name).await?,
        LinkChange::CreateBridge { name } => nl.add_bridge(name).await?,
        LinkChange::CreateVeth {
            name,
            peer,
            peer_namespace,
        } => nl.add_veth(name, peer, peer_namespace).await?,
        LinkChange::SetMac { name, mac } => nl.set_mac(name, *mac).await?,
        LinkChange::SetMtu { name, mtu } => nl.set_mtu(name, *mtu).await?,
        LinkChange::SetIpv6AddrGenNone { name } => nl.set_ipv6_addr_gen_none(name).await?,
        LinkChange::SetMaster { name, master } => nl.set_master(name, master.as_deref()).await?,
        LinkChange::SetTxChecksum { name, on } => nl.set_tx_checksum(name, *on)?,
        LinkChange::DelAddress { name, address } => nl.del_address(name, *address).await?,
        LinkChange::AddAddress { name, address } => nl.add_address(name, *address).await?,
        LinkChange::SetUp { name } => nl.set_up(name).await?,
        LinkChange::SetDown { name } => nl.set_down(name).await?,
        LinkChange::SetPromisc { name } => nl.set_promisc(name).await?,
        LinkChange::AddRoute { route } => nl.add_route(route.destination, route.gateway).await?,
    }
    Ok(())
}
