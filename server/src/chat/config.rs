//! The chat file (`--chat-config`): TOML, unknown keys refused, every problem reported as
//! `FILE:LINE:COL: problem`. Secrets live in files the config names (relative paths are
//! relative to the config file), never inline, so the config can be shown and versioned.
//!
//! ```toml
//! [slack]
//! bot_token_file = "/etc/belay/slack-bot-token"          # xoxb-...
//! signing_secret_file = "/etc/belay/slack-signing-secret"  # presses over HTTPS, and/or
//! # app_token_file = "/etc/belay/slack-app-token"        # xapp-...: Socket Mode
//! # api_url = "https://slack.com/api"
//! # map_by_email = true     # users.info's confirmed email names the reviewer
//! # team_id = "T012AB3CD"   # presses from other workspaces (Slack Connect guests) refused
//!
//! [[slack.user]]            # explicit map; wins over the email
//! id = "U012AB3CD"
//! identity = "alice@example.com"
//!
//! [reviewers]               # who may decide from chat, and with which role
//! "alice@example.com" = "reviewer"
//!
//! [[route]]                 # first match wins; no matcher at all = catch-all
//! subject = "deploy-*"      # glob on the context's subject, else the agent's name
//! owner = "*@example.com"
//! host = "web-*"
//! slack_channel = "C0123"
//! teams_conversation = "19:abc@thread.tacv2"
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use belay_config_file::{ConfigError, Source};
use belay_proto::domain::Identity;
use serde::Deserialize;
use toml::Spanned;

use super::routing::{Glob, Route};
use crate::auth::Role;

/// The validated chat configuration.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    pub slack: Option<SlackConfig>,
    /// Canonical identity -> role when deciding from chat.
    pub reviewers: HashMap<String, Role>,
    pub routes: Vec<Route>,
    /// The `[teams]` section, loaded (its app password read, its clients built).
    pub teams: Option<super::teams::Teams>,
}

#[derive(Clone)]
pub struct SlackConfig {
    pub bot_token: Secret,
    /// Presses arrive at `/chat/slack/interactions`, signed with it.
    pub signing_secret: Option<Secret>,
    /// Socket Mode: presses arrive over a WebSocket belay-server opens with it.
    pub app_token: Option<Secret>,
    /// Without the trailing slash: `https://slack.com/api`.
    pub api_url: String,
    pub map_by_email: bool,
    /// Slack user id -> identity (canonical).
    pub users: HashMap<String, Identity>,
    /// The workspace presses must come from, and their users belong to.
    pub team_id: Option<String>,
}

impl std::fmt::Debug for SlackConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackConfig")
            .field("api_url", &self.api_url)
            .field("map_by_email", &self.map_by_email)
            .field("team_id", &self.team_id)
            .field("http_interactions", &self.signing_secret.is_some())
            .field("socket_mode", &self.app_token.is_some())
            .field("users", &self.users)
            .finish_non_exhaustive()
    }
}

/// A secret read from a file; never printed.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

pub const DEFAULT_SLACK_API: &str = "https://slack.com/api";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    slack: Option<Spanned<RawSlack>>,
    #[serde(default)]
    reviewers: HashMap<Spanned<String>, Role>,
    #[serde(default)]
    route: Vec<RawRoute>,
    /// Its keys are `crate::chat::teams::TeamsConfig`'s.
    teams: Option<Spanned<super::teams::TeamsConfig>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlack {
    bot_token_file: Spanned<String>,
    signing_secret_file: Option<Spanned<String>>,
    app_token_file: Option<Spanned<String>>,
    api_url: Option<Spanned<String>>,
    #[serde(default)]
    map_by_email: bool,
    team_id: Option<Spanned<String>>,
    #[serde(default)]
    user: Vec<RawSlackUser>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlackUser {
    id: Spanned<String>,
    identity: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    subject: Option<Spanned<String>>,
    owner: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
    slack_channel: Option<Spanned<String>>,
    teams_conversation: Option<Spanned<String>>,
}

impl ChatConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = belay_config_file::read(path)?;
        Self::parse(path, &text)
    }

    /// Parses `text` as the file `path` (secret files are relative to its directory).
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let source = Source::new(path, text);
        let raw: RawConfig = source.parse()?;
        let base_dir = path.parent().unwrap_or(Path::new("."));
        let teams = raw
            .teams
            .map(|teams| {
                let span = teams.span();
                super::teams::load(teams.into_inner(), base_dir)
                    .map_err(|err| source.at(span, err.to_string()))
            })
            .transpose()?;
        let slack = raw
            .slack
            .map(|slack| slack_config(&source, path, slack))
            .transpose()?;
        let mut reviewers = HashMap::new();
        for (name, role) in raw.reviewers {
            let identity = identity(&source, &name)?;
            reviewers.insert(identity.into_string(), role);
        }
        let mut routes = Vec::new();
        for route in raw.route {
            routes.push(route_config(
                &source,
                route,
                slack.is_some(),
                teams.is_some(),
            )?);
        }
        if slack.is_none() && teams.is_none() {
            // Nothing would ever be posted nor decided: certainly not what was meant.
            return Err(
                source.whole("no chat platform configured: add a [slack] or a [teams] section")
            );
        }
        if routes.is_empty() {
            return Err(source.whole(
                "no [[route]]: nothing would be posted; add one (without matchers it takes \
                 every request)",
            ));
        }
        Ok(Self {
            slack,
            reviewers,
            routes,
            teams,
        })
    }

    /// The role `identity` has when deciding from chat.
    pub fn role_of(&self, identity: &Identity) -> Option<Role> {
        self.reviewers.get(identity.canonical().as_str()).copied()
    }
}

/// `belay-server check-config`'s answer for a chat file.
pub fn check_config(path: &Path) -> Result<String, ConfigError> {
    let config = ChatConfig::load(path)?;
    let slack = match &config.slack {
        None => "off",
        Some(slack) => match (slack.signing_secret.is_some(), slack.app_token.is_some()) {
            (true, true) => "on (HTTPS and Socket Mode)",
            (false, true) => "on (Socket Mode)",
            _ => "on (HTTPS)",
        },
    };
    Ok(format!(
        "ok: {} route(s), {} reviewer(s), slack {slack}, teams {}",
        config.routes.len(),
        config.reviewers.len(),
        if config.teams.is_some() { "on" } else { "off" }
    ))
}

fn slack_config(
    source: &Source<'_>,
    path: &Path,
    raw: Spanned<RawSlack>,
) -> Result<SlackConfig, ConfigError> {
    let span = raw.span();
    let raw = raw.into_inner();
    let bot_token = read_secret(source, path, "bot_token_file", &raw.bot_token_file)?;
    let signing_secret = raw
        .signing_secret_file
        .as_ref()
        .map(|file| read_secret(source, path, "signing_secret_file", file))
        .transpose()?;
    let app_token = match &raw.app_token_file {
        None => None,
        Some(file) => {
            let token = read_secret(source, path, "app_token_file", file)?;
            if !token.expose().starts_with("xapp-") {
                return Err(source.at(
                    file.span(),
                    "app_token_file: not an app-level token (xapp-...; Basic Information → \
                     App-Level Tokens, with the connections:write scope)",
                ));
            }
            Some(token)
        }
    };
    if signing_secret.is_none() && app_token.is_none() {
        return Err(source.at(
            span,
            "[slack] needs signing_secret_file (presses over HTTPS) or app_token_file \
             (Socket Mode), or both: without either no press would ever arrive",
        ));
    }
    let api_url = match raw.api_url {
        None => DEFAULT_SLACK_API.to_owned(),
        Some(url) => {
            belay_config_file::check_url(url.get_ref())
                .map_err(|problem| source.at(url.span(), format!("api_url: {problem}")))?;
            url.get_ref().trim_end_matches('/').to_owned()
        }
    };
    let team_id = match raw.team_id {
        None => None,
        Some(team) if is_slack_id(team.get_ref()) => Some(team.into_inner()),
        Some(team) => {
            return Err(source.at(
                team.span(),
                format!(
                    "team_id {:?} is not a Slack workspace id (like T012AB3CD)",
                    team.get_ref()
                ),
            ));
        }
    };
    let mut users = HashMap::new();
    for user in raw.user {
        if !is_slack_id(user.id.get_ref()) {
            return Err(source.at(
                user.id.span(),
                format!(
                    "{:?} is not a Slack user id (like U012AB3CD)",
                    user.id.get_ref()
                ),
            ));
        }
        let identity = identity(source, &user.identity)?;
        if users.insert(user.id.get_ref().clone(), identity).is_some() {
            return Err(source.at(user.id.span(), "this Slack user is mapped twice"));
        }
    }
    Ok(SlackConfig {
        bot_token,
        signing_secret,
        app_token,
        api_url,
        map_by_email: raw.map_by_email,
        users,
        team_id,
    })
}

fn route_config(
    source: &Source<'_>,
    raw: RawRoute,
    slack: bool,
    teams: bool,
) -> Result<Route, ConfigError> {
    let glob = |value: &Option<Spanned<String>>| -> Result<Option<Glob>, ConfigError> {
        value
            .as_ref()
            .map(|value| {
                Glob::new(value.get_ref()).map_err(|problem| source.at(value.span(), problem))
            })
            .transpose()
    };
    let subject = glob(&raw.subject)?;
    let owner = glob(&raw.owner)?;
    let host = glob(&raw.host)?;
    if let Some(channel) = &raw.slack_channel {
        if !is_slack_id(channel.get_ref()) {
            return Err(source.at(
                channel.span(),
                format!(
                    "{:?} is not a Slack channel id (like C0123ABCD; a name like #ops does \
                     not work with chat.update)",
                    channel.get_ref()
                ),
            ));
        }
        if !slack {
            return Err(source.at(channel.span(), "slack_channel without a [slack] section"));
        }
    }
    if let Some(conversation) = &raw.teams_conversation
        && conversation.get_ref().trim().is_empty()
    {
        return Err(source.at(conversation.span(), "teams_conversation is empty"));
    }
    if let Some(conversation) = &raw.teams_conversation
        && !teams
    {
        return Err(source.at(
            conversation.span(),
            "teams_conversation without a [teams] section",
        ));
    }
    Ok(Route {
        subject,
        owner,
        host,
        slack_channel: raw.slack_channel.map(Spanned::into_inner),
        teams_conversation: raw.teams_conversation.map(Spanned::into_inner),
    })
}

fn identity(source: &Source<'_>, name: &Spanned<String>) -> Result<Identity, ConfigError> {
    Identity::new(name.get_ref().as_str())
        .map(|identity| identity.canonical())
        .map_err(|err| source.at(name.span(), format!("not an identity: {err}")))
}

/// Slack ids: an upper-case letter, then upper-case letters and digits.
fn is_slack_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && id.len() <= 32
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// The first line of the file `name` (relative to the config's directory), not empty.
fn read_secret(
    source: &Source<'_>,
    config: &Path,
    key: &str,
    name: &Spanned<String>,
) -> Result<Secret, ConfigError> {
    let file: PathBuf = match config.parent() {
        Some(dir) if Path::new(name.get_ref()).is_relative() => dir.join(name.get_ref()),
        _ => PathBuf::from(name.get_ref()),
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|err| source.at(name.span(), format!("{key} {}: {err}", file.display())))?;
    let secret = text.lines().next().unwrap_or("").trim();
    if secret.is_empty() {
        return Err(source.at(name.span(), format!("{key} {} is empty", file.display())));
    }
    Ok(Secret(secret.to_owned()))
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
