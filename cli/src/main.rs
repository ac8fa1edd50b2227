//! `belay`: decide paused requests and enroll processes, on a standalone host through the
//! agent's local socket.
mod audit;
mod credentials;
mod grant;
mod intent;
mod login;
mod mask;
mod output;
mod policy;
mod render;
mod review;
mod server_client;
mod server_mode;
mod server_request;

use std::{os::unix::process::CommandExt as _, path::PathBuf, process::ExitCode};

use anyhow::{Context as _, bail};
use belay_agent_api::{self as api, ApiRequest, ApiResponse, DEFAULT_SOCKET, Verdict};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

/// Review and decide the actions belay is holding, and run commands under belay's watch.
///
/// Examples:
///   belay pending                      what is waiting for a decision
///   belay show 3                       everything known about request 3
///   belay approve 3 --reason "ok"      let it run
///   belay deny 3                       the syscall fails with EPERM
///   belay kill 3                       the process is killed
///   belay run -- python agent.py       run a command watched by belay
///   belay run --subject ci -- make     ... as the policy subject `ci`
///
/// With --server URL (or BELAY_SERVER), pending, show, approve, deny and kill talk to
/// belay-server instead of this host's agent: requests from every host that sends them
/// there, decided as --reviewer.
#[derive(Debug, Parser)]
#[command(version, about, long_about, verbatim_doc_comment)]
struct Args {
    /// The belay-agent socket (standalone mode).
    #[arg(long, global = true, env = "BELAY_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Output format.
    #[arg(
        long,
        short,
        global = true,
        value_enum,
        env = "BELAY_OUTPUT",
        default_value = "table"
    )]
    output: Output,
    /// belay-server URL: review requests there instead of on this host's socket.
    #[arg(long, global = true, env = "BELAY_SERVER", value_name = "URL")]
    server: Option<String>,
    /// CA certificate (PEM) of an https:// --server: the only one trusted for it.
    #[arg(long, global = true, env = "BELAY_SERVER_CA", value_name = "FILE")]
    server_ca: Option<PathBuf>,
    /// Who decides, for a belay-server run with --insecure (default: $USER). Signed in
    /// (`belay login`, BELAY_TOKEN), the server records the credential's identity, and
    /// this must be empty or equal to it.
    #[arg(long, global = true, env = "BELAY_REVIEWER", value_name = "IDENTITY")]
    reviewer: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the requests waiting for a decision.
    Pending,
    /// Show one request in full.
    Show { id: String },
    /// Let the paused action run.
    Approve {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        grant: grant::GrantArgs,
    },
    /// Make the paused action fail with EPERM.
    Deny {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        grant: grant::GrantArgs,
    },
    /// Kill the paused process.
    Kill {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Run CMD watched by belay as a policy subject: every exec and connection it (or
    /// its children) makes is decided by that subject's rules or held for a person,
    /// starting with CMD itself.
    Run {
        /// The subject to run as (one whose `match` has `enrolled: true`). Default: the
        /// policy's only such subject.
        #[arg(long, env = "BELAY_SUBJECT")]
        subject: Option<String>,
        /// Run CMD as this uid (needs root). The uid of a paused process may never decide
        /// its requests, so an agent run as its own user cannot approve itself.
        #[arg(long)]
        uid: Option<u32>,
        /// Run CMD with this gid (and no supplementary groups; needs root).
        #[arg(long)]
        gid: Option<u32>,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
    /// Say why CMD is about to act, then run it: belay-agent attaches the text
    /// (masked, labelled unverified) to the requests CMD and its children make in the
    /// next --ttl. It travels in CMD's environment (BELAY_INTENT); AI agent frameworks
    /// can set that variable themselves, or send one JSON line
    /// {"op":"intent","text":"..."} on the agent's socket before acting.
    ///
    /// Example: belay intent "run the migration the user asked for" --model gpt-5 --
    /// psql -f migrate.sql
    Intent(intent::IntentArgs),
    /// The agent's state: policy, pending requests and kernel counters.
    Status,
    /// Follow requests live: the pending ones, then each new request and each decision
    /// as it happens (needs --server; `--output json`: one object per line).
    Watch,
    /// The agents connected to belay-server, with their pending requests (needs --server).
    Agents,
    /// The audit log of a belay-server database.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// The fleet policy belay-server sends to agents run with --policy-from-server
    /// (needs --server).
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Sign in for --server calls: OIDC device flow (--issuer), or an API token
    /// (--token, read from stdin). Stored in $XDG_CONFIG_HOME/belay/credentials (0600);
    /// BELAY_TOKEN, when set, is sent instead.
    Login(login::LoginArgs),
    /// Forget the stored credential.
    Logout,
    /// Mask secrets and personal data in text from stdin, as belay-agent does (try
    /// patterns and allow-lists; `belay mask --help` for the format).
    #[command(long_about = mask::LONG_HELP)]
    Mask(mask::MaskArgs),
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Errors quote what the agent or the server said, and what they quote.
            eprintln!("belay: {}", render::lines(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

fn call(args: &Args, req: &ApiRequest) -> anyhow::Result<ApiResponse> {
    match api::call(&args.socket, req)? {
        ApiResponse::Error { message } => bail!("{message}"),
        r => Ok(r),
    }
}

/// A request id on this host's socket: a number.
fn local_id(id: &str) -> anyhow::Result<u64> {
    id.parse().with_context(|| {
        format!("{id:?} is not a request id of this host (a number); ids with a host part are belay-server's: add --server URL")
    })
}

fn run_server(url: &str, args: &Args) -> anyhow::Result<()> {
    let reviewer = args
        .reviewer
        .clone()
        // Signed in, the server takes the identity from the credential.
        .or_else(|| {
            (!credentials::present())
                .then(|| std::env::var("USER").ok())
                .flatten()
        })
        .unwrap_or_default();
    fn decide<'a>(
        id: &'a str,
        verdict: Verdict,
        reason: &'a Option<String>,
        reviewer: &'a str,
        grant: Option<&grant::GrantArgs>,
    ) -> server_mode::Call<'a> {
        server_mode::Call::Decide(review::Decision {
            id,
            verdict,
            reason: reason.as_deref().unwrap_or(""),
            reviewer,
            scope: grant.and_then(grant::GrantArgs::to_wire),
        })
    }
    let call = match &args.command {
        Command::Pending => server_mode::Call::Pending,
        Command::Show { id } => server_mode::Call::Show(id),
        Command::Approve { id, reason, grant } => {
            decide(id, Verdict::Allow, reason, &reviewer, Some(grant))
        }
        Command::Deny { id, reason, grant } => {
            decide(id, Verdict::Deny, reason, &reviewer, Some(grant))
        }
        Command::Kill { id, reason } => decide(id, Verdict::Kill, reason, &reviewer, None),
        Command::Watch => server_mode::Call::Watch,
        Command::Agents => server_mode::Call::Agents,
        Command::Audit(audit::AuditCommand::Log { after, limit }) => server_mode::Call::AuditLog {
            after: *after,
            limit: *limit,
        },
        Command::Audit(command) => return audit::run(command, args.output),
        // Checked before connecting: a bad file is refused without a word to the server.
        Command::Policy(command) => server_mode::Call::Policy(policy::prepare(command)?),
        Command::Status | Command::Run { .. } | Command::Intent(_) => {
            bail!("`status`, `run` and `intent` talk to this host's agent: leave out --server")
        }
        Command::Login(login) => return login::login(login),
        Command::Logout => return login::logout(),
        Command::Mask(m) => return mask::run(m, args.output),
    };
    server_mode::run(url, args.server_ca.as_deref(), args.output, call)
}

fn run(args: Args) -> anyhow::Result<()> {
    if let Some(url) = &args.server {
        return run_server(url, &args);
    }
    let decide = |id: &str, verdict, reason: &Option<String>| -> anyhow::Result<ApiRequest> {
        Ok(ApiRequest::Decide {
            id: local_id(id)?,
            verdict,
            reason: reason.clone(),
        })
    };
    let req = match &args.command {
        Command::Pending => ApiRequest::Pending,
        Command::Show { id } => ApiRequest::Show { id: local_id(id)? },
        Command::Approve { grant, .. } | Command::Deny { grant, .. } if grant.for_.is_some() => {
            bail!("grants (--for) are kept by belay-server: add --server URL")
        }
        Command::Approve { id, reason, .. } => decide(id, Verdict::Allow, reason)?,
        Command::Deny { id, reason, .. } => decide(id, Verdict::Deny, reason)?,
        Command::Kill { id, reason } => decide(id, Verdict::Kill, reason)?,
        Command::Status => ApiRequest::Status,
        Command::Watch | Command::Agents => {
            bail!("`watch` and `agents` follow belay-server: add --server URL")
        }
        Command::Policy(_) => bail!("the fleet policy is kept by belay-server: add --server URL"),
        Command::Audit(command) => return audit::run(command, args.output),
        Command::Login(login) => return login::login(login),
        Command::Logout => return login::logout(),
        Command::Mask(m) => return mask::run(m, args.output),
        Command::Intent(intent) => return intent::run(intent),
        Command::Run {
            subject,
            uid,
            gid,
            cmd,
        } => return run_watched(&args, subject.clone(), *uid, *gid, cmd),
    };
    let response = call(&args, &req)?;
    output::print(args.output, &response)
}

/// Enrolls this process, then becomes CMD (under `uid`/`gid` if given): the exec itself
/// is the first held action.
fn run_watched(
    args: &Args,
    subject: Option<String>,
    uid: Option<u32>,
    gid: Option<u32>,
    cmd: &[String],
) -> anyhow::Result<()> {
    match call(args, &ApiRequest::Enroll { subject })? {
        ApiResponse::Enrolled { tgid, .. } if tgid == std::process::id() => {}
        other => bail!("unexpected answer to enroll: {other:?}"),
    }
    let mut command = std::process::Command::new(&cmd[0]);
    command.args(&cmd[1..]);
    // std drops supplementary groups and sets gid before uid.
    if let Some(gid) = gid {
        command.gid(gid);
    }
    if let Some(uid) = uid {
        command.uid(uid);
    }
    let err = command.exec();
    Err(err).with_context(|| format!("running {}", cmd[0]))
}
