//! Weft's core: the pieces every layer shares.
//!
//! * [`event`]: the validated [`Event`] and its wire conversion; invalid
//!   input is an [`InvalidEvent`] with a reason for the dead-letter topic.
//! * [`spec`]: the TOML feature spec ([`FeatureSpec`]), windows and buckets.
//! * [`agg`]: the aggregate algebra: [`Partial`]s are monoids under
//!   [`Aggregate::merge`](spec::Aggregate::merge).
//! * [`eval`]: bucketed evaluation at a query time (what speed and serving
//!   do) and profile comparison.
//! * [`reference`]: the plain evaluator over raw events, the oracle of every
//!   correctness test.
//! * [`codec`] and [`keys`]: the versioned value encoding of partials and
//!   the order-preserving key encoding (tenant, user, feature, bucket).
//! * [`archive`]: the hive-partitioned Parquet master dataset.
//! * [`generator`]: the deterministic, realistic event generator.
//! * [`partition`]: Kafka's murmur2 partitioner; [`time`]: UTC dates;
//!   [`runtime`]: the one way a tokio runtime is built.
//!
//! The semantics these implement are written down once, in
//! `docs/semantics.md`.

pub mod agg;
pub mod archive;
pub mod codec;
pub mod eval;
pub mod event;
pub mod generator;
pub mod keys;
pub mod partition;
pub mod reference;
pub mod runtime;
pub mod segment;
pub mod spec;
pub mod time;

pub use agg::{FeatureValue, Partial};
pub use eval::{Profile, UserBuckets};
pub use event::{Event, EventKind, InvalidEvent};
pub use spec::{FeatureSpec, SpecError};
