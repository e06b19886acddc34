//! Remora's data-plane sidecar.
//!
//! The request path, top to bottom (drawn in `docs/request-flow.md`):
//! [`server`] binds and runs workers -> [`http`] serves a downstream connection ->
//! [`http::service`] routes ([`route`]), balances ([`balance`]), rewrites ([`headers`], [`trace`])
//! and sends through [`upstream`] pools -> [`body`] streams the response back while [`observe`]
//! records metrics ([`metrics`]) and the access log ([`access_log`]). [`error`] is the one place
//! proxy failures become responses; [`grpc`] knows gRPC calls (deadlines, statuses), and
//! [`http::upgrade`] tunnels HTTP/1.1 upgrades. [`admin`] serves health, metrics and introspection.
//! Resilience rules, pure and testable on their own: [`retry`] (classification, backoff, budget),
//! [`breaker`] (cluster limits, consecutive-failure breaker), [`fault`] (injection) and
//! [`ratelimit`] (token buckets).

pub mod access_log;
pub mod admin;
pub mod authz;
pub mod balance;
pub mod body;
pub mod breaker;
pub mod capture;
pub mod cli;
pub mod context;
pub mod control;
pub mod detect;
pub mod discovery;
pub mod error;
pub mod fault;
pub mod framing;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod headers;
pub mod health;
pub mod http;
pub mod io;
pub mod metrics;
pub mod observe;
pub mod ratelimit;
pub mod reload;
pub mod retry;
pub mod rng;
pub mod route;
pub mod server;
pub mod snapshot;
pub mod tcp;
pub mod tls;
pub mod trace;
pub mod upstream;
pub mod worker;

pub use server::{BoundAddrs, Proxy, RunOptions, StartError};
