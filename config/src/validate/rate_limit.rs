//! `rate_limit:` on a listener or route: a rate above zero, and a burst of at least one.

use super::{Cx, join};
use crate::defaults::{self, ranges};
use crate::model;
use crate::raw::{self, Field, Pos};
use crate::units::format_rate;

/// `Some(None)` when there is no limit; `None` if the section is invalid.
pub(super) fn rate_limit(
    cx: &Cx,
    field: &Field<raw::RateLimit>,
    path: &str,
) -> Option<Option<model::RateLimit>> {
    let Some(item) = field else {
        return Some(None);
    };
    let raw = item.get()?;
    let why = " (how many are let through, e.g. 100/s)";
    let rate = cx
        .required(&raw.rate, item.pos, path, "rate", why)
        .and_then(|item| rate(cx, item.get()?.0, item.pos, &join(path, "rate")));
    let burst = burst(cx, raw, path);
    let rate = rate?;
    Some(Some(model::RateLimit {
        rate,
        burst: burst?.unwrap_or_else(|| defaults::rate_limit_burst(rate)),
    }))
}

fn rate(cx: &Cx, rate: f64, pos: Pos, path: &str) -> Option<f64> {
    let (min, max) = ranges::RATE;
    if rate <= min {
        let msg = format!(
            "{} lets nothing through; the rate must be above 0",
            format_rate(rate)
        );
        cx.report(pos, path, msg);
        return None;
    }
    if rate > max {
        let msg = format!(
            "{} is out of range; expected at most {}",
            format_rate(rate),
            format_rate(max)
        );
        cx.report(pos, path, msg);
        return None;
    }
    Some(rate)
}

/// The burst written, `Some(None)` for the default (which depends on the rate), `None` if
/// invalid.
fn burst(cx: &Cx, raw: &raw::RateLimit, path: &str) -> Option<Option<u32>> {
    let Some(item) = &raw.burst else {
        return Some(None);
    };
    let burst = *item.get()?;
    let (min, _) = ranges::RATE_LIMIT_BURST;
    if burst < min {
        let msg = format!("a burst of {burst} lets nothing through; expected at least {min}");
        cx.report(item.pos, &join(path, "burst"), msg);
        return None;
    }
    Some(Some(burst))
}
