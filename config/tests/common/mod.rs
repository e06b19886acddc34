//! Helpers shared by the diagnostics tests.

#![allow(dead_code)] // each test file uses its own subset

use std::time::Duration;

use remora_config::load_str;
use remora_config::model::{Config, ListenerKind, Route};

/// The diagnostics for `yaml` (named `t.yaml`), one string per line.
pub fn errors(yaml: &str) -> Vec<String> {
    match load_str("t.yaml", yaml) {
        Ok(_) => Vec::new(),
        Err(d) => d.iter().map(ToString::to_string).collect(),
    }
}

/// A valid config with a listener routing to cluster `api`, to break in one place per test.
pub const BASE: &str = "\
listeners:
  - address: 127.0.0.1:8080
    routes:
      - cluster: api
clusters:
  - name: api
";

/// `yaml` (named `t.yaml`) loaded, panicking with the diagnostics if it is refused.
pub fn load(yaml: &str) -> Config {
    load_str("t.yaml", yaml).unwrap_or_else(|d| panic!("{d}"))
}

/// The routes of the first listener, which must speak HTTP.
pub fn routes(config: &Config) -> &[Route] {
    match &config.listeners[0].kind {
        ListenerKind::Http { routes } | ListenerKind::Auto { routes, .. } => routes,
        ListenerKind::Tcp { .. } => panic!("listener 0 is tcp"),
    }
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
