//! A topology file, as a group member may send it to the daemon: parsing
//! and validation must refuse it or accept it, never panic; an accepted one
//! must also plan.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ovslab_topology::plan::{LocalVlans, plan};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ovslab_topology::parse("fuzz.yaml", text) {
        Ok(topology) => {
            let _ = plan(&topology, &LocalVlans::new());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
