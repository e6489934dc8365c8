//! [`Netlink`]: an rtnetlink connection bound to one namespace.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::sync::Arc;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoBridge, InfoData, InfoKind, InfoVeth,
    LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use rtnetlink::sys::protocols::NETLINK_ROUTE;
use rtnetlink::sys::{Socket, TokioSocket};
use rtnetlink::{Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};

use crate::{NetlinkError, ethtool, netns};

/// One link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkInfo {
    pub name: String,
    pub index: u32,
    /// `veth`, `bridge`, `tun`, … ("" when the kernel names no kind, as for `lo`).
    pub kind: String,
    /// The ifindex of the bridge this link is a port of.
    pub master: Option<u32>,
    /// Administratively up.
    pub up: bool,
    /// In promiscuous mode (`IFF_PROMISC`).
    pub promisc: bool,
    pub mac: Option<[u8; 6]>,
    pub addresses: Vec<Ipv4Net>,
    pub mtu: u32,
    /// IPv6 makes no addresses on it (`addrgenmode none`).
    pub ipv6_addr_gen_none: bool,
    /// The ifindex of its other end (a veth's peer), when that is in
    /// another namespace (`IFLA_LINK` with `IFLA_LINK_NETNSID`).
    pub peer_elsewhere: Option<u32>,
}

/// An IPv4 route with a gateway, in the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: Ipv4Net,
    pub gateway: Ipv4Addr,
}

/// An rtnetlink connection into one namespace, plus a control socket of the
/// same namespace for ethtool. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Netlink {
    namespace: String,
    handle: Handle,
    control: Arc<OwnedFd>,
}

impl Netlink {
    /// Connects to namespace `namespace`. The connection's task runs on the
    /// current Tokio runtime until the last clone is dropped.
    pub async fn connect(namespace: &str) -> Result<Netlink, NetlinkError> {
        Ok(Self::connect_reading_sysctls(namespace, &[]).await?.0)
    }

    /// [`connect`](Self::connect), and the values of sysctls `keys` (as
    /// [`netns::read_sysctls`]) read on the same trip into the namespace.
    pub async fn connect_reading_sysctls(
        namespace: &str,
        keys: &[String],
    ) -> Result<(Netlink, Vec<Option<String>>), NetlinkError> {
        let files = netns::sysctl_files(keys);
        let (socket, control, values) = netns::run_in(namespace, || {
            let socket = Socket::new(NETLINK_ROUTE)?;
            Ok((
                socket,
                ethtool::control_socket()?,
                netns::read_files(&files),
            ))
        })?;
        socket
            .set_non_blocking(true)
            .map_err(|e| NetlinkError::namespace(namespace, "netlink socket", e))?;
        // SAFETY: the fd comes straight from a netlink socket we own and
        // hand over whole.
        let socket =
            unsafe { <TokioSocket as std::os::fd::FromRawFd>::from_raw_fd(socket.into_raw_fd()) };
        let (connection, handle, _) = rtnetlink::from_socket(socket);
        tokio::spawn(connection);
        let netlink = Netlink {
            namespace: namespace.to_string(),
            handle,
            control: Arc::new(control),
        };
        Ok((netlink, values))
    }

    /// Connects to the namespace this thread is in (for a program started
    /// inside one, like the DHCP client's hook).
    pub async fn connect_here() -> Result<Netlink, NetlinkError> {
        let here = "(current)";
        let socket = Socket::new(NETLINK_ROUTE)
            .map_err(|e| NetlinkError::namespace(here, "netlink socket", e))?;
        let control = ethtool::control_socket()
            .map_err(|e| NetlinkError::namespace(here, "control socket", e))?;
        socket
            .set_non_blocking(true)
            .map_err(|e| NetlinkError::namespace(here, "netlink socket", e))?;
        // SAFETY: as in connect_reading_sysctls.
        let socket =
            unsafe { <TokioSocket as std::os::fd::FromRawFd>::from_raw_fd(socket.into_raw_fd()) };
        let (connection, handle, _) = rtnetlink::from_socket(socket);
        tokio::spawn(connection);
        Ok(Netlink {
            namespace: here.to_string(),
            handle,
            control: Arc::new(control),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn err(&self, what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError + '_ {
        let what = what.into();
        move |e| NetlinkError::request(&self.namespace, what, e)
    }

    /// Every link with its IPv4 addresses, sorted by name.
    pub async fn links(&self) -> Result<Vec<LinkInfo>, NetlinkError> {
        // Each message is boiled down as it arrives: a node of a large lab
        // has hundreds of links, and their parsed messages are large.
        let mut links: Vec<LinkInfo> = self
            .handle
            .link()
            .get()
            // Counters are not wanted: the kernel skips filling them (per
            // link, the larger part of a dump) and we skip parsing them.
            .set_filter_mask(AddressFamily::Unspec, vec![LinkExtentMask::SkipStats])
            .execute()
            .map_ok(|message| link_info(&message))
            .try_collect()
            .await
            .map_err(self.err("list links"))?;
        let mut addresses = self.handle.address().get();
        addresses.message_mut().header.family = AddressFamily::Inet;
        let addresses: Vec<(u32, Vec<Ipv4Net>)> = addresses
            .execute()
            .map_ok(|message| (message.header.index, ipv4_addresses(&message)))
            .try_collect()
            .await
            .map_err(self.err("list addresses"))?;
        for (index, addresses) in addresses {
            let Some(link) = links.iter_mut().find(|l| l.index == index) else {
                continue;
            };
            link.addresses.extend(addresses);
        }
        for link in &mut links {
            link.addresses.sort();
        }
        links.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(links)
    }

    /// The link called `name`.
    pub async fn link(&self, name: &str) -> Result<LinkInfo, NetlinkError> {
        let mut link = link_info(&self.link_message(name).await?);
        link.addresses = self.addresses_of(link.index).await?;
        Ok(link)
    }

    /// The kernel's RTM_NEWLINK for the link called `name` (one request).
    async fn link_message(&self, name: &str) -> Result<LinkMessage, NetlinkError> {
        self.handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute()
            .try_next()
            .await
            .map_err(|e| self.get_error(name, e))?
            .ok_or_else(|| NetlinkError::NoSuchLink {
                namespace: self.namespace.clone(),
                link: name.to_string(),
            })
    }

    async fn addresses_of(&self, index: u32) -> Result<Vec<Ipv4Net>, NetlinkError> {
        let messages: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(self.err("list addresses"))?;
        let mut out: Vec<Ipv4Net> = messages.iter().flat_map(ipv4_addresses).collect();
        out.sort();
        Ok(out)
    }

    /// The ifindex of the link called `name`.
    async fn index(&self, name: &str) -> Result<u32, NetlinkError> {
        Ok(self.link_message(name).await?.header.index)
    }

    fn get_error(&self, name: &str, e: rtnetlink::Error) -> NetlinkError {
        match &e {
            rtnetlink::Error::NetlinkError(m) if m.code.map(|c| c.get()) == Some(-libc::ENODEV) => {
                NetlinkError::NoSuchLink {
                    namespace: self.namespace.clone(),
                    link: name.to_string(),
                }
            }
            _ => NetlinkError::request(&self.namespace, format!("get link {name}"), e),
        }
    }

    /// Creates veth `name` here with its peer `peer` directly in namespace
    /// `peer_namespace` (which may be this one), in one request.
    ///
    /// Both ends get one transmit and one receive queue from the start, as
    /// the kernel would leave them anyway: a veth made with one per CPU is
    /// cut to one right after it is registered, and that cut waits for an
    /// expedited RCU grace period while holding the RTNL lock, which every
    /// link change of every namespace needs (at 10,000 instances, most of
    /// the time the links phase spent, with the CPUs idle).
    pub async fn add_veth(
        &self,
        name: &str,
        peer: &str,
        peer_namespace: &str,
    ) -> Result<(), NetlinkError> {
        let peer_fd = (peer_namespace != self.namespace)
            .then(|| netns::open(peer_namespace))
            .transpose()?;
        let what = format!("create veth {name} <-> {peer} (in {peer_namespace})");
        let mut attempt = 0;
        loop {
            let (index, peer_index) = veth_indexes();
            let mut peer_message = LinkMessageBuilder::<LinkUnspec>::new()
                .name(peer.to_string())
                .build();
            peer_message.header.index = peer_index;
            peer_message.attributes.extend(one_queue_each());
            if let Some(fd) = &peer_fd {
                peer_message
                    .attributes
                    .push(LinkAttribute::NetNsFd(fd.as_raw_fd()));
            }
            let mut message = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
                .name(name.to_string())
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_message)))
                .build();
            message.header.index = index;
            message.attributes.extend(one_queue_each());
            match self.create_link(message, what.clone()).await {
                // An index already taken in one of the namespaces: others.
                Err(e) if attempt < 8 && e.is_busy() => attempt += 1,
                result => return result,
            }
        }
    }

    /// Sends an RTM_NEWLINK creating a link; `what` names it in errors.
    async fn create_link(&self, message: LinkMessage, what: String) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .add(message)
            .execute()
            .await
            .map_err(self.err(what))
    }

    /// Sends an RTM_SETLINK changing a link; `what` names it in errors.
    async fn change_link(&self, message: LinkMessage, what: String) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(self.err(what))
    }

    /// Creates Linux bridge `name` as Nova's hybrid plug makes `qbr`:
    /// STP off, forward delay 0, multicast snooping off (nova 12.0.0
    /// `ensure_bridge` writes 0 to `bridge/multicast_snooping`).
    pub async fn add_bridge(&self, name: &str) -> Result<(), NetlinkError> {
        let message = LinkBridge::new(name)
            .append_info_data(InfoBridge::StpState(
                netlink_packet_route::link::BridgeStpState::Disabled,
            ))
            .append_info_data(InfoBridge::MulticastSnooping(false))
            .forward_delay(0)
            .build();
        self.create_link(message, format!("create bridge {name}"))
            .await
    }

    /// Makes `name` a port of bridge `master`, or of none.
    pub async fn set_master(&self, name: &str, master: Option<&str>) -> Result<(), NetlinkError> {
        let index = self.index(name).await?;
        let builder = LinkUnspec::new_with_index(index);
        let message = match master {
            Some(m) => builder.controller(self.index(m).await?).build(),
            None => builder.nocontroller().build(),
        };
        let what = format!("set {name} master {}", master.unwrap_or("none"));
        self.change_link(message, what).await
    }

    pub async fn set_up(&self, name: &str) -> Result<(), NetlinkError> {
        let index = self.index(name).await?;
        let message = LinkUnspec::new_with_index(index).up().build();
        self.change_link(message, format!("set {name} up")).await
    }

    pub async fn set_promisc(&self, name: &str) -> Result<(), NetlinkError> {
        let index = self.index(name).await?;
        let message = LinkUnspec::new_with_index(index).promiscuous(true).build();
        self.change_link(message, format!("set {name} promisc on"))
            .await
    }

    pub async fn set_down(&self, name: &str) -> Result<(), NetlinkError> {
        let index = self.index(name).await?;
        let message = LinkUnspec::new_with_index(index).down().build();
        self.change_link(message, format!("set {name} down")).await
    }

    /// Stops IPv6 making addresses on `name` (`ip link set … addrgenmode
    /// none`): set before the link goes up, it gets no link-local address,
    /// and so sends no DAD, router solicitation or MLD report. Unlike
    /// `disable_ipv6` this needs no `/proc/sys` lookup, whose cost grows
    /// with the number of namespaces on the host (docs/design.md).
    pub async fn set_ipv6_addr_gen_none(&self, name: &str) -> Result<(), NetlinkError> {
        let index = self.index(name).await?;
        let mut message = LinkUnspec::new_with_index(index).build();
        message
            .attributes
            .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
            )]));
        self.change_link(message, format!("set {name} addrgenmode none"))
            .await
    }

    pub async fn set_mtu(&self, name: &str, mtu: u32) -> Result<(), NetlinkError> {
        let index = self.index(name).await?;
        let message = LinkUnspec::new_with_index(index).mtu(mtu).build();
        self.change_link(message, format!("set {name} mtu {mtu}"))
            .await
    }

    pub async fn set_mac(&self, name: &str, mac: [u8; 6]) -> Result<(), NetlinkError> {
        let index = self.index(name).await?;
        let message = LinkUnspec::new_with_index(index)
            .address(mac.to_vec())
            .build();
        self.change_link(message, format!("set {name} address"))
            .await
    }

    /// Adds `address` with its broadcast address, as the agents' `ip addr
    /// add … brd <last address of the subnet>` does (a /32, a floating IP,
    /// is its own broadcast address).
    pub async fn add_address(&self, name: &str, address: Ipv4Net) -> Result<(), NetlinkError> {
        let index = self.index(name).await?;
        let mut request =
            self.handle
                .address()
                .add(index, IpAddr::V4(address.addr()), address.prefix_len());
        if address.prefix_len() == 32 {
            request.message_mut().attributes.push(
                netlink_packet_route::address::AddressAttribute::Broadcast(address.addr()),
            );
        }
        request
            .execute()
            .await
            .map_err(self.err(format!("add address {address} to {name}")))
    }

    pub async fn del_address(&self, name: &str, address: Ipv4Net) -> Result<(), NetlinkError> {
        let index = self.index(name).await?;
        let messages: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(self.err(format!("list addresses of {name}")))?;
        for message in messages {
            let matches = message.header.prefix_len == address.prefix_len()
                && message
                    .attributes
                    .iter()
                    .any(|a| matches!(a, AddressAttribute::Address(IpAddr::V4(ip)) if *ip == address.addr()));
            if matches {
                self.handle
                    .address()
                    .del(message)
                    .execute()
                    .await
                    .map_err(self.err(format!("delete address {address} from {name}")))?;
            }
        }
        Ok(())
    }

    /// Makes the kernel forget its neighbour `ip` on `device` (`ip neigh
    /// del`), so that the next packet to it sends an ARP request; an entry
    /// that is not there is no error.
    pub async fn forget_neighbour(&self, device: &str, ip: Ipv4Addr) -> Result<(), NetlinkError> {
        let mut message = NeighbourMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.ifindex = self.index(device).await?;
        message
            .attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        match self.handle.neighbours().del(message).execute().await {
            Err(rtnetlink::Error::NetlinkError(m))
                if m.code.map(|c| c.get()) == Some(-libc::ENOENT) =>
            {
                Ok(())
            }
            result => result.map_err(self.err(format!("delete neighbour {ip} on {device}"))),
        }
    }

    /// IPv4 routes with a gateway in the main table.
    pub async fn routes(&self) -> Result<Vec<Route>, NetlinkError> {
        let messages: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(self.err("list routes"))?;
        let mut routes = Vec::new();
        for m in messages {
            if m.header.address_family != AddressFamily::Inet
                || m.header.kind != RouteType::Unicast
                || m.header.table != libc::RT_TABLE_MAIN
            {
                continue;
            }
            let mut destination = Ipv4Addr::UNSPECIFIED;
            let mut gateway = None;
            for attr in &m.attributes {
                match attr {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => destination = *d,
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(*g),
                    _ => {}
                }
            }
            if let (Some(gateway), Ok(destination)) = (
                gateway,
                Ipv4Net::new(destination, m.header.destination_prefix_length),
            ) {
                routes.push(Route {
                    destination,
                    gateway,
                });
            }
        }
        routes.sort_by_key(|r| (r.destination, r.gateway));
        Ok(routes)
    }

    pub async fn add_route(
        &self,
        destination: Ipv4Net,
        gateway: Ipv4Addr,
    ) -> Result<(), NetlinkError> {
        self.route_to(destination, gateway, false).await
    }

    /// Adds the route, or replaces the one to the same destination.
    pub async fn replace_route(
        &self,
        destination: Ipv4Net,
        gateway: Ipv4Addr,
    ) -> Result<(), NetlinkError> {
        self.route_to(destination, gateway, true).await
    }

    async fn route_to(
        &self,
        destination: Ipv4Net,
        gateway: Ipv4Addr,
        replace: bool,
    ) -> Result<(), NetlinkError> {
        let message = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(destination.addr(), destination.prefix_len())
            .gateway(gateway)
            .build();
        let request = self.handle.route().add(message);
        let (request, verb) = if replace {
            (request.replace(), "replace")
        } else {
            (request, "add")
        };
        request
            .execute()
            .await
            .map_err(self.err(format!("{verb} route {destination} via {gateway}")))
    }

    /// Deletes link `name` (a veth takes its peer along). A link that is
    /// already gone is not an error, also when it goes between the lookup
    /// and the delete (its veth peer deleted at the same time elsewhere).
    pub async fn del_link(&self, name: &str) -> Result<(), NetlinkError> {
        let index = match self.index(name).await {
            Ok(i) => i,
            Err(NetlinkError::NoSuchLink { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        match self.handle.link().del(index).execute().await {
            Err(rtnetlink::Error::NetlinkError(m))
                if m.code.map(|c| c.get()) == Some(-libc::ENODEV) =>
            {
                Ok(())
            }
            result => result.map_err(self.err(format!("delete link {name}"))),
        }
    }

    /// Whether TX checksum offload is on for `name`.
    pub fn tx_checksum(&self, name: &str) -> Result<bool, NetlinkError> {
        ethtool::tx_checksum(&self.control, name).map_err(|e| NetlinkError::Request {
            namespace: self.namespace.clone(),
            what: format!("read tx-checksumming of {name}"),
            source: e,
        })
    }

    pub fn set_tx_checksum(&self, name: &str, on: bool) -> Result<(), NetlinkError> {
        ethtool::set_tx_checksum(&self.control, name, on).map_err(|e| NetlinkError::Request {
            namespace: self.namespace.clone(),
            what: format!("set tx-checksumming of {name}"),
            source: e,
        })
    }
}

fn ipv4_addresses(message: &AddressMessage) -> Vec<Ipv4Net> {
    message
        .attributes
        .iter()
        .filter_map(|attr| match attr {
            AddressAttribute::Address(IpAddr::V4(ip)) => {
                Ipv4Net::new(*ip, message.header.prefix_len).ok()
            }
            _ => None,
        })
        .collect()
}

fn link_info(message: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: message.header.index,
        up: message.header.flags.contains(LinkFlags::Up),
        promisc: message.header.flags.contains(LinkFlags::Promisc),
        ..Default::default()
    };
    let (mut peer, mut elsewhere) = (None, false);
    for attr in &message.attributes {
        match attr {
            LinkAttribute::Link(index) => peer = Some(*index),
            LinkAttribute::LinkNetNsId(_) => elsewhere = true,
            LinkAttribute::IfName(name) => info.name = name.clone(),
            LinkAttribute::Mtu(mtu) => info.mtu = *mtu,
            LinkAttribute::Controller(master) => info.master = Some(*master),
            LinkAttribute::Address(bytes) => info.mac = <[u8; 6]>::try_from(bytes.as_slice()).ok(),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let NlLinkInfo::Kind(kind) = i {
                        info.kind = kind.to_string();
                    }
                }
            }
            LinkAttribute::AfSpecUnspec(specs) => {
                for spec in specs {
                    if let AfSpecUnspec::Inet6(inet6) = spec {
                        info.ipv6_addr_gen_none =
                            inet6.contains(&AfSpecInet6::AddrGenMode(In6AddrGenMode::None));
                    }
                }
            }
            _ => {}
        }
    }
    info.peer_elsewhere = peer.filter(|_| elsewhere);
    info
}

/// One transmit queue and one receive queue (see [`Netlink::add_veth`]).
fn one_queue_each() -> [LinkAttribute; 2] {
    [LinkAttribute::NumTxQueues(1), LinkAttribute::NumRxQueues(1)]
}

/// Interface indexes for the two ends of a new veth: never equal.
///
/// Each namespace numbers its links from 1, so a veth's two ends often get
/// the same index in their two namespaces. The kernel then takes the link
/// for one that is not stacked on another, and its carrier changes for a
/// non-urgent event, which link watch handles up to a second later; until
/// then a Linux bridge keeps the port disabled and drops what it should
/// forward. Choosing both indexes ourselves (the kernel honours the peer's
/// only when the first one is given too) avoids that.
fn veth_indexes() -> (u32, u32) {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 10_000;
    const SPAN: u32 = 1 << 28;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    if NEXT.load(Ordering::Relaxed) == 0 {
        // A different start in every process, so that a restarted daemon
        // does not walk into the indexes its predecessor used.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() ^ (d.as_secs() as u32))
            ^ std::process::id().rotate_left(16);
        let start = FIRST + (seed % (SPAN / 2)) * 2;
        let _ = NEXT.compare_exchange(0, start, Ordering::Relaxed, Ordering::Relaxed);
    }
    let mut index = NEXT.fetch_add(2, Ordering::Relaxed);
    if index >= FIRST + SPAN {
        NEXT.store(FIRST, Ordering::Relaxed);
        index = NEXT.fetch_add(2, Ordering::Relaxed);
    }
    (index, index + 1)
}
