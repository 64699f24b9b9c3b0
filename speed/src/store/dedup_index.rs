//! The dedup index: every dedup id of one generation, in memory, which
//! each event is looked up in (RocksDB only keeps the ids durable).

use super::pack::DedupKey;
use super::{Generation, SpeedStore};
use crate::SpeedError;
use crate::idtable::IdTable;

/// Shards of a [`DedupIndex`] (by the top bits of the hash): expiry sweeps
/// one at a time, so no sweep stops the fold for long.
const INDEX_SHARDS: usize = 16;

/// The dedup ids of one generation, in memory: what every event is looked
/// up in. The apply thread owns it and adds each id as it folds the event,
/// so it runs ahead of the store by the batches not yet committed (see
/// [`crate::committer`]); if a commit fails, the apply thread stops and
/// drops it, and the next one loads the store's ids again
/// ([`SpeedStore::dedup_ids`]). 24 bytes per id over the table's load
/// factor (3/8 to 3/4, [`IdTable`]): 32-64 bytes an id, for every id
/// within two dedup horizons (see the consumer's expiry).
#[derive(Debug, Default)]
pub(crate) struct DedupIndex {
    g: Option<Generation>,
    shards: Vec<IdTable>,
    /// Per shard, the cutoff it was last swept to.
    swept: Vec<i64>,
    next_sweep: usize,
}

impl DedupIndex {
    #[inline]
    fn split(key: &DedupKey) -> (u64, u64) {
        (
            u64::from_be_bytes(key[4..12].try_into().expect("8 bytes")),
            u64::from_be_bytes(key[12..20].try_into().expect("8 bytes")),
        )
    }

    /// The index of generation `g` as the store holds it.
    pub(crate) fn load(store: &SpeedStore, g: Generation) -> Result<DedupIndex, SpeedError> {
        let mut index = DedupIndex {
            g: Some(g),
            shards: vec![IdTable::default(); INDEX_SHARDS],
            swept: vec![i64::MIN; INDEX_SHARDS],
            next_sweep: 0,
        };
        store.dedup_ids(g, |key, ts_ms| index.remember(&key, ts_ms))?;
        Ok(index)
    }

    /// Loads generation `g`'s ids unless they are the ones held.
    pub(super) fn ensure(&mut self, store: &SpeedStore, g: Generation) -> Result<(), SpeedError> {
        if self.g != Some(g) {
            *self = DedupIndex::load(store, g)?;
        }
        Ok(())
    }

    #[inline]
    fn shard(hi: u64) -> usize {
        (hi >> 60) as usize % INDEX_SHARDS
    }

    /// Whether `key`'s delivery at `kafka_ts_ms` is its first within
    /// `horizon_ms` (Kafka time), holding it as first delivered then if
    /// so; one hash probe.
    #[inline]
    pub(super) fn admit(&mut self, key: &DedupKey, kafka_ts_ms: i64, horizon_ms: i64) -> bool {
        let since = kafka_ts_ms.saturating_sub(horizon_ms);
        self.hold(key, kafka_ts_ms, |held| held >= since)
    }

    /// Holds `key` as first delivered at `ts_ms`, unless it is held already
    /// and `stands` says that time stays: whether it was held anew.
    #[inline]
    fn hold(&mut self, key: &DedupKey, ts_ms: i64, stands: impl FnOnce(i64) -> bool) -> bool {
        let (hi, lo) = Self::split(key);
        self.shards[Self::shard(hi)].hold(hi, lo, ts_ms, stands)
    }

    /// Asks the CPU to start loading where `key` is held (a hint: see
    /// [`IdTable::prefetch`]).
    #[inline]
    pub(crate) fn prefetch(&self, key: &DedupKey) {
        let (hi, lo) = Self::split(key);
        if let Some(shard) = self.shards.get(Self::shard(hi)) {
            shard.prefetch(lo);
        }
    }

    /// The Kafka time of `key`'s first delivery, if held. (The generation
    /// part of the key is not compared: the index holds one generation.)
    /// Tests only: the fold asks [`DedupIndex::admit`].
    #[cfg(test)]
    pub(crate) fn first_delivery(&self, key: &DedupKey) -> Option<i64> {
        let (hi, lo) = Self::split(key);
        self.shards.get(Self::shard(hi))?.get(hi, lo)
    }

    /// Holds `key` as first delivered at `ts_ms` (replacing an earlier
    /// delivery, which then was beyond the horizon).
    fn remember(&mut self, key: &DedupKey, ts_ms: i64) {
        self.hold(key, ts_ms, |_| false);
    }

    /// Drops generation `g`'s ids first delivered before `cutoff_ms`, as
    /// [`SpeedStore::expire_dedup_before`] lets compaction do: one shard
    /// per call, and only a shard last swept more than `slack_ms` before
    /// the cutoff, so the sweeps' cost stays a small fraction of the fold's
    /// and ids outlive the cutoff by at most `slack_ms`.
    pub(crate) fn expire_before(&mut self, g: Generation, cutoff_ms: i64, slack_ms: i64) {
        if self.g != Some(g) || self.shards.is_empty() {
            return;
        }
        let i = self.next_sweep % self.shards.len();
        self.next_sweep = self.next_sweep.wrapping_add(1);
        if cutoff_ms.saturating_sub(self.swept[i]) > slack_ms {
            self.shards[i].retain(|ts_ms| ts_ms >= cutoff_ms);
            self.swept[i] = cutoff_ms;
        }
    }

    /// Number of ids held.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(IdTable::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use weft_core::FeatureSpec;

    use super::*;
    use crate::store::pack::dedup_key;
    use crate::store::tests::view;
    use crate::store::{Delivery, PendingBatch};

    /// A batch folded while the previous one is still being committed sees
    /// that batch's ids; another generation's index starts from the store,
    /// which knows only committed batches; a reloaded index is the store's.
    #[test]
    fn dedup_sees_the_batch_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let spec = Arc::new(
            FeatureSpec::parse(include_str!("../../../deploy/features.example.toml")).unwrap(),
        );
        let store = SpeedStore::open(dir.path(), spec, false).unwrap();
        let t = 1_700_000_000_000;
        let e = view("a", t);
        let delivery = |offset| Delivery {
            event: &e,
            partition: 0,
            offset,
            kafka_ts_ms: t + offset,
        };
        // Folds `ds` into a new batch of generation `g`: the batch, and
        // (applied, duplicates).
        let fold = |g, ds: &[Delivery<'_>], index: &mut DedupIndex| {
            let mut batch = PendingBatch::default();
            let done = batch.apply_new(&store, g, ds, 3_600_000, index).unwrap();
            (batch, (done.applied, done.duplicates))
        };
        let mut index = DedupIndex::default();
        let (first, counts) = fold(0, &[delivery(0), delivery(1)], &mut index);
        assert_eq!(counts, (1, 1), "within a batch");
        // `first` is not committed: the store cannot know its ids.
        let (_, counts) = fold(0, &[delivery(2)], &mut index);
        assert_eq!(counts, (0, 1), "the batch in flight");
        assert_eq!(index.len(), 1);
        // Another generation starts from the store: nothing committed yet.
        let (_, counts) = fold(1, &[delivery(3)], &mut index);
        assert_eq!(counts, (1, 0));
        // Once committed, a fresh index (as after a restart) knows it.
        store.commit(0, first).unwrap();
        let (_, counts) = fold(0, &[delivery(5)], &mut DedupIndex::default());
        assert_eq!(counts, (0, 1));
        assert_eq!(store.dedup_len().unwrap(), 1);
        // Beyond the horizon the id is applied again, and the later first
        // delivery is what a reloaded index holds.
        let late = Delivery {
            kafka_ts_ms: t + 3_600_001,
            ..delivery(6)
        };
        let (again, counts) = fold(0, &[late], &mut DedupIndex::default());
        assert_eq!(counts, (1, 0));
        store.commit(0, again).unwrap();
        let reloaded = DedupIndex::load(&store, 0).unwrap();
        let key = dedup_key(0, "acme", "a", &e.event_id);
        assert_eq!(reloaded.first_delivery(&key), Some(t + 3_600_001));
        assert_eq!(reloaded.len(), 1);
    }

    /// Expiry sweeps one shard per call and only shards that lag the
    /// cutoff by more than the slack; ids at or after the cutoff stay.
    #[test]
    fn the_index_expires_ids_shard_by_shard() {
        let mut index = DedupIndex {
            g: Some(0),
            shards: vec![IdTable::default(); INDEX_SHARDS],
            swept: vec![i64::MIN; INDEX_SHARDS],
            next_sweep: 0,
        };
        let keys: Vec<DedupKey> = (0..2_000)
            .map(|i| dedup_key(0, "acme", "u", &format!("e{i}")))
            .collect();
        for (i, k) in keys.iter().enumerate() {
            index.remember(k, i as i64);
        }
        assert_eq!(index.len(), 2_000);
        index.expire_before(1, 1_000, 0); // another generation: nothing
        assert_eq!(index.len(), 2_000);
        for _ in 0..INDEX_SHARDS - 1 {
            index.expire_before(0, 1_000, 0);
        }
        let left = index.len();
        assert!(left > 1_000 && left < 2_000, "{left}");
        index.expire_before(0, 1_000, 0);
        assert_eq!(index.len(), 1_000);
        // Within the slack of the last sweep: no shard is swept again.
        for _ in 0..INDEX_SHARDS {
            index.expire_before(0, 1_500, 500);
        }
        assert_eq!(index.len(), 1_000);
        assert!(
            keys[..1_000]
                .iter()
                .all(|k| index.first_delivery(k).is_none())
        );
        assert!(
            keys[1_000..]
                .iter()
                .enumerate()
                .all(|(i, k)| index.first_delivery(k) == Some(1_000 + i as i64))
        );
    }

    /// Dedup packs whose ids are all older than the cutoff disappear at
    /// compaction; newer ones stay and still answer lookups.
    #[test]
    fn expired_dedup_ids_are_dropped_at_compaction() -> anyhow::Result<()> {
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
}
