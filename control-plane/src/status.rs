//! `remora status`: the control plane's `/status`, one line per sidecar.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

use crate::cli::{EXIT_OK, EXIT_PROBLEMS};

const TIMEOUT: Duration = Duration::from_secs(5);

pub fn status(
    admin: SocketAddr,
    json: bool,
    all: bool,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> io::Result<u8> {
    let body = match get(admin, "/status") {
        Ok(b) => b,
        Err(e) => {
            writeln!(
                stderr,
                "remora status: cannot reach the control plane at {admin}: {e}"
            )?;
            return Ok(EXIT_PROBLEMS);
        }
    };
    if json {
        writeln!(stdout, "{body}")?;
        return Ok(EXIT_OK);
    }
    let value: Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => {
            writeln!(stderr, "remora status: not a status answer ({e}): {body}")?;
            return Ok(EXIT_PROBLEMS);
        }
    };
    write!(stdout, "{}", render(&value, all))?;
    Ok(EXIT_OK)
}

/// The status as text: the version served, any rejected edit, then the sidecars.
pub fn render(status: &Value, all: bool) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let mut out = String::new();
    match status["version"].as_str() {
        Some(v) => out.push_str(&format!(
            "version {v} (generation {}) from {}\n",
            status["generation"],
            text(&status["config_dir"])
        )),
        None => out.push_str("no valid mesh config yet\n"),
    }
    if let Some(rejected) = status["rejected"].as_array().filter(|r| !r.is_empty()) {
        out.push_str("the newest edit was REJECTED; the version above is still served:\n");
        for line in rejected {
            out.push_str(&format!("  {}\n", text(line)));
        }
    }
    let rows: Vec<&Value> = status["sidecars"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| all || s["connected"].as_bool() == Some(true))
        .collect();
    let mut table = vec![
        [
            "NODE",
            "SERVICE",
            "NAMESPACE",
            "VERSION",
            "STATE",
            "LAST SEEN",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for s in &rows {
        let mut state = text(&s["state"]);
        if !s["connected"].as_bool().unwrap_or(false) {
            state.push_str(" (disconnected)");
        }
        let version = match text(&s["version"]) {
            v if v.is_empty() => "-".to_owned(),
            v => v,
        };
        table.push(vec![
            text(&s["node"]),
            text(&s["service"]),
            text(&s["namespace"]),
            version,
            state,
            ago(s["last_seen_ms"].as_u64().unwrap_or(0)),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| table.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for (i, row) in table.iter().enumerate() {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 < row.len() {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            } else {
                line.push_str(cell);
            }
        }
        if i > 0
            && let Some(reason) = rows[i - 1]["reason"].as_str()
        {
            line.push_str(&format!("  reason: {reason}"));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn ago(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms}ms ago"),
        1000..120_000 => format!("{}s ago", ms / 1000),
        _ => format!("{}m ago", ms / 60_000),
    }
}

/// A plain HTTP/1.1 GET.
fn get(addr: SocketAddr, path: &str) -> io::Result<String> {
    match request(addr, "GET", path, None)? {
        (200, body) => Ok(body),
        (status, _) => Err(io::Error::other(format!("{path} answered {status}"))),
    }
}

/// One HTTP/1.1 request with an optional JSON body; the status and the body. `remora status`
/// and `remora explain` need no client library and no runtime for this.
pub(crate) fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json: Option<&str>,
) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let body = json.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other("truncated response"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other("not an HTTP response"))?;
    Ok((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_connected_sidecar_with_the_nack_reason() {
        let status = serde_json::json!({
            "config_dir": "/mesh", "version": "00ff", "generation": 7,
            "rejected": ["/mesh/a.yaml:3:5: services[0].app: missing"],
            "sidecars": [
                {"node": "web-1", "service": "web", "namespace": "shop", "version": "00ff",
                 "state": "SYNCED", "connected": true, "last_seen_ms": 120},
                {"node": "api-1", "service": "api", "namespace": "shop", "version": "00aa",
                 "state": "NACKED", "reason": "cannot bind", "connected": true, "last_seen_ms": 2500},
                {"node": "old", "service": "api", "namespace": "shop", "version": "",
                 "state": "STALE", "connected": false, "last_seen_ms": 600000},
            ]
        });
        let text = render(&status, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "version 00ff (generation 7) from /mesh");
        assert!(lines[1].contains("REJECTED"), "{text}");
        assert_eq!(lines[2], "  /mesh/a.yaml:3:5: services[0].app: missing");
        assert_eq!(
            lines[3],
            "NODE   SERVICE  NAMESPACE  VERSION  STATE   LAST SEEN"
        );
        assert_eq!(
            lines[4],
            "web-1  web      shop       00ff     SYNCED  120ms ago"
        );
        assert_eq!(
            lines[5],
            "api-1  api      shop       00aa     NACKED  2s ago  reason: cannot bind"
        );
        assert_eq!(
            lines.len(),
            6,
            "the disconnected one only with --all: {text}"
        );
        assert!(render(&status, true).contains("STALE (disconnected)"));
    }
}
