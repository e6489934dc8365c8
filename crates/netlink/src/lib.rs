//! Network namespaces and the links inside them, through the kernel's own
//! interfaces: `unshare`/`setns` and bind mounts for namespaces (as
//! `ip netns` does, but without forking), rtnetlink for links, addresses and
//! routes, the ethtool ioctl for checksum offload, nf_tables' ruleset
//! generation, and ipset members over nfnetlink.
//!
//! A netlink socket belongs to the namespace it was created in, so
//! [`Netlink::connect`] creates its socket on a short-lived thread that has
//! entered the namespace; everything after that runs on the caller's runtime.

mod error;
mod ethtool;
pub mod events;
mod generation;
mod handle;
mod ipset;
pub mod netns;
pub mod nfnetlink;
pub mod sockopt;

pub use error::NetlinkError;
pub use generation::{Generation, generation};
pub use handle::{LinkInfo, Netlink, Route};
pub use ipset::{change_ipset, ipsets};

/// The parsers of kernel replies, for the fuzz targets in `fuzz/` only.
#[doc(hidden)]
pub mod replies {
    pub use crate::generation::parse_reply as generation;
    pub use crate::ipset::{count_acks as ipset_acks, read_dump as ipset_dump};
}
