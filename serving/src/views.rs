//! Opening batch views for serving, and the switcher that pairs each view
//! with the speed generation built from its boundary.
//!
//! A view is opened (hard-linked and ingested under `views.work_dir`), then
//! either held in memory whole (`views.memory_mb`) or warmed into the block
//! cache (`views.warm`). The switcher stores a new `Pair { view,
//! generation }` once the speed layer's ready generation reaches an opened
//! view; the previous view stays open for the requests still on it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use weft_config::{PartitionSet, ViewsConfig};
use weft_view::{BlockCache, OpenedView, ViewStore, version_name};

use weft_speed::store::Generation;

use crate::ServeError;
use crate::state::{Pair, Serving};

/// Views opened and not yet dropped, by version.
type Opened = Arc<Mutex<BTreeMap<u64, Arc<OpenedView>>>>;

/// How views are opened (`[views]`), and the views open now (shared by
/// clones: the watcher, the switcher and start-up see the same ones).
#[derive(Debug, Clone)]
pub(crate) struct ViewOpener {
    pub(crate) store: ViewStore,
    work_dir: PathBuf,
    verify: bool,
    warm: bool,
    /// Hold views of at most this many bytes in memory.
    memory_bytes: u64,
    /// The block cache every opened view shares (`views.block_cache_mb`).
    cache: BlockCache,
    /// A shard's partitions: only their users' files are opened.
    partitions: Option<PartitionSet>,
    opened: Opened,
}

impl ViewOpener {
    pub(crate) fn new(
        store: ViewStore,
        c: &ViewsConfig,
        cache: BlockCache,
        partitions: Option<PartitionSet>,
    ) -> ViewOpener {
        ViewOpener {
            store,
            cache,
            partitions,
            work_dir: c.work_dir.clone(),
            verify: c.verify,
            warm: c.warm,
            memory_bytes: c.memory_mb << 20,
            opened: Opened::default(),
        }
    }

    /// View `version`: the one already open, else opened now (and kept).
    pub(crate) async fn get(&self, version: u64) -> Result<Arc<OpenedView>, ServeError> {
        if let Some(v) = self
            .opened
            .lock()
            .ok()
            .and_then(|o| o.get(&version).cloned())
        {
            return Ok(v);
        }
        let view = self.open(version).await?;
        if let Ok(mut o) = self.opened.lock() {
            o.insert(version, view.clone());
        }
        Ok(view)
    }

    /// Forgets every open view but those in `keep`, and removes their
    /// files (requests still on one hold their `Arc`).
    async fn retain(&self, keep: &[u64]) {
        let dropped: Vec<u64> = match self.opened.lock() {
            Ok(mut o) => {
                let old: Vec<u64> = o.keys().filter(|v| !keep.contains(v)).copied().collect();
                for v in &old {
                    o.remove(v);
                }
                old
            }
            Err(_) => Vec::new(),
        };
        let dirs: Vec<PathBuf> = dropped
            .iter()
            .map(|v| self.work_dir.join(version_name(*v)))
            .collect();
        // Removing directories blocks; the result only matters to disk use.
        let removed = tokio::task::spawn_blocking(move || {
            for d in dirs {
                if let Err(e) = std::fs::remove_dir_all(&d)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(error = %e, dir = %d.display(), "cannot remove an old view's files");
                }
            }
        });
        if let Err(e) = removed.await {
            tracing::warn!(error = %e, "removing old views' files failed");
        }
    }

    /// Opens view `version` and reads it into memory or the block cache.
    async fn open(&self, version: u64) -> Result<Arc<OpenedView>, ServeError> {
        let dir = self.work_dir.join(version_name(version));
        let view = Arc::new(
            OpenedView::open_partitions(
                &self.store,
                Some(version),
                &dir,
                self.verify,
                &self.cache,
                self.partitions.as_ref(),
            )
            .await?,
        );
        if self.memory_bytes > 0 && self.hold_in_memory(&view, version).await? {
            return Ok(view);
        }
        if self.warm {
            let started = std::time::Instant::now();
            let warming = view.clone();
            match tokio::task::spawn_blocking(move || warming.warm()).await {
                Ok(Ok(w)) => tracing::info!(
                    view = version,
                    entries = w.entries,
                    mib = w.bytes >> 20,
                    complete = w.complete,
                    ms = started.elapsed().as_millis() as u64,
                    "warmed the view's block cache"
                ),
                // A view that cannot be read whole is not served.
                Ok(Err(e)) => return Err(e.into()),
                Err(e) => tracing::warn!(error = %e, view = version, "warming the view failed"),
            }
        }
        Ok(view)
    }

    /// Reads `view` whole into memory when it fits; false when it does not
    /// (it is then read from RocksDB).
    async fn hold_in_memory(
        &self,
        view: &Arc<OpenedView>,
        version: u64,
    ) -> Result<bool, ServeError> {
        let started = std::time::Instant::now();
        let holding = view.clone();
        let limit = self.memory_bytes;
        match tokio::task::spawn_blocking(move || holding.hold_in_memory(limit)).await {
            Ok(Ok(h)) if h.complete => {
                tracing::info!(
                    view = version,
                    entries = h.entries,
                    mib = h.bytes >> 20,
                    ms = started.elapsed().as_millis() as u64,
                    "holding the view in memory"
                );
                Ok(true)
            }
            Ok(Ok(h)) => {
                tracing::info!(
                    view = version,
                    limit_mib = limit >> 20,
                    over_mib = h.bytes >> 20,
                    "the view is larger than views.memory_mb; reading it from RocksDB"
                );
                Ok(false)
            }
            // A view that cannot be read whole is not served.
            Ok(Err(e)) => Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, view = version, "reading the view into memory failed");
                Ok(false)
            }
        }
    }
}

/// One switcher step: when the speed layer's ready generation is newer than
/// the served pair's, pair it with the view it was built from (opened by the
/// watcher, or opened now after a restart) and swap. Returns whether it
/// swapped. A rollback is a newer generation of an older view.
pub(crate) async fn switch_if_ready(serving: &Serving, opener: Option<&ViewOpener>) -> bool {
    let ready = serving
        .speed_metrics()
        .ready_generation
        .load(Ordering::Relaxed) as Generation;
    let current = serving.current_pair();
    if ready == 0 || current.as_ref().is_some_and(|p| ready <= p.generation) {
        return false;
    }
    let Some(opener) = opener else {
        return false;
    };
    let version = match serving.speed().view_of(ready) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, generation = ready, "cannot read which view the ready generation belongs to");
            return false;
        }
    };
    let view = match opener.get(version).await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, generation = ready, view = version, "cannot open the view of the ready generation");
            return false;
        }
    };
    serving.switch(Pair::new(Some(view), ready));
    tracing::info!(
        view = version,
        generation = ready,
        "serving a new (view, generation) pair"
    );
    // Keep the new view, the previous one (requests in flight finish on
    // it) and the one whose generation is being built; forget the others
    // and their files.
    let mut keep = vec![version];
    keep.extend(current.as_ref().map(|p| p.view_version()));
    let building = serving
        .speed_metrics()
        .building_generation
        .load(Ordering::Relaxed) as Generation;
    if building > 0
        && let Ok(v) = serving.speed().view_of(building)
    {
        keep.push(v);
    }
    opener.retain(&keep).await;
    true
}
