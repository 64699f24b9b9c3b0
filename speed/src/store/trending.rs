//! Trending items: the speed layer's popularity, for recommendations before
//! a batch view knows a tenant (cold start).
//!
//! Each applied event that names an item adds its kind's weight
//! ([`weft_core::EventKind::popularity_weight`]) to the item's score in its
//! tenant as a whole and in its category, halved for every
//! [`TRENDING_HALF_LIFE_MS`] of event time. A score is stored as
//! `(reference time, score at that time)`; two scores add by decaying the
//! older to the newer reference, which is associative and commutative, so
//! writes are RocksDB merges (no read-modify-write on the apply path).
//!
//! Keys of the `trending` column family:
//! `gen ‖ str(tenant) ‖ str(category) ‖ str(item)` (the empty category is
//! the whole tenant). Scores live in generations like partials: a
//! generation counts exactly the events it applied (those after its batch
//! view's boundary), and a restart or a redelivery counts nothing twice
//! (scores commit in the batch's WriteBatch, after dedup).

use rust_rocksdb::MergeOperands;
use weft_core::Event;
use weft_core::keys::push_str;
use weft_core::spec::DAY_MS;

use super::Generation;
use super::keys::gen_prefix;

/// The half-life of a trending score in event time.
pub const TRENDING_HALF_LIFE_MS: i64 = DAY_MS;

/// A decayed score: its value at `ref_ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Decayed {
    pub(crate) ref_ms: i64,
    pub(crate) score: f64,
}

impl Decayed {
    /// `self` plus `other`, at the later of the two reference times.
    pub(crate) fn add(self, other: Decayed) -> Decayed {
        let (new, old) = if self.ref_ms >= other.ref_ms {
            (self, other)
        } else {
            (other, self)
        };
        let age = (new.ref_ms - old.ref_ms) as f64 / TRENDING_HALF_LIFE_MS as f64;
        Decayed {
            ref_ms: new.ref_ms,
            score: new.score + old.score * (-age).exp2(),
        }
    }

    /// The score's base-2 logarithm decayed to time 0: scores of any
    /// reference times compare on it without underflow.
    pub(crate) fn log_at_epoch(self) -> f64 {
        self.score.log2() + self.ref_ms as f64 / TRENDING_HALF_LIFE_MS as f64
    }

    pub(crate) fn encode(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.ref_ms.to_be_bytes());
        out[8..].copy_from_slice(&self.score.to_be_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Decayed> {
        let bytes: &[u8; 16] = bytes.try_into().ok()?;
        Some(Decayed {
            ref_ms: i64::from_be_bytes(bytes[..8].try_into().ok()?),
            score: f64::from_be_bytes(bytes[8..].try_into().ok()?),
        })
    }
}

/// The key prefix of one tenant's category in generation `g` (`""`: the
/// whole tenant).
pub(crate) fn trending_prefix(g: Generation, tenant: &str, category: &str) -> Vec<u8> {
    let mut k = Vec::new();
    push_trending_prefix(&mut k, g, tenant, category);
    k
}

/// Appends [`trending_prefix`] to `out`.
fn push_trending_prefix(out: &mut Vec<u8>, g: Generation, tenant: &str, category: &str) {
    out.extend_from_slice(&gen_prefix(g));
    push_str(out, tenant);
    push_str(out, category);
}

/// Decodes the item of a key under a [`trending_prefix`] (the rest of it).
pub(crate) fn item_of(rest: &[u8]) -> Option<String> {
    let body = rest.strip_suffix(&[0x00, 0x01])?;
    let mut out = Vec::with_capacity(body.len());
    let mut bytes = body.iter();
    while let Some(&b) = bytes.next() {
        out.push(b);
        if b == 0 && bytes.next() != Some(&0xFF) {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

/// Adds `e` to `into` (key to score) under the whole tenant and its
/// category, if it names an item and its kind has a weight. `key` is
/// scratch space: a key already in `into` costs no allocation.
pub(crate) fn observe(
    into: &mut hashbrown::HashMap<Vec<u8>, Decayed, foldhash::fast::RandomState>,
    key: &mut Vec<u8>,
    g: Generation,
    e: &Event,
) {
    let weight = e.kind.popularity_weight();
    if e.item_id.is_empty() || weight == 0.0 {
        return;
    }
    let score = Decayed {
        ref_ms: e.ts_ms,
        score: weight,
    };
    let categories: &[&str] = if e.category.is_empty() {
        &[""]
    } else {
        &["", &e.category]
    };
    for category in categories {
        key.clear();
        push_trending_prefix(key, g, &e.tenant, category);
        push_str(key, &e.item_id);
        into.entry_ref(key.as_slice())
            .and_modify(|s| *s = s.add(score))
            .or_insert(score);
    }
}

/// The merge operator of the `trending` column family: adds the scores.
/// A value that does not decode is skipped (it cannot be written by this
/// build), keeping the others.
pub(super) fn merge_scores(
    _key: &[u8],
    existing: Option<&[u8]>,
    ops: &MergeOperands,
) -> Option<Vec<u8>> {
    existing
        .into_iter()
        .chain(ops)
        .filter_map(Decayed::decode)
        .reduce(Decayed::add)
        .map(|s| s.encode().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_decays_the_older_score_to_the_newer_reference_in_any_order() {
        let a = Decayed {
            ref_ms: 0,
            score: 4.0,
        };
        let b = Decayed {
            ref_ms: TRENDING_HALF_LIFE_MS,
            score: 1.0,
        };
        let c = Decayed {
            ref_ms: 2 * TRENDING_HALF_LIFE_MS,
            score: 8.0,
        };
        assert_eq!(a.add(b), b.add(a));
        assert_eq!(a.add(b).score, 3.0);
        let left = a.add(b).add(c);
        let right = a.add(b.add(c));
        assert_eq!(left.ref_ms, right.ref_ms);
        assert!((left.score - right.score).abs() < 1e-12);
        assert!((left.score - 9.5).abs() < 1e-12);
        // Ranks on logs agree with ranks at a common time.
        assert!(c.log_at_epoch() > a.log_at_epoch());
        assert_eq!(Decayed::decode(&c.encode()), Some(c));
        assert_eq!(Decayed::decode(&[1, 2, 3]), None);
    }

    #[test]
    fn item_keys_round_trip_with_escaped_bytes() {
        for item in ["i1", "a\u{0}b", ""] {
            let mut key = Vec::new();
            push_str(&mut key, item);
            assert_eq!(item_of(&key).as_deref(), Some(item));
        }
        assert_eq!(item_of(b"abc"), None);
    }
}
