//! The one hash of the crate: FNV-1a, for names of cached files (a checkpoint's path, size and time)
//! and for build-time keys of the code that lays out converted weights. Not for security.

/// FNV-1a (64-bit) of the texts one after another; a `const fn`, so that build-time keys use it too.
pub const fn fnv1a(texts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut t = 0;
    while t < texts.len() {
        let bytes = texts[t].as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            hash = (hash ^ bytes[i] as u64).wrapping_mul(0x0100_0000_01b3);
            i += 1;
        }
        t += 1;
    }
    hash
}
