//! Weft's wire contract (protobuf package `weft.v1`).
//!
//! * [`v1::Event`]: the value of every record on the `events` topic.
//! * [`v1::profile_service_server`] / [`v1::profile_service_client`]: the
//!   gRPC `ProfileService` for bidders and servers.
//! * [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for server reflection.
//!
//! Code generation happens only in this crate's `build.rs`; every other crate
//! uses these types.

pub mod codec;

/// Generated messages and services of package `weft.v1`.
#[allow(unreachable_pub, missing_debug_implementations, clippy::all)]
pub mod v1 {
    tonic::include_proto!("weft.v1");
}

/// The encoded `FileDescriptorSet` of `weft.v1`, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("weft_descriptor");
