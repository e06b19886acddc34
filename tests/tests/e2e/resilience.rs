//! Resilience policies (issue 5) through real sockets: retries and their backoff, deadlines and
//! bodies (`retries.rs`), the retry budget stopping a storm (`budget.rs`), circuit breakers at
//! their limits and the consecutive-failure breaker (`breakers.rs`), fault injection
//! (`faults.rs`), and local rate limits (`rate_limits.rs`).
//!
//! Upstreams are scripted ([`Behaviour::first`], [`Behaviour::first_attempts`],
//! [`Behaviour::reply`], [`Behaviour::abort_after_body`], [`Gate`]) so each test knows exactly
//! how many attempts it should cost and where they should land. Outlier detection is off in
//! these configs: it would take failing endpoints out from under the policies being tested.
//!
//! [`Behaviour::first`]: remora_tests::Behaviour::first
//! [`Behaviour::first_attempts`]: remora_tests::Behaviour::first_attempts
//! [`Behaviour::reply`]: remora_tests::Behaviour::reply
//! [`Behaviour::abort_after_body`]: remora_tests::Behaviour::abort_after_body
//! [`Gate`]: remora_tests::Gate

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use remora_tests::client::Reply;

use crate::balancing::indent;

mod breakers;
mod budget;
mod faults;
mod rate_limits;
mod retries;

/// How long a test waits for something the proxy does by itself (a breaker's open time, a
/// fault's expiry): the expected time is a second or less, far longer on a loaded machine.
pub const STATE_TIMEOUT: Duration = Duration::from_secs(10);

/// A route list item: `name`, matched on a path `prefix` (none: every request), sent to
/// `cluster`, with `settings` (YAML such as `retries: {...}`, dedented like
/// [`indent`]) added under it.
pub fn route(name: &str, prefix: Option<&str>, cluster: &str, settings: &str) -> String {
    let matcher = prefix
        .map(|p| format!("        match: {{ path: {{ prefix: {p} }} }}\n"))
        .unwrap_or_default();
    format!(
        "      - name: {name}\n{matcher}        cluster: {cluster}\n{}",
        indent(settings, 8)
    )
}

/// A cluster list item with these endpoints and `settings` added under it; outlier detection
/// off.
pub fn cluster(name: &str, endpoints: &[SocketAddr], settings: &str) -> String {
    let endpoints: Vec<String> = endpoints
        .iter()
        .map(|a| format!("{{ address: \"{a}\" }}"))
        .collect();
    format!(
        "  - name: {name}\n    endpoints: [{}]\n    outlier_detection: {{ enabled: false }}\n{}",
        endpoints.join(", "),
        indent(settings, 4)
    )
}

/// A proxy with one HTTP listener `main` (with `listener` settings such as `rate_limit: ...`)
/// holding `routes`, and these `clusters`. Admin on; the access log on stdout if `access_log`.
pub fn proxy_config(
    access_log: bool,
    listener: &str,
    routes: &[String],
    clusters: &[String],
) -> String {
    format!(
        "admin: {{ address: 127.0.0.1:0 }}\naccess_log: {{ enabled: {access_log} }}\n\
         listeners:\n  - name: main\n    address: 127.0.0.1:0\n{}    routes:\n{}\
         clusters:\n{}",
        indent(listener, 4),
        routes.concat(),
        clusters.concat()
    )
}

/// The common case: route `all` (with `route` settings) to cluster `app` (these endpoints, with
/// `cluster` settings). Access log off.
pub fn config(endpoints: &[SocketAddr], route_settings: &str, cluster_settings: &str) -> String {
    proxy_config(
        false,
        "",
        &[route("all", None, "app", route_settings)],
        &[cluster("app", endpoints, cluster_settings)],
    )
}

/// The `x-remora-attempts` of a reply as a number; `None` when absent (nothing was attempted).
pub fn attempts(reply: &Reply) -> Option<u32> {
    reply.header("x-remora-attempts").map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("x-remora-attempts is not a number: {v:?}"))
    })
}

/// Runs `f` and returns its output with how long it took.
pub async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let out = f.await;
    (out, start.elapsed())
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// `secs` since the epoch as a UTC date and time: (year, month, day, hour, minute, second,
/// weekday with 0 = Sunday). Howard Hinnant's `civil_from_days`.
fn civil(secs: u64) -> (i64, u32, u32, u64, u64, u64, u64) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    // 1970-01-01 was a Thursday.
    let weekday = (days + 4).rem_euclid(7) as u64;
    (
        year,
        month,
        day,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        weekday,
    )
}

/// `secs` since the epoch in RFC 3339, as a fault's `expires` takes it: `2026-12-01T00:00:00Z`.
pub fn rfc3339(secs: u64) -> String {
    let (y, mo, d, h, mi, s, _) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `secs` since the epoch as an HTTP date (IMF-fixdate): `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s, wd) = civil(secs);
    format!(
        "{}, {d:02} {} {y:04} {h:02}:{mi:02}:{s:02} GMT",
        DAYS[wd as usize],
        MONTHS[mo as usize - 1]
    )
}

#[test]
fn dates_are_formatted_as_the_rfcs_say() {
    // RFC 9110's own example, and a leap day.
    assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_eq!(rfc3339(784_111_777), "1994-11-06T08:49:37Z");
    assert_eq!(rfc3339(1_709_164_800), "2024-02-29T00:00:00Z");
    assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
}
