//! Weft's batch layer: recomputes every user's profile from the Parquet
//! archive with DataFusion and publishes immutable, versioned batch views.
//!
//! * [`source`]: the archive (its location is a [`weft_view::Location`]:
//!   local path or `s3://`/`gs://` URL), which files it holds (each footer
//!   checked before anything runs), and the merge boundary: per Kafka
//!   partition the highest offset `O_p` up to which the archive is
//!   contiguous.
//! * [`job`]: the run. DataFusion scans the archive (projection and the
//!   boundary pushed into the scan), hash-partitions rows by (tenant, user)
//!   and sorts each partition by (tenant, user, partition, offset) under a
//!   bounded, spilling memory pool; each partition is then folded user by
//!   user with `weft_core`'s aggregates (the same code the speed layer and
//!   the reference share) straight into a sorted SST file.
//! * [`operator`]: [`operator::FoldExec`], the physical operator that
//!   runs the fold of one partition as a task, in this process or on a
//!   Ballista executor; [`cluster`]: running the job on a Ballista cluster
//!   (the client, `weft batch scheduler`, `weft batch executor`, and the
//!   codec that ships the operator).
//! * [`recs`]: item-to-item neighbours from co-occurrence and item
//!   popularity per tenant and category, for recommendations.
//! * the view format (SST files + manifest), the view store, atomic
//!   publishing with retention and rollback, and opening a view for reads
//!   are the `weft_view` crate, which serving uses without DataFusion.
//! * [`export`]: one Parquet row per user, one column per feature.
//! * [`error`]: the error type, [`BatchError`].
//!
//! `docs/batch.md` is the user guide; `docs/semantics.md` the semantics.

pub mod cluster;
pub mod error;
pub mod export;
pub mod job;
pub mod operator;
pub mod recs;
pub mod source;
pub mod training;

mod columns;
mod fold;
mod group;

pub use error::{BatchError, Result};
pub use job::{BatchConfig, JobProgress, JobSummary, run};
