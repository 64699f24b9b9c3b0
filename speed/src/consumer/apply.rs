//! Applying batches: [`BatchApplier`], the one way to dedup, fold and
//! commit decoded records (the consumer's apply thread uses it, and so does
//! the apply-path benchmark, `weft-bench ingest`), and the consumer's apply
//! thread around it ([`ApplyThread`]: dead letters, metrics, dedup expiry).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use weft_core::Event;

use super::{DeadLetters, Polled, SpeedMetrics};
use crate::SpeedError;
use crate::committer::Committer;
use crate::store::{Applied, DedupIndex, Delivery, Generation, PendingBatch, SpeedStore};

/// One consumed record as [`BatchApplier::fold`] takes it: where and when
/// Kafka delivered it, and its decoded event, or `None` for a record that
/// was not applied (the consumer sent it to the dead-letter topic); either
/// way its offset counts as consumed.
#[derive(Debug, Clone, Copy)]
pub struct Record<'e> {
    pub partition: i32,
    pub offset: i64,
    /// The Kafka record time (the event time when the record has none).
    pub kafka_ts_ms: i64,
    pub event: Option<&'e Event>,
}

/// A batch [`BatchApplier::fold`] folded, not yet committed.
#[derive(Debug)]
pub struct Folded {
    g: Generation,
    batch: PendingBatch,
    applied: Applied,
}

impl Folded {
    /// What the fold applied and dropped as redeliveries.
    pub fn applied(&self) -> Applied {
        self.applied
    }

    /// The next offset per partition of the batch.
    pub fn next_offsets(&self) -> &HashMap<i32, i64> {
        self.batch.next_offsets()
    }

    /// Events applied per tenant.
    pub fn tenant_counts(&self) -> Vec<(String, u64)> {
        self.batch
            .tenants
            .iter()
            .map(|(t, n)| (t.clone(), *n))
            .collect()
    }
}

/// The speed layer's apply path for decoded records, batch by batch: drop
/// redeliveries (same tenant, user and event id first delivered within the
/// dedup horizon of Kafka time), fold the rest into partials, and commit
/// partials, dedup ids and offsets as one RocksDB WriteBatch on a
/// [`Committer`] thread while the caller folds the next batch.
///
/// Batches are committed one at a time in the order folded. Dedup looks ids
/// up in an in-memory index the applier owns, loaded from the store for the
/// first batch's generation, which holds every id folded: batch N+1 sees
/// batch N's ids even before N is committed. `T` travels with each batch to
/// the `after` hook given to [`BatchApplier::spawn`], which runs on the
/// commit thread once that batch is committed.
#[derive(Debug)]
pub struct BatchApplier<T: Send + 'static = ()> {
    store: Arc<SpeedStore>,
    committer: Committer<T>,
    index: DedupIndex,
    horizon_ms: i64,
}

impl<T: Send + 'static> BatchApplier<T> {
    /// Starts the commit thread. `horizon` is the dedup horizon
    /// ([`super::DEFAULT_DEDUP_HORIZON`] by default).
    pub fn spawn(
        store: Arc<SpeedStore>,
        horizon: Duration,
        after: impl FnMut(T) + Send + 'static,
    ) -> Result<BatchApplier<T>, SpeedError> {
        Ok(BatchApplier {
            committer: Committer::spawn(store.clone(), after)?,
            store,
            index: DedupIndex::default(),
            horizon_ms: horizon.as_millis() as i64,
        })
    }

    /// Applies one batch of generation `g`: [`BatchApplier::fold`], then
    /// [`BatchApplier::commit`] with `report`. What it applied.
    pub fn apply<'e>(
        &mut self,
        g: Generation,
        records: impl IntoIterator<Item = Record<'e>>,
        report: T,
    ) -> Result<Applied, SpeedError> {
        let folded = self.fold(g, records)?;
        let applied = folded.applied();
        self.commit(folded, report)?;
        Ok(applied)
    }

    /// Dedups and folds one batch of generation `g` (every record's offset
    /// consumed, every event not a redelivery applied), without committing
    /// it: the caller may finish what must precede the commit (the
    /// consumer waits for its dead letters' acknowledgement), then
    /// [`BatchApplier::commit`]s it.
    pub fn fold<'e>(
        &mut self,
        g: Generation,
        records: impl IntoIterator<Item = Record<'e>>,
    ) -> Result<Folded, SpeedError> {
        let records = records.into_iter();
        let mut batch = PendingBatch::default();
        let mut deliveries = Vec::with_capacity(records.size_hint().0);
        for r in records {
            batch.consumed(r.partition, r.offset);
            if let Some(event) = r.event {
                deliveries.push(Delivery {
                    event,
                    partition: r.partition,
                    offset: r.offset,
                    kafka_ts_ms: r.kafka_ts_ms,
                });
            }
        }
        let applied = batch.apply_new(
            &self.store,
            g,
            &deliveries,
            self.horizon_ms,
            &mut self.index,
        )?;
        Ok(Folded { g, batch, applied })
    }

    /// Hands a folded batch to the commit thread, once the previous one is
    /// committed.
    pub fn commit(&mut self, folded: Folded, report: T) -> Result<(), SpeedError> {
        self.committer.submit(folded.g, folded.batch, report)
    }

    /// Lets generation `g`'s dedup ids first delivered before `cutoff_ms`
    /// go: from the store at compaction, and from the in-memory index a
    /// shard at a time (ids outlive the cutoff by at most a quarter of the
    /// horizon).
    pub fn expire_before(&mut self, g: Generation, cutoff_ms: i64) {
        self.store.expire_dedup_before(g, cutoff_ms);
        self.index.expire_before(g, cutoff_ms, self.horizon_ms / 4);
    }

    /// Dedup ids held in memory.
    pub fn dedup_ids(&self) -> usize {
        self.index.len()
    }

    /// Commits what was handed over and stops the commit thread: the first
    /// error.
    pub fn finish(self) -> Result<(), SpeedError> {
        self.committer.finish()
    }
}

impl BatchApplier {
    /// Reads generation `g`'s dedup ids back from `store`, as an applier
    /// does for its first batch after a restart: how many.
    pub fn reload_dedup_ids(store: &SpeedStore, g: Generation) -> Result<usize, SpeedError> {
        Ok(DedupIndex::load(store, g)?.len())
    }
}

/// A polled batch for the applier.
struct Work {
    g: Generation,
    polled: Vec<Polled>,
}

/// Applies batches on its own thread, in the order submitted, while the
/// poll loop polls and decodes the next one: dead letters, then dedup and
/// fold through a [`BatchApplier`], which commits on its own thread while
/// the next batch is folded. Each batch is still one WriteBatch with its
/// offsets, committed in order; batch N+1's dedup sees batch N's ids
/// through the applier's index even before N is committed, so the store
/// moves exactly as it did with one thread.
pub(super) struct ApplyThread {
    work: Option<std::sync::mpsc::SyncSender<Work>>,
    done: std::sync::mpsc::Receiver<()>,
    thread: Option<std::thread::JoinHandle<Result<(), SpeedError>>>,
    /// Batches submitted and not yet acknowledged.
    in_flight: usize,
}

impl ApplyThread {
    pub(super) fn spawn(
        store: Arc<SpeedStore>,
        metrics: Arc<SpeedMetrics>,
        mut dead_letters: DeadLetters,
        partitions: usize,
        horizon: Duration,
    ) -> Result<ApplyThread, SpeedError> {
        let horizon_ms = horizon.as_millis() as i64;
        // One batch queued while one is applied: the poll loop runs at
        // most two batches ahead of the store.
        let (work_tx, work_rx) = std::sync::mpsc::sync_channel::<Work>(1);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("weft-speed-apply".into())
            .spawn(move || {
                // Acknowledged once committed: `drain` waits for that.
                let committed = metrics.clone();
                let mut applier =
                    BatchApplier::spawn(store.clone(), horizon, move |r: BatchReport| {
                        r.record(&committed);
                        let _ = done_tx.send(());
                    })?;
                // Latest Kafka record time seen per partition, for dedup
                // expiry, in the generation of `latest_g`.
                let mut latest_ts: HashMap<i32, i64> = HashMap::new();
                let mut latest_g = None;
                let mut last_stats = Instant::now() - Duration::from_secs(60);
                for Work { g, polled } in work_rx {
                    if latest_g != Some(g) {
                        latest_ts.clear();
                        latest_g = Some(g);
                    }
                    for r in &polled {
                        if let Some(ts) = r.kafka_ts {
                            let t = latest_ts.entry(r.partition).or_insert(ts);
                            *t = (*t).max(ts);
                        }
                    }
                    let (folded, report) = fold_batch(&mut applier, g, &mut dead_letters, polled)?;
                    applier.commit(folded, report)?;
                    // A record's dedup lookup reaches back one horizon from
                    // its own Kafka time; records of the slowest partition
                    // are the oldest still to come. Two horizons of slack
                    // cover producer clock skew.
                    if latest_ts.len() == partitions
                        && let Some(slowest) = latest_ts.values().min()
                    {
                        let cutoff = slowest - 2 * horizon_ms;
                        applier.expire_before(g, cutoff);
                    }
                    metrics
                        .dedup_ids
                        .store(applier.dedup_ids() as u64, Ordering::Relaxed);
                    if last_stats.elapsed() >= Duration::from_secs(5) {
                        last_stats = Instant::now();
                        if let Ok(mut stats) = metrics.rocksdb.lock() {
                            *stats = store.rocksdb_stats();
                        }
                    }
                }
                applier.finish()
            })
            .map_err(|source| SpeedError::Io {
                path: "weft-speed-apply thread".into(),
                source,
            })?;
        Ok(ApplyThread {
            work: Some(work_tx),
            done: done_rx,
            thread: Some(thread),
            in_flight: 0,
        })
    }

    /// Closes the queue and waits for the thread: its result.
    fn join(&mut self) -> Result<(), SpeedError> {
        self.work = None;
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(SpeedError::Store("the apply thread panicked".into())),
            None => Ok(()),
        }
    }

    /// The applier's error once it has stopped.
    fn failed(&mut self) -> SpeedError {
        self.join()
            .err()
            .unwrap_or_else(|| SpeedError::Store("the apply thread stopped".into()))
    }

    pub(super) fn submit(&mut self, g: Generation, polled: Vec<Polled>) -> Result<(), SpeedError> {
        let sent = self
            .work
            .as_ref()
            .is_some_and(|tx| tx.send(Work { g, polled }).is_ok());
        if !sent {
            return Err(self.failed());
        }
        self.in_flight += 1;
        while self.done.try_recv().is_ok() {
            self.in_flight -= 1;
        }
        Ok(())
    }

    /// Waits until every submitted batch is committed.
    pub(super) fn drain(&mut self) -> Result<(), SpeedError> {
        while self.in_flight > 0 {
            if self.done.recv().is_err() {
                return Err(self.failed());
            }
            self.in_flight -= 1;
        }
        Ok(())
    }

    /// Applies what is queued and stops the thread.
    pub(super) fn finish(mut self) -> Result<(), SpeedError> {
        self.join()
    }
}

/// What a batch did, reported to the metrics once it is committed.
struct BatchReport {
    started: Instant,
    records: u64,
    applied: Applied,
    dead: u64,
    /// Per partition of the batch, the next offset.
    positions: HashMap<i32, i64>,
    /// Events applied per tenant.
    tenants: Vec<(String, u64)>,
}

impl BatchReport {
    fn record(self, metrics: &SpeedMetrics) {
        metrics.records.fetch_add(self.records, Ordering::Relaxed);
        metrics
            .applied
            .fetch_add(self.applied.applied, Ordering::Relaxed);
        metrics
            .duplicates
            .fetch_add(self.applied.duplicates, Ordering::Relaxed);
        metrics.dead_letters.fetch_add(self.dead, Ordering::Relaxed);
        metrics
            .newest_event_ms
            .fetch_max(self.applied.newest_event_ms, Ordering::Relaxed);
        if let Ok(mut per_tenant) = metrics.tenant_applied.lock() {
            for (tenant, n) in self.tenants {
                *per_tenant.entry(tenant).or_default() += n;
            }
        }
        if let Ok(mut positions) = metrics.positions.lock() {
            for (p, next) in self.positions {
                let at = positions.entry(p).or_insert(0);
                *at = (*at).max(next);
            }
        }
        let took = self.started.elapsed();
        metrics
            .last_batch_micros
            .store(took.as_micros() as u64, Ordering::Relaxed);
        metrics.apply_seconds.observe(took.as_secs_f64());
        metrics.batches.fetch_add(1, Ordering::Relaxed);
    }
}

/// Sends a batch's dead letters (waiting for the broker's acknowledgement)
/// and folds its valid records: the batch to commit and its report.
fn fold_batch(
    applier: &mut BatchApplier<BatchReport>,
    g: Generation,
    dead_letters: &mut DeadLetters,
    polled: Vec<Polled>,
) -> Result<(Folded, BatchReport), SpeedError> {
    let started = Instant::now();
    let mut dead = 0u64;
    for r in &polled {
        if let Err(reason) = &r.event {
            dead_letters.send(
                r.key.as_deref(),
                &r.payload,
                r.partition,
                r.offset,
                &reason.to_string(),
            )?;
            dead += 1;
        }
    }
    let records = polled.iter().map(|r| {
        let event = r.event.as_ref().ok();
        Record {
            partition: r.partition,
            offset: r.offset,
            kafka_ts_ms: r.kafka_ts.or(event.map(|e| e.ts_ms)).unwrap_or(i64::MIN),
            event,
        }
    });
    let folded = applier.fold(g, records)?;
    dead_letters.flush()?;
    let report = BatchReport {
        started,
        records: polled.len() as u64,
        applied: folded.applied(),
        dead,
        positions: folded.next_offsets().clone(),
        tenants: folded.tenant_counts(),
    };
    Ok((folded, report))
}
