//! One module per verb; each has its `Args` and one `exec()`.

pub mod capture;
pub mod check;
pub mod down;
pub mod exec;
pub mod generate;
pub mod graph;
pub mod node;
pub mod status;
pub mod trace;
pub mod up;
pub mod validate;

/// Percent-encodes one path segment (lab and target names are plain words,
/// but a typo must not change the route).
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(super::segment("seed-2.x_y"), "seed-2.x_y");
        assert_eq!(super::segment("a/b c"), "a%2Fb%20c");
    }
}
