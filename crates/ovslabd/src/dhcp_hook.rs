//! What an instance's DHCP client runs at each event: `udhcpc -s` names
//! ovslabd's own binary under the name [`HOOK_NAME`] (a link in the run
//! directory), and `main` comes here instead of starting a daemon. Inside
//! the instance's namespace (udhcpc's), it applies the lease with
//! rtnetlink, as busybox's `default.script` would with `ip`: the address,
//! then the classless static routes (option 121) or else the router.
//! It never touches `/etc/resolv.conf`: the lab shares the host's files.
//!
//! udhcpc passes the event as the first argument and the lease in its
//! environment (`interface`, `ip`, `mask`, `router`, `staticroutes`);
//! everything it says is checked before use.

use std::net::Ipv4Addr;
use std::process::ExitCode;

use ipnet::Ipv4Net;

/// The name ovslabd answers to as udhcpc's hook.
pub const HOOK_NAME: &str = ovslab_topology::naming::DHCP_HOOK;

/// Makes the hook, `<run_dir>/udhcpc.hook`, a link to this very binary;
/// returns its path. The run directory is made searchable by others (not
/// readable): dnsmasq reads its files below it after dropping to an
/// unprivileged user.
pub fn install(run_dir: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(run_dir)?;
    let mode = std::fs::metadata(run_dir)?.permissions().mode();
    if mode & 0o011 != 0o011 {
        std::fs::set_permissions(run_dir, std::fs::Permissions::from_mode(mode | 0o011))?;
    }
    let link = run_dir.join(HOOK_NAME);
    let exe = std::env::current_exe()?;
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(exe, &link)?;
    Ok(link)
}

/// What the lease asks of the interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// `deconfig`: no address (the client starts, or lost its lease).
    Deconfigure { interface: String },
    /// `bound`, `renew`: this address and these routes.
    Bound {
        interface: String,
        address: Ipv4Net,
        routes: Vec<(Ipv4Net, Ipv4Addr)>,
    },
    /// `leasefail`, `nak`: nothing to do.
    Nothing,
}

/// Reads an event and its environment (`var` looks a variable up).
pub fn lease(event: &str, var: impl Fn(&str) -> Option<String>) -> Result<Lease, String> {
    let interface = || {
        let name = var("interface").ok_or("no `interface`")?;
        let ok = !name.is_empty()
            && name.len() <= 15
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        ok.then_some(name.clone())
            .ok_or(format!("bad interface `{name}`"))
    };
    match event {
        "deconfig" => Ok(Lease::Deconfigure {
            interface: interface()?,
        }),
        "bound" | "renew" => {
            let ip: Ipv4Addr = var("ip")
                .ok_or("no `ip`")?
                .parse()
                .map_err(|_| "bad `ip`")?;
            let mask: u8 = var("mask")
                .ok_or("no `mask`")?
                .parse()
                .map_err(|_| "bad `mask`")?;
            let address = Ipv4Net::new(ip, mask).map_err(|_| "bad `mask`")?;
            // RFC 3442: with classless static routes, the router option is
            // ignored.
            let routes = match var("staticroutes").filter(|s| !s.trim().is_empty()) {
                Some(text) => static_routes(&text)?,
                None => match var("router") {
                    Some(r) => {
                        let first = r.split_whitespace().next().unwrap_or_default();
                        let gw = first.parse().map_err(|_| "bad `router`")?;
                        vec![(Ipv4Net::default(), gw)]
                    }
                    None => vec![],
                },
            };
            Ok(Lease::Bound {
                interface: interface()?,
                address,
                routes,
            })
        }
        _ => Ok(Lease::Nothing),
    }
}

/// `169.254.169.254/32 10.0.0.1 0.0.0.0/0 10.0.0.1`: pairs of
/// destination and gateway.
fn static_routes(text: &str) -> Result<Vec<(Ipv4Net, Ipv4Addr)>, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if !words.len().is_multiple_of(2) {
        return Err(format!("bad `staticroutes` `{text}`"));
    }
    words
        .chunks(2)
        .map(|pair| {
            let dest: Ipv4Net = pair[0]
                .parse()
                .map_err(|_| format!("bad route destination `{}`", pair[0]))?;
            let gw: Ipv4Addr = pair[1]
                .parse()
                .map_err(|_| format!("bad route gateway `{}`", pair[1]))?;
            Ok((dest.trunc(), gw))
        })
        .collect()
}

/// Runs as the hook: applies the event to this namespace.
pub fn run(event: Option<String>) -> ExitCode {
    let event = event.unwrap_or_default();
    let lease = match lease(&event, |k| std::env::var(k).ok()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{HOOK_NAME} {event}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{HOOK_NAME}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(apply(lease)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{HOOK_NAME} {event}: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn apply(lease: Lease) -> Result<(), ovslab_netlink::NetlinkError> {
    let (interface, wanted, routes) = match lease {
        Lease::Nothing => return Ok(()),
        Lease::Deconfigure { interface } => (interface, None, vec![]),
        Lease::Bound {
            interface,
            address,
            routes,
        } => (interface, Some(address), routes),
    };
    let nl = ovslab_netlink::Netlink::connect_here().await?;
    let link = nl.link(&interface).await?;
    for old in link.addresses.iter().filter(|a| Some(**a) != wanted) {
        nl.del_address(&interface, *old).await?;
    }
    if !link.up {
        nl.set_up(&interface).await?;
    }
    if let Some(address) = wanted {
        if !link.addresses.contains(&address) {
            nl.add_address(&interface, address).await?;
        }
        for (destination, gateway) in routes {
            nl.replace_route(destination, gateway).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn a_bound_lease_with_classless_routes_ignores_the_router() {
        let vars = [
            ("interface", "eth0"),
            ("ip", "192.168.1.11"),
            ("mask", "24"),
            ("router", "192.168.1.254"),
            (
                "staticroutes",
                "169.254.169.254/32 192.168.1.1 0.0.0.0/0 192.168.1.1",
            ),
        ];
        assert_eq!(
            lease("bound", env(&vars)).unwrap(),
            Lease::Bound {
                interface: "eth0".into(),
                address: "192.168.1.11/24".parse().unwrap(),
                routes: vec![
                    (
                        "169.254.169.254/32".parse().unwrap(),
                        "192.168.1.1".parse().unwrap()
                    ),
                    ("0.0.0.0/0".parse().unwrap(), "192.168.1.1".parse().unwrap()),
                ],
            }
        );
    }

    #[test]
    fn without_classless_routes_the_router_is_the_default_route() {
        let vars = [
            ("interface", "eth0"),
            ("ip", "10.0.0.5"),
            ("mask", "24"),
            ("router", "10.0.0.1 10.0.0.2"),
        ];
        let Lease::Bound { routes, .. } = lease("renew", env(&vars)).unwrap() else {
            panic!("not bound");
        };
        assert_eq!(
            routes,
            [("0.0.0.0/0".parse().unwrap(), "10.0.0.1".parse().unwrap())]
        );
    }

    #[test]
    fn what_the_client_says_is_checked() {
        let bad = [
            vec![("interface", "eth0"), ("ip", "10.0.0.500"), ("mask", "24")],
            vec![("interface", "eth0"), ("ip", "10.0.0.5"), ("mask", "33")],
            vec![("interface", "../eth0"), ("ip", "10.0.0.5"), ("mask", "24")],
            vec![
                ("interface", "eth0"),
                ("ip", "10.0.0.5"),
                ("mask", "24"),
                ("staticroutes", "0.0.0.0/0"),
            ],
        ];
        for vars in bad {
            assert!(lease("bound", env(&vars)).is_err(), "{vars:?}");
        }
        assert_eq!(
            lease("deconfig", env(&[("interface", "eth0")])).unwrap(),
            Lease::Deconfigure {
                interface: "eth0".into()
            }
        );
        assert_eq!(lease("leasefail", env(&[])).unwrap(), Lease::Nothing);
    }
}
