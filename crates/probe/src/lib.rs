//! A lab's checks and traces, with real packets: the probes are sent from
//! the lab's namespaces and watched on its wires by packet sockets.
//!
//! - [`checks`]: the checks a topology declares (reach, refuse, the wires a
//!   probe must cross or avoid, the VLAN or tunnel key it must carry).
//! - [`probes`]: ICMP, TCP and UDP probes sent from a namespace, each
//!   carrying a tag that tells it apart on the wire.
//! - [`trace`]: `ovslab trace`: one probe followed hop by hop, with each
//!   bridge's OpenFlow decisions from `ofproto/trace`.
//!
//! It depends on the lab's topology and planned state, not on the
//! reconciler: the daemon calls it with what the lab is.

pub mod checks;
pub mod probes;
pub mod trace;
