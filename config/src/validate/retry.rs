//! `retries:` on a route or cluster, and a cluster's `retry_budget:`: which failures are
//! retried, how often, how soon, and how much extra load retries may add.

use std::time::Duration;

use super::{Bound, Cx, elements, in_order, join, pos_of, value};
use crate::defaults::{self, ranges};
use crate::diag::list;
use crate::model::{self, RetryOn};
use crate::raw::{self, Field, Item, Pos};
use crate::units::format_duration;

/// The route's own timeout, for checking its retries' `per_try_timeout` against.
pub(super) struct RouteTimeout {
    pub(super) value: Duration,
    /// Written by the user, rather than the default.
    pub(super) written: bool,
}

/// `None` if the policy is invalid (all of it reported). `route_timeout` is the route's, when
/// these are a route's retries and its timeout is valid.
pub(super) fn retries(
    cx: &Cx,
    item: &Item<raw::RetryPolicy>,
    path: &str,
    route_timeout: Option<RouteTimeout>,
) -> Option<model::RetryPolicy> {
    let raw = item.get()?;
    let max_attempts = cx.count(
        &raw.max_attempts,
        &join(path, "max_attempts"),
        ranges::MAX_ATTEMPTS,
        defaults::MAX_ATTEMPTS,
    );
    let retry_on = retry_on(cx, raw.retry_on.as_ref(), &join(path, "retry_on"));
    let retriable_status_codes = status_codes(cx, raw, retry_on.as_deref(), item.pos, path);
    let per_try_timeout = optional_duration(
        cx,
        &raw.per_try_timeout,
        &join(path, "per_try_timeout"),
        ranges::PER_TRY_TIMEOUT,
    );
    if let (Some(Some(per_try)), Some(route)) = (per_try_timeout, route_timeout) {
        within_route_timeout(cx, raw, per_try, route, path);
    }
    let backoff = backoff(cx, &raw.backoff, &join(path, "backoff"));
    let max_retry_after = cx.duration(
        &raw.max_retry_after,
        &join(path, "max_retry_after"),
        ranges::MAX_RETRY_AFTER,
        defaults::MAX_RETRY_AFTER,
    );
    let buffer_limit = cx.size(
        &raw.buffer_limit,
        &join(path, "buffer_limit"),
        ranges::RETRY_BUFFER_LIMIT,
        defaults::RETRY_BUFFER_LIMIT as usize,
    );
    let hedge_after = optional_duration(
        cx,
        &raw.hedge_after,
        &join(path, "hedge_after"),
        ranges::HEDGE_AFTER,
    );
    let (base_interval, max_interval) = backoff?;
    Some(model::RetryPolicy {
        max_attempts,
        retry_on: retry_on?,
        retriable_status_codes: retriable_status_codes?,
        per_try_timeout: per_try_timeout?,
        base_interval,
        max_interval,
        max_retry_after,
        buffer_limit: buffer_limit as u64,
        retry_non_idempotent: value(&raw.retry_non_idempotent)
            .map_or(defaults::RETRY_NON_IDEMPOTENT, |(r, _)| *r),
        hedge_after: hedge_after?,
    })
}

/// A duration that is off when left out: `Some(None)`; `None` if it is invalid.
fn optional_duration(
    cx: &Cx,
    field: &Field<raw::DurationValue>,
    path: &str,
    range: (Duration, Duration),
) -> Option<Option<Duration>> {
    match field {
        None => Some(None),
        Some(item) => item
            .get()
            .map(|_| Some(cx.duration(field, path, range, range.0))),
    }
}

/// `None` if the list is unusable or any entry is invalid (all of it reported).
fn retry_on(cx: &Cx, list: Option<&raw::List<raw::RetryOn>>, path: &str) -> Option<Vec<RetryOn>> {
    let Some(list) = list else {
        return Some(defaults::RETRY_ON.to_vec());
    };
    let items = list.get()?;
    if items.is_empty() {
        let msg = "an empty retry_on list retries nothing; to turn retries off, set \
                   max_attempts: 1";
        cx.report(list.pos, path, msg);
        return None;
    }
    let mut conditions: Vec<(RetryOn, String)> = Vec::with_capacity(items.len());
    let mut complete = true;
    for (_, entry_path, item) in elements(Some(list), path) {
        let Some(raw) = item.get() else {
            complete = false;
            continue;
        };
        let condition = RetryOn::from(*raw);
        if let Some((_, first)) = conditions.iter().find(|(c, _)| *c == condition) {
            let msg = format!(
                "'{}' is listed twice (also {first}); list it once",
                condition.as_str()
            );
            cx.report(item.pos, &entry_path, msg);
            complete = false;
        }
        conditions.push((condition, entry_path));
    }
    complete.then(|| conditions.into_iter().map(|(c, _)| c).collect())
}

impl From<raw::RetryOn> for RetryOn {
    fn from(raw: raw::RetryOn) -> Self {
        match raw {
            raw::RetryOn::ConnectFailure => RetryOn::ConnectFailure,
            raw::RetryOn::RefusedStream => RetryOn::RefusedStream,
            raw::RetryOn::Reset => RetryOn::Reset,
            raw::RetryOn::FiveXx => RetryOn::FiveXx,
            raw::RetryOn::GatewayError => RetryOn::GatewayError,
            raw::RetryOn::RetriableStatusCodes => RetryOn::RetriableStatusCodes,
            raw::RetryOn::Cancelled => RetryOn::Cancelled,
            raw::RetryOn::DeadlineExceeded => RetryOn::DeadlineExceeded,
            raw::RetryOn::ResourceExhausted => RetryOn::ResourceExhausted,
            raw::RetryOn::Unavailable => RetryOn::Unavailable,
        }
    }
}

/// The statuses for `retriable-status-codes`: required with it, and meaningless without it.
/// `retry_on` is `None` when it was invalid: whether it lists the condition is then unknown.
fn status_codes(
    cx: &Cx,
    raw: &raw::RetryPolicy,
    retry_on: Option<&[RetryOn]>,
    pos: Pos,
    path: &str,
) -> Option<Vec<u16>> {
    let listed = retry_on.map(|conditions| conditions.contains(&RetryOn::RetriableStatusCodes));
    let codes_path = join(path, "retriable_status_codes");
    let Some(codes_list) = &raw.retriable_status_codes else {
        if listed == Some(true) && !cx.out.is_typo_target(&codes_path) {
            let msg = "missing required field 'retriable_status_codes' (retry_on lists \
                       retriable-status-codes; say which statuses, e.g. [409, 429])";
            cx.report(pos, path, msg);
            return None;
        }
        return Some(Vec::new());
    };
    if listed == Some(false) {
        let which = match &raw.retry_on {
            Some(_) => "retry_on".to_owned(),
            None => {
                let names = defaults::RETRY_ON.iter().map(|c| c.as_str());
                format!("the default retry_on ({})", list(names))
            }
        };
        let msg = format!(
            "'retriable_status_codes' only applies with retriable-status-codes in retry_on, and \
             {which} does not list it; add it there, or remove this list"
        );
        cx.report(codes_list.pos, &codes_path, msg);
        return None;
    }
    let items = codes_list.get()?;
    if items.is_empty() {
        let msg = "an empty retriable_status_codes list retries no status; list the statuses \
                   to retry, e.g. [409, 429]";
        cx.report(codes_list.pos, &codes_path, msg);
        return None;
    }
    let (min, max) = ranges::HTTP_STATUS;
    let mut codes: Vec<(u16, String)> = Vec::with_capacity(items.len());
    let mut complete = true;
    for (_, code_path, item) in elements(Some(codes_list), &codes_path) {
        let Some(&n) = item.get() else {
            complete = false;
            continue;
        };
        let Some(code) = u16::try_from(n).ok().filter(|c| (min..=max).contains(c)) else {
            let msg = format!("{n} is not an HTTP status; expected {min} to {max}");
            cx.report(item.pos, &code_path, msg);
            complete = false;
            continue;
        };
        if let Some((_, first)) = codes.iter().find(|(c, _)| *c == code) {
            let msg = format!("{code} is listed twice (also {first}); list it once");
            cx.report(item.pos, &code_path, msg);
            complete = false;
        }
        codes.push((code, code_path));
    }
    complete.then(|| codes.into_iter().map(|(c, _)| c).collect())
}

/// The route's timeout bounds all attempts together, so one attempt's limit above it could
/// never be reached.
fn within_route_timeout(
    cx: &Cx,
    raw: &raw::RetryPolicy,
    per_try: Duration,
    route: RouteTimeout,
    path: &str,
) {
    let (min, max) = ranges::PER_TRY_TIMEOUT;
    if per_try <= route.value || !(min..=max).contains(&per_try) {
        return;
    }
    let Some(pos) = pos_of(&raw.per_try_timeout) else {
        return;
    };
    let default = if route.written { "" } else { ", the default" };
    let msg = format!(
        "{} is longer than the route's timeout ({}{default}), which bounds all attempts \
         together; one attempt could never use it",
        format_duration(per_try),
        format_duration(route.value)
    );
    cx.report(pos, &join(path, "per_try_timeout"), msg);
}

/// `(base_interval, max_interval)`; `None` if the section is invalid.
fn backoff(cx: &Cx, field: &Field<raw::Backoff>, path: &str) -> Option<(Duration, Duration)> {
    let Some(item) = field else {
        return Some((
            defaults::BACKOFF_BASE_INTERVAL,
            defaults::BACKOFF_MAX_INTERVAL,
        ));
    };
    let raw = item.get()?;
    let base = cx.duration(
        &raw.base_interval,
        &join(path, "base_interval"),
        ranges::BACKOFF_BASE_INTERVAL,
        defaults::BACKOFF_BASE_INTERVAL,
    );
    let max = cx.duration(
        &raw.max_interval,
        &join(path, "max_interval"),
        ranges::BACKOFF_MAX_INTERVAL,
        defaults::BACKOFF_MAX_INTERVAL,
    );
    in_order(
        cx,
        Bound {
            field: &raw.base_interval,
            name: "base_interval",
            value: base,
            range: ranges::BACKOFF_BASE_INTERVAL,
        },
        Bound {
            field: &raw.max_interval,
            name: "max_interval",
            value: max,
            range: ranges::BACKOFF_MAX_INTERVAL,
        },
        path,
        ", which the first retry may already wait",
    );
    Some((base, max))
}

/// The cluster's retry budget; the defaults when left out, `None` if invalid.
pub(super) fn retry_budget(
    cx: &Cx,
    field: &Field<raw::RetryBudget>,
    path: &str,
) -> Option<model::RetryBudget> {
    let Some(item) = field else {
        return Some(model::RetryBudget::default());
    };
    let raw = item.get()?;
    Some(model::RetryBudget {
        ratio: cx.percent(
            &raw.ratio,
            &join(path, "ratio"),
            defaults::RETRY_BUDGET_RATIO,
        ),
        min_per_second: cx.count(
            &raw.min_per_second,
            &join(path, "min_per_second"),
            ranges::RETRY_BUDGET_MIN_PER_SECOND,
            defaults::RETRY_BUDGET_MIN_PER_SECOND,
        ),
        window: cx.duration(
            &raw.window,
            &join(path, "window"),
            ranges::RETRY_BUDGET_WINDOW,
            defaults::RETRY_BUDGET_WINDOW,
        ),
    })
}
