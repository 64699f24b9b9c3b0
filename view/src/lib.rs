//! Weft's batch views without the batch job: the format the batch layer
//! writes and the serving and speed layers read, so those link RocksDB and
//! `object_store` but not DataFusion.
//!
//! * [`location`]: where an archive or a view store lives (a local
//!   directory or an `s3://`/`gs://`/`file://` URL) and its `object_store`
//!   handle.
//! * [`format`]: what a view `vNNNNNN/` holds (SST files, `spec.toml`,
//!   `manifest.json`), the [`Manifest`] and the merge [`Boundary`] it
//!   records, file checksums, the SST options writers and readers share.
//! * [`recs`]: the keys and encoding of the recommendation lists
//!   (neighbours, popularity) stored with each view.
//! * [`store`]: the [`ViewStore`]: staging, atomic publishing, `CURRENT`
//!   (rollback), retention, and fetching a view's files.
//! * [`opened`]: an [`OpenedView`] for reads: profiles, neighbours and
//!   popularity, from RocksDB through a [`BlockCache`] ([`cache`]) the
//!   caller passes in, or from a copy held in memory (`memory`).
//! * [`watch`]: [`spawn_watcher`], following a store's `CURRENT`.
//! * [`error`]: the error type, [`ViewError`].
//!
//! Computing views (DataFusion over the Parquet archive) is `weft_batch`.

pub mod cache;
pub mod error;
pub mod format;
pub mod location;
pub mod opened;
pub mod recs;
pub mod store;
pub mod watch;

mod memory;

pub use cache::BlockCache;
pub use error::{Result, ViewError};
pub use format::{Boundary, BoundarySource, Manifest, version_name};
pub use location::Location;
pub use opened::{OpenedView, Warmed};
pub use store::{Staging, ViewStore};
pub use watch::spawn_watcher;
