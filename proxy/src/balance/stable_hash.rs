//! The 64-bit hash behind consistent hashing: FNV-1a 64, finished with splitmix64.
//!
//! Every sidecar must place endpoints on the ring (or in the Maglev table) and hash requests
//! exactly alike, whatever its build, platform or process, or the same user lands on different
//! endpoints depending on which client proxy sent them. `std::hash` cannot promise that (SipHash
//! with per-process keys, and no stability across Rust releases), so this is a fixed, specified
//! function with pinned test vectors. FNV-1a alone spreads inputs that differ only in their last
//! bytes poorly (the difference stays in the low bits, so such identities land close together
//! on a ring ordered by the high bits); the splitmix64 finaliser mixes every input bit into
//! every output bit.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// An FNV-1a 64 state. `Copy`, so a common prefix (an endpoint's identity) is hashed once and
/// then extended per replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StableHasher(u64);

impl Default for StableHasher {
    fn default() -> Self {
        StableHasher::new()
    }
}

impl StableHasher {
    pub const fn new() -> Self {
        StableHasher(FNV_OFFSET)
    }

    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }

    /// Little-endian, so the result does not depend on the platform.
    pub fn write_u64(&mut self, v: u64) {
        self.write(&v.to_le_bytes());
    }

    /// Bytes preceded by their length, so that consecutive fields cannot run into each other
    /// (`"ab" + "c"` and `"a" + "bc"` hash differently).
    pub fn write_field(&mut self, bytes: &[u8]) {
        self.write_u64(bytes.len() as u64);
        self.write(bytes);
    }

    /// The raw FNV-1a 64 value, without the finaliser (for the test vectors).
    pub fn fnv(&self) -> u64 {
        self.0
    }

    pub fn finish(&self) -> u64 {
        splitmix64(self.0)
    }
}

/// The splitmix64 output function (Steele, Lea and Flood, 2014): a bijection on `u64` in which
/// every input bit affects every output bit.
pub const fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The stable hash of `bytes`.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = StableHasher::new();
    h.write(bytes);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_vectors() {
        // From the FNV reference test suite (fnv-1a 64-bit).
        for (input, want) in [
            ("", 0xcbf2_9ce4_8422_2325u64),
            ("a", 0xaf63_dc4c_8601_ec8c),
            ("foobar", 0x8594_4171_f739_67e8),
        ] {
            let mut h = StableHasher::new();
            h.write(input.as_bytes());
            assert_eq!(h.fnv(), want, "{input:?}");
        }
    }

    #[test]
    fn splitmix64_matches_the_reference() {
        // The first outputs of the reference splitmix64 generator seeded with 0: the generator
        // adds the golden gamma before mixing, which is what `splitmix64(state)` does.
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix64(0x9e37_79b9_7f4a_7c15), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn pinned_values_never_change() {
        // Every sidecar must agree: if this fails, endpoints and users move after an upgrade.
        assert_eq!(hash_bytes(b""), splitmix64(FNV_OFFSET));
        assert_eq!(hash_bytes(b"10.0.0.1:8080"), PINNED_ADDR);
    }

    /// `hash_bytes(b"10.0.0.1:8080")`, computed once and pinned.
    const PINNED_ADDR: u64 = 0x617fb5c94294a1fd;

    #[test]
    fn fields_are_delimited() {
        let mut a = StableHasher::new();
        a.write_field(b"ab");
        a.write_field(b"c");
        let mut b = StableHasher::new();
        b.write_field(b"a");
        b.write_field(b"bc");
        assert_ne!(a.finish(), b.finish());
    }
}
