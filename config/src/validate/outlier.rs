//! `outlier_detection:`: when endpoints that fail real requests are ejected, and for how long.

use std::time::Duration;

use super::{Bound, Cx, in_order, join, value};
use crate::defaults::{self, ranges};
use crate::model;
use crate::raw::{self, Field};

/// `Some(None)` when detection is turned off; `None` if the section is invalid. A cluster
/// without the section gets the defaults. `has_health_check` says whether the cluster has a
/// `health_check` section, valid or not.
pub(super) fn outlier_detection(
    cx: &Cx,
    field: &Field<raw::OutlierDetection>,
    has_health_check: bool,
    path: &str,
) -> Option<Option<model::OutlierDetection>> {
    let Some(item) = field else {
        return Some(defaults::OUTLIER_DETECTION_ENABLED.then(model::OutlierDetection::default));
    };
    let raw = item.get()?;
    let enabled = value(&raw.enabled).map_or(defaults::OUTLIER_DETECTION_ENABLED, |(e, _)| *e);
    let count = |field: &Field<u32>, name: &str, default: u32| {
        cx.count(
            field,
            &join(path, name),
            ranges::CONSECUTIVE_FAILURES,
            default,
        )
    };
    let ejection_time = |field: &Field<raw::DurationValue>, name: &str, default: Duration| {
        cx.duration(field, &join(path, name), ranges::EJECTION_TIME, default)
    };
    let base_ejection_time = ejection_time(
        &raw.base_ejection_time,
        "base_ejection_time",
        defaults::BASE_EJECTION_TIME,
    );
    let max_ejection_time = ejection_time(
        &raw.max_ejection_time,
        "max_ejection_time",
        defaults::MAX_EJECTION_TIME,
    );
    let bound = |field, name, value| Bound {
        field,
        name,
        value,
        range: ranges::EJECTION_TIME,
    };
    in_order(
        cx,
        bound(
            &raw.base_ejection_time,
            "base_ejection_time",
            base_ejection_time,
        ),
        bound(
            &raw.max_ejection_time,
            "max_ejection_time",
            max_ejection_time,
        ),
        path,
        ", which the first ejection already lasts",
    );
    let require_health_check_to_return = value(&raw.require_health_check_to_return)
        .map_or(defaults::REQUIRE_HEALTH_CHECK_TO_RETURN, |(r, _)| *r);
    if let Some((true, pos)) = value(&raw.require_health_check_to_return)
        && enabled
        && !has_health_check
    {
        let msg = "'require_health_check_to_return: true' needs a health_check on this cluster; \
                   without one, an ejected endpoint would never return";
        cx.report(pos, &join(path, "require_health_check_to_return"), msg);
    }
    let detection = model::OutlierDetection {
        consecutive_5xx: count(
            &raw.consecutive_5xx,
            "consecutive_5xx",
            defaults::CONSECUTIVE_5XX,
        ),
        consecutive_gateway_failure: count(
            &raw.consecutive_gateway_failure,
            "consecutive_gateway_failure",
            defaults::CONSECUTIVE_GATEWAY_FAILURE,
        ),
        base_ejection_time,
        max_ejection_time,
        max_ejection_percent: cx.percent(
            &raw.max_ejection_percent,
            &join(path, "max_ejection_percent"),
            defaults::MAX_EJECTION_PERCENT,
        ),
        require_health_check_to_return,
    };
    // Settings are still checked when detection is off, so turning it back on is safe.
    Some(enabled.then_some(detection))
}
