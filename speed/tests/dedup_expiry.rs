//! Dedup packs whose ids are all older than the cutoff disappear at
//! compaction; newer ones stay and still answer lookups.

use std::sync::Arc;

use anyhow::Result;
use weft_core::FeatureSpec;
use weft_speed::store::{DedupIndex, PendingBatch, SpeedStore, dedup_key};

#[test]
fn expired_dedup_ids_are_dropped_at_compaction() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let spec = Arc::new(FeatureSpec::parse(
        "[[feature]]\nname = \"n\"\naggregate = \"count\"\nwindow = \"7d\"\n",
    )?);
    let store = SpeedStore::open(dir.path(), spec, false)?;
    let key = |i: i64| dedup_key(0, "acme", &format!("u{}", i % 7), &format!("e{i}"));
    // Two batches: one dedup pack each.
    let mut old_batch = PendingBatch::default();
    let mut recent_batch = PendingBatch::default();
    for i in 0..100 {
        old_batch.remember_id(key(i), 1_000 + i, 0, i); // old deliveries
        recent_batch.remember_id(key(1_000 + i), 50_000 + i, 0, 1_000 + i); // recent ones
    }
    store.commit(0, old_batch)?;
    store.commit(0, recent_batch)?;
    assert_eq!(store.dedup_len()?, 200);

    // Nothing expires until a cutoff is set.
    store.compact_dedup()?;
    assert_eq!(store.dedup_len()?, 200);

    // Another generation's cutoff does not touch generation 0's ids (a
    // generation being built replays from further back than the ready one).
    store.expire_dedup_before(1, 1_000_000);
    store.compact_dedup()?;
    assert_eq!(store.dedup_len()?, 200);

    // A pack goes when all its ids are older than the cutoff.
    store.expire_dedup_before(0, 10_000);
    store.expire_dedup_before(0, 5_000); // the cutoff never moves back
    store.compact_dedup()?;
    assert_eq!(store.dedup_len()?, 100);
    let index = DedupIndex::load(&store, 0)?;
    assert_eq!(index.len(), 100);
    assert!((0..100).all(|i| index.first_delivery(&key(i)).is_none()));
    assert!((0..100).all(|i| index.first_delivery(&key(1_000 + i)) == Some(50_000 + i)));
    Ok(())
}
