//! Weft's batch layer (not built yet: see the batch-layer issue).
//!
//! It will read the hive-partitioned Parquet archive that `weft_core::archive`
//! defines, compute every user's bucketed partials with DataFusion under the
//! semantics in `docs/semantics.md`, and publish immutable, versioned batch
//! views bounded by Kafka offsets. This crate deliberately holds no code until
//! then, so that nothing here pretends to work.
