//! `belay-agent`: the host daemon.
use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use belay_agent::{
    api::DEFAULT_SOCKET,
    daemon, enroll,
    kernel::{FailMode, Verdict},
};
use clap::{Parser, Subcommand, ValueEnum};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// belay's host daemon: holds the execs and connections of watched processes (AI
/// agents) in the kernel until a person decides.
///
/// Needs root and a kernel with BPF LSM active (`bpf` in /sys/kernel/security/lsm).
///
/// The policy file (--policy, YAML; see deploy/policy/example.yaml) names the agents
/// ("subjects": by cgroup, executable, uid, or enrollment with `belay run -- CMD`) and
/// what each may run and reach. Rules the kernel can check (exact executables, CIDRs
/// and ports) are decided in the kernel without a pause; the rest pauses the process
/// and the daemon decides, or asks a person. Without --policy, every enrolled process's
/// every exec and connection asks a person. The file is reloaded on SIGHUP and when it
/// changes; a file with errors is refused (file:line: problem) and the policy in force
/// stays. Check a file without starting the daemon: `belay-agent --check-policy FILE`.
///
/// Each request is decided with `belay approve|deny|kill ID`, or its deadline applies
/// the default verdict. Children of watched processes are watched too.
///
/// If the daemon dies, the hooks stay attached and apply --fail-mode after
/// --stale-after seconds; a restarted daemon picks up the processes still paused.
/// SIGTERM ends pending requests with --shutdown-verdict and detaches the hooks.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// Policy file (YAML). Without it, the built-in policy asks a person for everything
    /// an enrolled process does, with --decide-timeout and --default-verdict.
    #[arg(long, env = "BELAY_POLICY", value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Enforce the fleet policy belay-server sends (`belay policy push`) instead of a
    /// local file. Each version is checked like a file and applied, or refused with the
    /// previous one staying in force; the last one applied is saved in --cert-dir and
    /// enforced at the next start even if the server cannot be reached. Without this
    /// flag the agent keeps its own policy and tells the server so.
    #[arg(
        long,
        env = "BELAY_POLICY_FROM_SERVER",
        conflicts_with = "policy",
        requires = "server"
    )]
    policy_from_server: bool,
    /// Check a policy file and exit: prints what it defines, or its errors (exit 1).
    #[arg(long, value_name = "FILE", conflicts_with = "policy")]
    check_policy: Option<PathBuf>,
    /// Unix socket of the local API (used by `belay`).
    #[arg(long, env = "BELAY_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Permissions of the local API socket (octal). Whoever may connect sees every
    /// pending request and may enroll itself (`belay run`); deciding is checked per
    /// caller. The default lets root and --socket-group in; 0666 opens it to every
    /// local user (so unprivileged users can `belay run` themselves).
    #[arg(long, env = "BELAY_SOCKET_MODE", value_name = "MODE", default_value = "0660", value_parser = daemon::socket::parse_mode)]
    socket_mode: u32,
    /// Group (numeric gid) that owns the local API socket. Default: --decider-gid if
    /// given, else the daemon's own group (root).
    #[arg(long, env = "BELAY_SOCKET_GROUP", value_name = "GID")]
    socket_group: Option<u32>,
    /// Seconds a request waits for a decision before its default verdict applies (the
    /// policy's `deadline` settings take precedence).
    #[arg(long, env = "BELAY_DECIDE_TIMEOUT", default_value_t = 300)]
    decide_timeout: u64,
    /// Verdict when a request's deadline passes.
    #[arg(
        long,
        env = "BELAY_DEFAULT_VERDICT",
        value_enum,
        default_value = "deny"
    )]
    default_verdict: Verdict,
    /// Verdict for requests still pending when the daemon stops.
    #[arg(
        long,
        env = "BELAY_SHUTDOWN_VERDICT",
        value_enum,
        default_value = "deny"
    )]
    shutdown_verdict: Verdict,
    /// Directory on a bpf filesystem for belay's pinned maps and links. The hooks stay
    /// attached if the daemon dies, and a restarted daemon resumes from there.
    #[arg(long, env = "BELAY_PIN_DIR", default_value = "/sys/fs/bpf/belay")]
    pin_dir: PathBuf,
    /// Seconds without a heartbeat from this daemon after which the hooks stop pausing
    /// and apply --fail-mode (the daemon died or hangs).
    #[arg(long, env = "BELAY_STALE_AFTER", default_value_t = 5)]
    stale_after: u64,
    /// What watched processes' actions get while the daemon is down (the policy's
    /// `fail_mode` takes precedence).
    #[arg(long, env = "BELAY_FAIL_MODE", value_enum, default_value = "deny")]
    fail_mode: FailMode,
    /// Members of this group (numeric gid) may decide requests, besides root. Nobody
    /// decides a request of a process running under their own uid.
    #[arg(long, env = "BELAY_DECIDER_GID", value_name = "GID")]
    decider_gid: Option<u32>,
    /// Export requests and their outcomes to SIEMs. TOML: a `[spool]` on disk and any
    /// number of `[[sink]]`s, each of type jsonl, syslog (udp, tcp or tls), splunk_hec
    /// or otlp, in native or ocsf format; README "Export to a SIEM" has an example.
    /// Errors name FILE:LINE:COL and stop the start.
    #[arg(long, env = "BELAY_EXPORT_CONFIG", value_name = "FILE")]
    export_config: Option<PathBuf>,
    /// Key of the hashes in masked values (`…[KIND:HASH]`): 64 hex digits, mode 0600,
    /// created on first use. Copy one file to every host to match values fleet-wide.
    #[arg(long, env = "BELAY_MASK_KEY_FILE", value_name = "FILE", default_value = belay_agent::mask::DEFAULT_KEY_FILE)]
    mask_key_file: PathBuf,
    /// Also trust DNS answers from this resolver (port 53) for hostname rules, besides
    /// the nameservers in /etc/resolv.conf. Answers from anywhere else, or received in a
    /// network namespace a process made in a user namespace of its own, teach no name.
    #[arg(
        long = "dns-resolver",
        env = "BELAY_DNS_RESOLVERS",
        value_delimiter = ',',
        value_name = "ADDR"
    )]
    dns_resolvers: Vec<std::net::IpAddr>,
    /// Serve Prometheus metrics on this address (GET /metrics), e.g. 127.0.0.1:9464.
    #[arg(long, env = "BELAY_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// belay-server URL (e.g. https://belay.example:7443, after `belay-agent enroll`):
    /// requests that need a person are sent there and decided by its reviewers instead
    /// of on the local socket. http:// only reaches a server run with --insecure.
    /// Without it, the host decides alone (standalone).
    #[arg(long, env = "BELAY_SERVER", value_name = "URL")]
    server: Option<String>,
    /// Identity that owns this host's agents, as told to belay-server: it can never
    /// approve their requests.
    #[arg(
        long,
        env = "BELAY_SERVER_OWNER",
        value_name = "IDENTITY",
        default_value = "unknown"
    )]
    server_owner: String,
    /// Where `belay-agent enroll` stored this host's certificate for belay-server (used
    /// with an https:// --server).
    #[arg(long, env = "BELAY_CERT_DIR", value_name = "DIR", default_value = enroll::DEFAULT_CERT_DIR)]
    cert_dir: PathBuf,
    /// Watch this process (and its future children) from the start. Repeatable.
    #[arg(long = "watch-pid", value_name = "PID")]
    watch_pids: Vec<u32>,
    /// Log format on stderr.
    #[arg(long, env = "BELAY_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<AgentCommand>,
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Enroll this host with belay-server once: trades a one-time token (`belay-server
    /// token create`) for the client certificate the daemon authenticates with. The
    /// server's CA must be named, as a file or by fingerprint (`belay-server ca
    /// fingerprint`): it is never trusted on first use.
    Enroll(EnrollArgs),
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("trust").required(true).args(["ca_cert", "ca_fingerprint"])))]
struct EnrollArgs {
    /// belay-server URL, https://.
    #[arg(long, env = "BELAY_SERVER", value_name = "URL")]
    server: String,
    /// The one-time enrollment token.
    #[arg(
        long,
        env = "BELAY_ENROLL_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: String,
    /// Where to store the key (mode 0600), the certificate and the CA.
    #[arg(long, env = "BELAY_CERT_DIR", value_name = "DIR", default_value = enroll::DEFAULT_CERT_DIR)]
    cert_dir: PathBuf,
    /// The server's CA certificate (PEM).
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// SHA-256 fingerprint of the server's CA certificate (hex).
    #[arg(long, value_name = "SHA256")]
    ca_fingerprint: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(AgentCommand::Enroll(enroll)) = args.command {
        return run_enroll(enroll).await;
    }
    if let Some(path) = &args.check_policy {
        return check_policy(path);
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("BELAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.json().init(),
    }
    belay_agent::mask::init_key_file(&args.mask_key_file)?;
    let config = daemon::Config {
        socket: args.socket,
        socket_access: daemon::socket::SocketAccess {
            mode: args.socket_mode,
            group: args.socket_group.or(args.decider_gid),
        },
        policy: args.policy,
        decide_timeout: Duration::from_secs(args.decide_timeout),
        default_verdict: args.default_verdict,
        shutdown_verdict: args.shutdown_verdict,
        watch_pids: args.watch_pids,
        pin_dir: args.pin_dir,
        decider_gid: args.decider_gid,
        metrics_listen: args.metrics_listen,
        server: args.server,
        server_owner: args.server_owner,
        server_cert_dir: args.cert_dir,
        policy_from_server: args.policy_from_server,
        dns_resolvers: args.dns_resolvers,
        stale_after: Duration::from_secs(args.stale_after),
        fail_mode: args.fail_mode,
    };
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    let exporter = args
        .export_config
        .as_deref()
        .map(belay_agent::export::start)
        .transpose()?;
    let result = daemon::run(config, shutdown).await;
    if let Some(exporter) = exporter {
        exporter.shutdown().await;
    }
    result
}

async fn run_enroll(args: EnrollArgs) -> anyhow::Result<()> {
    let trust = match (args.ca_cert, args.ca_fingerprint) {
        (Some(file), _) => enroll::Trust::CaFile(file),
        (None, Some(fingerprint)) => enroll::Trust::Fingerprint(fingerprint),
        (None, None) => {
            anyhow::bail!("name the server's CA: --ca-cert FILE or --ca-fingerprint SHA256")
        }
    };
    let host = belay_agent::context::hostname();
    let done = enroll::enroll(&args.server, &args.token, &host, &args.cert_dir, &trust).await?;
    println!(
        "enrolled {} with {} (CA {}); certificate {}, key {}",
        done.host,
        args.server,
        done.ca_fingerprint,
        done.cert.display(),
        done.key.display()
    );
    Ok(())
}

fn check_policy(path: &std::path::Path) -> anyhow::Result<()> {
    use belay_agent::policy::{HostResolver, Policy, compile};
    let policy = match Policy::load(path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let tables = compile(&policy, &HostResolver);
    println!("{}: ok", path.display());
    for s in &policy.subjects {
        println!(
            "  subject {} (owner {}): {} exec rules, {} egress rules",
            s.name,
            s.owner,
            s.exec.len(),
            s.egress.len()
        );
    }
    println!(
        "  in the kernel: {} executables, {} egress rules",
        tables.exec.len(),
        tables.egress.len()
    );
    for w in &tables.warnings {
        println!("  warning: {w}");
    }
    Ok(())
}
