//! End-to-end tests of the `weft` binary, in one test binary.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod archive_crash;
mod cli;
mod cluster;
mod collector;
mod common;
mod generation_switch;
mod ops;
mod recs;
mod s3;
mod serving;
mod shards;
mod speed_crash;
mod up;
mod whole_loop;
