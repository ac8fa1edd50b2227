//! `belay intent "WHY" -- CMD`: tell belay why CMD is about to act, then become CMD.
//!
//! The intent travels in CMD's environment (`BELAY_INTENT`, a JSON object), which
//! belay-agent reads when CMD or a process it starts is held: a process can set it only
//! for itself and its children, and no access to the agent's socket is needed. (AI agent
//! frameworks that can reach the socket may instead send one `intent` JSON line there.)

use std::os::unix::process::CommandExt as _;
use std::time::Duration;

use std::time::SystemTime;

use anyhow::{Context as _, bail};
use belay_agent_api::{IntentDeclaration, MAX_INTENT_TTL_SECS};
use belay_proto::domain::{Intent, IntentDetails};

/// The variable belay-agent reads (`belay_agent::intent::INTENT_ENV`).
const INTENT_ENV: &str = "BELAY_INTENT";

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

/// Checks the intent as belay-agent will, then becomes CMD with it in its environment.
/// Nothing runs if the intent is unusable.
pub fn run(args: &IntentArgs) -> anyhow::Result<()> {
    let value = env_value(&args.declaration()?, SystemTime::now())?;
    let err = std::process::Command::new(&args.cmd[0])
        .args(&args.cmd[1..])
        .env(INTENT_ENV, value)
        .exec();
    Err(err).with_context(|| format!("running {}", args.cmd[0]))
}

/// The `BELAY_INTENT` value: the declaration and when it was made, after the checks
/// belay-server applies, so that a bad intent fails here and not silently on the host.
fn env_value(declaration: &IntentDeclaration, now: SystemTime) -> anyhow::Result<String> {
    Intent::new(
        declaration.text.clone(),
        IntentDetails {
            model: declaration.model.clone(),
            session_id: declaration.session_id.clone(),
            tool_call_id: declaration.tool_call_id.clone(),
            user_request_id: declaration.user_request_id.clone(),
        },
        std::process::id(),
        now,
    )
    .map_err(|e| anyhow::anyhow!("intent refused: {e}"))?;
    let mut value = serde_json::to_value(declaration)?;
    let declared_ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    value["declared_unix_ms"] = declared_ms.into();
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_value_carries_the_declaration_and_its_time() {
        let declaration = IntentDeclaration {
            text: "run the migration".into(),
            model: Some("gpt-x".into()),
            ttl_seconds: Some(600),
            ..Default::default()
        };
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_234);
        let value: serde_json::Value =
            serde_json::from_str(&env_value(&declaration, now).unwrap()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"text": "run the migration", "model": "gpt-x",
                "ttl_seconds": 600, "declared_unix_ms": 1234})
        );
        let bad = IntentDeclaration {
            text: "bell\u{7}".into(),
            ..Default::default()
        };
        assert!(
            env_value(&bad, now)
                .unwrap_err()
                .to_string()
                .contains("text")
        );
    }
}
