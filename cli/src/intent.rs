//! `belay intent "WHY" -- CMD`: tell belay why CMD is about to act, then become CMD.
//!
//! The declaration is made on the agent's socket by this process, which then execs CMD
//! with the same pid: the kernel names the declarer (the socket's peer), so the intent
//! attaches to CMD and the processes it starts, and to nothing else.

use std::os::unix::process::CommandExt as _;
use std::time::Duration;

use anyhow::{Context as _, bail};
use belay_agent_api::{ApiRequest, ApiResponse, IntentDeclaration, MAX_INTENT_TTL_SECS};

#[derive(Debug, Clone, clap::Args)]
pub struct IntentArgs {
    /// Why CMD is about to act, in a sentence ("run the migration the user asked
    /// for"). Shown to reviewers as declared by the agent, unverified; masked like
    /// everything else. At most 1024 bytes.
    pub text: String,
    /// The model acting (e.g. gpt-5, claude-sonnet).
    #[arg(long, env = "BELAY_INTENT_MODEL")]
    pub model: Option<String>,
    /// The agent's session or conversation id.
    #[arg(long, env = "BELAY_INTENT_SESSION_ID")]
    pub session_id: Option<String>,
    /// The tool call this command carries out.
    #[arg(long)]
    pub tool_call_id: Option<String>,
    /// The id of the user's request that led here.
    #[arg(long)]
    pub user_request_id: Option<String>,
    /// How long the intent stays attached (e.g. 10m, 1h; at most 24h).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = crate::grant::parse_duration)]
    pub ttl: Duration,
    /// The command to run with this intent.
    #[arg(required = true, last = true)]
    pub cmd: Vec<String>,
}

impl IntentArgs {
    fn declaration(&self) -> anyhow::Result<IntentDeclaration> {
        let secs = self.ttl.as_secs();
        if secs == 0 || secs > MAX_INTENT_TTL_SECS {
            bail!("--ttl must be between 1s and 24h");
        }
        Ok(IntentDeclaration {
            text: self.text.clone(),
            model: self.model.clone(),
            session_id: self.session_id.clone(),
            tool_call_id: self.tool_call_id.clone(),
            user_request_id: self.user_request_id.clone(),
            ttl_seconds: Some(secs),
        })
    }
}

/// Declares, then becomes CMD. Nothing runs if the agent refuses the declaration.
pub fn run(
    call: impl FnOnce(&ApiRequest) -> anyhow::Result<ApiResponse>,
    args: &IntentArgs,
) -> anyhow::Result<()> {
    match call(&ApiRequest::Intent(args.declaration()?))? {
        ApiResponse::IntentDeclared { tgid, .. } if tgid == std::process::id() => {}
        other => bail!("unexpected answer to intent: {other:?}"),
    }
    let err = std::process::Command::new(&args.cmd[0])
        .args(&args.cmd[1..])
        .exec();
    Err(err).with_context(|| format!("running {}", args.cmd[0]))
}
