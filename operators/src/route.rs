//! Stable key hashing for exchanging records between workers.

use std::hash::Hasher;

/// A hash of string parts that is the same on every worker and process.
pub fn key_hash(parts: &[&str]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3Default::new();
    for p in parts {
        h.write(p.as_bytes());
        h.write_u8(0xff);
    }
    h.finish()
}
