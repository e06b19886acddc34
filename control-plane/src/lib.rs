//! Remora's control plane and its command-line tool, `remora`.
//!
//! - [`cli`]: the commands (`validate`, `schema`, `control-plane`, `status`, `ca`);
//! - [`store`]: the mesh directory, loaded, checked and watched;
//! - [`server`]: the watch that sidecars hold open, and the admin endpoints;
//! - [`ca`]: the mesh's certificate authority, and [`tokens`], who may ask it for what;
//! - [`sidecars`]: what each sidecar received, applied or refused (`remora status`).
//!
//! `main.rs` only calls [`run_cli`], so tests drive the same code in-process through
//! [`cli::run`].

pub mod ca;
pub mod cli;
pub mod explain;
pub mod inject;
pub mod metrics;
pub mod server;
pub mod sidecars;
pub mod status;
pub mod store;
pub mod tls;
pub mod token_review;
pub mod tokens;
pub mod webhook;

pub use cli::run_cli;
