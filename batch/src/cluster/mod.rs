//! The batch job on an Apache DataFusion Ballista cluster.
//!
//! * [`client`]: `weft batch run --cluster df://host:port`, the job's plan
//!   submitted to a scheduler, its tasks' files adopted and published.
//! * [`process`]: `weft batch scheduler` and `weft batch executor`,
//!   Ballista's processes with Weft's codec.
//! * [`codec`]: [`WeftCodec`], how Weft's fold operator travels in plans,
//!   with a wire version that another Weft build refuses by name.
//!
//! `docs/batch.md` ("On a cluster") and `docs/scaling.md` are the guides.

pub mod client;
pub mod codec;
pub mod process;
mod stores;

pub use codec::WeftCodec;
