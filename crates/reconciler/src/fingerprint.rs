//! 128-bit fingerprints of what a converge found as planned, kept for the
//! next converge in place of the plan's parts themselves: two SipHashes,
//! each keyed differently. A 10,000-instance lab would otherwise keep a
//! second copy of every namespace's spec and every bridge's flows (and
//! compare them whole on every audit). Only ever compared within one run
//! of the daemon.

use std::hash::{DefaultHasher, Hash, Hasher};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u64; 2]);

impl Fingerprint {
    /// The fingerprint of one value.
    pub fn of<T: Hash + ?Sized>(value: &T) -> Fingerprint {
        Fingerprint::of_all(std::iter::once(value))
    }

    /// The fingerprint of a sequence, as of a slice of its items: their
    /// order and number count.
    pub fn of_all<'a, T: Hash + ?Sized + 'a>(
        items: impl Iterator<Item = &'a T> + Clone,
    ) -> Fingerprint {
        let keyed = |key: u8| {
            let mut hasher = DefaultHasher::new();
            key.hash(&mut hasher);
            let mut count = 0usize;
            for item in items.clone() {
                item.hash(&mut hasher);
                count += 1;
            }
            count.hash(&mut hasher);
            hasher.finish()
        };
        Fingerprint([keyed(0), keyed(1)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sequence_is_told_apart_by_its_items_their_order_and_number() {
        let of = |items: &[&str]| Fingerprint::of_all(items.iter());
        assert_eq!(of(&["a", "b"]), of(&["a", "b"]));
        assert_ne!(of(&["a", "b"]), of(&["b", "a"]), "order");
        assert_ne!(of(&["a"]), of(&["a", "a"]), "number");
        assert_ne!(of(&["ab", "c"]), of(&["a", "bc"]), "bounds");
        assert_ne!(of(&[]), of(&[""]));
        assert_eq!(Fingerprint::of("x"), Fingerprint::of_all(["x"].iter()));
    }
}
