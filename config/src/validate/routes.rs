//! The routes of an HTTP (or auto) listener: names, where traffic goes, timeouts and header
//! rewrites; retries, faults and rate limits have rooms of their own.

use super::retry::{self, RouteTimeout};
use super::{
    Cx, Names, check_weights, elements, fault, headers, join, matches, name_text, rate_limit,
};
use crate::defaults::{self, ranges};
use crate::model;
use crate::raw::{self, Pos};

/// `None` if the list is unusable or any route is invalid (all of it reported). `protocol` is
/// the listener's, for messages.
pub(super) fn routes(
    cx: &Cx,
    list: &raw::List<raw::Route>,
    path: &str,
    protocol: &str,
) -> Option<Vec<model::Route>> {
    let items = list.get()?;
    if items.is_empty() {
        let msg = format!("an {protocol} listener needs at least one route");
        cx.report(list.pos, path, msg);
        return None;
    }
    let mut names = Names::new("route");
    let mut routes = Vec::with_capacity(items.len());
    let mut complete = true;
    for (index, route_path, item) in elements(Some(list), path) {
        let route = item
            .get()
            .and_then(|raw| route(cx, raw, item.pos, index, &route_path, &mut names));
        match route {
            Some(route) => routes.push(route),
            None => complete = false,
        }
    }
    complete.then_some(routes)
}

fn route(
    cx: &Cx,
    raw: &raw::Route,
    pos: Pos,
    index: usize,
    path: &str,
    names: &mut Names,
) -> Option<model::Route> {
    let name = route_name(cx, raw, pos, index, path, names);
    let matches = match &raw.matches {
        None => Some(model::RouteMatch::default()),
        Some(item) => item
            .get()
            .and_then(|m| matches::route_match(cx, m, &join(path, "match"))),
    };
    let backends = backends(cx, raw, pos, path);
    let timeout = cx.duration(
        &raw.timeout,
        &join(path, "timeout"),
        ranges::ROUTE_TIMEOUT,
        defaults::ROUTE_TIMEOUT,
    );
    let request_headers =
        headers::rewrite(cx, &raw.request_headers, &join(path, "request_headers"));
    let response_headers =
        headers::rewrite(cx, &raw.response_headers, &join(path, "response_headers"));
    let retries = match &raw.retries {
        None => Some(None),
        Some(item) => {
            let route_timeout = known_timeout(raw, timeout);
            retry::retries(cx, item, &join(path, "retries"), route_timeout).map(Some)
        }
    };
    let fault = match &raw.fault {
        None => Some(None),
        Some(item) => fault::fault(cx, item, &join(path, "fault")).map(Some),
    };
    let rate_limit = rate_limit::rate_limit(cx, &raw.rate_limit, &join(path, "rate_limit"));
    let authorization =
        super::authz::authorization(cx, &raw.authorization, &join(path, "authorization"));
    Some(model::Route {
        name: name?,
        matches: matches?,
        backends: backends?,
        timeout,
        request_headers: request_headers?,
        response_headers: response_headers?,
        retries: retries?,
        fault: fault?,
        rate_limit: rate_limit?,
        authorization: authorization?,
    })
}

/// The route's timeout, unless it is invalid (then nothing is compared with it).
fn known_timeout(raw: &raw::Route, timeout: std::time::Duration) -> Option<RouteTimeout> {
    let (min, max) = ranges::ROUTE_TIMEOUT;
    let valid = raw.timeout.as_ref().is_none_or(|item| item.get().is_some());
    (valid && (min..=max).contains(&timeout)).then_some(RouteTimeout {
        value: timeout,
        written: raw.timeout.is_some(),
    })
}

/// The route's name, or `route-<index>`; unique within the listener either way.
fn route_name(
    cx: &Cx,
    raw: &raw::Route,
    pos: Pos,
    index: usize,
    path: &str,
    names: &mut Names,
) -> Option<String> {
    let name_path = join(path, "name");
    let (name, name_pos) = match &raw.name {
        Some(item) => (name_text(cx, item, &name_path)?, item.pos),
        None => (format!("route-{index}"), pos),
    };
    names
        .claim(cx, &name, name_pos, &name_path, path)
        .then_some(name)
}

/// Where matching requests go: `cluster` (one backend) or weighted `backends`, never both.
fn backends(cx: &Cx, raw: &raw::Route, pos: Pos, path: &str) -> Option<Vec<model::Backend>> {
    match (&raw.cluster, &raw.backends) {
        (Some(cluster), Some(backends)) => {
            let (at, field) = if cluster.pos > backends.pos {
                (cluster.pos, "cluster")
            } else {
                (backends.pos, "backends")
            };
            let msg = "set either 'cluster' or 'backends', not both";
            cx.report(at, &join(path, field), msg);
            None
        }
        (None, None) => {
            let misspelled = ["cluster", "backends"]
                .iter()
                .any(|f| cx.out.is_typo_target(&join(path, f)));
            if !misspelled {
                let msg = "missing 'cluster' or 'backends': where should matching requests go?";
                cx.report(pos, path, msg);
            }
            None
        }
        (Some(cluster), None) => {
            let cluster = cx.cluster_ref(cluster, &join(path, "cluster"))?;
            Some(vec![model::Backend {
                cluster,
                weight: defaults::WEIGHT,
            }])
        }
        (None, Some(list)) => weighted(cx, list, &join(path, "backends")),
    }
}

fn weighted(cx: &Cx, list: &raw::List<raw::Backend>, path: &str) -> Option<Vec<model::Backend>> {
    let items = list.get()?;
    if items.is_empty() {
        let msg = "empty backends list; add a backend, or send everything to one 'cluster'";
        cx.report(list.pos, path, msg);
        return None;
    }
    let mut backends: Vec<(model::Backend, String)> = Vec::new();
    let mut complete = true;
    for (_, backend_path, item) in elements(Some(list), path) {
        let Some(backend) = item
            .get()
            .and_then(|raw| backend(cx, raw, item.pos, &backend_path))
        else {
            complete = false;
            continue;
        };
        let (backend, cluster_pos) = backend;
        if let Some((_, first)) = backends.iter().find(|(b, _)| b.cluster == backend.cluster) {
            let msg = format!(
                "cluster '{}' is listed twice (also {first}); list it once with the combined \
                 weight",
                backend.cluster
            );
            cx.report(cluster_pos, &join(&backend_path, "cluster"), msg);
            complete = false;
        }
        backends.push((backend, backend_path));
    }
    if !complete {
        return None;
    }
    let weights: Vec<u32> = backends.iter().map(|(b, _)| b.weight).collect();
    check_weights(cx, &weights, list.pos, path, "backend");
    Some(backends.into_iter().map(|(b, _)| b).collect())
}

fn backend(cx: &Cx, raw: &raw::Backend, pos: Pos, path: &str) -> Option<(model::Backend, Pos)> {
    let cluster = cx
        .required(&raw.cluster, pos, path, "cluster", "")
        .and_then(|item| Some((cx.cluster_ref(item, &join(path, "cluster"))?, item.pos)));
    let weight = match &raw.weight {
        None => Some(defaults::WEIGHT),
        Some(item) => item.get().copied(),
    };
    let (cluster, cluster_pos) = cluster?;
    let backend = model::Backend {
        cluster,
        weight: weight?,
    };
    Some((backend, cluster_pos))
}
