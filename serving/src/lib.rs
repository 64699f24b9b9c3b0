//! Weft's serving layer (not built yet: see the serving-layer issue).
//!
//! It will implement `weft.v1.ProfileService` (contract in `weft-proto`) and
//! the HTTP/JSON API, merging batch view vN with the speed generation that
//! covers offsets after vN's boundary. This crate deliberately holds no code
//! until then, so that nothing here pretends to work.
