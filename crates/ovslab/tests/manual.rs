//! The manual pages the command line generates (`ovslab __man DIR`, what
//! `make man` runs) render with `man -l` without a warning.

use std::path::Path;
use std::process::Command;

/// Renders a page as `man -l` does, with groff's warnings on; returns the
/// text.
fn render(page: &Path) -> String {
    let out = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(page)
        .env("MANWIDTH", "80")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .expect("man (man-db)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stderr}", page.display());
    assert!(stderr.is_empty(), "{}: warnings:\n{stderr}", page.display());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs man-db and groff (make deps installs them)"]
fn the_pages_render_without_warnings() {
    let dir = std::env::temp_dir().join(format!("ovslab-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_ovslab"))
        .arg("__man")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let ovslab = render(&dir.join("ovslab.1"));
    let topology = render(&dir.join("ovslab-topology.5"));
    std::fs::remove_dir_all(&dir).unwrap();
    for section in ["NAME", "SYNOPSIS", "COMMANDS", "EXIT STATUS", "SEE ALSO"] {
        assert!(
            ovslab.contains(&format!("\n{section}\n")),
            "{section}:\n{ovslab}"
        );
    }
    for command in ["ovslab up", "ovslab node fail", "ovslab completions"] {
        assert!(
            ovslab.contains(&format!("   {command}\n")),
            "{command}:\n{ovslab}"
        );
    }
    for section in ["A COMPLETE EXAMPLE", "CHECKS", "RESERVED NAMES AND LIMITS"] {
        assert!(
            topology.contains(&format!("\n{section}\n")),
            "{section}:\n{topology}"
        );
    }
}
