//! The binary encoding of partials (RocksDB values, SST values).
//!
//! `[version: u8] ‖ postcard(Partial)`. Version 1 is the only one so far; a
//! reader refuses versions it does not know rather than misread them.
//! postcard writes integers as varints, so a count partial takes 3 bytes and
//! a distinct-count sketch in list mode a few dozen.

use crate::agg::Partial;
use crate::spec::Aggregate;

pub const PARTIAL_FORMAT_VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("empty value")]
    Empty,
    #[error(
        "partial format version {0} is not supported (this build reads {PARTIAL_FORMAT_VERSION})"
    )]
    UnknownVersion(u8),
    #[error("corrupt partial: {0}")]
    Corrupt(String),
    #[error("partial of kind {found} where aggregate {expected} was expected")]
    WrongKind {
        found: &'static str,
        expected: &'static str,
    },
}

pub fn encode_partial(p: &Partial) -> Vec<u8> {
    let mut out = Vec::new();
    encode_partial_into(&mut out, p);
    out
}

/// [`encode_partial`] into `out` (cleared first), reusing its allocation.
pub fn encode_partial_into(out: &mut Vec<u8>, p: &Partial) {
    encode_versioned_into(out, PARTIAL_FORMAT_VERSION, p);
}

/// `[version] ‖ postcard(value)` into `out` (cleared first, its allocation
/// reused).
fn encode_versioned_into(out: &mut Vec<u8>, version: u8, value: &impl serde::Serialize) {
    out.clear();
    out.push(version);
    // Encoding into a Vec cannot fail: every type in Partial is serialisable.
    let body = postcard::to_extend(value, std::mem::take(out)).expect("partials always encode");
    *out = body;
}

pub fn decode_partial(bytes: &[u8]) -> Result<Partial, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError::Empty),
        Some((&PARTIAL_FORMAT_VERSION, body)) => {
            postcard::from_bytes(body).map_err(|e| CodecError::Corrupt(e.to_string()))
        }
        Some((&v, _)) => Err(CodecError::UnknownVersion(v)),
    }
}

/// Decodes and checks the partial belongs to `aggregate`.
pub fn decode_partial_for(aggregate: &Aggregate, bytes: &[u8]) -> Result<Partial, CodecError> {
    let p = decode_partial(bytes)?;
    if aggregate.accepts(&p) {
        Ok(p)
    } else {
        Err(CodecError::WrongKind {
            found: p.kind(),
            expected: aggregate.name(),
        })
    }
}

/// One bucket group: (bucket size in ms, bucket index, the partials of every
/// feature with that bucket size, by feature index ascending).
pub type BucketGroup = (i64, i64, Vec<(u16, Partial)>);

/// Format tag of a bucket record: the bucket groups of one user whose
/// buckets start on the same UTC day (the speed view's values).
pub const RECORD_FORMAT_VERSION: u8 = 2;

/// Encodes a bucket record into `out` (cleared first, its allocation
/// reused): `[version] ‖ postcard(Vec<BucketGroup>)`, groups ascending by
/// (size, bucket). Feature indexes are positions in the spec, which is safe
/// because a store is bound to its spec's hash.
pub fn encode_record_into(out: &mut Vec<u8>, groups: &[BucketGroup]) {
    encode_versioned_into(out, RECORD_FORMAT_VERSION, &groups);
}

/// One partial as a batch collects it before encoding: (bucket size,
/// bucket, feature index, partial).
pub type FlatPartial = (i64, i64, u16, Partial);

/// [`encode_record_into`] straight from flat partials sorted by (size,
/// bucket, feature index): the same bytes as their nested
/// [`BucketGroup`]s, without building them.
pub fn encode_flat_record_into(out: &mut Vec<u8>, partials: &[FlatPartial]) {
    debug_assert!(
        partials.is_sorted_by_key(|(size, bucket, index, _)| (*size, *bucket, *index)),
        "flat partials must be sorted by (size, bucket, index)"
    );
    encode_versioned_into(out, RECORD_FORMAT_VERSION, &FlatGroups(partials));
}

/// Serializes flat partials as `Vec<BucketGroup>` does: a sequence of
/// `(size, bucket, [(index, partial)])`, one per run of equal (size, bucket).
struct FlatGroups<'a>(&'a [FlatPartial]);

/// One run of a [`FlatGroups`]: serialized as `Vec<(u16, Partial)>`.
struct FlatRun<'a>(&'a [FlatPartial]);

fn runs(partials: &[FlatPartial]) -> impl Iterator<Item = &[FlatPartial]> + Clone {
    partials.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1))
}

impl serde::Serialize for FlatGroups<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(runs(self.0).count()))?;
        for run in runs(self.0) {
            seq.serialize_element(&(run[0].0, run[0].1, FlatRun(run)))?;
        }
        seq.end()
    }
}

impl serde::Serialize for FlatRun<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for (_, _, index, partial) in self.0 {
            seq.serialize_element(&(index, partial))?;
        }
        seq.end()
    }
}

pub fn decode_record(bytes: &[u8]) -> Result<Vec<BucketGroup>, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError::Empty),
        Some((&RECORD_FORMAT_VERSION, body)) => {
            postcard::from_bytes(body).map_err(|e| CodecError::Corrupt(e.to_string()))
        }
        Some((&v, _)) => Err(CodecError::UnknownVersion(v)),
    }
}
