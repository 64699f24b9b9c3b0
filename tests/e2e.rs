//! End-to-end tests of the `weft` binary, in one test binary.

mod cli;
