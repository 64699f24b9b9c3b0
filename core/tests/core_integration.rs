//! weft-core's integration tests, in one binary (fewer links, faster builds).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod algebra;
mod archive_io;
mod example_spec;
mod generator;
mod spec_errors;
