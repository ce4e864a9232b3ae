//! Safety numbers: what two people compare to know that they see each other's real identity key.

use sha2::{Digest, Sha512};

use crate::PublicKey;

/// Version of the safety-number derivation, part of every hash input and of the QR payload.
const VERSION: u16 = 1;
/// Hash iterations per fingerprint, which make finding a colliding key costlier.
const ITERATIONS: usize = 5200;

/// A number both people in a conversation compute from their two identity keys: 60 digits in
/// twelve groups of five, and the same content as a QR payload string. Both sides get the same
/// value whoever computes it; it changes if either identity key changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SafetyNumber {
    /// Twelve groups of five digits separated by spaces.
    pub digits: String,
    /// `tacit-safety:v1:<hex>:<hex>`, the two fingerprints in the same order as the digits.
    pub qr_payload: String,
}

fn fingerprint(handle: &str, key: &PublicKey) -> [u8; 32] {
    let mut hasher = Sha512::new();
    hasher.update(VERSION.to_be_bytes());
    hasher.update(key.to_bytes());
    hasher.update((handle.len() as u32).to_be_bytes());
    hasher.update(handle.as_bytes());
    let mut digest = hasher.finalize();
    for _ in 1..ITERATIONS {
        let mut hasher = Sha512::new();
        hasher.update(digest);
        hasher.update(key.to_bytes());
        digest = hasher.finalize();
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&digest[..32]);
    out
}

fn thirty_digits(fp: &[u8; 32]) -> String {
    fp[..30]
        .chunks(5)
        .map(|c| {
            let v = c.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", v % 100_000)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl SafetyNumber {
    /// Computes the safety number between two users.
    pub fn compute(
        my_handle: &str,
        my_key: &PublicKey,
        their_handle: &str,
        their_key: &PublicKey,
    ) -> Self {
        let mine = fingerprint(my_handle, my_key);
        let theirs = fingerprint(their_handle, their_key);
        let (first, second) = if mine <= theirs {
            (mine, theirs)
        } else {
            (theirs, mine)
        };
        SafetyNumber {
            digits: format!("{} {}", thirty_digits(&first), thirty_digits(&second)),
            qr_payload: format!(
                "tacit-safety:v{VERSION}:{}:{}",
                hex::encode(first),
                hex::encode(second)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IdentityKeyPair;

    #[test]
    fn both_sides_compute_the_same_number() {
        let a = IdentityKeyPair::generate().public();
        let b = IdentityKeyPair::generate().public();
        let ab = SafetyNumber::compute("alice", &a, "bob", &b);
        let ba = SafetyNumber::compute("bob", &b, "alice", &a);
        assert_eq!(ab, ba);
        assert_eq!(ab.digits.replace(' ', "").len(), 60);
        assert!(ab.digits.chars().all(|c| c.is_ascii_digit() || c == ' '));
        assert!(ab.qr_payload.starts_with("tacit-safety:v1:"));
    }

    #[test]
    fn a_changed_key_changes_the_number() {
        let a = IdentityKeyPair::generate().public();
        let b = IdentityKeyPair::generate().public();
        let b2 = IdentityKeyPair::generate().public();
        assert_ne!(
            SafetyNumber::compute("alice", &a, "bob", &b),
            SafetyNumber::compute("alice", &a, "bob", &b2)
        );
    }
}
