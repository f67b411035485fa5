//! Fixed hash buckets of instance IDs: the unit of ownership placed on the placement ring and
//! stored in an indexed column, so every background scan can be limited to what one sidecar owns.

/// Number of buckets. Fixed forever: stored rows carry their bucket, so changing it would
/// misplace every existing row.
pub const BUCKETS: u16 = 4096;

/// The bucket of an instance ID: FNV-1a (64-bit) over the ID's UTF-8 bytes, folded to
/// `0..BUCKETS`. Explicit bytes and a fixed algorithm, so every build and platform agrees (and
/// a database written by one version is read correctly by the next).
pub fn bucket_of(instance_id: &str) -> i32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for b in instance_id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    // Fold the high bits in: FNV's low bits alone mix poorly for short keys.
    let folded = h ^ (h >> 32) ^ (h >> 16);
    (folded % u64::from(BUCKETS)) as i32
}

/// Every bucket, in order (what a sidecar owns when it is alone).
pub fn all_buckets() -> Vec<i32> {
    (0..i32::from(BUCKETS)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_values() {
        // Pinned: stored rows depend on these never changing.
        let pinned: Vec<i32> = ["", "a", "order-1", "abc::1::0"]
            .iter()
            .map(|k| bucket_of(k))
            .collect();
        assert_eq!(pinned, PINNED.to_vec());
    }

    const PINNED: [i32; 4] = [3043, 1729, 3148, 2540];

    #[test]
    fn in_range_and_spread() {
        let mut counts = vec![0u32; BUCKETS as usize];
        for i in 0..200_000 {
            let b = bucket_of(&format!("instance-{i}"));
            assert!((0..i32::from(BUCKETS)).contains(&b));
            counts[b as usize] += 1;
        }
        // ~49 per bucket on average; no bucket empty or badly overloaded.
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*min > 10 && *max < 120, "min {min} max {max}");
    }
}
