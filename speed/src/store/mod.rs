//! The speed view in RocksDB.
//!
//! Column families:
//! * `partials`: `gen (u32 BE) ‖ 'u' ‖ str(tenant) ‖ str(user) ‖ i64(day)`
//!   to a bucket record ([`weft_core::codec::encode_record_into`]): every
//!   bucket group of that user whose bucket starts on that UTC day, so one
//!   event is one entry whatever the bucket sizes of the features it
//!   feeds. Writes are RocksDB *merges*: partials are monoids, so an
//!   associative merge operator folds them lazily and compaction collapses
//!   them, with no read-modify-write on the apply path.
//! * `offsets`: `gen ‖ partition (i32 BE)` to the next offset to consume.
//! * `dedup`: `gen ‖ 'p' ‖ u64 BE` to a *pack*: the event ids a batch
//!   applied (a 128-bit hash of tenant, user and event id, see
//!   `dedup_key`) with the Kafka time and position of each one's first
//!   delivery, for dropping redeliveries. Lookups go to a `DedupIndex` in
//!   memory, loaded from the packs; RocksDB only keeps them durable (one
//!   write per batch instead of one per event, and no per-event read).
//! * `trending`: `gen ‖ str(tenant) ‖ str(category) ‖ str(item)` to a
//!   decayed popularity score, merged like partials ([`trending`]).
//! * `meta`: the spec hash the store was built with, and the ready
//!   generation.
//!
//! A batch of events is applied with one [`WriteBatch`] holding the merged
//! partials, the dedup ids and the new offsets, so a crash leaves either all
//! of a batch or none of it, and a restart resumes exactly after the last
//! applied batch.
//!
//! The modules follow that layout: [`keys`] (the key layout), [`pack`]
//! (dedup packs and keys), [`merge`] (the merge operator), [`dedup_index`]
//! (the ids in memory), [`batch`] (a batch being folded, committed by
//! [`SpeedStore::commit`] here), [`generations`] (starting, finishing and
//! pruning generations). This module holds [`SpeedStore`] itself: opening,
//! committing, reading.

mod batch;
mod dedup_index;
mod generations;
mod keys;
mod merge;
mod pack;
mod trending;

pub use batch::Applied;
pub(crate) use batch::{Delivery, PendingBatch};
pub(crate) use dedup_index::DedupIndex;
pub(crate) use pack::DedupKey;
pub use trending::TRENDING_HALF_LIFE_MS;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dashmap::{DashMap, DashSet};
use rust_rocksdb::compaction_filter::Decision;
use rust_rocksdb::{
    BlockBasedOptions, ColumnFamilyDescriptor, DB, Direction, IteratorMode, MergeOperands, Options,
    ReadOptions, WriteBatch, WriteOptions,
};
use weft_core::FeatureSpec;
use weft_core::codec::{decode_record, encode_flat_record_into};
use weft_core::eval::{Profile, StoredPartials};
use weft_core::keys::{decode_i64, prefix_upper_bound, push_i64};
use weft_core::spec::Aggregate;

use crate::SpeedError;
use keys::{
    CF_DEDUP, CF_META, CF_OFFSETS, CF_PARTIALS, CF_TRENDING, META_FORMAT, META_SPEC_HASH,
    STORE_FORMAT, gen_prefix, group_user_prefix, group_user_prefix_len, holder, offset_key,
    record_day,
};
use merge::merge_records;
use pack::{PACK_TAG, dedup_expired, pack_ids, pack_key};

/// RocksDB properties reported as read-cache statistics: (name, property).
pub const CACHE_PROPERTIES: [(&str, &str); 3] = [
    ("block_cache_usage", "rocksdb.block-cache-usage"),
    ("block_cache_pinned", "rocksdb.block-cache-pinned-usage"),
    ("table_readers", "rocksdb.estimate-table-readers-mem"),
];

/// A speed-state generation (0 before any batch view exists).
pub type Generation = u32;

/// Why the store refused or failed.
fn db_err(context: impl Into<String>) -> impl FnOnce(rust_rocksdb::Error) -> SpeedError {
    let context = context.into();
    move |e| SpeedError::Store(format!("{context}: {e}"))
}

/// The speed view.
pub struct SpeedStore {
    db: DB,
    spec: Arc<FeatureSpec>,
    path: PathBuf,
    write_opts: WriteOptions,
    /// Per generation: dedup ids whose first delivery is older than this
    /// (Kafka record time) are deleted when RocksDB compacts them. Per
    /// generation because a generation being built replays from its view's
    /// boundary, further back than the ready one reads.
    dedup_cutoff: Arc<DashMap<Generation, i64>>,
    /// The users each generation holds partials for ([`holder`]s): a lookup
    /// of a user the generation has nothing for (most users, since a
    /// generation holds only the events after its view's boundary) returns
    /// without creating a RocksDB iterator. Loaded at open, added to before
    /// each commit (so a reader never sees partials whose user is missing
    /// here), pruned with the generations. A hash collision only costs a
    /// needless iterator.
    holders: DashSet<(Generation, u64), foldhash::fast::RandomState>,
}

impl std::fmt::Debug for SpeedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpeedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SpeedStore {
    /// Opens (or creates) the store for `spec`. A store built with another
    /// spec is refused: its partials mean something else.
    pub fn open(
        path: &Path,
        spec: Arc<FeatureSpec>,
        sync_writes: bool,
    ) -> Result<SpeedStore, SpeedError> {
        let aggregates: Vec<Aggregate> =
            spec.features.iter().map(|f| f.aggregate.clone()).collect();
        let mut partials = Options::default();
        partials.set_merge_operator_associative(
            "weft-bucket-records-v1",
            move |_key: &[u8], existing: Option<&[u8]>, ops: &MergeOperands| {
                merge_records(&aggregates, existing, ops)
            },
        );
        partials.set_compression_type(rust_rocksdb::DBCompressionType::Lz4);
        // A lookup reads one user's groups: prefix bloom filters (in SST
        // files and the memtable) let it skip every file without the user,
        // which is most of them for most users.
        partials.set_prefix_extractor(rust_rocksdb::SliceTransform::create(
            "weft.speed_user_prefix.v1",
            |key: &[u8]| &key[..group_user_prefix_len(key).unwrap_or(key.len())],
            Some(|key: &[u8]| group_user_prefix_len(key).is_some()),
        ));
        partials.set_memtable_prefix_bloom_ratio(0.1);
        let mut partials_table = BlockBasedOptions::default();
        partials_table.set_bloom_filter(10.0, false);
        partials_table.set_whole_key_filtering(false);
        partials.set_block_based_table_factory(&partials_table);
        // Dedup packs are only ever scanned (to load a [`DedupIndex`]), never
        // looked up. A pack whose ids were all first delivered before its
        // generation's cutoff is dropped at compaction.
        let mut dedup = Options::default();
        let cutoff: Arc<DashMap<Generation, i64>> = Arc::new(DashMap::new());
        let filter_cutoff = cutoff.clone();
        dedup.set_compaction_filter(
            "weft-dedup-expiry",
            move |_level: u32, key: &[u8], value: &[u8]| {
                if dedup_expired(&filter_cutoff, key, value) {
                    Decision::Remove
                } else {
                    Decision::Keep
                }
            },
        );
        let mut trending = Options::default();
        trending.set_merge_operator_associative("weft-trending-v1", trending::merge_scores);
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.increase_parallelism(2);
        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_PARTIALS, partials),
            ColumnFamilyDescriptor::new(CF_OFFSETS, Options::default()),
            ColumnFamilyDescriptor::new(CF_DEDUP, dedup),
            ColumnFamilyDescriptor::new(CF_META, Options::default()),
            ColumnFamilyDescriptor::new(CF_TRENDING, trending),
        ];
        let db = DB::open_cf_descriptors(&db_opts, path, cfs)
            .map_err(db_err(format!("opening {}", path.display())))?;
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(sync_writes);
        let store = SpeedStore {
            db,
            spec,
            path: path.to_path_buf(),
            write_opts,
            dedup_cutoff: cutoff,
            holders: DashSet::with_hasher(Default::default()),
        };
        store.check_spec()?;
        store.load_holders()?;
        Ok(store)
    }

    /// Fills [`SpeedStore::holders`] from the stored bucket groups (one
    /// pass over the column family at open).
    fn load_holders(&self) -> Result<(), SpeedError> {
        let cf = self.cf(CF_PARTIALS)?;
        let mut ro = ReadOptions::default();
        ro.set_total_order_seek(true);
        let mut it = self.db.raw_iterator_cf_opt(cf, ro);
        it.seek_to_first();
        let mut last: Vec<u8> = Vec::new();
        while let Some(key) = it.key() {
            if let Some(len) = group_user_prefix_len(key)
                && key[..len] != last[..]
            {
                last.clear();
                last.extend_from_slice(&key[..len]);
                self.holders.insert(holder(&last));
            }
            it.next();
        }
        it.status().map_err(db_err("reading partial keys"))
    }

    fn cf(&self, name: &str) -> Result<&rust_rocksdb::ColumnFamily, SpeedError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| SpeedError::Store(format!("column family {name} is missing")))
    }

    fn check_spec(&self) -> Result<(), SpeedError> {
        let meta = self.cf(CF_META)?;
        let format = self
            .db
            .get_cf(meta, META_FORMAT)
            .map_err(db_err("reading the store format"))?;
        let has_spec = self
            .db
            .get_cf(meta, META_SPEC_HASH)
            .map_err(db_err("reading spec hash"))?
            .is_some();
        match format.as_deref() {
            Some([STORE_FORMAT]) => {}
            None if !has_spec => self
                .db
                .put_cf(meta, META_FORMAT, [STORE_FORMAT])
                .map_err(db_err("writing the store format"))?,
            found => {
                return Err(SpeedError::Store(format!(
                    "{} has store format {:?}, this build reads {STORE_FORMAT}; start the speed layer on a fresh data directory",
                    self.path.display(),
                    found.and_then(|f| f.first().copied()).unwrap_or(1)
                )));
            }
        }
        let hash = self.spec.hash().as_bytes();
        match self
            .db
            .get_cf(meta, META_SPEC_HASH)
            .map_err(db_err("reading spec hash"))?
        {
            None => self
                .db
                .put_cf(meta, META_SPEC_HASH, hash)
                .map_err(db_err("writing spec hash")),
            Some(found) if found == hash => Ok(()),
            Some(found) => Err(SpeedError::Store(format!(
                "{} was built with feature spec {}, not {}; start it from a fresh data directory",
                self.path.display(),
                String::from_utf8_lossy(&found),
                self.spec.hash()
            ))),
        }
    }

    pub fn spec(&self) -> &Arc<FeatureSpec> {
        &self.spec
    }

    /// The next offset to consume per partition for generation `g` (absent
    /// partitions start at 0).
    pub fn offsets(&self, g: Generation) -> Result<HashMap<i32, i64>, SpeedError> {
        let cf = self.cf(CF_OFFSETS)?;
        let prefix = gen_prefix(g);
        let mut out = HashMap::new();
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(&prefix, Direction::Forward))
        {
            let (k, v) = item.map_err(db_err("reading offsets"))?;
            if !k.starts_with(&prefix) {
                break;
            }
            let partition = i32::from_be_bytes(
                k[4..8]
                    .try_into()
                    .map_err(|_| SpeedError::Corrupt("bad offset key".into()))?,
            );
            let offset = i64::from_be_bytes(
                v[..8]
                    .try_into()
                    .map_err(|_| SpeedError::Corrupt("bad offset value".into()))?,
            );
            out.insert(partition, offset);
        }
        Ok(out)
    }

    /// Calls `f` with each packed dedup id of generation `g` in the order
    /// the packs were written: the id's [`DedupKey`] and the Kafka time of
    /// its first delivery (an id applied again after its horizon comes
    /// again, later).
    pub(crate) fn dedup_ids(
        &self,
        g: Generation,
        mut f: impl FnMut(DedupKey, i64),
    ) -> Result<(), SpeedError> {
        self.packs(g, |key, value| {
            for id in pack_ids(key, value)? {
                let mut k = [0u8; 20];
                k[..4].copy_from_slice(&gen_prefix(g));
                k[4..].copy_from_slice(&id.hash);
                f(k, id.ts_ms);
            }
            Ok(())
        })
    }

    /// Calls `f` with each dedup pack (key, value) of generation `g`, in
    /// key order.
    fn packs(
        &self,
        g: Generation,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), SpeedError>,
    ) -> Result<(), SpeedError> {
        let cf = self.cf(CF_DEDUP)?;
        let mut prefix = gen_prefix(g).to_vec();
        prefix.push(PACK_TAG);
        let mut it = self.db.raw_iterator_cf(cf);
        it.seek(&prefix);
        while let (Some(key), Some(value)) = (it.key(), it.value()) {
            if !key.starts_with(&prefix) {
                break;
            }
            f(key, value)?;
            it.next();
        }
        it.status().map_err(db_err("reading dedup packs"))
    }

    /// A key for a new dedup pack of generation `g`, after every pack
    /// written so far: RocksDB's sequence numbers only grow, and every
    /// pack is written by a later write than the last (one writer at a
    /// time: the committer, or a generation start while it is idle).
    fn next_pack_seq(&self) -> u64 {
        self.db.latest_sequence_number() + 1
    }

    /// Commits a batch: partials, dedup ids, offsets and trending scores in
    /// one WriteBatch.
    pub(crate) fn commit(&self, g: Generation, batch: PendingBatch) -> Result<(), SpeedError> {
        let (partials, dedup, offsets) = (
            self.cf(CF_PARTIALS)?,
            self.cf(CF_DEDUP)?,
            self.cf(CF_OFFSETS)?,
        );
        let mut wb = WriteBatch::default();
        let mut key = Vec::with_capacity(64);
        let mut value = Vec::with_capacity(256);
        // In key order, so that each memtable insert starts its skip-list
        // search where the previous one ended instead of at the head.
        let mut users: Vec<_> = batch.users.into_iter().collect();
        users.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (prefix, mut user) in users {
            // `contains` first: a shared lock, where `insert` would take the
            // shard's write lock readers wait on.
            let h = holder(&prefix);
            if !self.holders.contains(&h) {
                self.holders.insert(h);
            }
            // One record per day (key order), its groups by (size, bucket),
            // each group's partials by feature.
            user.partials
                .sort_unstable_by_key(|(size, bucket, index, _)| {
                    (record_day(*size, *bucket), *size, *bucket, *index)
                });
            for record in user
                .partials
                .chunk_by(|a, b| record_day(a.0, a.1) == record_day(b.0, b.1))
            {
                key.clear();
                key.extend_from_slice(&prefix);
                push_i64(&mut key, record_day(record[0].0, record[0].1));
                encode_flat_record_into(&mut value, record);
                wb.merge_cf(partials, &key, &value);
            }
        }
        if batch.dedup.len() > 0 {
            wb.put_cf(dedup, pack_key(g, self.next_pack_seq()), &batch.dedup.body);
        }
        for (partition, next) in &batch.offsets {
            wb.put_cf(offsets, offset_key(g, *partition), next.to_be_bytes());
        }
        if !batch.trending.is_empty() {
            let cf = self.cf(CF_TRENDING)?;
            for (key, score) in &batch.trending {
                wb.merge_cf(cf, key, score.encode());
            }
        }
        self.db
            .write_opt(&wb, &self.write_opts)
            .map_err(db_err("writing batch"))
    }

    /// The `n` items trending most in `tenant`'s `category` (`""`: the whole
    /// tenant) among the events generation `g` applied, best first, each
    /// score relative to the best (1.0); ties by item id.
    pub fn trending(
        &self,
        g: Generation,
        tenant: &str,
        category: &str,
        n: usize,
    ) -> Result<Vec<(String, f64)>, SpeedError> {
        let cf = self.cf(CF_TRENDING)?;
        let prefix = trending::trending_prefix(g, tenant, category);
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(prefix_upper_bound(&prefix));
        let mut it = self.db.raw_iterator_cf_opt(cf, ro);
        it.seek(&prefix);
        let mut scored: Vec<(String, f64)> = Vec::new();
        while let (Some(key), Some(value)) = (it.key(), it.value()) {
            // A nested category key (a category whose name continues this
            // one's) cannot occur: strings are self-delimiting.
            let item = key.get(prefix.len()..).and_then(trending::item_of);
            if let (Some(item), Some(score)) = (item, trending::Decayed::decode(value))
                && score.score > 0.0
            {
                scored.push((item, score.log_at_epoch()));
            }
            it.next();
        }
        it.status().map_err(db_err("reading trending items"))?;
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        scored.truncate(n);
        let top = scored.first().map_or(0.0, |(_, l)| *l);
        for (_, l) in &mut scored {
            *l = (*l - top).exp2();
        }
        Ok(scored)
    }

    /// Every partial of one user in generation `g`, by feature.
    pub fn user_partials(
        &self,
        g: Generation,
        tenant: &str,
        user: &str,
        as_of: Option<i64>,
    ) -> Result<StoredPartials<'_>, SpeedError> {
        let mut out = StoredPartials::at(&self.spec, as_of);
        self.add_user_partials(&mut out, g, tenant, user)?;
        Ok(out)
    }

    /// Adds one user's partials in generation `g` to `out` (which keeps
    /// those its query time wants): the merge `batch ⊕ speed` without a
    /// second set of partials to allocate and fold in, and nothing to do
    /// for a user the generation holds nothing of. `out` must be of a spec
    /// with this store's hash (feature positions are shared).
    pub fn add_user_partials(
        &self,
        out: &mut StoredPartials<'_>,
        g: Generation,
        tenant: &str,
        user: &str,
    ) -> Result<(), SpeedError> {
        let prefix = group_user_prefix(g, tenant, user);
        if !self.holders.contains(&holder(&prefix)) {
            return Ok(());
        }
        let cf = self.cf(CF_PARTIALS)?;
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(prefix_upper_bound(&prefix));
        ro.set_prefix_same_as_start(true);
        let bad = |problem: String| SpeedError::Corrupt(format!("{tenant}/{user}: {problem}"));
        for item in self
            .db
            .iterator_cf_opt(cf, ro, IteratorMode::From(&prefix, Direction::Forward))
        {
            let (k, v) = item.map_err(db_err("reading partials"))?;
            let day = k
                .get(k.len().saturating_sub(8)..)
                .filter(|_| k.len() == prefix.len() + 8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(decode_i64)
                .ok_or_else(|| bad("malformed bucket-record key".into()))?;
            for (size, bucket, group) in decode_record(&v).map_err(|e| bad(e.to_string()))? {
                if record_day(size, bucket) != day {
                    return Err(bad(format!(
                        "a bucket of day {} in the record of day {day}",
                        record_day(size, bucket)
                    )));
                }
                for (index, p) in group {
                    let feature = self.spec.features.get(usize::from(index));
                    if feature.is_some_and(|f| f.window.bucket_ms != size) {
                        return Err(bad(format!(
                            "feature {index} stored in buckets of {size} ms"
                        )));
                    }
                    out.push_decoded(usize::from(index), bucket, p)
                        .map_err(bad)?;
                }
            }
        }
        Ok(())
    }

    /// A user's profile from generation `g` alone, at query time `t`.
    pub fn profile(
        &self,
        g: Generation,
        tenant: &str,
        user: &str,
        t_ms: i64,
    ) -> Result<Profile, SpeedError> {
        Ok(self
            .user_partials(g, tenant, user, Some(t_ms))?
            .evaluate(t_ms))
    }

    /// Number of partial entries of generation `g` (walks them; tests and
    /// tools).
    pub fn partial_count(&self, g: Generation) -> Result<usize, SpeedError> {
        let cf = self.cf(CF_PARTIALS)?;
        let prefix = gen_prefix(g);
        let mut ro = ReadOptions::default();
        ro.set_total_order_seek(true); // across users: no prefix filtering
        let mut n = 0;
        for item in self
            .db
            .iterator_cf_opt(cf, ro, IteratorMode::From(&prefix, Direction::Forward))
        {
            let (k, _) = item.map_err(db_err("reading partials"))?;
            if !k.starts_with(&prefix) {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    /// A few RocksDB properties per column family, for metrics:
    /// (column family, property, value).
    pub fn rocksdb_stats(&self) -> Vec<(String, String, u64)> {
        const PROPERTIES: [&str; 6] = [
            "rocksdb.estimate-num-keys",
            "rocksdb.total-sst-files-size",
            "rocksdb.cur-size-all-mem-tables",
            "rocksdb.estimate-pending-compaction-bytes",
            "rocksdb.num-running-compactions",
            "rocksdb.num-files-at-level0",
        ];
        let mut out = Vec::new();
        for name in [CF_PARTIALS, CF_OFFSETS, CF_DEDUP, CF_META, CF_TRENDING] {
            let Ok(cf) = self.cf(name) else { continue };
            for property in PROPERTIES {
                if let Ok(Some(v)) = self.db.property_int_value_cf(cf, property) {
                    out.push((
                        name.to_string(),
                        property.trim_start_matches("rocksdb.").to_string(),
                        v,
                    ));
                }
            }
        }
        out
    }

    /// [`CACHE_PROPERTIES`] summed over the column families.
    pub fn cache_usage(&self) -> Vec<(&'static str, u64)> {
        CACHE_PROPERTIES
            .iter()
            .map(|(kind, property)| {
                let total = [CF_PARTIALS, CF_OFFSETS, CF_DEDUP, CF_META, CF_TRENDING]
                    .iter()
                    .filter_map(|name| self.cf(name).ok())
                    .filter_map(|cf| self.db.property_int_value_cf(cf, *property).ok().flatten())
                    .sum();
                (*kind, total)
            })
            .collect()
    }

    /// Lets compaction delete generation `g`'s dedup ids first delivered
    /// before `ts_ms`. Only ever moves forward. Callers pass a time no
    /// lookup in `g` can reach back to (see the consumer), so expiry never
    /// changes a dedup answer.
    pub fn expire_dedup_before(&self, g: Generation, ts_ms: i64) {
        let mut cutoff = self.dedup_cutoff.entry(g).or_insert(ts_ms);
        *cutoff = (*cutoff).max(ts_ms);
    }

    /// Compacts the dedup ids now (normally RocksDB decides when).
    pub fn compact_dedup(&self) -> Result<(), SpeedError> {
        let cf = self.cf(CF_DEDUP)?;
        self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        Ok(())
    }

    /// Number of stored dedup ids, all generations (walks the column
    /// family; for tests and tools).
    pub fn dedup_len(&self) -> Result<usize, SpeedError> {
        let cf = self.cf(CF_DEDUP)?;
        let mut n = 0;
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (key, value) = item.map_err(db_err("reading dedup packs"))?;
            n += pack_ids(&key, &value)?.count();
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use weft_core::spec::DAY_MS;

    use super::batch::SCAN_LIMIT;
    use super::*;

    pub(super) fn view(user: &str, ts_ms: i64) -> weft_core::Event {
        weft_core::Event {
            event_id: format!("{user}-{ts_ms}"),
            tenant: "acme".into(),
            user_id: user.into(),
            ts_ms,
            kind: weft_core::EventKind::View,
            item_id: "i1".into(),
            category: "c1".into(),
            price_minor: 100,
            quantity: 1,
            attributes: Default::default(),
        }
    }

    /// Bucket records merge like one batch: events of one user spread over
    /// two days and many buckets, committed in several batches (merge
    /// operands), then compacted (merged into a stored value), read the
    /// same as the same events committed at once.
    #[test]
    fn bucket_records_merge_across_batches_and_compaction() {
        let spec = Arc::new(
            FeatureSpec::parse(include_str!("../../../deploy/features.example.toml")).unwrap(),
        );
        let t0 = 1_700_000_000_000 - 1_700_000_000_000 % DAY_MS + DAY_MS - 3_600_000;
        let events: Vec<_> = (0..60)
            .map(|i| {
                let mut e = view("a", t0 + i * 137_000);
                e.kind = weft_core::EventKind::ALL[(i % 5) as usize];
                e.item_id = format!("i{}", i % 7);
                e
            })
            .collect();
        assert_ne!(
            events[0].ts_ms.div_euclid(DAY_MS),
            events[59].ts_ms.div_euclid(DAY_MS),
            "the events span two days"
        );
        let whole_dir = tempfile::tempdir().unwrap();
        let whole = SpeedStore::open(whole_dir.path(), spec.clone(), false).unwrap();
        // A batch holds one partial per (bucket size, bucket, feature),
        // found by a scan (few partials) or through the index (many).
        let partial_count = |batch: &PendingBatch, indexed: bool| {
            let user = batch.users.values().next().unwrap();
            let mut keys: Vec<_> = user
                .partials
                .iter()
                .map(|(s, b, i, _)| (*s, *b, *i))
                .collect();
            let n = keys.len();
            keys.sort_unstable();
            keys.dedup();
            assert_eq!(keys.len(), n, "one partial per (size, bucket, feature)");
            assert_eq!(user.at.is_some(), indexed, "{n} partials");
            n
        };
        let mut batch = PendingBatch::default();
        for e in &events {
            batch.apply(&spec, 0, e);
        }
        assert!(partial_count(&batch, true) > SCAN_LIMIT);
        whole.commit(0, batch).unwrap();
        let split_dir = tempfile::tempdir().unwrap();
        let split = SpeedStore::open(split_dir.path(), spec.clone(), false).unwrap();
        for chunk in events.chunks(7) {
            let mut batch = PendingBatch::default();
            for e in chunk {
                batch.apply(&spec, 0, e);
            }
            assert!(partial_count(&batch, false) <= SCAN_LIMIT);
            split.commit(0, batch).unwrap();
        }
        let t = t0 + 2 * DAY_MS;
        let expected = whole.profile(0, "acme", "a", t).unwrap();
        assert_eq!(split.profile(0, "acme", "a", t).unwrap(), expected);
        let cf = split.cf(CF_PARTIALS).unwrap();
        split.db.flush_cf(cf).unwrap();
        split.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        assert_eq!(split.profile(0, "acme", "a", t).unwrap(), expected);
        assert_eq!(split.partial_count(0).unwrap(), 2, "one record per day");
    }
}
