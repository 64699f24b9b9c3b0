//! Weft in a bidder's own process.
//!
//! * [`EmbeddedReader`] opens the batch view and tails the Kafka partitions
//!   it is given, in process (LinkedIn Venice's Da Vinci client is the
//!   model), and answers `get_profile(tenant, user)` with the merged
//!   profile and freshness `weft serve` would send, with no RPC: the same
//!   code (`weft_serving::Server` without its front ends) keeps the same
//!   `batch view vN ⊕ speed generation N` pair current.
//! * [`RoutingClient`] calls a sharded `weft serve` fleet: each user's call
//!   goes straight to the shard that owns the user's partition (the rule in
//!   `weft.proto`), so no shard has to forward it.

mod embedded;
mod routing;

pub use embedded::{EmbeddedReader, ProfileRead, ReadError};
pub use routing::{RoutingClient, ShardAddress};
pub use weft_config::{PartitionSet, WeftConfig};
pub use weft_serving::ServeError;
