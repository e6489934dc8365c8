//! Datagrams from the kernel: the nf_tables generation reply, ipset list
//! dumps and acknowledgements (nfnetlink on netlink-packet-core), and,
//! read by hand, rtnetlink link notifications and inotify events. Each
//! parser gets the same bytes; none may panic.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use ovslab_netlink::events::{deleted_names, link_losses};
use ovslab_netlink::replies;

fuzz_target!(|data: &[u8]| {
    let _ = replies::generation(data);
    let mut sets = BTreeMap::new();
    let _ = replies::ipset_dump(data, &mut sets);
    let _ = replies::ipset_acks(data);
    let _ = link_losses(data);
    let _ = deleted_names(data);
});
