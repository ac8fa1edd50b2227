//! `--for` and `--scope` of `belay approve` / `belay deny`: turn one decision into a
//! grant that settles the same action for a while (belay-server only).

use std::time::Duration;

use anyhow::{Context as _, bail};
use belay_proto::v1;

/// Longest grant belay-server accepts.
const MAX: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScopeArg {
    /// The same action by the same watched agent on the same host.
    Agent,
    /// The same action by any watched agent on the same host.
    Host,
}

#[derive(Debug, Clone, clap::Args)]
pub struct GrantArgs {
    /// Also settle the same action for this long (e.g. 30m, 2h, 1h30m; at most 24h)
    /// without asking again. Default: this request only.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub for_: Option<Duration>,
    /// What the grant covers; needs --for.
    #[arg(long, value_enum, default_value = "agent", requires = "for_")]
    pub scope: ScopeArg,
}

impl GrantArgs {
    /// The wire scope; `None` for a decision on this request only.
    pub fn to_wire(&self) -> Option<v1::Scope> {
        let duration = self.for_?;
        let kind = match self.scope {
            ScopeArg::Agent => v1::ScopeKind::Agent,
            ScopeArg::Host => v1::ScopeKind::Host,
        };
        Some(v1::Scope {
            kind: kind.into(),
            duration: prost_types::Duration::try_from(duration).ok(),
        })
    }
}

/// `90s`, `30m`, `2h`, `1h30m`: whole numbers with a unit, summed.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let mut total = Duration::ZERO;
    let mut digits = String::new();
    if text.is_empty() {
        bail!("empty duration: write e.g. 30m, 2h or 1h30m");
    }
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => bail!("{text:?}: unknown unit {c:?} (use s, m or h, e.g. 1h30m)"),
        };
        if digits.is_empty() {
            bail!("{text:?}: a number must come before {c:?}");
        }
        let n: u64 = digits
            .parse()
            .with_context(|| format!("{text:?}: number too large"))?;
        total += Duration::from_secs(n.saturating_mul(unit));
        digits.clear();
    }
    if !digits.is_empty() {
        bail!("{text:?}: {digits} needs a unit (s, m or h)");
    }
    if total.is_zero() || total > MAX {
        bail!("{text:?}: a grant lasts between 1s and 24h");
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_refuse_the_rest() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("24h").unwrap(), MAX);
        for bad in ["", "30", "m", "10x", "25h", "0m", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_scope_is_sent_only_with_a_duration() {
        let once = GrantArgs {
            for_: None,
            scope: ScopeArg::Agent,
        };
        assert_eq!(once.to_wire(), None);
        let host = GrantArgs {
            for_: Some(Duration::from_secs(600)),
            scope: ScopeArg::Host,
        };
        let wire = host.to_wire().unwrap();
        assert_eq!(wire.kind, v1::ScopeKind::Host as i32);
        assert_eq!(wire.duration.unwrap().seconds, 600);
    }
}
