//! Sets `cfg(ovsdb_server)` when this machine has `ovsdb-server` and the
//! Open_vSwitch schema, so that the tests against a real database server
//! (which need no root) run in a plain `cargo test` where they can, and
//! are reported as ignored where they cannot.

use std::path::Path;

const SERVER: &str = "/usr/sbin/ovsdb-server";
const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

fn main() {
    println!("cargo::rustc-check-cfg=cfg(ovsdb_server)");
    println!("cargo::rerun-if-changed={SERVER}");
    println!("cargo::rerun-if-changed={SCHEMA}");
    if Path::new(SERVER).exists() && Path::new(SCHEMA).exists() {
        println!("cargo::rustc-cfg=ovsdb_server");
    }
}
