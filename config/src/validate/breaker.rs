//! `circuit_breakers:` under a cluster: the limits past which requests fail at once, and the
//! breaker that opens after failures in a row.

use super::{Bound, Cx, in_order, join};
use crate::defaults::{self, ranges};
use crate::model;
use crate::raw::{self, Field, Toggle};

/// The cluster's breakers; the defaults when left out, `None` if invalid.
pub(super) fn circuit_breakers(
    cx: &Cx,
    field: &Field<raw::CircuitBreakers>,
    path: &str,
) -> Option<model::CircuitBreakers> {
    let Some(item) = field else {
        return Some(model::CircuitBreakers::default());
    };
    let raw = item.get()?;
    let limit = |field: &Field<u32>, name: &str, default: u32| {
        cx.count(field, &join(path, name), ranges::CIRCUIT_BREAKER, default)
    };
    let max_connections = limit(
        &raw.max_connections,
        "max_connections",
        defaults::MAX_CONNECTIONS,
    );
    let max_pending_requests = limit(
        &raw.max_pending_requests,
        "max_pending_requests",
        defaults::MAX_PENDING_REQUESTS,
    );
    let max_requests = limit(&raw.max_requests, "max_requests", defaults::MAX_REQUESTS);
    let max_retries = limit(&raw.max_retries, "max_retries", defaults::MAX_RETRIES);
    let consecutive_failures = consecutive_failures(
        cx,
        &raw.consecutive_failures,
        &join(path, "consecutive_failures"),
    );
    Some(model::CircuitBreakers {
        max_connections,
        max_pending_requests,
        max_requests,
        max_retries,
        consecutive_failures: consecutive_failures?,
    })
}

/// Off unless written; `true` is the default settings. `None` if invalid.
fn consecutive_failures(
    cx: &Cx,
    field: &Field<Toggle<raw::FailureBreaker>>,
    path: &str,
) -> Option<Option<model::FailureBreaker>> {
    let Some(item) = field else {
        return Some(defaults::CONSECUTIVE_FAILURES_ENABLED.then(model::FailureBreaker::default));
    };
    let raw = match item.get()? {
        Toggle::Flag(false) => return Some(None),
        Toggle::Flag(true) => return Some(Some(model::FailureBreaker::default())),
        Toggle::Settings(raw) => raw,
    };
    let threshold = cx.count(
        &raw.threshold,
        &join(path, "threshold"),
        ranges::BREAKER_THRESHOLD,
        defaults::BREAKER_THRESHOLD,
    );
    let open = |field, name: &str, default| {
        cx.duration(field, &join(path, name), ranges::BREAKER_OPEN, default)
    };
    let base_open = open(&raw.base_open, "base_open", defaults::BREAKER_BASE_OPEN);
    let max_open = open(&raw.max_open, "max_open", defaults::BREAKER_MAX_OPEN);
    let bound = |field, name, value| Bound {
        field,
        name,
        value,
        range: ranges::BREAKER_OPEN,
    };
    in_order(
        cx,
        bound(&raw.base_open, "base_open", base_open),
        bound(&raw.max_open, "max_open", max_open),
        path,
        ", which the breaker already stays open the first time",
    );
    Some(Some(model::FailureBreaker {
        threshold,
        base_open,
        max_open,
    }))
}
