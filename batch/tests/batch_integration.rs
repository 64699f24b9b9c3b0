//! The batch layer's integration tests: real DataFusion over real Parquet
//! files, real SST files ingested into real RocksDB.
#![allow(clippy::unwrap_used)]

mod common;
mod correctness;
mod inputs;
mod publishing;
mod training;
