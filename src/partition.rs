//! Where a symbol lives: the Java client's default key partitioner
//! (`toPositive(murmur2(key)) % partitions`), which librdkafka implements as
//! `partitioner=murmur2_random`. The edge uses it to fetch only the
//! partitions that hold symbols somebody wants.
//!
//! Hand-written because it is 30 lines, must match Kafka bit for bit, and the
//! crates that offer it are unmaintained; the tests pin it to Kafka's own
//! vectors and, in the integration suite, to librdkafka's placement.
//!
//! It never talks to Kafka: it is a pure function of a key's bytes and a
//! partition count.

/// Kafka's murmur2 (seed `0x9747b28c`), as `org.apache.kafka.common.utils.Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition (of `partitions`) that the Java default partitioner and
/// librdkafka's `murmur2_random` choose for `key`.
///
/// ```
/// use tickfan::partition::partition_for;
/// // Where a feed handler keyed by symbol put AAPL in an 8-partition topic:
/// assert_eq!(partition_for(b"AAPL", 8), 1);
/// ```
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    assert!(partitions > 0, "a topic has at least one partition");
    (murmur2(key) & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_kafka_utils_test_vectors() {
        // From Kafka's UtilsTest.testMurmur2.
        let cases: [(&str, i32); 6] = [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ];
        for (key, want) in cases {
            assert_eq!(murmur2(key.as_bytes()), want, "{key}");
        }
    }

    #[test]
    fn partition_is_in_range() {
        for p in 1..40 {
            for key in ["AAPL", "MSFT", "", "x", "BRK.B"] {
                let got = partition_for(key.as_bytes(), p);
                assert!((0..p).contains(&got));
            }
        }
    }
}
