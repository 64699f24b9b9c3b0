//! weft-core's integration tests, in one binary (fewer links, faster builds).

mod algebra;
mod archive_io;
mod example_spec;
mod generator;
