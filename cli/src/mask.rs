//! `belay mask`: masks text from stdin the way belay-agent masks argv, environments and
//! hostnames before anything leaves the host, so patterns and allow-lists can be tried.
use std::{
    io::{BufRead as _, Write as _},
    path::PathBuf,
};

use anyhow::Context as _;
use belay_mask::{Finding, MaskConfig, Masker};
use belay_policy::Policy;
use clap::Args;
use serde_json::json;

use crate::Output;

/// The long help of `belay mask` (`--help`; the subcommand's doc comment in main.rs is
/// its one-line summary for `-h`).
pub const LONG_HELP: &str = r#"Mask secrets and personal data in text read from stdin, line by line, as belay-agent
does before a request leaves the host.

A masked value keeps its kind, a short non-secret part of its shape and a keyed hash:

  ghp_…[github-token:3f9a1c2b]          vendor prefix kept
  https://deploy:…[password:5d2e8c10]@db.internal/app
  --password=…[password:5d2e8c10]       (same secret, same hash)
  …[email:2ab49f01]@example.com         the domain stays
  …[card:c0ffee12]1111                   the last four digits stay

The hash is the first 8 hex digits of HMAC-SHA256(key, secret): equal secrets get
equal hashes under one key, so reviewers can tell values apart or recognise one seen
before. Use the agent's key file (--key-file) to match what reviewers see; agents
that share one key file match fleet-wide. Text that is already masked passes
unchanged.

Detectors: AWS access key ids and secret keys, GCP service-account keys, Azure
account keys and SAS signatures, GitHub, GitLab, Slack, npm, Stripe tokens, OpenAI,
Anthropic, Google, Hugging Face, Groq, xAI, Replicate keys, JWTs, Authorization and
Bearer headers, passwords in URLs and flags (--password, -pSECRET for mysql, curl -u,
sshpass -p, PGPASSWORD=), private-key blocks, high-entropy values of secret-ish names
(*_TOKEN=, *_KEY=, --api-key), emails, card numbers (Luhn), US SSNs, IBANs (mod-97),
phone numbers; plus the policy's `mask:` patterns (--policy).

Examples:
  echo 'curl -H "Authorization: Bearer abc123DEF456ghi789"' | belay mask
  belay mask --policy /etc/belay/policy.yaml --explain < commands.txt
  env | belay mask --env --output json"#;

#[derive(Debug, Args)]
pub struct MaskArgs {
    /// The agent's mask key (64 hex digits; belay-agent's default is
    /// /var/lib/belay/agent/mask.key). Without it, a random key for this run: the
    /// masking is the same, the hashes are not the agent's.
    #[arg(long, env = "BELAY_MASK_KEY_FILE", value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Apply this policy file's `mask:` section (extra patterns, allow-list).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// After each masked line, list what was found where (kind and byte columns).
    #[arg(long)]
    explain: bool,
    /// Treat each line as one NAME=VALUE environment entry (whole values of secret-ish
    /// names are masked, as the agent does for a process's environment).
    #[arg(long)]
    env: bool,
}

fn key(args: &MaskArgs) -> anyhow::Result<[u8; 32]> {
    match &args.key_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the mask key {}", path.display()))?;
            belay_mask::parse_key(&text)
                .with_context(|| format!("{}: a mask key is 64 hex digits", path.display()))
        }
        None => {
            use std::io::Read as _;
            let mut key = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut key))
                .context("reading /dev/urandom")?;
            Ok(key)
        }
    }
}

pub fn run(args: &MaskArgs, output: Output) -> anyhow::Result<()> {
    let config = match &args.policy {
        Some(path) => Policy::load(path)?.mask,
        None => MaskConfig::default(),
    };
    let masker = Masker::new(&config, key(args)?)?;
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (n, line) in stdin.lock().lines().enumerate() {
        let line = line.context("reading stdin")?;
        let (masked, findings) = mask_line(&masker, &line, args.env);
        match output {
            Output::Json => {
                let found: Vec<_> = findings
                    .iter()
                    .map(|f| json!({"kind": f.kind, "start": f.start, "end": f.end}))
                    .collect();
                writeln!(
                    out,
                    "{}",
                    json!({"line": n + 1, "masked": masked, "found": found})
                )?;
            }
            Output::Table => {
                writeln!(out, "{masked}")?;
                if args.explain {
                    for f in &findings {
                        writeln!(
                            out,
                            "  # line {}, bytes {}..{}: {}",
                            n + 1,
                            f.start,
                            f.end,
                            f.kind
                        )?;
                    }
                }
            }
        }
    }
    out.flush()?;
    Ok(())
}

fn mask_line(masker: &Masker, line: &str, env: bool) -> (String, Vec<Finding>) {
    if env {
        let (mut out, findings) = masker.mask_env_report(&[line.to_owned()]);
        (out.pop().unwrap_or_default(), findings)
    } else {
        masker.mask_report(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_env_entries_are_masked() {
        let m = Masker::new(&MaskConfig::default(), [1; 32]).unwrap();
        let (out, f) = mask_line(
            &m,
            "git clone https://bob:Sw0rdfish@git.example.com/r",
            false,
        );
        assert!(
            out.contains("bob:…[password:") && !out.contains("Sw0rdfish"),
            "{out}"
        );
        assert_eq!(f[0].kind, "password");
        let (out, f) = mask_line(&m, "DB_PASSWORD=two words", true);
        assert!(out.starts_with("DB_PASSWORD=…[password:"), "{out}");
        assert_eq!(f.len(), 1);
        let (out, f) = mask_line(&m, "ls -la /tmp", false);
        assert_eq!(out, "ls -la /tmp");
        assert!(f.is_empty());
    }
}
