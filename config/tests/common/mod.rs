//! Helpers shared by the diagnostics tests.

use remora_config::load_str;

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
