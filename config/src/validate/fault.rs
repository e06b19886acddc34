//! `fault:` on a route: what is injected (a delay, an abort, or both), into which requests,
//! and until when.

use std::time::Duration;

use super::{Bound, Cx, in_order, join, matches, pos_of, value};
use crate::defaults::{self, ranges};
use crate::model;
use crate::raw::{self, Field, Item, Pos, Timestamp};

/// `None` if the fault is invalid (all of it reported).
pub(super) fn fault(cx: &Cx, item: &Item<raw::Fault>, path: &str) -> Option<model::Fault> {
    let raw = item.get()?;
    let delay = match &raw.delay {
        None => Some(None),
        Some(item) => item
            .get()
            .and_then(|d| delay(cx, d, item.pos, &join(path, "delay")))
            .map(Some),
    };
    let abort = match &raw.abort {
        None => Some(None),
        Some(item) => item
            .get()
            .and_then(|a| abort(cx, a, item.pos, &join(path, "abort")))
            .map(Some),
    };
    let headers = match &raw.headers {
        None => Some(Vec::new()),
        Some(list) => matches::header_matches(cx, list, &join(path, "headers")),
    };
    let expires_at = match &raw.expires {
        None => Some(None),
        Some(item) => item.get().map(|Timestamp(t)| Some(*t)),
    };
    let header_triggered =
        value(&raw.header_triggered).map_or(defaults::FAULT_HEADER_TRIGGERED, |(h, _)| *h);
    does_something(cx, raw, item.pos, path);
    Some(model::Fault {
        delay: delay?,
        abort: abort?,
        headers: headers?,
        expires_at: expires_at?,
        header_triggered,
    })
}

/// A fault with no delay, no abort and no header trigger would do nothing, which is most
/// likely not what its author meant.
fn does_something(cx: &Cx, raw: &raw::Fault, pos: Pos, path: &str) {
    let triggered = match &raw.header_triggered {
        None => false,
        // Invalid, and reported: whether it was meant to be on is unknown.
        Some(item) => item.get().is_none_or(|on| *on),
    };
    let misspelled = ["delay", "abort"]
        .iter()
        .any(|f| cx.out.is_typo_target(&join(path, f)));
    if raw.delay.is_none() && raw.abort.is_none() && !triggered && !misspelled {
        let msg = "this fault does nothing; set delay, abort or header_triggered: true";
        cx.report(pos, path, msg);
    }
}

/// The share of requests a delay or abort applies to; required, because a fault that applies
/// to every request by default is an outage one typo away.
fn percent(cx: &Cx, field: &Field<raw::Percent>, pos: Pos, path: &str, what: &str) -> Option<f64> {
    let why = format!(" (the share of matching requests to {what}, e.g. 10%; 100% for all)");
    let item = cx.required(field, pos, path, "percent", &why)?;
    item.get()?;
    Some(cx.percent(field, &join(path, "percent"), 0.0))
}

fn delay(cx: &Cx, raw: &raw::FaultDelay, pos: Pos, path: &str) -> Option<model::FaultDelay> {
    let percent = percent(cx, &raw.percent, pos, path, "delay");
    let span = span(cx, raw, pos, path);
    let (min, max) = span?;
    Some(model::FaultDelay {
        min,
        max,
        percent: percent?,
    })
}

/// `(min, max)` of the delay: `fixed` is both; `None` if invalid.
fn span(cx: &Cx, raw: &raw::FaultDelay, pos: Pos, path: &str) -> Option<(Duration, Duration)> {
    let duration = |field: &Field<raw::DurationValue>, name: &str| {
        let item = field.as_ref()?;
        item.get()?;
        Some(cx.duration(
            field,
            &join(path, name),
            ranges::FAULT_DELAY,
            Duration::ZERO,
        ))
    };
    let range_given = [("min", pos_of(&raw.min)), ("max", pos_of(&raw.max))];
    let given: Vec<(&'static str, Pos)> = [("fixed", pos_of(&raw.fixed))]
        .into_iter()
        .chain(range_given)
        .filter_map(|(name, pos)| Some((name, pos?)))
        .collect();
    match given.as_slice() {
        [("fixed", _)] => duration(&raw.fixed, "fixed").map(|d| (d, d)),
        [("min", _), ("max", _)] => {
            let (min, max) = (duration(&raw.min, "min"), duration(&raw.max, "max"));
            let (min, max) = (min?, max?);
            let bound = |field, name, value| Bound {
                field,
                name,
                value,
                range: ranges::FAULT_DELAY,
            };
            in_order(
                cx,
                bound(&raw.min, "min", min),
                bound(&raw.max, "max", max),
                path,
                "",
            );
            Some((min, max))
        }
        [(one, at)] => {
            let other = if *one == "min" { "max" } else { "min" };
            let msg = format!(
                "'{one}' needs '{other}' too, for a delay drawn between them; or write 'fixed' \
                 for one delay"
            );
            cx.report(*at, &join(path, one), msg);
            None
        }
        [] => {
            cx.report(pos, path, "set fixed, or min and max");
            None
        }
        _ => {
            // Both a fixed delay and a range: the later written is reported.
            let (name, at) = given.iter().max_by_key(|(_, at)| *at)?;
            let msg = "set either 'fixed' or 'min' and 'max', not both";
            cx.report(*at, &join(path, name), msg);
            None
        }
    }
}

fn abort(cx: &Cx, raw: &raw::FaultAbort, pos: Pos, path: &str) -> Option<model::FaultAbort> {
    let why = " (the status the proxy answers with, e.g. 503)";
    let http_status = cx
        .required(&raw.http_status, pos, path, "http_status", why)
        .and_then(|item| {
            item.get()?;
            let (min, _) = ranges::FAULT_HTTP_STATUS;
            Some(cx.count(
                &raw.http_status,
                &join(path, "http_status"),
                ranges::FAULT_HTTP_STATUS,
                min,
            ))
        });
    let grpc_status = match &raw.grpc_status {
        None => Some(None),
        Some(item) => item.get().map(|_| {
            Some(cx.count(
                &raw.grpc_status,
                &join(path, "grpc_status"),
                ranges::GRPC_STATUS,
                0,
            ))
        }),
    };
    let percent = percent(cx, &raw.percent, pos, path, "fail");
    Some(model::FaultAbort {
        http_status: http_status?,
        grpc_status: grpc_status?,
        percent: percent?,
    })
}
