//! Raw config -> model, reporting every semantic problem with its position.
//!
//! Each function reads one raw section, reports what is wrong, and still returns a model value
//! (with defaults standing in for bad parts) so the sections after it are checked too. Values
//! that failed to deserialize are `None` inside their [`Item`] and were reported already; they
//! are skipped here without a word, which is what keeps one typo from causing a cascade.

mod addr;
mod authz;
mod balance;
mod breaker;
mod clusters;
mod discovery;
mod fault;
mod headers;
mod health;
mod listeners;
mod matches;
pub(crate) mod mesh;
mod outlier;
mod rate_limit;
mod retry;
mod routes;

use std::path::PathBuf;
use std::time::Duration;

use crate::defaults::{self, ranges};
use crate::diag::{Collector, did_you_mean, list};
use crate::model;
use crate::node::Node;
use crate::raw::{self, ByteSize, DurationValue, Field, Item, Percent, Pos, SizeLimit};
use crate::units::{format_duration, format_percent, format_size};

/// Checks `raw` and builds the model from it; the caller discards the model if anything was
/// reported.
pub(crate) fn validate(raw: &raw::Config, root: &Node, out: &Collector) -> model::Config {
    config(&Cx::new(out, root), raw)
}

fn config(cx: &Cx, raw: &raw::Config) -> model::Config {
    let admin = raw.admin.as_ref().and_then(|item| admin(cx, item));
    let clusters = clusters::clusters(cx, raw.clusters.as_ref());
    let listeners = listeners::listeners(cx, raw.listeners.as_ref(), admin.as_ref());
    model::Config {
        admin: admin.map(|(admin, _)| admin),
        runtime: runtime(cx, &raw.runtime),
        access_log: access_log(cx, &raw.access_log),
        limits: limits(cx, &raw.limits),
        listeners,
        clusters,
    }
}

/// Checks a config built in code from raw pieces (a sidecar's, from the mesh): the cluster
/// names are read from `raw` rather than from a node tree.
pub(crate) fn validate_built(raw: &raw::Config, out: &Collector) -> model::Config {
    let names = elements(raw.clusters.as_ref(), "clusters")
        .filter_map(|(_, _, item)| item.get()?.name.as_ref()?.get().cloned())
        .collect();
    config(&Cx::with_names(out, names), raw)
}

/// What every check needs: where to report, and the cluster names that exist.
pub(crate) struct Cx<'a> {
    out: &'a Collector,
    /// Every cluster name written in the file, read from the node tree, including clusters that
    /// have problems of their own: a route to such a cluster is not reported a second time.
    cluster_names: Vec<String>,
}

impl<'a> Cx<'a> {
    fn new(out: &'a Collector, root: &Node) -> Self {
        let mut cluster_names = Vec::new();
        let clusters = root.get("clusters").map_or(&[][..], Node::elements);
        for cluster in clusters {
            if let Some(name) = cluster.get("name").and_then(Node::scalar_text)
                && !cluster_names.iter().any(|n| n == name.as_ref())
            {
                cluster_names.push(name.into_owned());
            }
        }
        Cx { out, cluster_names }
    }

    fn with_names(out: &'a Collector, cluster_names: Vec<String>) -> Self {
        Cx { out, cluster_names }
    }

    fn report(&self, pos: Pos, path: &str, message: impl Into<String>) {
        self.out.report(pos, path, message);
    }

    /// The field's item, or a report that it is missing from the mapping at `parent`.
    fn required<'f, T>(
        &self,
        field: &'f Field<T>,
        parent: Pos,
        path: &str,
        name: &str,
        why: &str,
    ) -> Option<&'f Item<T>> {
        if field.is_none() && !self.out.is_typo_target(&join(path, name)) {
            self.report(
                parent,
                path,
                format!("missing required field '{name}'{why}"),
            );
        }
        field.as_ref()
    }

    /// Checks that the named cluster exists.
    fn cluster_ref(&self, name: &Item<String>, path: &str) -> Option<String> {
        let text = name.get()?;
        if self.cluster_names.iter().any(|n| n == text) {
            return Some(text.clone());
        }
        let hint = if self.cluster_names.is_empty() {
            " (no clusters are defined)".to_owned()
        } else if self.cluster_names.len() <= 8 {
            format!(" (clusters: {})", list(&self.cluster_names))
        } else {
            let names: Vec<&str> = self.cluster_names.iter().map(String::as_str).collect();
            did_you_mean(text, &names)
                .map_or_else(String::new, |n| format!(" (did you mean '{n}'?)"))
        };
        self.report(name.pos, path, format!("no cluster named '{text}'{hint}"));
        None
    }

    fn duration(
        &self,
        field: &Field<DurationValue>,
        path: &str,
        (min, max): (Duration, Duration),
        default: Duration,
    ) -> Duration {
        let Some((DurationValue(d), pos)) = value(field) else {
            return default;
        };
        if *d < min || *d > max {
            let (min, max) = (format_duration(min), format_duration(max));
            let msg = format!(
                "{} is out of range; expected {min} to {max}",
                format_duration(*d)
            );
            self.report(pos, path, msg);
        }
        *d
    }

    fn size(
        &self,
        field: &Field<ByteSize>,
        path: &str,
        (min, max): (usize, usize),
        default: usize,
    ) -> usize {
        let Some((ByteSize(n), pos)) = value(field) else {
            return default;
        };
        let n = usize::try_from(*n).unwrap_or(usize::MAX);
        if n < min || n > max {
            let (min, max) = (format_size(min as u64), format_size(max as u64));
            let msg = format!(
                "{} is out of range; expected {min} to {max}",
                format_size(n as u64)
            );
            self.report(pos, path, msg);
        }
        n
    }

    fn count<N: Copy + PartialOrd + std::fmt::Display>(
        &self,
        field: &Field<N>,
        path: &str,
        (min, max): (N, N),
        default: N,
    ) -> N {
        let Some((n, pos)) = value(field) else {
            return default;
        };
        if *n < min || *n > max {
            self.report(
                pos,
                path,
                format!("{n} is out of range; expected {min} to {max}"),
            );
        }
        *n
    }

    /// A share written as a percentage, from 0% to 100%.
    fn percent(&self, field: &Field<Percent>, path: &str, default: f64) -> f64 {
        let Some((Percent(share), pos)) = value(field) else {
            return default;
        };
        let (min, max) = ranges::PERCENT;
        if *share < min || *share > max {
            let msg = format!(
                "{} is out of range; expected {} to {}",
                format_percent(*share),
                format_percent(min),
                format_percent(max)
            );
            self.report(pos, path, msg);
        }
        *share
    }
}

/// The one choice given among `choices`, or a report that there are none or several.
fn one_of<'f, T>(
    cx: &Cx,
    choices: &[(&'static str, &'f Field<T>)],
    pos: Pos,
    path: &str,
    names: &str,
) -> Option<(&'static str, &'f Item<T>)> {
    let given: Vec<(&'static str, Pos)> = choices
        .iter()
        .filter_map(|(name, field)| field.as_ref().map(|item| (*name, item.pos)))
        .collect();
    let name = only_one(cx, &given, pos, path, names)?;
    choices
        .iter()
        .find(|(n, _)| *n == name)
        .and_then(|(_, field)| field.as_ref())
        .map(|item| (name, item))
}

/// The one choice given, by name, among fields of different types (`given` holds the name and
/// position of each field that is present), or a report that there are none or several. The
/// later of several is the one reported: the earlier was most likely written first on purpose.
fn only_one(
    cx: &Cx,
    given: &[(&'static str, Pos)],
    pos: Pos,
    path: &str,
    names: &str,
) -> Option<&'static str> {
    match given {
        [(one, _)] => Some(one),
        [] => {
            cx.report(pos, path, format!("set one of {names}"));
            None
        }
        several => {
            let (name, at) = several.iter().max_by_key(|(_, at)| *at)?;
            cx.report(*at, &join(path, name), format!("set only one of {names}"));
            None
        }
    }
}

/// One of two durations that must be in order, for [`in_order`].
struct Bound<'f> {
    field: &'f Field<DurationValue>,
    name: &'static str,
    /// The value in effect: the one written, or the default.
    value: Duration,
    range: (Duration, Duration),
}

/// Reports `low` above `high` (unless either is out of its range, which was reported
/// already): at `high` if it was written, else at `low`, whose message then says that `high`
/// is the default. `why` ends the message at `high`.
fn in_order(cx: &Cx, low: Bound, high: Bound, path: &str, why: &str) {
    let in_range = |b: &Bound| (b.range.0..=b.range.1).contains(&b.value);
    if low.value <= high.value || !in_range(&low) || !in_range(&high) {
        return;
    }
    let (low_text, high_text) = (format_duration(low.value), format_duration(high.value));
    if let Some(pos) = pos_of(high.field) {
        let msg = format!("{high_text} is shorter than {} ({low_text}){why}", low.name);
        cx.report(pos, &join(path, high.name), msg);
    } else if let Some(pos) = pos_of(low.field) {
        let msg = format!(
            "{low_text} is longer than {} ({high_text}, the default); raise {} too",
            high.name, high.name
        );
        cx.report(pos, &join(path, low.name), msg);
    }
}

/// The field's value and position, if it is present and valid.
fn value<T>(field: &Field<T>) -> Option<(&T, Pos)> {
    field
        .as_ref()
        .and_then(|item| item.get().map(|v| (v, item.pos)))
}

/// Where the field was written, if it was.
fn pos_of<T>(field: &Field<T>) -> Option<Pos> {
    field.as_ref().map(|item| item.pos)
}

/// `listeners[0]` + `address` = `listeners[0].address`.
fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// The elements of an optional list with their paths: `listeners[0]`, `listeners[1]`...
fn elements<'r, T>(
    list: Option<&'r raw::List<T>>,
    path: &'r str,
) -> impl Iterator<Item = (usize, String, &'r Item<T>)> {
    list.and_then(Item::get)
        .into_iter()
        .flatten()
        .enumerate()
        .map(move |(i, item)| (i, format!("{path}[{i}]"), item))
}

fn admin(cx: &Cx, item: &Item<raw::Admin>) -> Option<(model::Admin, Pos)> {
    let raw = item.get()?;
    let address = cx.required(&raw.address, item.pos, "admin", "address", "")?;
    let text = address.get()?;
    let parsed = addr::listen_address(text)
        .map_err(|message| cx.report(address.pos, "admin.address", message))
        .ok();
    let status_address = match &raw.status_address {
        None => Some(None),
        Some(item) => item.get().and_then(|text| {
            let path = "admin.status_address";
            let status = addr::listen_address(text)
                .map_err(|message| cx.report(item.pos, path, message))
                .ok()?;
            if let Some(admin) = parsed {
                let bound = [listeners::Bound {
                    address: admin,
                    owner: "the admin listener".to_owned(),
                }];
                if listeners::check_collision(cx, status, item.pos, path, &bound) {
                    return None;
                }
            }
            Some(Some(status))
        }),
    };
    // An invalid status address is reported; the admin address is still checked against the
    // listeners.
    Some((
        model::Admin {
            address: parsed?,
            status_address: status_address.flatten(),
        },
        address.pos,
    ))
}

fn runtime(cx: &Cx, field: &Field<raw::Runtime>) -> model::Runtime {
    let Some(raw) = field.as_ref().and_then(Item::get) else {
        return model::Runtime::default();
    };
    model::Runtime {
        workers: cx.count(
            &raw.workers,
            "runtime.workers",
            ranges::WORKERS,
            defaults::WORKERS,
        ),
        drain_timeout: cx.duration(
            &raw.drain_timeout,
            "runtime.drain_timeout",
            ranges::DRAIN_TIMEOUT,
            defaults::DRAIN_TIMEOUT,
        ),
    }
}

fn access_log(cx: &Cx, field: &Field<raw::AccessLog>) -> model::AccessLog {
    let Some(raw) = field.as_ref().and_then(Item::get) else {
        return model::AccessLog::default();
    };
    let target = match value(&raw.path) {
        None => defaults::ACCESS_LOG_TARGET,
        Some((path, _)) if path == "stdout" => model::LogTarget::Stdout,
        Some((path, _)) if path == "stderr" => model::LogTarget::Stderr,
        Some((path, pos)) => {
            if path.trim().is_empty() {
                let msg = "empty path; use stdout, stderr or a file path";
                cx.report(pos, "access_log.path", msg);
            }
            model::LogTarget::File(PathBuf::from(path))
        }
    };
    model::AccessLog {
        enabled: value(&raw.enabled).map_or(defaults::ACCESS_LOG_ENABLED, |(e, _)| *e),
        target,
    }
}

fn limits(cx: &Cx, field: &Field<raw::Limits>) -> model::Limits {
    let Some(raw) = field.as_ref().and_then(Item::get) else {
        return model::Limits::default();
    };
    let body = match value(&raw.max_request_body_bytes) {
        None => defaults::MAX_REQUEST_BODY_BYTES,
        Some((SizeLimit::Unlimited, _)) => None,
        Some((SizeLimit::Bytes(n), _)) => Some(*n),
    };
    let path = |name: &str| join("limits", name);
    model::Limits {
        max_request_header_bytes: cx.size(
            &raw.max_request_header_bytes,
            &path("max_request_header_bytes"),
            ranges::MAX_REQUEST_HEADER_BYTES,
            defaults::MAX_REQUEST_HEADER_BYTES,
        ),
        max_request_headers: cx.count(
            &raw.max_request_headers,
            &path("max_request_headers"),
            ranges::MAX_REQUEST_HEADERS,
            defaults::MAX_REQUEST_HEADERS,
        ),
        max_uri_bytes: cx.size(
            &raw.max_uri_bytes,
            &path("max_uri_bytes"),
            ranges::MAX_URI_BYTES,
            defaults::MAX_URI_BYTES,
        ),
        max_request_body_bytes: body,
        header_read_timeout: cx.duration(
            &raw.header_read_timeout,
            &path("header_read_timeout"),
            ranges::HEADER_READ_TIMEOUT,
            defaults::HEADER_READ_TIMEOUT,
        ),
        idle_timeout: cx.duration(
            &raw.idle_timeout,
            &path("idle_timeout"),
            ranges::IDLE_TIMEOUT,
            defaults::IDLE_TIMEOUT,
        ),
        request_body_timeout: cx.duration(
            &raw.request_body_timeout,
            &path("request_body_timeout"),
            ranges::REQUEST_BODY_TIMEOUT,
            defaults::REQUEST_BODY_TIMEOUT,
        ),
        max_concurrent_streams: cx.count(
            &raw.max_concurrent_streams,
            &path("max_concurrent_streams"),
            ranges::MAX_CONCURRENT_STREAMS,
            defaults::MAX_CONCURRENT_STREAMS,
        ),
    }
}

/// Names already taken in one scope (listeners, clusters, the routes of one listener).
struct Names {
    kind: &'static str,
    /// Each name with the path of whoever took it first.
    taken: Vec<(String, String)>,
}

impl Names {
    fn new(kind: &'static str) -> Self {
        Names {
            kind,
            taken: Vec::new(),
        }
    }

    /// Takes `name` for `owner`; a name taken already is reported at `pos`/`path`.
    fn claim(&mut self, cx: &Cx, name: &str, pos: Pos, path: &str, owner: &str) -> bool {
        if let Some((_, first)) = self.taken.iter().find(|(n, _)| n == name) {
            let msg = format!(
                "duplicate {} name '{name}' (already used by {first})",
                self.kind
            );
            cx.report(pos, path, msg);
            return false;
        }
        self.taken.push((name.to_owned(), owner.to_owned()));
        true
    }
}

/// A name as written, refusing an empty one (it would be invisible in metrics and logs).
fn name_text(cx: &Cx, item: &Item<String>, path: &str) -> Option<String> {
    let text = item.get()?;
    if text.trim().is_empty() {
        cx.report(item.pos, path, "empty name");
        return None;
    }
    Some(text.clone())
}

/// Reports weights that cannot split traffic: all zero, or more in total than a u32 counts.
fn check_weights(cx: &Cx, weights: &[u32], pos: Pos, path: &str, what: &str) {
    if weights.is_empty() {
        return;
    }
    if weights.iter().all(|w| *w == 0) {
        let msg = format!(
            "all {what} weights are 0, so no request could be sent; give at least one {what} a \
             positive weight"
        );
        cx.report(pos, path, msg);
    } else if weights.iter().map(|w| u64::from(*w)).sum::<u64>() > u64::from(u32::MAX) {
        let msg = format!("{what} weights add up to more than {}", u32::MAX);
        cx.report(pos, path, msg);
    }
}
