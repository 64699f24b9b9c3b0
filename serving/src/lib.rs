//! Weft's serving layer: `weft.v1.ProfileService` over gRPC and an
//! HTTP/JSON API, answering from `batch view vN ⊕ speed generation N`.
//!
//! * [`server::start`] runs it all in one process (`weft serve`);
//! * [`state`] holds the atomically swapped (view, generation) pair and the
//!   merged read;
//! * [`api`] is the request logic both front ends share ([`grpc`], [`http`]);
//!   [`reply`] encodes GetProfile's gRPC reply straight from the values;
//! * [`auth`] maps API keys to tenants and scopes; [`gate`] sheds load and
//!   keeps deadlines; [`recs`] blends recommendations;
//! * [`conn`] is a gRPC connection that writes a small reply at once;
//! * [`config`] is the layered configuration, [`metrics`] the Prometheus
//!   registry.

pub mod api;
pub mod auth;
pub mod config;
pub mod conn;
pub mod error;
pub mod gate;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod recs;
pub mod reply;
pub mod server;
pub mod state;

pub use config::ServeConfig;
pub use error::ApiError;
pub use server::{Running, ServeError, start};
