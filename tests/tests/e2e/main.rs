//! End-to-end tests of `remora-proxy`: the real program as a child process, scripted upstreams,
//! real clients, everything on `127.0.0.1:0`. Each test starts its own proxy, so tests are
//! independent and run in parallel.
//!
//! One test binary with a module per theme: one link step instead of one per file. Run with
//! `cargo nextest run -p remora-tests` or `cargo test -p remora-tests`.

mod access_log;
mod admin;
mod authz;
mod balancing;
mod capture;
mod cli;
mod control_plane;
mod detection;
mod dns;
mod drain;
mod errors;
mod grpc;
mod harness;
mod headers;
mod health;
mod hedging;
mod limits;
mod metrics;
mod mtls;
mod pods;
mod protocols;
mod refused_stream;
mod reload;
mod resilience;
mod routing;
mod streaming;
mod strict;
mod tcp;
mod upgrade;
mod webhook;

/// The label set of one `remora_requests_total` sample on an inbound listener.
pub fn request_labels<'a>(
    listener: &'a str,
    route: &'a str,
    cluster: &'a str,
    status_class: &'a str,
) -> [(&'static str, &'a str); 5] {
    [
        ("listener", listener),
        ("direction", "inbound"),
        ("route", route),
        ("cluster", cluster),
        ("status_class", status_class),
    ]
}
