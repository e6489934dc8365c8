//! `iptables-save` output of a lab namespace (whose rules anyone with root
//! in it may have changed): parsed, reduced to our part and diffed against
//! a desired ruleset. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ovslab_iptables::{Ruleset, Saved, diff};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(saved) = Saved::parse(text, "fuzz") else {
        return;
    };
    let ours = saved.ours();
    let _ = ours.render_save_like();
    let _ = diff(&saved, &ours);
    let _ = diff(&saved, &Ruleset::new());
});
