//! `health_check:`: what to probe, how often, and when an endpoint changes state.

use std::str::FromStr;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery};

use super::{Cx, elements, join, only_one, pos_of, value};
use crate::defaults::{self, ranges};
use crate::model::{self, HealthCheckKind};
use crate::raw::{self, Field, InitialState, Item, Pos};
use crate::units::format_duration;

/// `Some(None)` when the cluster has no health check; `None` if it has an invalid one.
pub(super) fn health_check(
    cx: &Cx,
    field: &Field<raw::HealthCheck>,
    path: &str,
) -> Option<Option<model::HealthCheck>> {
    let Some(item) = field else {
        return Some(None);
    };
    let raw = item.get()?;
    let kind = kind(cx, raw, item.pos, path);
    let interval = cx.duration(
        &raw.interval,
        &join(path, "interval"),
        ranges::HEALTH_CHECK_INTERVAL,
        defaults::HEALTH_CHECK_INTERVAL,
    );
    let timeout = cx.duration(
        &raw.timeout,
        &join(path, "timeout"),
        ranges::HEALTH_CHECK_TIMEOUT,
        defaults::HEALTH_CHECK_TIMEOUT,
    );
    timeout_within_interval(cx, raw, interval, timeout, path);
    let jitter = cx.percent(
        &raw.jitter,
        &join(path, "jitter"),
        defaults::HEALTH_CHECK_JITTER,
    );
    let threshold = |field: &Field<u32>, name: &str, default: u32| {
        cx.count(field, &join(path, name), ranges::HEALTH_THRESHOLD, default)
    };
    let unhealthy_threshold = threshold(
        &raw.unhealthy_threshold,
        "unhealthy_threshold",
        defaults::UNHEALTHY_THRESHOLD,
    );
    let healthy_threshold = threshold(
        &raw.healthy_threshold,
        "healthy_threshold",
        defaults::HEALTHY_THRESHOLD,
    );
    let initially_healthy = match value(&raw.initial_state) {
        None => defaults::INITIALLY_HEALTHY,
        Some((InitialState::Healthy, _)) => true,
        Some((InitialState::Unhealthy, _)) => false,
    };
    Some(Some(model::HealthCheck {
        kind: kind?,
        interval,
        jitter,
        timeout,
        unhealthy_threshold,
        healthy_threshold,
        initially_healthy,
    }))
}

fn kind(cx: &Cx, raw: &raw::HealthCheck, pos: Pos, path: &str) -> Option<HealthCheckKind> {
    let given: Vec<(&'static str, Pos)> = [
        ("http", pos_of(&raw.http)),
        ("tcp", pos_of(&raw.tcp)),
        ("grpc", pos_of(&raw.grpc)),
    ]
    .into_iter()
    .filter_map(|(name, pos)| Some((name, pos?)))
    .collect();
    let kind = only_one(cx, &given, pos, path, "http, tcp or grpc")?;
    let path = join(path, kind);
    match kind {
        "http" => {
            let item = raw.http.as_ref()?;
            http(cx, item.get()?, item.pos, &path)
        }
        "tcp" => tcp(cx, raw.tcp.as_ref()?.get()?, &path),
        _ => {
            let grpc = raw.grpc.as_ref()?.get()?;
            let service = grpc
                .service
                .as_ref()
                .map_or(Some(""), |s| s.get().map(String::as_str));
            Some(HealthCheckKind::Grpc {
                service: service?.to_owned(),
            })
        }
    }
}

/// A check still running when the next is due would overlap it, so the timeout must be the
/// shorter. Reported at whichever of the two was written (the timeout if both were).
fn timeout_within_interval(
    cx: &Cx,
    raw: &raw::HealthCheck,
    interval: Duration,
    timeout: Duration,
    path: &str,
) {
    let in_range = |d: Duration, (min, max): (Duration, Duration)| (min..=max).contains(&d);
    if timeout < interval
        || !in_range(interval, ranges::HEALTH_CHECK_INTERVAL)
        || !in_range(timeout, ranges::HEALTH_CHECK_TIMEOUT)
    {
        return;
    }
    let (interval_text, timeout_text) = (format_duration(interval), format_duration(timeout));
    if let Some(pos) = pos_of(&raw.timeout) {
        let msg = format!(
            "{timeout_text} is not shorter than the interval ({interval_text}); a check must end \
             before the next one starts"
        );
        cx.report(pos, &join(path, "timeout"), msg);
    } else if let Some(pos) = pos_of(&raw.interval) {
        let msg = format!(
            "{interval_text} is not longer than the timeout ({timeout_text}, the default); a \
             check must end before the next one starts"
        );
        cx.report(pos, &join(path, "interval"), msg);
    }
}

fn http(cx: &Cx, raw: &raw::HttpHealthCheck, pos: Pos, path: &str) -> Option<HealthCheckKind> {
    let why = " (the path to request, e.g. /healthz)";
    let request_path = cx
        .required(&raw.path, pos, path, "path", why)
        .and_then(|item| request_path(cx, item, &join(path, "path")));
    let host = match &raw.host {
        None => Some(None),
        Some(item) => host(cx, item, &join(path, "host")).map(Some),
    };
    let statuses = match &raw.expected_statuses {
        None => Some(defaults::EXPECTED_STATUSES.to_vec()),
        Some(list) => statuses(cx, list, &join(path, "expected_statuses")),
    };
    Some(HealthCheckKind::Http {
        path: request_path?,
        host: host?,
        statuses: statuses?,
    })
}

fn request_path(cx: &Cx, item: &Item<String>, path: &str) -> Option<String> {
    let text = item.get()?;
    if !text.starts_with('/') {
        cx.report(item.pos, path, format!("'{text}' must start with '/'"));
        return None;
    }
    // `#` would start a fragment, which is never sent.
    if text.contains('#') || PathAndQuery::from_str(text).is_err() {
        let msg = format!(
            "'{}' is not a valid request path (no spaces, '#' or control characters; \
             percent-encode them)",
            text.escape_debug()
        );
        cx.report(item.pos, path, msg);
        return None;
    }
    Some(text.clone())
}

/// The Host header to send: a host name or IP, optionally with a port.
fn host(cx: &Cx, item: &Item<String>, path: &str) -> Option<String> {
    let text = item.get()?;
    match Authority::from_str(text) {
        Ok(_) if !text.contains('@') => Some(text.clone()),
        _ => {
            let msg = format!(
                "'{}' is not a valid host; write a host name or IP, optionally with a port \
                 (api.local, api.local:8080)",
                text.escape_debug()
            );
            cx.report(item.pos, path, msg);
            None
        }
    }
}

fn statuses(cx: &Cx, list: &raw::List<raw::StatusRange>, path: &str) -> Option<Vec<(u16, u16)>> {
    let items = list.get()?;
    if items.is_empty() {
        let msg = "an empty expected_statuses list accepts no status, so every check would \
                   fail; leave it out for any 2xx";
        cx.report(list.pos, path, msg);
        return None;
    }
    let mut ranges = Vec::with_capacity(items.len());
    for (_, status_path, item) in elements(Some(list), path) {
        if let Some(range) = status_range(cx, item, &status_path) {
            ranges.push(range);
        }
    }
    (ranges.len() == items.len()).then_some(ranges)
}

fn status_range(cx: &Cx, item: &Item<raw::StatusRange>, path: &str) -> Option<(u16, u16)> {
    let raw::StatusRange { first, last } = *item.get()?;
    let (min, max) = ranges::HTTP_STATUS;
    let code = |n: u32| u16::try_from(n).ok().filter(|c| (min..=max).contains(c));
    for n in [first, last] {
        if code(n).is_none() {
            let msg = format!("{n} is not an HTTP status; expected {min} to {max}");
            cx.report(item.pos, path, msg);
            return None;
        }
    }
    if first > last {
        let msg = format!("'{first}-{last}' is backwards; write '{last}-{first}'");
        cx.report(item.pos, path, msg);
        return None;
    }
    Some((code(first)?, code(last)?))
}

fn tcp(cx: &Cx, raw: &raw::TcpHealthCheck, path: &str) -> Option<HealthCheckKind> {
    let bytes = |field: &Field<String>, name: &str, instead: &str| match field {
        None => Some(None),
        Some(item) => {
            let text = item.get()?;
            if text.is_empty() {
                let msg = format!("empty '{name}'; leave it out to {instead}");
                cx.report(item.pos, &join(path, name), msg);
                return None;
            }
            Some(Some(text.as_bytes().to_vec()))
        }
    };
    let send = bytes(&raw.send, "send", "send nothing");
    let expect = bytes(&raw.expect, "expect", "accept any reply");
    Some(HealthCheckKind::Tcp {
        send: send?,
        expect: expect?,
    })
}
