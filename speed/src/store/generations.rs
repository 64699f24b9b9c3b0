//! Generations: the speed state paired with one batch view. A new view
//! starts a generation from its boundary (offsets and the dedup ids at or
//! below it), which replays until it catches up with the ready one, then
//! becomes ready atomically; the previous one stays until the next switch.

use std::collections::HashMap;

use rust_rocksdb::WriteBatch;

use super::keys::{
    CF_DEDUP, CF_META, CF_OFFSETS, CF_PARTIALS, CF_TRENDING, META_BUILDING, META_READY, gen_prefix,
    offset_key, view_key,
};
use super::pack::{PACK_MAX_IDS, Pack, pack_ids, pack_key};
use super::{Generation, SpeedStore, db_err};
use crate::SpeedError;

impl SpeedStore {
    fn meta_generation(&self, key: &[u8]) -> Result<Option<Generation>, SpeedError> {
        let meta = self.cf(CF_META)?;
        match self
            .db
            .get_cf(meta, key)
            .map_err(db_err("reading generations"))?
        {
            None => Ok(None),
            Some(v) => Ok(Some(Generation::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| SpeedError::Corrupt("generation record".into()))?,
            ))),
        }
    }

    /// The generation readers use (0 until a view's generation is ready).
    pub fn ready_generation(&self) -> Result<Generation, SpeedError> {
        Ok(self.meta_generation(META_READY)?.unwrap_or(0))
    }

    /// The generation being built from a newer view's boundary, if any.
    pub fn building_generation(&self) -> Result<Option<Generation>, SpeedError> {
        self.meta_generation(META_BUILDING)
    }

    /// The batch view generation `g` was built from (0 for generation 0).
    /// Generations count up; views need not: a rollback builds a newer
    /// generation of an older view.
    pub fn view_of(&self, g: Generation) -> Result<u64, SpeedError> {
        let meta = self.cf(CF_META)?;
        match self
            .db
            .get_cf(meta, view_key(g))
            .map_err(db_err("reading generations"))?
        {
            // Stores from before rollbacks: generation N is view N.
            None => Ok(u64::from(g)),
            Some(v) => Ok(u64::from_be_bytes(v.as_slice().try_into().map_err(
                |_| SpeedError::Corrupt(format!("view record of generation {g}")),
            )?)),
        }
    }

    /// Starts generation `new` for batch view `view`, whose boundary is
    /// `boundary` (`O_p` per partition; absent partitions: nothing, so
    /// from offset 0): offsets `O_p + 1`, and the dedup ids of generation
    /// `from` first delivered at or below `O_p`. A generation being built
    /// is abandoned. One WriteBatch.
    pub fn start_generation(
        &self,
        from: Generation,
        new: Generation,
        view: u64,
        boundary: &HashMap<i32, i64>,
        partitions: &[i32],
    ) -> Result<(), SpeedError> {
        let (offsets, dedup, meta) = (self.cf(CF_OFFSETS)?, self.cf(CF_DEDUP)?, self.cf(CF_META)?);
        let mut wb = WriteBatch::default();
        let abandoned = self.building_generation()?;
        if let Some(old) = abandoned {
            self.delete_generation(&mut wb, old)?;
        }
        for &p in partitions {
            let next = boundary.get(&p).map_or(0, |o| o + 1);
            wb.put_cf(offsets, offset_key(new, p), next.to_be_bytes());
        }
        // Packs in write order, so a later delivery of an id still comes
        // after an earlier one.
        let mut seq = self.next_pack_seq();
        let mut pack = Pack::default();
        self.packs(from, |key, value| {
            for id in pack_ids(key, value)? {
                if boundary.get(&id.partition).is_some_and(|b| id.offset <= *b) {
                    pack.push(id);
                }
                if pack.len() == PACK_MAX_IDS {
                    wb.put_cf(dedup, pack_key(new, seq), &std::mem::take(&mut pack).body);
                    seq += 1;
                }
            }
            Ok(())
        })?;
        if pack.len() > 0 {
            wb.put_cf(dedup, pack_key(new, seq), &pack.body);
        }
        wb.put_cf(meta, view_key(new), view.to_be_bytes());
        wb.put_cf(meta, META_BUILDING, new.to_be_bytes());
        self.db
            .write_opt(&wb, &self.write_opts)
            .map_err(db_err("starting a generation"))?;
        if let Some(old) = abandoned {
            self.holders.retain(|(g, _)| *g != old);
        }
        Ok(())
    }

    /// Makes generation `g` ready, atomically. The previously ready
    /// generation stays (frozen) until the next switch, so readers that
    /// picked it before this switch finish on it (the serving layer's
    /// (batch view, generation) pairs); every generation older than it is
    /// deleted.
    pub fn finish_generation(&self, g: Generation) -> Result<(), SpeedError> {
        let meta = self.cf(CF_META)?;
        let previous = self.ready_generation()?;
        let mut wb = WriteBatch::default();
        wb.put_cf(meta, META_READY, g.to_be_bytes());
        wb.delete_cf(meta, META_BUILDING);
        let kept = previous.min(g);
        for cf in [CF_PARTIALS, CF_OFFSETS, CF_DEDUP, CF_TRENDING] {
            wb.delete_range_cf(self.cf(cf)?, gen_prefix(0), gen_prefix(kept));
        }
        wb.delete_range_cf(meta, view_key(0), view_key(kept));
        self.db
            .write_opt(&wb, &self.write_opts)
            .map_err(db_err("finishing a generation"))?;
        self.holders.retain(|(h, _)| *h >= kept);
        self.dedup_cutoff.retain(|h, _| *h >= kept);
        Ok(())
    }

    fn delete_generation(&self, wb: &mut WriteBatch, g: Generation) -> Result<(), SpeedError> {
        let end = g
            .checked_add(1)
            .map_or_else(|| vec![0xFF; 5], |n| gen_prefix(n).to_vec());
        for cf in [CF_PARTIALS, CF_OFFSETS, CF_DEDUP, CF_TRENDING] {
            wb.delete_range_cf(self.cf(cf)?, gen_prefix(g).as_slice(), end.as_slice());
        }
        wb.delete_cf(self.cf(CF_META)?, view_key(g));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use weft_core::FeatureSpec;

    use super::*;
    use crate::store::PendingBatch;
    use crate::store::keys::{group_user_prefix, holder};
    use crate::store::tests::view;

    /// The holder set must never hide a user with partials: after commits,
    /// after a reopen (loaded from the keys), across a generation switch.
    #[test]
    fn holders_track_commits_reopens_and_generations() {
        let dir = tempfile::tempdir().unwrap();
        let spec = Arc::new(
            FeatureSpec::parse(include_str!("../../../deploy/features.example.toml")).unwrap(),
        );
        let t = 1_700_000_000_000;
        let count = |s: &SpeedStore, g, user| s.user_partials(g, "acme", user, None).unwrap().len();
        {
            let store = SpeedStore::open(dir.path(), spec.clone(), false).unwrap();
            assert_eq!(count(&store, 0, "a"), 0);
            let mut batch = PendingBatch::default();
            batch.apply(&spec, 0, &view("a", t));
            batch.consumed(0, 0);
            store.commit(0, batch).unwrap();
            assert!(count(&store, 0, "a") > 0);
            assert_eq!(count(&store, 0, "b"), 0);
            assert_eq!(count(&store, 1, "a"), 0);
        }
        let store = SpeedStore::open(dir.path(), spec.clone(), false).unwrap();
        assert!(
            count(&store, 0, "a") > 0,
            "reopened: a's partials are found"
        );
        assert!(
            store
                .holders
                .contains(&holder(&group_user_prefix(0, "acme", "a")))
        );
        store
            .start_generation(0, 1, 1, &HashMap::from([(0, 0)]), &[0])
            .unwrap();
        let mut batch = PendingBatch::default();
        batch.apply(&spec, 1, &view("b", t + 1));
        batch.consumed(0, 1);
        store.commit(1, batch).unwrap();
        assert!(count(&store, 1, "b") > 0);
        assert_eq!(count(&store, 1, "a"), 0);
        store.finish_generation(1).unwrap();
        // Generation 0 stays readable until the next switch.
        assert!(count(&store, 0, "a") > 0);
        store
            .start_generation(1, 2, 2, &HashMap::from([(0, 1)]), &[0])
            .unwrap();
        store.finish_generation(2).unwrap();
        assert_eq!(store.view_of(2).unwrap(), 2);
        assert_eq!(count(&store, 0, "a"), 0);
        assert!(
            !store.holders.iter().any(|h| h.0 == 0),
            "generation 0 is pruned from the holders"
        );
        assert!(
            count(&store, 1, "b") > 0,
            "generation 1 stays until the next switch"
        );
        // A rollback: generation 3 of view 1.
        store
            .start_generation(2, 3, 1, &HashMap::from([(0, 0)]), &[0])
            .unwrap();
        assert_eq!(store.building_generation().unwrap(), Some(3));
        assert_eq!(store.view_of(3).unwrap(), 1);
        store.finish_generation(3).unwrap();
        assert_eq!(
            (store.ready_generation().unwrap(), store.view_of(3).unwrap()),
            (3, 1)
        );
        assert_eq!(
            store.view_of(2).unwrap(),
            2,
            "the previous generation's view is kept"
        );
        // Generation 1 is deleted: its record goes with it (then the
        // fallback, the generation's number, answers).
        let meta = store.cf(CF_META).unwrap();
        assert!(store.db.get_cf(meta, view_key(1)).unwrap().is_none());
    }
}
