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
//!   [`dedup_key`]) with the Kafka time and position of each one's first
//!   delivery, for dropping redeliveries. Lookups go to a [`DedupIndex`] in
//!   memory, loaded from the packs; RocksDB only keeps them durable (one
//!   write per batch instead of one per event, and no per-event read).
//! * `meta`: the spec hash the store was built with, and the ready
//!   generation.
//!
//! A batch of events is applied with one [`WriteBatch`] holding the merged
//! partials, the dedup ids and the new offsets, so a crash leaves either all
//! of a batch or none of it, and a restart resumes exactly after the last
//! applied batch.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dashmap::{DashMap, DashSet};
use rust_rocksdb::compaction_filter::Decision;
use rust_rocksdb::{
    BlockBasedOptions, ColumnFamilyDescriptor, DB, Direction, IteratorMode, MergeOperands, Options,
    ReadOptions, WriteBatch, WriteOptions,
};
use weft_core::codec::{
    BucketGroup, FlatPartial, decode_record, encode_flat_record_into, encode_record_into,
};
use weft_core::eval::{Profile, StoredPartials};
use weft_core::keys::{decode_i64, prefix_upper_bound, push_i64, push_str};
use weft_core::spec::{Aggregate, DAY_MS};
use weft_core::{FeatureSpec, Partial};

use crate::SpeedError;
use crate::idtable::IdTable;

const CF_PARTIALS: &str = "partials";
const CF_OFFSETS: &str = "offsets";
const CF_DEDUP: &str = "dedup";
const CF_META: &str = "meta";
const META_SPEC_HASH: &[u8] = b"spec_hash";
const META_FORMAT: &[u8] = b"format";
/// The store layout: 4 = bucket records per user and day, dedup ids packed
/// per batch (3 stored one dedup key per event, 2 one partials key per
/// bucket group, 1 one per feature).
const STORE_FORMAT: u8 = 4;
const META_READY: &[u8] = b"ready_generation";
const META_BUILDING: &[u8] = b"building_generation";

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

fn gen_prefix(g: Generation) -> [u8; 4] {
    g.to_be_bytes()
}

fn offset_key(g: Generation, partition: i32) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[..4].copy_from_slice(&gen_prefix(g));
    k[4..].copy_from_slice(&partition.to_be_bytes());
    k
}

/// A [`dedup_key`]: 4 bytes of generation, 16 of hash.
pub type DedupKey = [u8; 20];

/// The dedup key of an event identity: the generation, then XXH3-128
/// (fixed seed: the value is stored, so it must never change) of the
/// length-prefixed tenant, user and event id, hashed in one call from a
/// stack buffer. Fixed-size keys keep the per-event lookup cheap. Two
/// different identities share a key with a probability of about n²/2¹²⁹
/// for n ids within a horizon (1e-20 for a billion): then the later one
/// would be dropped as a redelivery. (XXH3 is not a keyed hash: ids
/// crafted to collide with another's could be made to.)
pub fn dedup_key(g: Generation, tenant: &str, user: &str, event_id: &str) -> DedupKey {
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

/// How far ahead [`PendingBatch::apply_new`] computes dedup keys (and asks
/// for their index slots), and asks for events' strings beyond that.
const KEYS_AHEAD: usize = 4;
const EVENTS_AHEAD: usize = 4;

/// Asks the CPU to start loading an event's strings (a hint; no effect on
/// what the program does).
fn prefetch_event(e: &weft_core::Event) {
    for s in [&e.tenant, &e.user_id, &e.event_id, &e.item_id, &e.category] {
        if let Some(first) = s.as_bytes().first() {
            mem_prefetch::prefetch_read_data::<u8, 3>(first);
        }
    }
}

/// The generation a key of any column family starts with.
fn key_generation(key: &[u8]) -> Option<Generation> {
    key.get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(Generation::from_be_bytes)
}

/// Whether compaction may drop a dedup pack: every id in it first
/// delivered before its generation's cutoff (none set: keep).
fn dedup_expired(cutoffs: &DashMap<Generation, i64>, key: &[u8], value: &[u8]) -> bool {
    let Some(g) = key_generation(key) else {
        return false;
    };
    match (pack_newest(value), cutoffs.get(&g)) {
        (Some(ts), Some(cutoff)) => ts < *cutoff,
        _ => false,
    }
}

/// Key tag of dedup packs in the `dedup` column family.
const PACK_TAG: u8 = b'p';
/// Bytes of a pack's header: the newest first-delivery time in it.
const PACK_HEADER: usize = 8;
/// Bytes of one id in a pack: hash (16), Kafka time (8), partition (4),
/// offset (8).
const PACK_ENTRY: usize = 36;
/// Ids per pack when a generation's ids are copied into a new one.
const PACK_MAX_IDS: usize = 1 << 16;

/// The key of pack `seq` of generation `g`.
fn pack_key(g: Generation, seq: u64) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[..4].copy_from_slice(&gen_prefix(g));
    k[4] = PACK_TAG;
    k[5..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The newest first-delivery time in a pack (its header).
fn pack_newest(value: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(
        value.get(..PACK_HEADER)?.try_into().ok()?,
    ))
}

/// One id of a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PackedId {
    hash: [u8; 16],
    ts_ms: i64,
    partition: i32,
    offset: i64,
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
fn pack_ids(key: &[u8], value: &[u8]) -> Result<impl Iterator<Item = PackedId>, SpeedError> {
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
struct Pack {
    body: Vec<u8>,
}

impl Pack {
    fn push(&mut self, id: PackedId) {
        let newest = pack_newest(&self.body).map_or(id.ts_ms, |n| n.max(id.ts_ms));
        if self.body.is_empty() {
            self.body.extend_from_slice(&[0; PACK_HEADER]);
        }
        self.body[..PACK_HEADER].copy_from_slice(&newest.to_be_bytes());
        id.push(&mut self.body);
    }

    fn len(&self) -> usize {
        self.body.len().saturating_sub(PACK_HEADER) / PACK_ENTRY
    }
}

/// Key tag of bucket records in the `partials` column family.
const GROUP_TAG: u8 = b'u';

/// The length of a bucket record key's [`group_user_prefix`] (generation,
/// tag, tenant, user), or None for other keys: the prefix extractor of the
/// `partials` column family. A seek key that is itself a user prefix maps
/// to itself.
fn group_user_prefix_len(key: &[u8]) -> Option<usize> {
    if key.get(4) != Some(&GROUP_TAG) {
        return None;
    }
    weft_core::keys::escaped_strings_end(key, 5, 2)
}

/// A [`SpeedStore::holders`] entry: the generation and a hash of the rest
/// of a [`group_user_prefix`] (tenant and user).
fn holder(prefix: &[u8]) -> (Generation, u64) {
    use std::hash::BuildHasher;
    let g = key_generation(prefix).unwrap_or(0);
    let rest = prefix.get(4..).unwrap_or_default();
    (g, foldhash::fast::FixedState::default().hash_one(rest))
}

/// The key prefix of one user's bucket records in generation `g`.
fn group_user_prefix(g: Generation, tenant: &str, user: &str) -> Vec<u8> {
    let mut k = gen_prefix(g).to_vec();
    k.push(GROUP_TAG);
    push_str(&mut k, tenant);
    push_str(&mut k, user);
    k
}

/// The day (UTC) a bucket group's bucket starts on: the last part of the
/// key of the record holding it.
fn record_day(size: i64, bucket: i64) -> i64 {
    bucket.saturating_mul(size).div_euclid(DAY_MS)
}

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
fn merge_records(
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

/// One user's partials accumulated in a batch, flat (one allocation for a
/// user with few events in it, which is most users of most batches): the
/// commit sorts them into bucket records.
#[derive(Debug, Default)]
struct UserPartials {
    partials: Vec<FlatPartial>,
    /// Positions in `partials` by (size, bucket, feature index), built once
    /// a user holds more than [`SCAN_LIMIT`] of them in one batch, so that a
    /// heavy user's events do not each scan them all.
    at: Option<hashbrown::HashMap<(i64, i64, u16), usize, foldhash::fast::RandomState>>,
}

/// Partials of one user in a batch found by scanning them, beyond which
/// [`UserPartials`] indexes them.
const SCAN_LIMIT: usize = 32;

impl UserPartials {
    /// The partial of feature `index` in `bucket` of `size`, created with
    /// `empty` if the batch has none yet. Only the first `earlier` partials
    /// (those held before the event being folded) can be it: an event
    /// feeds each feature once.
    fn partial(
        &mut self,
        size: i64,
        bucket: i64,
        index: u16,
        earlier: usize,
        empty: impl FnOnce() -> Partial,
    ) -> &mut Partial {
        let key = (size, bucket, index);
        let found = match &self.at {
            Some(at) => at.get(&key).copied(),
            // Newest first: events mostly arrive in time order. A user's
            // first event in the batch (most users' only one) scans nothing.
            None => self.partials[..earlier]
                .iter()
                // The feature first: it tells most partials apart.
                .rposition(|(s, b, i, _)| *i == index && *b == bucket && *s == size),
        };
        let at = match found {
            Some(at) => at,
            None => {
                let at = self.partials.len();
                self.partials.push((size, bucket, index, empty()));
                match &mut self.at {
                    Some(positions) => {
                        positions.insert(key, at);
                    }
                    None if self.partials.len() > SCAN_LIMIT => {
                        self.at = Some(
                            self.partials
                                .iter()
                                .enumerate()
                                .map(|(at, (s, b, i, _))| ((*s, *b, *i), at))
                                .collect(),
                        );
                    }
                    None => {}
                }
                at
            }
        };
        &mut self.partials[at].3
    }
}

/// A valid event offered to a batch, with where and when Kafka delivered it.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'e> {
    pub event: &'e weft_core::Event,
    pub partition: i32,
    pub offset: i64,
    /// The Kafka record time (the event time when the record has none).
    pub kafka_ts_ms: i64,
}

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
pub struct DedupIndex {
    g: Option<Generation>,
    shards: Vec<IdTable>,
    /// Per shard, the cutoff it was last swept to.
    swept: Vec<i64>,
    next_sweep: usize,
}

impl DedupIndex {
    fn split(key: &DedupKey) -> (u64, u64) {
        (
            u64::from_be_bytes(key[4..12].try_into().expect("8 bytes")),
            u64::from_be_bytes(key[12..20].try_into().expect("8 bytes")),
        )
    }

    /// The index of generation `g` as the store holds it.
    pub fn load(store: &SpeedStore, g: Generation) -> Result<DedupIndex, SpeedError> {
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
    fn ensure(&mut self, store: &SpeedStore, g: Generation) -> Result<(), SpeedError> {
        if self.g != Some(g) {
            *self = DedupIndex::load(store, g)?;
        }
        Ok(())
    }

    fn shard(hi: u64) -> usize {
        (hi >> 60) as usize % INDEX_SHARDS
    }

    /// Whether `key`'s delivery at `kafka_ts_ms` is its first within
    /// `horizon_ms` (Kafka time), holding it as first delivered then if
    /// so; one hash probe.
    fn admit(&mut self, key: &DedupKey, kafka_ts_ms: i64, horizon_ms: i64) -> bool {
        let since = kafka_ts_ms.saturating_sub(horizon_ms);
        self.hold(key, kafka_ts_ms, |held| held >= since)
    }

    /// Holds `key` as first delivered at `ts_ms`, unless it is held already
    /// and `stands` says that time stays: whether it was held anew.
    fn hold(&mut self, key: &DedupKey, ts_ms: i64, stands: impl FnOnce(i64) -> bool) -> bool {
        let (hi, lo) = Self::split(key);
        self.shards[Self::shard(hi)].hold(hi, lo, ts_ms, stands)
    }

    /// Asks the CPU to start loading where `key` is held (a hint: see
    /// [`IdTable::prefetch`]).
    pub fn prefetch(&self, key: &DedupKey) {
        let (hi, lo) = Self::split(key);
        if let Some(shard) = self.shards.get(Self::shard(hi)) {
            shard.prefetch(lo);
        }
    }

    /// The Kafka time of `key`'s first delivery, if held. (The generation
    /// part of the key is not compared: the index holds one generation.)
    pub fn first_delivery(&self, key: &DedupKey) -> Option<i64> {
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
    pub fn expire_before(&mut self, g: Generation, cutoff_ms: i64, slack_ms: i64) {
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
    pub fn len(&self) -> usize {
        self.shards.iter().map(IdTable::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What [`PendingBatch::apply_new`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub applied: u64,
    pub duplicates: u64,
    /// The newest event time applied (`i64::MIN` if none).
    pub newest_event_ms: i64,
}

/// One applied batch, ready to commit atomically.
#[derive(Debug, Default)]
pub struct PendingBatch {
    /// Group key prefix (generation, tenant, user) to that user's partials.
    users: hashbrown::HashMap<Vec<u8>, UserPartials, foldhash::fast::RandomState>,
    dedup: Pack,
    offsets: HashMap<i32, i64>,
    key_buf: Vec<u8>,
}

impl PendingBatch {
    /// Records that everything up to `offset` of `partition` is handled.
    pub fn consumed(&mut self, partition: i32, offset: i64) {
        let next = self.offsets.entry(partition).or_insert(offset + 1);
        *next = (*next).max(offset + 1);
    }

    /// The next offset per partition, as recorded by
    /// [`PendingBatch::consumed`].
    pub fn next_offsets(&self) -> &HashMap<i32, i64> {
        &self.offsets
    }

    /// Records an event id's first delivery (Kafka time and position) in
    /// the batch's dedup pack.
    pub fn remember_id(&mut self, key: DedupKey, kafka_ts_ms: i64, partition: i32, offset: i64) {
        self.dedup.push(PackedId {
            hash: key[4..].try_into().expect("16 bytes"),
            ts_ms: kafka_ts_ms,
            partition,
            offset,
        });
    }

    /// Folds the `deliveries` whose event id was not first delivered within
    /// `horizon_ms` (Kafka time) before, in generation `g` as `index` holds
    /// it (loaded from `store` if it holds another generation): earlier in
    /// this batch, in a batch still being committed, or in the store. Each
    /// applied id goes into `index` and the batch's dedup pack. The caller
    /// records the offsets ([`PendingBatch::consumed`]).
    pub fn apply_new(
        &mut self,
        store: &SpeedStore,
        g: Generation,
        deliveries: &[Delivery<'_>],
        horizon_ms: i64,
        index: &mut DedupIndex,
    ) -> Result<Applied, SpeedError> {
        index.ensure(store, g)?;
        let mut out = Applied {
            newest_event_ms: i64::MIN,
            ..Applied::default()
        };
        // A software pipeline over the deliveries, for the cache misses an
        // event costs: the strings of the one KEYS_AHEAD + EVENTS_AHEAD
        // ahead are asked for; the dedup key of the one KEYS_AHEAD ahead is
        // computed (its strings have arrived) and its index slot asked for;
        // the current one is folded (its slot has arrived).
        let key_of =
            |d: &Delivery<'_>| dedup_key(g, &d.event.tenant, &d.event.user_id, &d.event.event_id);
        let mut keys = [[0u8; 20]; KEYS_AHEAD];
        for (slot, d) in keys.iter_mut().zip(deliveries) {
            *slot = key_of(d);
            index.prefetch(slot);
        }
        for (at, d) in deliveries.iter().enumerate() {
            if let Some(ahead) = deliveries.get(at + KEYS_AHEAD + EVENTS_AHEAD) {
                prefetch_event(ahead.event);
            }
            let key = keys[at % KEYS_AHEAD];
            if let Some(ahead) = deliveries.get(at + KEYS_AHEAD) {
                let next = key_of(ahead);
                index.prefetch(&next);
                keys[at % KEYS_AHEAD] = next;
            }
            if !index.admit(&key, d.kafka_ts_ms, horizon_ms) {
                out.duplicates += 1;
                continue;
            }
            self.apply(store.spec(), g, d.event);
            self.remember_id(key, d.kafka_ts_ms, d.partition, d.offset);
            out.newest_event_ms = out.newest_event_ms.max(d.event.ts_ms);
            out.applied += 1;
        }
        Ok(out)
    }

    /// Folds an event into the partials of every feature it matches: one
    /// map lookup per event (the user), then a scan of that user's few
    /// partials in the batch per feature.
    pub fn apply(&mut self, spec: &FeatureSpec, g: Generation, e: &weft_core::Event) {
        let mut key = std::mem::take(&mut self.key_buf);
        key.clear();
        key.extend_from_slice(&gen_prefix(g));
        key.push(GROUP_TAG);
        push_str(&mut key, &e.tenant);
        push_str(&mut key, &e.user_id);
        let user = self.users.entry_ref(key.as_slice()).or_default();
        let features = spec.features_for(e.kind);
        if user.partials.capacity() == 0 {
            user.partials.reserve_exact(features.len());
        }
        let earlier = user.partials.len();
        for &index in features {
            let feature = &spec.features[index];
            if !feature.filter.matches(e) {
                continue;
            }
            let (size, bucket) = (feature.window.bucket_ms, feature.window.bucket_of(e.ts_ms));
            let p = user.partial(size, bucket, index as u16, earlier, || {
                feature.aggregate.empty()
            });
            feature.aggregate.update(p, e);
        }
        self.key_buf = key;
    }
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
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.increase_parallelism(2);
        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_PARTIALS, partials),
            ColumnFamilyDescriptor::new(CF_OFFSETS, Options::default()),
            ColumnFamilyDescriptor::new(CF_DEDUP, dedup),
            ColumnFamilyDescriptor::new(CF_META, Options::default()),
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
                    .map_err(|_| SpeedError::Store("bad offset key".into()))?,
            );
            let offset = i64::from_be_bytes(
                v[..8]
                    .try_into()
                    .map_err(|_| SpeedError::Store("bad offset value".into()))?,
            );
            out.insert(partition, offset);
        }
        Ok(out)
    }

    /// Calls `f` with each packed dedup id of generation `g` in the order
    /// the packs were written: the id's [`DedupKey`] and the Kafka time of
    /// its first delivery (an id applied again after its horizon comes
    /// again, later).
    pub fn dedup_ids(
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

    /// Commits a batch: partials, dedup ids and offsets in one WriteBatch.
    pub fn commit(&self, g: Generation, batch: PendingBatch) -> Result<(), SpeedError> {
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
        self.db
            .write_opt(&wb, &self.write_opts)
            .map_err(db_err("writing batch"))
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
        let bad = |problem: String| SpeedError::Store(format!("{tenant}/{user}: {problem}"));
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
                    .map_err(|_| SpeedError::Store("corrupt generation record".into()))?,
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

    /// Starts generation `new` for a batch view whose boundary is
    /// `boundary` (`O_p` per partition; absent partitions: nothing, so
    /// from offset 0): offsets `O_p + 1`, and the dedup ids of generation
    /// `from` first delivered at or below `O_p`. A generation being built
    /// is abandoned. One WriteBatch.
    pub fn start_generation(
        &self,
        from: Generation,
        new: Generation,
        boundary: &HashMap<i32, i64>,
        partitions: u32,
    ) -> Result<(), SpeedError> {
        let (offsets, dedup, meta) = (self.cf(CF_OFFSETS)?, self.cf(CF_DEDUP)?, self.cf(CF_META)?);
        let mut wb = WriteBatch::default();
        let abandoned = self.building_generation()?;
        if let Some(old) = abandoned {
            self.delete_generation(&mut wb, old)?;
        }
        for p in 0..partitions as i32 {
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
        for cf in [CF_PARTIALS, CF_OFFSETS, CF_DEDUP] {
            wb.delete_range_cf(self.cf(cf)?, gen_prefix(0), gen_prefix(kept));
        }
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
        for cf in [CF_PARTIALS, CF_OFFSETS, CF_DEDUP] {
            wb.delete_range_cf(self.cf(cf)?, gen_prefix(g).as_slice(), end.as_slice());
        }
        Ok(())
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
        for name in [CF_PARTIALS, CF_OFFSETS, CF_DEDUP, CF_META] {
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
                let total = [CF_PARTIALS, CF_OFFSETS, CF_DEDUP, CF_META]
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
    use super::*;

    #[test]
    fn the_prefix_extractor_maps_a_group_key_and_its_user_prefix_alike() {
        let prefix = group_user_prefix(7, "acme", "u\u{0}01");
        let mut key = prefix.clone();
        push_i64(&mut key, 86_400_000);
        push_i64(&mut key, 20_000);
        assert_eq!(group_user_prefix_len(&key), Some(prefix.len()));
        assert_eq!(group_user_prefix_len(&prefix), Some(prefix.len()));
        assert_eq!(group_user_prefix_len(&gen_prefix(7)), None);
        assert_eq!(group_user_prefix_len(&offset_key(7, 3)), None);
    }

    fn view(user: &str, ts_ms: i64) -> weft_core::Event {
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

    /// A batch folded while the previous one is still being committed sees
    /// that batch's ids; another generation's index starts from the store,
    /// which knows only committed batches; a reloaded index is the store's.
    #[test]
    fn dedup_sees_the_batch_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let spec = Arc::new(
            FeatureSpec::parse(include_str!("../../deploy/features.example.toml")).unwrap(),
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

    /// Bucket records merge like one batch: events of one user spread over
    /// two days and many buckets, committed in several batches (merge
    /// operands), then compacted (merged into a stored value), read the
    /// same as the same events committed at once.
    #[test]
    fn bucket_records_merge_across_batches_and_compaction() {
        let spec = Arc::new(
            FeatureSpec::parse(include_str!("../../deploy/features.example.toml")).unwrap(),
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

    /// The holder set must never hide a user with partials: after commits,
    /// after a reopen (loaded from the keys), across a generation switch.
    #[test]
    fn holders_track_commits_reopens_and_generations() {
        let dir = tempfile::tempdir().unwrap();
        let spec = Arc::new(
            FeatureSpec::parse(include_str!("../../deploy/features.example.toml")).unwrap(),
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
            .start_generation(0, 1, &HashMap::from([(0, 0)]), 1)
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
            .start_generation(1, 2, &HashMap::from([(0, 1)]), 1)
            .unwrap();
        store.finish_generation(2).unwrap();
        assert_eq!(count(&store, 0, "a"), 0);
        assert!(
            !store.holders.iter().any(|h| h.0 == 0),
            "generation 0 is pruned from the holders"
        );
        assert!(
            count(&store, 1, "b") > 0,
            "generation 1 stays until the next switch"
        );
    }
}
