//! weft-speed's integration tests, in one binary, against a live broker.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod cursor_exact;
mod kafka_roundtrip;
mod speed_apply;
