//! Remora's control plane and its command-line tool, `remora`.
//!
//! For now this is the CLI's config commands ([`cli`]); the config server, CA, sidecar
//! injection, `status` and `explain` join it here as they are written. `main.rs` only calls
//! [`run_cli`], so tests drive the same code in-process through [`cli::run`].

pub mod cli;

pub use cli::run_cli;
