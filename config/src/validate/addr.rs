//! IP:port addresses, with messages that say what to write instead.

use std::net::{IpAddr, SocketAddr};

enum Problem {
    Empty,
    /// An IP address without a port.
    NoPort,
    /// `db.local:5432` or `localhost`: a name, not an IP.
    Hostname,
    Invalid,
}

fn parse(text: &str) -> Result<SocketAddr, Problem> {
    let t = text.trim();
    if t.is_empty() {
        return Err(Problem::Empty);
    }
    if let Ok(addr) = t.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let unbracketed = t.trim_start_matches('[').trim_end_matches(']');
    if unbracketed.parse::<IpAddr>().is_ok() {
        return Err(Problem::NoPort);
    }
    let host = match t.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        Some(_) => return Err(Problem::Invalid),
        None => t,
    };
    let is_name = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
        && host.chars().any(|c| c.is_ascii_alphabetic());
    Err(if is_name {
        Problem::Hostname
    } else {
        Problem::Invalid
    })
}

/// An address to listen on. Port 0 is allowed: the OS picks a free port (tests rely on it).
pub(super) fn listen_address(text: &str) -> Result<SocketAddr, String> {
    parse(text).map_err(|problem| match problem {
        Problem::Empty => "empty address; write IP:port, e.g. 127.0.0.1:8080".to_owned(),
        Problem::NoPort => format!(
            "'{}' has no port; write IP:port, e.g. 127.0.0.1:8080",
            text.trim()
        ),
        Problem::Hostname => format!(
            "'{}' is a hostname; a listener binds an IP address, e.g. 127.0.0.1:8080 (this \
             machine only) or 0.0.0.0:8080 (every interface)",
            text.trim()
        ),
        Problem::Invalid => format!("'{}' is not IP:port, e.g. 127.0.0.1:8080", text.trim()),
    })
}

/// An upstream endpoint's address. Names are refused rather than resolved once at startup and
/// silently going stale: a cluster with `type: dns` re-resolves them.
pub(super) fn endpoint_address(text: &str) -> Result<SocketAddr, String> {
    let addr = parse(text).map_err(|problem| match problem {
        Problem::Empty => "empty address; write IP:port, e.g. 10.0.0.7:8080".to_owned(),
        Problem::NoPort => format!(
            "'{}' has no port; write IP:port, e.g. 10.0.0.7:8080",
            text.trim()
        ),
        Problem::Hostname => format!(
            "'{}' is a hostname; write IP:port, or resolve the name with `type: dns` and \
             `dns: {{name: ..., port: ...}}` on the cluster",
            text.trim()
        ),
        Problem::Invalid => format!("'{}' is not IP:port, e.g. 10.0.0.7:8080", text.trim()),
    })?;
    if addr.port() == 0 {
        return Err(format!("'{}': port 0 cannot be connected to", text.trim()));
    }
    Ok(addr)
}

/// A nameserver: `IP:port`, or an IP alone for port 53.
pub(super) fn nameserver_address(text: &str) -> Result<SocketAddr, String> {
    let addr = match parse(text) {
        Ok(addr) => addr,
        Err(Problem::NoPort) => {
            let ip = text.trim().trim_start_matches('[').trim_end_matches(']');
            let ip: IpAddr = ip.parse().map_err(|_| invalid_nameserver(text))?;
            SocketAddr::new(ip, crate::defaults::DNS_SERVER_PORT)
        }
        Err(Problem::Empty) => return Err("empty address; write IP or IP:port".to_owned()),
        Err(Problem::Hostname) => {
            return Err(format!(
                "'{}' is a hostname; a nameserver is an IP address (resolving its name would \
                 need a nameserver)",
                text.trim()
            ));
        }
        Err(Problem::Invalid) => return Err(invalid_nameserver(text)),
    };
    if addr.port() == 0 {
        return Err(format!("'{}': port 0 cannot be queried", text.trim()));
    }
    Ok(addr)
}

fn invalid_nameserver(text: &str) -> String {
    format!("'{}' is not IP or IP:port, e.g. 10.96.0.10:53", text.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_and_port() {
        assert_eq!(listen_address("127.0.0.1:8080").unwrap().port(), 8080);
        assert_eq!(listen_address(" [::1]:0 ").unwrap().port(), 0);
        assert!(endpoint_address("10.0.0.7:80").is_ok());
    }

    #[test]
    fn explains_what_is_wrong() {
        assert_eq!(
            listen_address("127.0.0.1").unwrap_err(),
            "'127.0.0.1' has no port; write IP:port, e.g. 127.0.0.1:8080"
        );
        assert!(
            listen_address("localhost:8080")
                .unwrap_err()
                .contains("is a hostname")
        );
        assert_eq!(
            endpoint_address("db.local:5432").unwrap_err(),
            "'db.local:5432' is a hostname; write IP:port, or resolve the name with `type: dns` \
             and `dns: {name: ..., port: ...}` on the cluster"
        );
        assert!(endpoint_address("db").unwrap_err().contains("hostname"));
        assert!(
            endpoint_address("10.0.0.7:0")
                .unwrap_err()
                .contains("port 0")
        );
        assert!(
            listen_address("1.2.3.4:99999")
                .unwrap_err()
                .contains("is not IP:port")
        );
        assert!(listen_address("").unwrap_err().starts_with("empty address"));
    }
}
