//! ovslabd(8), as `ovslabd --man-page` prints it, renders with `man -l`
//! without a warning.

use std::process::Command;

#[test]
#[ignore = "needs man-db and groff (make deps installs them)"]
fn the_page_renders_without_warnings() {
    let out = Command::new(env!("CARGO_BIN_EXE_ovslabd"))
        .arg("--man-page")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let page = std::env::temp_dir().join(format!("ovslabd-{}.8", std::process::id()));
    std::fs::write(&page, &out.stdout).unwrap();
    let man = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(&page)
        .env("MANWIDTH", "80")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .expect("man (man-db)");
    std::fs::remove_file(&page).unwrap();
    let stderr = String::from_utf8_lossy(&man.stderr);
    assert!(
        man.status.success() && stderr.is_empty(),
        "warnings:\n{stderr}"
    );
    let text = String::from_utf8_lossy(&man.stdout);
    for section in ["NAME", "SYNOPSIS", "OPTIONS", "FILES", "SEE ALSO"] {
        assert!(
            text.contains(&format!("\n{section}\n")),
            "{section}:\n{text}"
        );
    }
    assert!(text.contains("--on-exit"), "{text}");
}
