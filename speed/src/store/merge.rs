//! The merge operator of the `partials` column family: bucket records are
//! monoids, so RocksDB folds merge operands lazily and compaction collapses
//! them, with no read-modify-write on the apply path.

use rust_rocksdb::MergeOperands;
use weft_core::Partial;
use weft_core::codec::{BucketGroup, decode_record, encode_record_into};
use weft_core::spec::Aggregate;

/// Merges `group`'s partials into `into` feature by feature (both sorted by
/// feature index), or returns the index of a feature the spec lacks.
fn merge_group(
    aggregates: &[Aggregate],
    into: &mut Vec<(u16, Partial)>,
    group: Vec<(u16, Partial)>,
) -> Result<(), u16> {
    for (index, p) in group {
        let aggregate = aggregates.get(usize::from(index)).ok_or(index)?;
        match into.binary_search_by_key(&index, |(i, _)| *i) {
            Ok(at) => aggregate.merge(&mut into[at].1, &p),
            Err(at) => into.insert(at, (index, p)),
        }
    }
    Ok(())
}

/// The merge operator: folds encoded bucket records group by group and
/// feature by feature with the spec's aggregates (indexed like
/// `spec.features`).
pub(super) fn merge_records(
    aggregates: &[Aggregate],
    existing: Option<&[u8]>,
    operands: &MergeOperands,
) -> Option<Vec<u8>> {
    let mut acc: Vec<BucketGroup> = match existing.map(decode_record) {
        None => Vec::new(),
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            tracing::error!(error = %e, "corrupt stored bucket record");
            return None;
        }
    };
    for op in operands {
        let record = match decode_record(op) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "corrupt merge operand");
                return None;
            }
        };
        for (size, bucket, group) in record {
            let at = match acc.binary_search_by_key(&(size, bucket), |(s, b, _)| (*s, *b)) {
                Ok(at) => at,
                Err(at) => {
                    acc.insert(at, (size, bucket, Vec::new()));
                    at
                }
            };
            if let Err(index) = merge_group(aggregates, &mut acc[at].2, group) {
                tracing::error!(index, "merge operand of a feature the spec lacks");
                return None;
            }
        }
    }
    let mut out = Vec::new();
    encode_record_into(&mut out, &acc);
    Some(out)
}
