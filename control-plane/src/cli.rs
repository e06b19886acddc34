//! The `remora` command line: argument parsing and the config commands.
//!
//! Exit codes follow the usual convention so scripts and CI can rely on them: 0 success,
//! 1 the command ran and found problems (an invalid config), 2 the command line itself was
//! wrong.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::time::{Duration, SystemTime};

use clap::{Args, Parser, Subcommand};
use remora_config::model::Config;
use remora_config::{Diagnostic, Diagnostics};

use crate::ca::{self, Ca, Policy};
use crate::tokens::Tokens;

/// The command ran and everything was fine.
pub const EXIT_OK: u8 = 0;
/// The command ran and found problems: an invalid config, an unreadable file.
pub const EXIT_PROBLEMS: u8 = 1;
/// The command line was wrong (clap's own convention for usage errors).
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "remora",
    version,
    about = "Remora service mesh: config tools and control plane"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check proxy config files and report every problem as file:line:col: field: message.
    ///
    /// Problems go to stderr, one per line; `FILE: ok` goes to stdout for each good file.
    /// Exits 1 if any file has a problem.
    Validate {
        /// Config files to check; `-` reads standard input.
        #[arg(required_unless_present = "mesh", value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Check a mesh config directory instead (what `control-plane --config-dir` reads):
        /// every file together.
        #[arg(long, value_name = "DIR", conflicts_with = "files")]
        mesh: Option<PathBuf>,
    },
    /// Serve the mesh config in DIR to sidecars, and watch DIR for changes; sign the sidecars'
    /// certificates (see docs/identity.md).
    ControlPlane(Box<ControlPlaneArgs>),
    /// Make CA certificates for the mesh: a root, or an intermediate under a root
    /// (see docs/identity.md).
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Where a request from a sidecar's workload goes: the route (and the file and line it was
    /// written on), the policies that apply, and the endpoints with their health.
    ///
    /// Example: remora explain --node web-1 GET http://orders/cart -H 'x-canary: 1'
    Explain {
        /// The sidecar, as it connected (`--node`).
        #[arg(long, value_name = "NAME")]
        node: String,
        /// The request method, e.g. GET.
        method: String,
        /// The URL the workload calls, e.g. http://orders.shop/cart.
        url: String,
        /// A request header, `name: value`; repeat for more.
        #[arg(short = 'H', long = "header", value_name = "HEADER")]
        headers: Vec<String>,
        /// The control plane's admin address.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15011")]
        admin: std::net::SocketAddr,
        /// Print the JSON as is.
        #[arg(long)]
        json: bool,
    },
    /// One line per sidecar: node, service, version, state (SYNCED, STALE or NACKED with the
    /// reason) and when it was last seen. Exits 1 if the control plane cannot be reached.
    /// Add the sidecar to every pod template in Kubernetes YAML (Deployment, StatefulSet,
    /// DaemonSet, ReplicaSet, Job, CronJob, Pod); everything else passes through. Idempotent.
    ///
    /// Example: remora inject deploy.yaml | kubectl apply -f -
    Inject {
        /// A file of one or more YAML documents; `-` reads standard input.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        inject: InjectArgs,
    },
    Status {
        /// The control plane's admin address.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15011")]
        admin: std::net::SocketAddr,
        /// Print the control plane's JSON as is.
        #[arg(long)]
        json: bool,
        /// Include sidecars that are no longer connected.
        #[arg(long)]
        all: bool,
    },
    /// Print the JSON Schema of the proxy config, for editor completion and checking.
    ///
    /// For VS Code: `remora schema > remora.schema.json`, then see docs/config-schema.md.
    Schema,
}

#[derive(Debug, Args)]
struct ControlPlaneArgs {
    /// The mesh config: every *.yaml file in it (see config/examples/mesh/).
    #[arg(long, value_name = "DIR")]
    config_dir: PathBuf,
    /// Where sidecars connect (HTTP/2 or HTTP/1.1, see docs/control-plane.md).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:15010")]
    listen: std::net::SocketAddr,
    /// /status, /metrics, /ready and /live. Not authenticated: keep it private.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15011")]
    admin: std::net::SocketAddr,
    /// Once listening, write the bound addresses as JSON to this file.
    #[arg(long, value_name = "FILE")]
    write_addrs: Option<PathBuf>,
    /// Log filter (stderr), as RUST_LOG; RUST_LOG wins if set.
    #[arg(long, value_name = "FILTER", default_value = "info")]
    log_level: String,
    /// The SPIFFE trust domain: workload identities are
    /// spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>.
    #[arg(long, value_name = "NAME", default_value = ca::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    /// The signing CA's certificate, PEM: a root, or an intermediate under your root (then
    /// followed by any intermediates above it, with the roots in --trust-bundle).
    #[arg(long, value_name = "FILE", requires = "ca_key", conflicts_with_all = ["dev_ca_dir", "no_ca"])]
    ca_cert: Option<PathBuf>,
    /// The signing CA's key: unencrypted PKCS#8 PEM. Never logged or served.
    #[arg(long, value_name = "FILE", requires = "ca_cert")]
    ca_key: Option<PathBuf>,
    /// The roots sidecars trust, PEM; several during a root rollover. Default: --ca-cert, if it
    /// is a root (required if it is an intermediate).
    #[arg(long, value_name = "FILE", requires = "ca_cert")]
    trust_bundle: Option<PathBuf>,
    /// Without --ca-cert, a throwaway dev CA signs certificates; with this, it is kept in DIR
    /// (ca.crt, ca.key) and reused, so sidecars' certificates survive a restart.
    #[arg(long, value_name = "DIR", conflicts_with = "no_ca")]
    dev_ca_dir: Option<PathBuf>,
    /// Sign no certificates (no mTLS): POST /v1/certificate answers 503, and the watch carries
    /// no trust bundle.
    #[arg(long)]
    no_ca: bool,
    /// How long a workload certificate is valid, e.g. 24h, 1h30m, 60s (10s to 2160h).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_lifetime)]
    cert_lifetime: Duration,
    /// Who may ask for which identity: lines of `TOKEN NAMESPACE/SERVICE_ACCOUNT`
    /// (`NAMESPACE/*`: any service account). Without it every certificate request is refused.
    #[arg(long, value_name = "FILE")]
    bootstrap_tokens: Option<PathBuf>,
    /// Accept Kubernetes service-account tokens (audience `remora`, as injected sidecars show
    /// them) as credentials, checked with a TokenReview against this pod's API server.
    #[arg(long, conflicts_with = "token_review_url")]
    token_review: bool,
    /// As --token-review, against this API server (https://HOST:PORT) instead.
    #[arg(long, value_name = "URL", requires_all = ["token_review_ca", "token_review_token_file"])]
    token_review_url: Option<String>,
    /// The API server's CA (PEM), for --token-review-url.
    #[arg(long, value_name = "FILE")]
    token_review_ca: Option<PathBuf>,
    /// The control plane's own token for the API server, for --token-review-url.
    #[arg(long, value_name = "FILE")]
    token_review_token_file: Option<PathBuf>,
    /// Serve the sidecars' API (the watch, certificates) over TLS here as well, with a
    /// certificate from the CA for each --server-name: sidecars dial
    /// https://NAME:PORT with the mesh's root as --control-plane-ca, and their tokens never
    /// cross the network in the clear.
    #[arg(long, value_name = "ADDR")]
    listen_tls: Option<std::net::SocketAddr>,
    /// A name sidecars reach --listen-tls by; repeat for more.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "remora-control-plane.remora-system.svc",
        requires = "listen_tls"
    )]
    server_name: Vec<String>,
    /// Serve the sidecar-injection admission webhook (POST /inject) over TLS here, with a
    /// certificate from the CA for --webhook-dns-name.
    #[arg(long, value_name = "ADDR")]
    webhook_listen: Option<std::net::SocketAddr>,
    /// A name the API server reaches the webhook by; repeat for more.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "remora-control-plane.remora-system.svc",
        requires = "webhook_listen"
    )]
    webhook_dns_name: Vec<String>,
    #[command(flatten)]
    inject: InjectArgs,
}

/// How injected sidecars are set up (for `remora inject` and the webhook).
#[derive(Debug, Args)]
struct InjectArgs {
    /// The sidecar image (it runs remora-proxy and its init-iptables).
    #[arg(
        long,
        value_name = "IMAGE",
        default_value = "ghcr.io/remora-mesh/remora-proxy:0.1.0"
    )]
    proxy_image: String,
    /// The control plane as sidecars reach it: its TLS listener (--listen-tls), or an
    /// http:// one for a plaintext setup.
    #[arg(
        long,
        value_name = "URL",
        default_value = "https://remora-control-plane.remora-system.svc:15012"
    )]
    sidecar_control_plane: String,
    /// With an https:// --sidecar-control-plane: the mesh's root (PEM), which sidecars trust
    /// the control plane's certificate by (injected as $REMORA_CONTROL_PLANE_CA). The webhook
    /// uses its own CA's bundle when this is left out.
    #[arg(long, value_name = "FILE")]
    sidecar_control_plane_ca: Option<PathBuf>,
}

impl InjectArgs {
    /// The options, with the control plane's CA read from --sidecar-control-plane-ca, else
    /// `bundle` (the control plane's own); an https:// control plane without either is an
    /// error, as its sidecars could not trust it.
    fn options(&self, bundle: Option<&str>) -> Result<crate::inject::Options, String> {
        let https = self.sidecar_control_plane.starts_with("https://");
        let ca = match &self.sidecar_control_plane_ca {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
            ),
            None => bundle.map(str::to_owned),
        };
        let control_plane_ca = match (https, ca) {
            (true, None) => {
                return Err(format!(
                    "sidecars cannot trust {} without its CA: give \
                     --sidecar-control-plane-ca FILE (the mesh's ca.crt)",
                    self.sidecar_control_plane
                ));
            }
            (true, ca) => ca,
            (false, _) => None,
        };
        Ok(crate::inject::Options {
            proxy_image: self.proxy_image.clone(),
            control_plane: self.sidecar_control_plane.clone(),
            control_plane_ca,
            proxy_uid: crate::inject::PROXY_UID,
        })
    }
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// A new root CA: DIR/ca.crt and DIR/ca.key (mode 0600). Existing files are never
    /// overwritten.
    Init {
        #[arg(long, value_name = "NAME", default_value = ca::DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
        /// Where to write ca.crt and ca.key.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// How long the root is valid, in days.
        #[arg(long, value_name = "N", default_value_t = 3650, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
    },
    /// A new intermediate CA signed by a root (no longer than the root is valid): DIR/ca.crt
    /// and DIR/ca.key. Give it to `control-plane --ca-cert --ca-key`, the root to
    /// `--trust-bundle`.
    Intermediate {
        #[arg(long, value_name = "FILE")]
        root_cert: PathBuf,
        #[arg(long, value_name = "FILE")]
        root_key: PathBuf,
        #[arg(long, value_name = "NAME", default_value = ca::DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// How long the intermediate is valid, in days.
        #[arg(long, value_name = "N", default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
    },
}

fn parse_lifetime(text: &str) -> Result<Duration, String> {
    remora_config::units::parse_duration(text).map_err(|e| e.to_string())
}

/// Runs `remora` with `args` (the program name first) on the real stdout and stderr.
pub fn run_cli<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let code = run(
        args,
        &mut io::stdin().lock(),
        &mut io::stdout().lock(),
        &mut io::stderr().lock(),
    );
    ExitCode::from(code)
}

/// Runs `remora` with `args` on the given streams and returns the exit code.
pub fn run<I, T>(
    args: I,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors: they go to stdout and exit 0.
            return if e.use_stderr() {
                let _ = write!(stderr, "{}", e.render());
                EXIT_USAGE
            } else {
                let _ = write!(stdout, "{}", e.render());
                EXIT_OK
            };
        }
    };
    let result = match cli.command {
        Command::Validate { files, mesh: None } => validate(&files, stdin, stdout, stderr),
        Command::Validate {
            mesh: Some(dir), ..
        } => validate_mesh(&dir, stdout, stderr),
        Command::Schema => schema(stdout),
        Command::ControlPlane(args) => control_plane(*args, stderr),
        Command::Ca { command } => ca_command(command, stdout, stderr),
        Command::Inject { file, inject } => inject_command(&file, &inject, stdin, stdout, stderr),
        Command::Status { admin, json, all } => {
            crate::status::status(admin, json, all, stdout, stderr)
        }
        Command::Explain {
            node,
            method,
            url,
            headers,
            admin,
            json,
        } => {
            let ask = crate::explain::ExplainRequest {
                node,
                method,
                url,
                headers,
            };
            explain(admin, &ask, json, stdout, stderr)
        }
    };
    // A closed pipe (`remora schema | head`) is not worth a second error message.
    result.unwrap_or(EXIT_PROBLEMS)
}

fn inject_command(
    file: &Path,
    args: &InjectArgs,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> io::Result<u8> {
    let mut text = String::new();
    let read = match file == Path::new(STDIN) {
        true => stdin.read_to_string(&mut text).map(|_| ()),
        false => std::fs::read_to_string(file).map(|t| text = t),
    };
    if let Err(e) = read {
        writeln!(stderr, "remora inject: cannot read {}: {e}", name(file))?;
        return Ok(EXIT_PROBLEMS);
    }
    let options = match args.options(None) {
        Ok(o) => o,
        Err(e) => {
            writeln!(stderr, "remora inject: {e}")?;
            return Ok(EXIT_PROBLEMS);
        }
    };
    match crate::inject::inject_yaml(&text, &options) {
        Ok((out, report)) => {
            for (object, outcome) in report {
                writeln!(stderr, "{object}: {outcome:?}")?;
            }
            write!(stdout, "{out}")?;
            Ok(EXIT_OK)
        }
        Err(e) => {
            writeln!(stderr, "remora inject: {}: {e}", name(file))?;
            Ok(EXIT_PROBLEMS)
        }
    }
}

fn control_plane(args: ControlPlaneArgs, stderr: &mut dyn Write) -> io::Result<u8> {
    init_logs(&args.log_level);
    let (ca, tokens) = match identity(&args) {
        Ok(pair) => pair,
        Err(e) => {
            writeln!(stderr, "remora control-plane: {e}")?;
            return Ok(EXIT_PROBLEMS);
        }
    };
    let audience = crate::token_review::AUDIENCE;
    let token_review = match (&args.token_review_url, args.token_review) {
        (Some(url), _) => Some(crate::token_review::TokenReviewer::new(
            url,
            args.token_review_ca.as_deref().unwrap_or(Path::new("")),
            args.token_review_token_file.clone().unwrap_or_default(),
            audience,
        )),
        (None, true) => Some(crate::token_review::TokenReviewer::in_cluster(audience)),
        (None, false) => None,
    };
    let token_review = match token_review.transpose() {
        Ok(r) => r,
        Err(e) => {
            writeln!(stderr, "remora control-plane: --token-review: {e}")?;
            return Ok(EXIT_PROBLEMS);
        }
    };
    let webhook = match args.webhook_listen {
        None => None,
        Some(listen) => match args.inject.options(ca.as_ref().map(Ca::trust_bundle)) {
            Ok(inject) => Some(crate::webhook::Options {
                listen,
                dns_names: args.webhook_dns_name.clone(),
                inject,
            }),
            Err(e) => {
                writeln!(stderr, "remora control-plane: {e}")?;
                return Ok(EXIT_PROBLEMS);
            }
        },
    };
    let options = crate::server::Options {
        config_dir: args.config_dir,
        listen: args.listen,
        listen_tls: args.listen_tls.map(|a| (a, args.server_name.clone())),
        admin: args.admin,
        write_addrs: args.write_addrs,
        ca,
        tokens,
        webhook,
        token_review,
    };
    match crate::server::run(options) {
        Ok(()) => Ok(EXIT_OK),
        Err(e) => writeln!(stderr, "remora control-plane: {e}").map(|()| EXIT_PROBLEMS),
    }
}

/// The CA and the tokens the flags ask for, checked; the dev CA when none is given.
fn identity(args: &ControlPlaneArgs) -> Result<(Option<Ca>, Option<Tokens>), String> {
    if args.no_ca {
        tracing::info!("--no-ca: no certificates are issued");
        return Ok((None, None));
    }
    let policy =
        Policy::try_new(&args.trust_domain, args.cert_lifetime).map_err(|e| e.to_string())?;
    let now = SystemTime::now();
    let ca = match (&args.ca_cert, &args.ca_key) {
        (Some(cert), Some(key)) => {
            Ca::from_files(cert, key, args.trust_bundle.as_deref(), &policy, now)
                .map_err(|e| e.to_string())?
        }
        _ => dev_ca(args.dev_ca_dir.as_deref(), &policy, now)?,
    };
    for root in ca.roots() {
        tracing::info!(root = %root, "trusted root");
    }
    tracing::info!(
        trust_domain = ca.trust_domain(),
        lifetime = %remora_config::units::format_duration(ca.lifetime()),
        "issuing workload certificates"
    );
    let tokens = match &args.bootstrap_tokens {
        Some(path) => {
            let tokens = Tokens::read(path)?;
            tracing::info!(file = %path.display(), grants = tokens.len(), "bootstrap tokens");
            Some(tokens)
        }
        None => {
            tracing::warn!("no --bootstrap-tokens: every certificate request will be refused");
            None
        }
    };
    Ok((Some(ca), tokens))
}

fn dev_ca(dir: Option<&Path>, policy: &Policy, now: SystemTime) -> Result<Ca, String> {
    let (ca, whence) = match dir {
        None => (Ca::dev(policy, now), "generated at start".to_owned()),
        Some(dir) => match Ca::dev_in_dir(dir, policy, now) {
            Ok((ca, true)) => (Ok(ca), format!("read from {}", dir.display())),
            Ok((ca, false)) => (
                Ok(ca),
                format!("generated and written to {}", dir.display()),
            ),
            Err(e) => (Err(e), String::new()),
        },
    };
    let ca = ca.map_err(|e| e.to_string())?;
    let lasts = match dir {
        None => "sidecars' certificates become untrusted when this process restarts",
        Some(_) => "anyone who can read its key can impersonate any workload",
    };
    tracing::warn!(
        "DEV CA: certificates are signed by a throwaway CA {whence}; {lasts}; use \
         --ca-cert/--ca-key in production"
    );
    Ok(ca)
}

fn ca_command(
    command: CaCommand,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> io::Result<u8> {
    let now = SystemTime::now();
    let days = |n: u32| Duration::from_secs(u64::from(n) * 24 * 3600);
    let (made, out, what) = match command {
        CaCommand::Init {
            trust_domain,
            out,
            days: n,
        } => {
            let made = check_trust_domain(&trust_domain)
                .and_then(|()| ca::generate_root(&trust_domain, days(n), now));
            (made, out, "root")
        }
        CaCommand::Intermediate {
            root_cert,
            root_key,
            trust_domain,
            out,
            days: n,
        } => {
            let read = |p: &Path| {
                std::fs::read_to_string(p)
                    .map_err(|e| ca::CaError::from(format!("cannot read {}: {e}", p.display())))
            };
            let made = check_trust_domain(&trust_domain).and_then(|()| {
                ca::generate_intermediate(
                    &read(&root_cert)?,
                    &read(&root_key)?,
                    &trust_domain,
                    days(n),
                    now,
                )
            });
            (made, out, "intermediate")
        }
    };
    let written = made.and_then(|(cert, key)| ca::write_ca_files(&out, &cert, &key, false));
    match written {
        Ok(()) => {
            let (cert, key) = (out.join(ca::CA_CERT_FILE), out.join(ca::CA_KEY_FILE));
            writeln!(
                stdout,
                "wrote the {what} CA: {} and {} (keep the key secret)",
                cert.display(),
                key.display()
            )?;
            Ok(EXIT_OK)
        }
        Err(e) => {
            writeln!(stderr, "remora ca: {e}")?;
            Ok(EXIT_PROBLEMS)
        }
    }
}

fn check_trust_domain(td: &str) -> Result<(), ca::CaError> {
    Policy::try_new(td, ca::DEFAULT_LIFETIME).map(drop)
}

fn validate(
    files: &[PathBuf],
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> io::Result<u8> {
    let mut code = EXIT_OK;
    for file in files {
        match load(file, stdin) {
            Ok(_) => writeln!(stdout, "{}: ok", name(file))?,
            Err(diagnostics) => {
                code = EXIT_PROBLEMS;
                for d in &diagnostics {
                    writeln!(stderr, "{d}")?;
                }
            }
        }
    }
    Ok(code)
}

/// The file as diagnostics name it: the path as given, or `<stdin>` for `-`.
fn name(file: &Path) -> String {
    if file == Path::new(STDIN) {
        STDIN_NAME.to_owned()
    } else {
        file.display().to_string()
    }
}

const STDIN: &str = "-";
const STDIN_NAME: &str = "<stdin>";

fn load(file: &Path, stdin: &mut dyn Read) -> Result<Config, Diagnostics> {
    if file != Path::new(STDIN) {
        return remora_config::load_file(file);
    }
    let mut text = String::new();
    match stdin.read_to_string(&mut text) {
        Ok(_) => remora_config::load_str(STDIN_NAME, &text),
        Err(e) => Err(Diagnostics(vec![Diagnostic {
            file: STDIN_NAME.to_owned(),
            line: 0,
            column: 0,
            path: String::new(),
            message: format!("cannot read standard input: {e}"),
        }])),
    }
}

fn validate_mesh(dir: &Path, stdout: &mut dyn Write, stderr: &mut dyn Write) -> io::Result<u8> {
    let loaded = remora_config::mesh::read_dir(dir).and_then(|s| remora_config::mesh::load(&s));
    match loaded {
        Ok(mesh) => {
            writeln!(
                stdout,
                "{}: ok ({} services, version {})",
                dir.display(),
                mesh.services.len(),
                mesh.version
            )?;
            Ok(EXIT_OK)
        }
        Err(diagnostics) => {
            for d in &diagnostics {
                writeln!(stderr, "{d}")?;
            }
            Ok(EXIT_PROBLEMS)
        }
    }
}

fn explain(
    admin: std::net::SocketAddr,
    ask: &crate::explain::ExplainRequest,
    json: bool,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> io::Result<u8> {
    let body = serde_json::to_string(ask).map_err(io::Error::other)?;
    let answer = crate::status::request(admin, "POST", "/explain", Some(&body));
    let (status, text) = match answer {
        Ok(a) => a,
        Err(e) => {
            writeln!(
                stderr,
                "remora explain: cannot reach the control plane at {admin}: {e}"
            )?;
            return Ok(EXIT_PROBLEMS);
        }
    };
    let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    if status != 200 {
        let why = value["error"].as_str().unwrap_or(&text);
        writeln!(stderr, "remora explain: {why}")?;
        return Ok(EXIT_PROBLEMS);
    }
    if json {
        writeln!(stdout, "{text}")?;
    } else {
        write!(stdout, "{}", crate::explain::render(&ask.node, &value))?;
    }
    Ok(EXIT_OK)
}

fn init_logs(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&io::stderr()))
        .try_init();
}

fn schema(stdout: &mut dyn Write) -> io::Result<u8> {
    let schema = remora_config::schema();
    let text = serde_json::to_string_pretty(&schema).map_err(io::Error::other)?;
    writeln!(stdout, "{text}")?;
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with(args: &[&str], input: &str) -> (u8, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut argv = vec!["remora"];
        argv.extend_from_slice(args);
        let code = run(argv, &mut input.as_bytes(), &mut out, &mut err);
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn validate_reads_stdin_for_dash() {
        let good = "listeners: []\nclusters: []\n";
        assert_eq!(
            run_with(&["validate", "-"], good),
            (0, "<stdin>: ok\n".into(), String::new())
        );
        let bad = "listeners: []\nclusters: [{}]\n";
        let (code, out, err) = run_with(&["validate", "-"], bad);
        assert_eq!((code, out.as_str()), (1, ""));
        assert_eq!(
            err,
            "<stdin>:2:12: clusters[0]: missing required field 'name'\n"
        );
    }

    #[test]
    fn usage_errors_exit_2_and_help_exits_0() {
        let (code, out, err) = run_with(&["validate"], "");
        assert_eq!(code, EXIT_USAGE);
        assert!(out.is_empty());
        assert!(err.contains("Usage"), "{err}");
        assert_eq!(run_with(&["frobnicate"], "").0, EXIT_USAGE);
        let (code, out, _) = run_with(&["--help"], "");
        assert_eq!(code, EXIT_OK);
        assert!(out.contains("validate") && out.contains("schema"), "{out}");
    }
}
