//! `clusters:` and their endpoints; load balancing, health checks, outlier detection,
//! retries and circuit breakers have rooms of their own.

use super::{
    Cx, Names, addr, balance, breaker, check_weights, discovery, elements, health, join, name_text,
    outlier, retry, value,
};
use crate::defaults::{self, ranges};
use crate::model;
use crate::raw::{self, Pos};

pub(super) fn clusters(cx: &Cx, list: Option<&raw::List<raw::Cluster>>) -> Vec<model::Cluster> {
    let mut names = Names::new("cluster");
    let mut clusters = Vec::new();
    for (_, path, item) in elements(list, "clusters") {
        if let Some(raw) = item.get()
            && let Some(cluster) = cluster(cx, raw, item.pos, &path, &mut names)
        {
            clusters.push(cluster);
        }
    }
    clusters
}

pub(super) fn cluster(
    cx: &Cx,
    raw: &raw::Cluster,
    pos: Pos,
    path: &str,
    names: &mut Names,
) -> Option<model::Cluster> {
    let name_path = join(path, "name");
    let name = cx
        .required(&raw.name, pos, path, "name", "")
        .and_then(|item| {
            let name = name_text(cx, item, &name_path)?;
            names
                .claim(cx, &name, item.pos, &name_path, path)
                .then_some(name)
        });
    let protocol = match value(&raw.protocol) {
        None => defaults::UPSTREAM_PROTOCOL,
        Some((raw::UpstreamProtocol::Http1, _)) => model::UpstreamProtocol::Http1,
        Some((raw::UpstreamProtocol::Http2, _)) => model::UpstreamProtocol::Http2,
    };
    let connect_timeout = cx.duration(
        &raw.connect_timeout,
        &join(path, "connect_timeout"),
        ranges::CONNECT_TIMEOUT,
        defaults::CONNECT_TIMEOUT,
    );
    let idle_timeout = cx.duration(
        &raw.idle_timeout,
        &join(path, "idle_timeout"),
        ranges::UPSTREAM_IDLE_TIMEOUT,
        defaults::UPSTREAM_IDLE_TIMEOUT,
    );
    let discovery = discovery::discovery(cx, raw, pos, path);
    let endpoints = endpoints(cx, raw.endpoints.as_ref(), &join(path, "endpoints"));
    let load_balancer =
        balance::load_balancer(cx, &raw.load_balancer, &join(path, "load_balancer"));
    let health_check = health::health_check(cx, &raw.health_check, &join(path, "health_check"));
    let outlier_detection = outlier::outlier_detection(
        cx,
        &raw.outlier_detection,
        raw.health_check.is_some(),
        &join(path, "outlier_detection"),
    );
    let retries = match &raw.retries {
        None => Some(model::RetryPolicy::default()),
        // Routes to the cluster may have other timeouts, so per_try_timeout is only checked
        // against its range here.
        Some(item) => retry::retries(cx, item, &join(path, "retries"), None),
    };
    let retry_budget = retry::retry_budget(cx, &raw.retry_budget, &join(path, "retry_budget"));
    let circuit_breakers =
        breaker::circuit_breakers(cx, &raw.circuit_breakers, &join(path, "circuit_breakers"));
    let mtls = match &raw.mtls {
        None => Some(None),
        Some(item) => cluster_mtls(cx, item, &join(path, "mtls")).map(Some),
    };
    Some(model::Cluster {
        name: name?,
        protocol,
        connect_timeout,
        idle_timeout,
        discovery: discovery?,
        endpoints: endpoints?,
        load_balancer: load_balancer?,
        health_check: health_check?,
        outlier_detection: outlier_detection?,
        retries: retries?,
        retry_budget: retry_budget?,
        circuit_breakers: circuit_breakers?,
        mtls: mtls?,
    })
}

/// `mtls:` on a cluster: the identity the endpoints must prove, a whole SPIFFE ID.
fn cluster_mtls(
    cx: &Cx,
    item: &crate::raw::Item<raw::ClusterMtls>,
    path: &str,
) -> Option<model::ClusterMtls> {
    let raw = item.get()?;
    let identity = cx.required(&raw.identity, item.pos, path, "identity", "")?;
    let text = identity.get()?;
    match crate::identity::SpiffeId::parse(text) {
        Ok(identity) => Some(model::ClusterMtls { identity }),
        Err(message) => {
            cx.report(identity.pos, &join(path, "identity"), message);
            None
        }
    }
}

/// `None` if any endpoint is invalid (and reported).
fn endpoints(
    cx: &Cx,
    list: Option<&raw::List<raw::Endpoint>>,
    path: &str,
) -> Option<Vec<model::Endpoint>> {
    let mut endpoints: Vec<(model::Endpoint, String)> = Vec::new();
    let mut complete = list.is_none_or(|l| l.get().is_some());
    for (_, ep_path, item) in elements(list, path) {
        match item
            .get()
            .and_then(|raw| endpoint(cx, raw, item.pos, &ep_path))
        {
            Some((endpoint, addr_pos)) => {
                if let Some((_, first)) = endpoints
                    .iter()
                    .find(|(e, _)| e.address == endpoint.address)
                {
                    let msg = format!(
                        "endpoint {} is listed twice (also {first}); list it once with the \
                         combined weight",
                        endpoint.address
                    );
                    cx.report(addr_pos, &join(&ep_path, "address"), msg);
                    complete = false;
                }
                endpoints.push((endpoint, ep_path));
            }
            None => complete = false,
        }
    }
    if !complete {
        return None;
    }
    let endpoints: Vec<model::Endpoint> = endpoints.into_iter().map(|(e, _)| e).collect();
    if let Some(list) = list {
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
        check_weights(cx, &weights, list.pos, path, "endpoint");
    }
    Some(endpoints)
}

fn endpoint(cx: &Cx, raw: &raw::Endpoint, pos: Pos, path: &str) -> Option<(model::Endpoint, Pos)> {
    let address = cx
        .required(&raw.address, pos, path, "address", "")
        .and_then(|item| {
            let parsed = addr::endpoint_address(item.get()?)
                .map_err(|message| cx.report(item.pos, &join(path, "address"), message))
                .ok()?;
            Some((parsed, item.pos))
        });
    let weight = match &raw.weight {
        None => Some(defaults::WEIGHT),
        Some(item) => item.get().copied(),
    };
    let (address, address_pos) = address?;
    let endpoint = model::Endpoint {
        address,
        weight: weight?,
    };
    Some((endpoint, address_pos))
}
