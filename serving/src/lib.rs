//! Weft's serving layer: `weft.v1.ProfileService` over gRPC and an
//! HTTP/JSON API, answering from `batch view vN ⊕ speed generation N`.
//!
//! * [`server`] runs it all in one process (`weft serve`): [`run`] serves
//!   on listeners the caller bound until a cancellation token fires
//!   ([`Server::open`] then [`Server::run`]); [`start`] runs it on a task
//!   (tests, `weft up`); `views` opens batch views and switches pairs;
//! * [`state`] holds the atomically swapped (view, generation) pair and the
//!   merged read;
//! * [`api`] is the request logic both front ends share ([`grpc`], [`http`]);
//!   [`reply`] encodes GetProfile's gRPC reply straight from the values;
//! * [`auth`] maps API keys to tenants and scopes; [`gate`] sheds load and
//!   keeps deadlines; [`recs`] blends recommendations;
//! * [`route`] knows which shard owns a user and forwards calls to it;
//! * [`collect`] is the event collector, `POST /v1/events` (bodies, limits,
//!   the producer);
//! * [`conn`] is a gRPC connection that writes a small reply at once;
//! * [`metrics`] is the Prometheus registry; the configuration is
//!   `weft-config`'s tree ([`WeftConfig`]), re-exported as [`config`].

pub mod api;
pub mod auth;
pub mod collect;
pub mod conn;
pub mod demo;
pub mod error;
pub mod gate;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod ops;
pub mod recs;
pub mod reply;
pub mod route;
pub mod server;
pub mod state;
mod views;

pub use error::ApiError;
pub use server::{Running, ServeError, Server, bind, run, start};
/// The configuration tree (`weft-config`), under its old path.
pub use weft_config as config;
pub use weft_config::WeftConfig;
