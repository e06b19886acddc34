//! Remora's one config model, shared by the proxy and the control plane.
//!
//! Loading goes YAML text -> a tree of located nodes -> raw types ([`raw`], through a
//! deserializer that reports every problem instead of stopping at the first) -> validated
//! [`model`] types. Every problem found on the way comes back at once as [`Diagnostics`], one
//! `file:line:col: field.path: message` line each, sorted by position.

pub mod defaults;
pub mod identity;
pub mod mesh;
pub mod model;
pub mod protocol;
pub mod raw;
pub mod timestamp;
pub mod units;

mod de;
mod diag;
mod emit;
mod node;
mod schema;
mod validate;

use std::path::Path;

pub use diag::{Diagnostic, Diagnostics};

use diag::Collector;
use node::Kind;

/// Loads and validates a config file. Diagnostics name the file by `path` as given.
pub fn load_file(path: &Path) -> Result<model::Config, Diagnostics> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => load_str(&name, &text),
        Err(e) => Err(Diagnostics(vec![Diagnostic {
            file: name,
            line: 0,
            column: 0,
            path: String::new(),
            message: format!("cannot read the config: {e}"),
        }])),
    }
}

/// Loads and validates config text; `source_name` is the file name used in diagnostics.
pub fn load_str(source_name: &str, text: &str) -> Result<model::Config, Diagnostics> {
    let out = Collector::new(source_name);
    let root = match node::parse(text) {
        Ok(root) => root,
        Err(e) => {
            out.report(e.pos, "", e.message);
            return out.finish(None);
        }
    };
    if root.kind == Kind::Null {
        let msg = "the config is empty; it needs at least 'listeners' and 'clusters'";
        out.report(root.pos, "", msg);
        return out.finish(None);
    }
    let raw: Option<raw::Config> = de::from_node(&root, &out);
    let config = raw.map(|raw| validate::validate(&raw, &root, &out));
    out.finish(config)
}

/// The effective config as YAML, every default written out. `load_str` reads it back to the
/// same config.
pub fn to_yaml(config: &model::Config) -> String {
    emit::to_yaml(config)
}

/// JSON Schema (draft 7) of the YAML file, for editors.
pub fn schema() -> serde_json::Value {
    schema::schema()
}

/// A route as the YAML would write it, every default spelled out, as JSON (for tools that show
/// config, such as `remora explain`).
pub fn route_json(route: &model::Route) -> serde_json::Value {
    serde_json::to_value(emit::route(route)).unwrap_or_default()
}

/// A cluster as the YAML would write it, every default spelled out, as JSON.
pub fn cluster_json(cluster: &model::Cluster) -> serde_json::Value {
    serde_json::to_value(emit::cluster(cluster)).unwrap_or_default()
}
