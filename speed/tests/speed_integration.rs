//! weft-speed's integration tests, in one binary, against a live broker.

mod kafka_roundtrip;
