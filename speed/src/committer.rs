//! Writing folded batches to the store on their own thread.
//!
//! Folding a batch (dedup lookups, partials in memory) and writing it
//! (encoding, the WriteBatch, the memtable inserts) take about the same
//! time, so a [`Committer`] writes batch N while its caller folds batch
//! N+1. Batches are still committed one at a time, in the order submitted,
//! each as one WriteBatch with its offsets: a crash leaves the store at a
//! batch boundary exactly as before.
//!
//! [`Committer::submit`] returns once the committer has taken the batch,
//! which it does only after the previous one is committed. So while the
//! caller folds the next batch, at most one batch is written and not yet
//! visible in the store. Dedup does not read the store (the caller's
//! [`crate::store::DedupIndex`] holds every id folded), so the next batch
//! still sees that batch's ids.

use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::thread::JoinHandle;

use crate::SpeedError;
use crate::store::{Generation, PendingBatch, SpeedStore};

/// A batch to commit, and what the caller wants reported after it.
struct Job<T> {
    g: Generation,
    batch: PendingBatch,
    report: T,
}

/// Commits [`PendingBatch`]es in order on its own thread; see the module
/// docs. `T` travels with each batch to the `after` hook given to
/// [`Committer::spawn`], which runs on the committer thread once that batch
/// is committed (metrics, acknowledgements).
pub(crate) struct Committer<T: Send + 'static> {
    jobs: Option<SyncSender<Job<T>>>,
    thread: Option<JoinHandle<Result<(), SpeedError>>>,
}

impl<T: Send + 'static> std::fmt::Debug for Committer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer")
            .field("running", &self.thread.is_some())
            .finish()
    }
}

impl<T: Send + 'static> Committer<T> {
    /// Starts the committer thread. It stops at the first failed commit;
    /// the next [`Committer::submit`] or [`Committer::finish`] returns the
    /// error.
    pub(crate) fn spawn(
        store: Arc<SpeedStore>,
        mut after: impl FnMut(T) + Send + 'static,
    ) -> Result<Committer<T>, SpeedError> {
        // A rendezvous channel: `submit` waits until the thread is free,
        // i.e. until the previous batch is committed.
        let (jobs, rx) = std::sync::mpsc::sync_channel::<Job<T>>(0);
        let thread = std::thread::Builder::new()
            .name("weft-speed-commit".into())
            .spawn(move || {
                for Job { g, batch, report } in rx {
                    store.commit(g, batch)?;
                    after(report);
                }
                Ok(())
            })
            .map_err(|source| SpeedError::Io {
                path: "weft-speed-commit thread".into(),
                source,
            })?;
        Ok(Committer {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Hands `batch` (generation `g`) over, once the previous batch is
    /// committed.
    pub(crate) fn submit(
        &mut self,
        g: Generation,
        batch: PendingBatch,
        report: T,
    ) -> Result<(), SpeedError> {
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|tx| tx.send(Job { g, batch, report }).is_ok());
        if sent {
            Ok(())
        } else {
            Err(self
                .join()
                .err()
                .unwrap_or_else(|| SpeedError::Store("the commit thread stopped".into())))
        }
    }

    /// Commits what was submitted and stops the thread: the first error.
    pub(crate) fn finish(mut self) -> Result<(), SpeedError> {
        self.join()
    }

    fn join(&mut self) -> Result<(), SpeedError> {
        self.jobs = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(SpeedError::Store("the commit thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl<T: Send + 'static> Drop for Committer<T> {
    fn drop(&mut self) {
        // Let the thread finish what it holds; its error, if any, was the
        // caller's to collect with `finish`.
        let _ = self.join();
    }
}
