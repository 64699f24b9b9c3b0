//! A batch being applied: the valid events offered to it ([`Delivery`]),
//! deduplicated through the [`DedupIndex`] and folded into each user's
//! partials in memory, with the batch's dedup pack and offsets, until
//! [`SpeedStore::commit`] writes it as one WriteBatch.

use std::collections::HashMap;

use weft_core::codec::FlatPartial;
use weft_core::keys::push_str;
use weft_core::{FeatureSpec, Partial};

use super::dedup_index::DedupIndex;
use super::keys::{GROUP_TAG, gen_prefix};
use super::pack::{DedupKey, Pack, PackedId, dedup_key};
use super::trending::{self, Decayed};
use super::{Generation, SpeedStore};
use crate::SpeedError;

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

/// One user's partials accumulated in a batch, flat (one allocation for a
/// user with few events in it, which is most users of most batches): the
/// commit sorts them into bucket records.
#[derive(Debug, Default)]
pub(super) struct UserPartials {
    pub(super) partials: Vec<FlatPartial>,
    /// Positions in `partials` by (size, bucket, feature index), built once
    /// a user holds more than [`SCAN_LIMIT`] of them in one batch, so that a
    /// heavy user's events do not each scan them all.
    pub(super) at: Option<hashbrown::HashMap<(i64, i64, u16), usize, foldhash::fast::RandomState>>,
}

/// Partials of one user in a batch found by scanning them, beyond which
/// [`UserPartials`] indexes them.
pub(super) const SCAN_LIMIT: usize = 32;

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
pub(crate) struct Delivery<'e> {
    pub(crate) event: &'e weft_core::Event,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    /// The Kafka record time (the event time when the record has none).
    pub(crate) kafka_ts_ms: i64,
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
pub(crate) struct PendingBatch {
    /// Group key prefix (generation, tenant, user) to that user's partials.
    pub(super) users: hashbrown::HashMap<Vec<u8>, UserPartials, foldhash::fast::RandomState>,
    pub(super) dedup: Pack,
    pub(super) offsets: HashMap<i32, i64>,
    /// Events applied per tenant.
    pub(crate) tenants: hashbrown::HashMap<String, u64, foldhash::fast::RandomState>,
    /// Trending scores by key ([`super::trending`]).
    pub(super) trending: hashbrown::HashMap<Vec<u8>, Decayed, foldhash::fast::RandomState>,
    key_buf: Vec<u8>,
}

impl PendingBatch {
    /// Records that everything up to `offset` of `partition` is handled.
    pub(crate) fn consumed(&mut self, partition: i32, offset: i64) {
        let next = self.offsets.entry(partition).or_insert(offset + 1);
        *next = (*next).max(offset + 1);
    }

    /// The next offset per partition, as recorded by
    /// [`PendingBatch::consumed`].
    pub(crate) fn next_offsets(&self) -> &HashMap<i32, i64> {
        &self.offsets
    }

    /// Records an event id's first delivery (Kafka time and position) in
    /// the batch's dedup pack.
    pub(crate) fn remember_id(
        &mut self,
        key: DedupKey,
        kafka_ts_ms: i64,
        partition: i32,
        offset: i64,
    ) {
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
    pub(crate) fn apply_new(
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
            trending::observe(&mut self.trending, &mut self.key_buf, g, d.event);
            *self.tenants.entry_ref(d.event.tenant.as_str()).or_default() += 1;
            self.remember_id(key, d.kafka_ts_ms, d.partition, d.offset);
            out.newest_event_ms = out.newest_event_ms.max(d.event.ts_ms);
            out.applied += 1;
        }
        Ok(out)
    }

    /// Folds an event into the partials of every feature it matches: one
    /// map lookup per event (the user), then a scan of that user's few
    /// partials in the batch per feature.
    pub(crate) fn apply(&mut self, spec: &FeatureSpec, g: Generation, e: &weft_core::Event) {
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
