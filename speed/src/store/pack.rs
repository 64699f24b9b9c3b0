//! Dedup packs: the event ids one batch applied, with each one's first
//! delivery (Kafka time, partition, offset), stored as one value of the
//! `dedup` column family; the fixed-size [`DedupKey`] an id is known by;
//! and the compaction filter's test for a pack past its cutoff.

use dashmap::DashMap;

use super::Generation;
use super::keys::{gen_prefix, key_generation};
use crate::SpeedError;

/// A [`dedup_key`]: 4 bytes of generation, 16 of hash.
pub(crate) type DedupKey = [u8; 20];

/// The dedup key of an event identity: the generation, then XXH3-128
/// (fixed seed: the value is stored, so it must never change) of the
/// length-prefixed tenant, user and event id, hashed in one call from a
/// stack buffer. Fixed-size keys keep the per-event lookup cheap. Two
/// different identities share a key with a probability of about n²/2¹²⁹
/// for n ids within a horizon (1e-20 for a billion): then the later one
/// would be dropped as a redelivery. (XXH3 is not a keyed hash: ids
/// crafted to collide with another's could be made to.)
#[inline]
pub(crate) fn dedup_key(g: Generation, tenant: &str, user: &str, event_id: &str) -> DedupKey {
    const SEED: u64 = 0x7765_6674_2d64_6564; // "weft-ded"
    let parts = [tenant, user, event_id];
    let len: usize = parts.iter().map(|p| 8 + p.len()).sum();
    let mut stack = [0u8; 256];
    let mut heap = Vec::new();
    let buf: &mut [u8] = if len <= stack.len() {
        &mut stack[..len]
    } else {
        heap.resize(len, 0);
        &mut heap
    };
    let mut at = 0;
    for part in parts {
        buf[at..at + 8].copy_from_slice(&(part.len() as u64).to_le_bytes());
        at += 8;
        buf[at..at + part.len()].copy_from_slice(part.as_bytes());
        at += part.len();
    }
    let mut k = [0u8; 20];
    k[..4].copy_from_slice(&gen_prefix(g));
    k[4..].copy_from_slice(&xxhash_rust::xxh3::xxh3_128_with_seed(buf, SEED).to_be_bytes());
    k
}

/// Key tag of dedup packs in the `dedup` column family.
pub(super) const PACK_TAG: u8 = b'p';
/// Bytes of a pack's header: the newest first-delivery time in it.
pub(super) const PACK_HEADER: usize = 8;
/// Bytes of one id in a pack: hash (16), Kafka time (8), partition (4),
/// offset (8).
pub(super) const PACK_ENTRY: usize = 36;
/// Ids per pack when a generation's ids are copied into a new one.
pub(super) const PACK_MAX_IDS: usize = 1 << 16;

/// The key of pack `seq` of generation `g`.
pub(super) fn pack_key(g: Generation, seq: u64) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[..4].copy_from_slice(&gen_prefix(g));
    k[4] = PACK_TAG;
    k[5..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The newest first-delivery time in a pack (its header).
pub(super) fn pack_newest(value: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(
        value.get(..PACK_HEADER)?.try_into().ok()?,
    ))
}

/// One id of a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PackedId {
    pub(super) hash: [u8; 16],
    pub(super) ts_ms: i64,
    pub(super) partition: i32,
    pub(super) offset: i64,
}

impl PackedId {
    fn push(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.hash);
        out.extend_from_slice(&self.ts_ms.to_be_bytes());
        out.extend_from_slice(&self.partition.to_be_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
    }

    fn read(raw: &[u8]) -> PackedId {
        let at = |r: std::ops::Range<usize>| &raw[r];
        PackedId {
            hash: at(0..16).try_into().expect("16 bytes"),
            ts_ms: i64::from_be_bytes(at(16..24).try_into().expect("8 bytes")),
            partition: i32::from_be_bytes(at(24..28).try_into().expect("4 bytes")),
            offset: i64::from_be_bytes(at(28..36).try_into().expect("8 bytes")),
        }
    }
}

/// The ids of a pack, or an error naming the damage.
pub(super) fn pack_ids(
    key: &[u8],
    value: &[u8],
) -> Result<impl Iterator<Item = PackedId>, SpeedError> {
    let body = value.get(PACK_HEADER..).unwrap_or_default();
    if value.len() < PACK_HEADER || body.len() % PACK_ENTRY != 0 {
        return Err(SpeedError::Store(format!(
            "dedup pack {key:02x?} is {} bytes: not a header and whole ids",
            value.len()
        )));
    }
    Ok(body.chunks_exact(PACK_ENTRY).map(PackedId::read))
}

/// Packs ids (in memory until written): the value of one pack key.
#[derive(Debug, Default)]
pub(super) struct Pack {
    pub(super) body: Vec<u8>,
}

impl Pack {
    pub(super) fn push(&mut self, id: PackedId) {
        let newest = pack_newest(&self.body).map_or(id.ts_ms, |n| n.max(id.ts_ms));
        if self.body.is_empty() {
            self.body.extend_from_slice(&[0; PACK_HEADER]);
        }
        self.body[..PACK_HEADER].copy_from_slice(&newest.to_be_bytes());
        id.push(&mut self.body);
    }

    pub(super) fn len(&self) -> usize {
        self.body.len().saturating_sub(PACK_HEADER) / PACK_ENTRY
    }
}

/// Whether compaction may drop a dedup pack: every id in it first
/// delivered before its generation's cutoff (none set: keep).
pub(super) fn dedup_expired(cutoffs: &DashMap<Generation, i64>, key: &[u8], value: &[u8]) -> bool {
    let Some(g) = key_generation(key) else {
        return false;
    };
    match (pack_newest(value), cutoffs.get(&g)) {
        (Some(ts), Some(cutoff)) => ts < *cutoff,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A damaged pack is an error naming it, not a silent loss of ids.
    #[test]
    fn a_damaged_pack_is_refused() {
        let mut pack = Pack::default();
        let id = PackedId {
            hash: [7; 16],
            ts_ms: 42,
            partition: 3,
            offset: 9,
        };
        pack.push(id);
        assert_eq!(pack_newest(&pack.body), Some(42));
        let ids: Vec<_> = pack_ids(b"k", &pack.body).unwrap().collect();
        assert_eq!(ids, vec![id]);
        let err = pack_ids(b"k", &pack.body[..30]).err().unwrap().to_string();
        assert!(err.contains("not a header and whole ids"), "{err}");
    }

    /// Dedup keys are stored: the hash must never change between builds.
    #[test]
    fn dedup_keys_are_stable_and_length_prefixed() {
        let key = dedup_key(3, "acme", "u1", "e1");
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        // The reference XXH3 agrees (Python: xxhash.xxh3_128_hexdigest of the
        // same bytes, seed 0x776566742d646564).
        assert_eq!(hex, "00000003425de7c39417a7f4dc2b2bfe9a0a7949");
        assert_eq!(&key[..4], &3u32.to_be_bytes());
        assert_ne!(
            dedup_key(0, "ab", "c", "e")[4..],
            dedup_key(0, "a", "bc", "e")[4..]
        );
        assert_eq!(dedup_key(0, "acme", "u1", "e1")[4..], key[4..]);
        // Long identities hash the same way (beyond the stack buffer).
        let long = "x".repeat(300);
        assert_eq!(
            dedup_key(0, "acme", &long, "e1"),
            dedup_key(0, "acme", &long, "e1")
        );
        assert_ne!(
            dedup_key(0, "acme", &long, "e1"),
            dedup_key(0, "acme", &long, "e2")
        );
    }
}
