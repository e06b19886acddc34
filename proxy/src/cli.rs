//! The `remora-proxy` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use remora_config::model::{AccessLog, Config, LogTarget};

use crate::server::{BoundAddrs, Proxy, RunOptions};

/// Remora's sidecar proxy.
///
/// Run from a config file:      remora-proxy --config remora.yaml
/// Or in front of a service:    remora-proxy --listen 127.0.0.1:8080 --upstream 127.0.0.1:8081
#[derive(Debug, Parser)]
#[command(name = "remora-proxy", version, about, long_about = None, args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Sub>,

    /// The YAML config file.
    #[arg(long, short, value_name = "FILE", conflicts_with_all = ["listen", "upstream", "admin", "status", "control_plane"])]
    pub config: Option<PathBuf>,

    /// Take the config from this control plane (http://HOST:PORT, or https://HOST:PORT with
    /// --control-plane-ca) instead of a file; the proxy is ready once the first version is
    /// applied. Needs --node and --service.
    #[arg(long, value_name = "URL", requires_all = ["node", "service"], conflicts_with = "listen")]
    pub control_plane: Option<String>,

    /// Control-plane mode, https://: the roots (PEM) the control plane's certificate must
    /// chain to, for HOST. Without it, the PEM text in $REMORA_CONTROL_PLANE_CA (as
    /// injection sets it).
    #[arg(long, value_name = "FILE", requires = "control_plane")]
    pub control_plane_ca: Option<PathBuf>,

    /// Control-plane mode: this sidecar's name, unique in the mesh (in Kubernetes, the pod's).
    #[arg(long, value_name = "NAME", requires = "control_plane")]
    pub node: Option<String>,

    /// Control-plane mode: the service this sidecar serves.
    #[arg(long, value_name = "NAME", requires = "control_plane")]
    pub service: Option<String>,

    /// Control-plane mode: the service's namespace.
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub namespace: String,

    /// Control-plane mode: bind the inbound listener here rather than where the mesh config
    /// says (for several sidecars on one host).
    #[arg(long, value_name = "ADDR", requires = "control_plane")]
    pub inbound: Option<SocketAddr>,

    /// Control-plane mode: bind the outbound listener here rather than where the mesh config
    /// says.
    #[arg(long, value_name = "ADDR", requires = "control_plane")]
    pub outbound: Option<SocketAddr>,

    /// Control-plane mode: get a workload certificate (mTLS) from the control plane, proving
    /// the identity with the token in this file (a bootstrap token; in Kubernetes, the
    /// service-account token). The private key is made here and never leaves the process.
    #[arg(long, value_name = "FILE", requires = "control_plane")]
    pub identity_token_file: Option<PathBuf>,

    /// Control-plane mode: the service account the workload runs as (its identity is
    /// spiffe://<trust-domain>/ns/<namespace>/sa/<this>). Default: the --service name.
    #[arg(long, value_name = "NAME", requires = "identity_token_file")]
    pub service_account: Option<String>,

    /// Control-plane mode: ports whose connections are opaque TCP, on top of the mesh
    /// config's `opaque_ports` (in Kubernetes, from the `remora.io/opaque-ports` annotation).
    #[arg(
        long,
        value_name = "PORT[,PORT...]",
        value_delimiter = ',',
        requires = "control_plane"
    )]
    pub opaque_ports: Vec<u16>,

    /// Zero-config mode: serve HTTP on this address...
    #[arg(long, value_name = "ADDR", requires = "upstream")]
    pub listen: Option<SocketAddr>,

    /// ...and proxy to these upstream addresses (round-robin).
    #[arg(
        long,
        value_name = "ADDR[,ADDR...]",
        value_delimiter = ',',
        requires = "listen"
    )]
    pub upstream: Vec<SocketAddr>,

    /// Zero-config and control-plane modes: serve the admin endpoints (/ready, /metrics...)
    /// here. Control-plane mode defaults to 127.0.0.1:15000.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,

    /// Zero-config and control-plane modes: serve only GET /live, /ready and /metrics here
    /// (for the kubelet's probes and Prometheus, on the pod's address), keeping the rest of
    /// the admin endpoints on --admin (loopback). Needs --admin in zero-config mode.
    #[arg(long, value_name = "ADDR")]
    pub status: Option<SocketAddr>,

    /// Print the effective config as YAML, every default spelled out, and exit.
    #[arg(long)]
    pub print_config: bool,

    /// Worker threads, overriding `runtime.workers`.
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,

    /// Access log target, overriding `access_log`: off, stdout, stderr or a file path.
    #[arg(long, value_name = "off|stdout|stderr|PATH")]
    pub access_log: Option<String>,

    /// Once listening, write the bound addresses as JSON to this file (for tests and scripts
    /// that start the proxy on port 0).
    #[arg(long, value_name = "FILE")]
    pub write_addrs: Option<PathBuf>,

    /// Log filter for the proxy's own logs (stderr), as RUST_LOG; RUST_LOG wins if set.
    #[arg(long, value_name = "FILTER", default_value = "info")]
    pub log_level: String,
}

/// What `remora-proxy` does besides proxying.
#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    /// Install the iptables rules that send the pod's TCP through the sidecar (the injected
    /// init container runs this as root, with NET_ADMIN and NET_RAW).
    InitIptables(InitIptables),
}

#[derive(Debug, clap::Args)]
pub struct InitIptables {
    /// The proxy's UID: its own traffic is not redirected.
    #[arg(long, default_value_t = 2102)]
    pub proxy_uid: u32,
    #[arg(long, default_value_t = 15006)]
    pub inbound_port: u16,
    #[arg(long, default_value_t = 15001)]
    pub outbound_port: u16,
    /// Comma-separated inbound ports not redirected (the proxy's admin port, say).
    #[arg(long, default_value = "")]
    pub exclude_inbound_ports: String,
    /// Comma-separated outbound ports not redirected.
    #[arg(long, default_value = "")]
    pub exclude_outbound_ports: String,
    /// Comma-separated CIDRs whose outbound traffic is not redirected.
    #[arg(long, default_value = "")]
    pub exclude_outbound_cidrs: String,
    /// Print the iptables-restore input for IPv4 and IPv6 instead of installing it.
    #[arg(long)]
    pub dry_run: bool,
}

fn init_iptables(a: &InitIptables) -> ExitCode {
    let parsed = (|| {
        Ok::<_, String>(crate::capture::Capture {
            proxy_uid: a.proxy_uid,
            inbound_port: a.inbound_port,
            outbound_port: a.outbound_port,
            exclude_inbound_ports: crate::capture::parse_ports(&a.exclude_inbound_ports)?,
            exclude_outbound_ports: crate::capture::parse_ports(&a.exclude_outbound_ports)?,
            exclude_outbound_cidrs: crate::capture::parse_cidrs(&a.exclude_outbound_cidrs)?,
        })
    })();
    let capture = match parsed {
        Ok(c) => c,
        Err(e) => {
            eprintln!("remora-proxy init-iptables: {e}");
            return ExitCode::from(2);
        }
    };
    if a.dry_run {
        print!(
            "# IPv4\n{}# IPv6\n{}",
            crate::capture::rules(&capture, false),
            crate::capture::rules(&capture, true)
        );
        return ExitCode::SUCCESS;
    }
    match crate::capture::install(&capture) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("remora-proxy init-iptables: {e}");
            ExitCode::from(1)
        }
    }
}

pub fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Sub::InitIptables(a)) = &args.command {
        return init_iptables(a);
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&args.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let (mut config, loaded) = match load(&args) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(1);
        }
    };
    if let Some(n) = args.workers {
        config.runtime.workers = n.clamp(1, 256);
    }
    if let Some(target) = &args.access_log {
        config.access_log = match target.as_str() {
            "off" => AccessLog {
                enabled: false,
                target: config.access_log.target,
            },
            "stdout" => AccessLog {
                enabled: true,
                target: LogTarget::Stdout,
            },
            "stderr" => AccessLog {
                enabled: true,
                target: LogTarget::Stderr,
            },
            path => AccessLog {
                enabled: true,
                target: LogTarget::File(path.into()),
            },
        };
    }
    if args.print_config {
        print!("{}", remora_config::to_yaml(&config));
        return ExitCode::SUCCESS;
    }
    let control_plane = match control_plane_options(&args, &config) {
        Ok(cp) => cp,
        Err(msg) => {
            eprintln!("remora-proxy: {msg}");
            return ExitCode::from(2);
        }
    };
    let proxy = match Proxy::bind(config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("remora-proxy: {e}");
            return ExitCode::from(1);
        }
    };
    let addrs = proxy.addrs();
    log_addrs(&addrs);
    if let Some(path) = &args.write_addrs
        && let Err(e) = write_addrs(path, &addrs)
    {
        eprintln!("remora-proxy: cannot write {}: {e}", path.display());
        return ExitCode::from(1);
    }
    let addrs_file = args.write_addrs.clone();
    let options = RunOptions {
        config_file: args.config.clone().zip(loaded),
        on_bound: Some(Box::new(move |addrs: &BoundAddrs| {
            log_addrs(addrs);
            if let Some(path) = &addrs_file
                && let Err(e) = write_addrs(path, addrs)
            {
                tracing::error!(path = %path.display(), error = %e, "cannot write addresses");
            }
        })),
        handle_signals: true,
        control_plane,
    };
    match proxy.run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("remora-proxy: {e}");
            ExitCode::from(1)
        }
    }
}

/// A sidecar's admin listener unless `--admin` says otherwise: Istio's and Linkerd's admin
/// ports are 15000 and 4191; loopback only, since it is not authenticated.
const DEFAULT_SIDECAR_ADMIN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 15000);

/// Where an injected sidecar finds the control plane's CA (PEM text) for https://.
pub const CONTROL_PLANE_CA_ENV: &str = "REMORA_CONTROL_PLANE_CA";

/// The control-plane client's settings, in control-plane mode.
fn control_plane_options(
    args: &Args,
    config: &Config,
) -> Result<Option<crate::control::Options>, String> {
    let Some(url) = &args.control_plane else {
        return Ok(None);
    };
    let (address, https) = crate::control::parse_address(url)?;
    let tls = match (https, &args.control_plane_ca) {
        (false, None) => None,
        (false, Some(_)) => {
            return Err("--control-plane-ca is for an https:// control plane".into());
        }
        (true, file) => {
            let pem = match file {
                Some(path) => std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
                None => std::env::var(CONTROL_PLANE_CA_ENV).map_err(|_| {
                    format!(
                        "an https:// control plane needs its CA: --control-plane-ca FILE, or \
                         the PEM in ${CONTROL_PLANE_CA_ENV}"
                    )
                })?,
            };
            Some(crate::control::ControlTls::new(&address, &pem)?)
        }
    };
    Ok(Some(crate::control::Options {
        address,
        tls,
        node: args.node.clone().unwrap_or_default(),
        service: args.service.clone().unwrap_or_default(),
        namespace: args.namespace.clone(),
        inbound: args.inbound,
        outbound: args.outbound,
        opaque_ports: args
            .opaque_ports
            .iter()
            .copied()
            .filter(|&p| p != 0)
            .collect(),
        admin: config.admin.clone(),
        access_log: args.access_log.as_ref().map(|_| config.access_log.clone()),
        workers: args.workers.map(|_| config.runtime.workers),
        identity: match &args.identity_token_file {
            None => None,
            Some(path) => {
                let token = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                Some(crate::control::IdentityOptions {
                    token: token.trim().to_owned(),
                    service_account: args
                        .service_account
                        .clone()
                        .or_else(|| args.service.clone())
                        .unwrap_or_default(),
                })
            }
        },
    }))
}

/// The config, and for a config file the exact bytes it was loaded from (the reload watcher
/// starts from them, so a change made while the proxy starts is not missed).
fn load(args: &Args) -> Result<(Config, Option<Vec<u8>>), String> {
    match (&args.config, args.listen) {
        (Some(path), _) => {
            let bytes = std::fs::read(path)
                .map_err(|e| format!("{}:0:0: cannot read the config: {e}", path.display()))?;
            let text = String::from_utf8_lossy(&bytes);
            let config = remora_config::load_str(&path.display().to_string(), &text)
                .map_err(|d| d.to_string())?;
            Ok((config, Some(bytes)))
        }
        (None, Some(listen)) => {
            if args.status.is_some() && args.admin.is_none() {
                return Err("remora-proxy: --status needs --admin".into());
            }
            let mut yaml = zero_config_yaml(listen, &args.upstream, args.admin);
            if let Some(status) = args.status {
                yaml = yaml.replacen(
                    "admin:\n",
                    &format!("admin:\n  status_address: \"{status}\"\n"),
                    1,
                );
            }
            let config =
                remora_config::load_str("<command line>", &yaml).map_err(|d| d.to_string())?;
            Ok((config, None))
        }
        (None, None) if args.control_plane.is_some() => {
            // Nothing to serve until the control plane sends a config: only the admin
            // listener, which says "not ready" meanwhile.
            let admin = args.admin.unwrap_or(DEFAULT_SIDECAR_ADMIN);
            let status = args
                .status
                .map(|s| format!(", status_address: \"{s}\""))
                .unwrap_or_default();
            let yaml =
                format!("admin: {{ address: \"{admin}\"{status} }}\nlisteners: []\nclusters: []\n");
            let config =
                remora_config::load_str("<command line>", &yaml).map_err(|d| d.to_string())?;
            Ok((config, None))
        }
        (None, None) => Err(
            "remora-proxy: give --config FILE, or --listen ADDR --upstream ADDR \
                             (see --help)"
                .into(),
        ),
    }
}

/// The config that `--listen`/`--upstream`/`--admin` stand for. It goes through the same
/// validation as a file, and `--print-config` shows it with every default filled in.
pub fn zero_config_yaml(
    listen: SocketAddr,
    upstreams: &[SocketAddr],
    admin: Option<SocketAddr>,
) -> String {
    let mut y = String::new();
    if let Some(admin) = admin {
        y.push_str(&format!("admin:\n  address: \"{admin}\"\n"));
    }
    y.push_str(&format!(
        "listeners:\n  - name: main\n    address: \"{listen}\"\n    protocol: http\n    \
         routes:\n      - name: default\n        cluster: upstream\n"
    ));
    y.push_str("clusters:\n  - name: upstream\n    endpoints:\n");
    for u in upstreams {
        y.push_str(&format!("      - address: \"{u}\"\n"));
    }
    y
}

fn log_addrs(addrs: &BoundAddrs) {
    for (name, addr) in &addrs.listeners {
        tracing::info!(listener = %name, %addr, "listening");
    }
    if let Some(addr) = addrs.admin {
        tracing::info!(%addr, "admin listening");
    }
    if let Some(addr) = addrs.status {
        tracing::info!(%addr, "admin status (/live /ready /metrics) listening");
    }
}

fn write_addrs(path: &std::path::Path, addrs: &BoundAddrs) -> std::io::Result<()> {
    let listeners: serde_json::Map<String, serde_json::Value> = addrs
        .listeners
        .iter()
        .map(|(n, a)| (n.clone(), a.to_string().into()))
        .collect();
    let doc = serde_json::json!({
        "admin": addrs.admin.map(|a| a.to_string()),
        "status": addrs.status.map(|a| a.to_string()),
        "listeners": listeners,
    });
    // Write then rename, so a reader never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, doc.to_string())?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_config_is_a_valid_config() {
        let yaml = zero_config_yaml(
            "127.0.0.1:8080".parse().unwrap(),
            &[
                "127.0.0.1:8081".parse().unwrap(),
                "127.0.0.1:8082".parse().unwrap(),
            ],
            Some("127.0.0.1:9901".parse().unwrap()),
        );
        let config = remora_config::load_str("<test>", &yaml).unwrap();
        assert_eq!(config.clusters[0].endpoints.len(), 2);
        assert_eq!(config.admin.unwrap().address.port(), 9901);
    }
}
