use std::path::Path;

use super::*;
use crate::chat::fixtures::request;
use crate::chat::routing::target;
use crate::chat::surface::Platform;

/// A config file in a fresh directory with the two secret files beside it.
fn dir_with_secrets() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("teams-pw"), "teams-secret\n").unwrap();
    std::fs::write(dir.path().join("bot-token"), "xoxb-test\n").unwrap();
    std::fs::write(
        dir.path().join("signing-secret"),
        "8f742231b10e8888abcd99yyyzzz85a5\n",
    )
    .unwrap();
    dir
}

const SLACK: &str = r#"
[slack]
bot_token_file = "bot-token"
signing_secret_file = "signing-secret"
"#;

fn parse(dir: &Path, text: &str) -> Result<ChatConfig, ConfigError> {
    ChatConfig::parse(&dir.join("chat.toml"), text)
}

fn error(dir: &Path, text: &str) -> String {
    parse(dir, text).unwrap_err().to_string()
}

#[test]
fn full_config_loads_with_secrets_from_files() {
    let dir = dir_with_secrets();
    let config = parse(
        dir.path(),
        &format!(
            r#"{SLACK}
api_url = "http://127.0.0.1:9/api/"
map_by_email = true
[[slack.user]]
id = "U012AB3CD"
identity = "Alice@Example.com"

[reviewers]
"alice@example.com" = "reviewer"
"Bob@example.com" = "admin"

[teams]
app_id = "00000000-0000-0000-0000-000000000001"
app_password_file = "teams-pw"

[[route]]
host = "web-*"
slack_channel = "C0123"
teams_conversation = "19:abc@thread.tacv2"

[[route]]
slack_channel = "C0999"
"#
        ),
    )
    .unwrap();
    assert!(config.teams.is_some(), "the [teams] section is loaded");
    let slack = config.slack.as_ref().unwrap();
    assert_eq!(slack.bot_token.expose(), "xoxb-test");
    assert_eq!(
        slack.signing_secret.as_ref().unwrap().expose(),
        "8f742231b10e8888abcd99yyyzzz85a5"
    );
    assert_eq!(slack.api_url, "http://127.0.0.1:9/api");
    assert!(slack.map_by_email);
    assert_eq!(slack.users["U012AB3CD"].as_str(), "alice@example.com");
    let bob = Identity::new("bob@EXAMPLE.com").unwrap();
    assert_eq!(config.role_of(&bob), Some(Role::Admin));
    assert_eq!(config.routes.len(), 2);
    assert_eq!(
        config.routes[0].teams_conversation.as_deref(),
        Some("19:abc@thread.tacv2")
    );
    // Secrets never show in debug output.
    assert!(!format!("{config:?}").contains("xoxb-test"));
}

#[test]
fn problems_name_file_line_and_column() {
    let dir = dir_with_secrets();
    let file = dir.path().join("chat.toml");
    let f = file.display();
    assert_eq!(
        error(dir.path(), &format!("{SLACK}bot_token = \"xoxb-inline\"\n")),
        format!(
            "{f}:5:1: unknown field `bot_token`, expected one of `bot_token_file`, `signing_secret_file`, `app_token_file`, `api_url`, `map_by_email`, `team_id`, `user`"
        )
    );
    assert_eq!(
        error(
            dir.path(),
            "[slack]\nbot_token_file = \"missing\"\nsigning_secret_file = \"signing-secret\"\n[[route]]\n"
        ),
        format!(
            "{f}:2:18: bot_token_file {}: No such file or directory (os error 2)",
            dir.path().join("missing").display()
        )
    );
    std::fs::write(dir.path().join("empty"), "\n").unwrap();
    assert_eq!(
        error(
            dir.path(),
            "[slack]\nbot_token_file = \"bot-token\"\nsigning_secret_file = \"empty\"\n[[route]]\n"
        ),
        format!(
            "{f}:3:23: signing_secret_file {} is empty",
            dir.path().join("empty").display()
        )
    );
    assert_eq!(
        error(
            dir.path(),
            &format!("{SLACK}[[route]]\nslack_channel = \"#ops\"\n")
        ),
        format!(
            "{f}:6:17: \"#ops\" is not a Slack channel id (like C0123ABCD; a name like #ops does not work with chat.update)"
        )
    );
    assert_eq!(
        error(dir.path(), &format!("{SLACK}[[route]]\nhost = \"\"\n")),
        format!("{f}:6:8: an empty pattern matches nothing; use \"*\" or leave it out")
    );
    assert_eq!(
        error(
            dir.path(),
            &format!("{SLACK}[reviewers]\n\"alice@example.com\" = \"owner\"\n[[route]]\n")
        ),
        format!("{f}:6:23: unknown variant `owner`, expected one of `viewer`, `reviewer`, `admin`")
    );
    assert_eq!(
        error(
            dir.path(),
            &format!(
                "{SLACK}[[slack.user]]\nid = \"alice\"\nidentity = \"alice@example.com\"\n[[route]]\n"
            )
        ),
        format!("{f}:6:6: \"alice\" is not a Slack user id (like U012AB3CD)")
    );
    assert_eq!(
        error(
            dir.path(),
            &format!("{SLACK}api_url = \"http://slack.example/api\"\n[[route]]\n")
        ),
        format!(
            "{f}:5:11: api_url: {}",
            belay_config_file::check_url("http://slack.example/api").unwrap_err()
        )
    );
    assert_eq!(
        error(
            dir.path(),
            &format!("{SLACK}team_id = \"example.slack.com\"\n[[route]]\n")
        ),
        format!(
            "{f}:5:11: team_id \"example.slack.com\" is not a Slack workspace id (like T012AB3CD)"
        )
    );
    std::fs::write(dir.path().join("app-token"), "xoxb-a-bot-token\n").unwrap();
    assert_eq!(
        error(
            dir.path(),
            &format!("{SLACK}app_token_file = \"app-token\"\n[[route]]\n")
        ),
        format!(
            "{f}:5:18: app_token_file: not an app-level token (xapp-...; Basic Information → App-Level Tokens, with the connections:write scope)"
        )
    );
    assert_eq!(
        error(
            dir.path(),
            "[slack]\nbot_token_file = \"bot-token\"\n[[route]]\n"
        ),
        format!(
            "{f}:1:1: [slack] needs signing_secret_file (presses over HTTPS) or app_token_file (Socket Mode), or both: without either no press would ever arrive"
        )
    );
    assert_eq!(
        error(dir.path(), SLACK),
        format!(
            "{f}: no [[route]]: nothing would be posted; add one (without matchers it takes every request)"
        )
    );
    assert!(error(dir.path(), "[[route]]\n").contains("no chat platform configured"));
}

#[test]
fn socket_mode_alone_needs_no_signing_secret() {
    let dir = dir_with_secrets();
    std::fs::write(dir.path().join("app-token"), "xapp-1-A1-abc\n").unwrap();
    let config = parse(
        dir.path(),
        "[slack]\nbot_token_file = \"bot-token\"\napp_token_file = \"app-token\"\n[[route]]\n",
    )
    .unwrap();
    let slack = config.slack.unwrap();
    assert!(slack.signing_secret.is_none());
    assert_eq!(slack.app_token.unwrap().expose(), "xapp-1-A1-abc");
}

#[test]
fn the_first_matching_route_decides() {
    let dir = dir_with_secrets();
    let config = parse(
        dir.path(),
        &format!(
            r#"{SLACK}
[[route]]
subject = "deploy-*"
owner = "*@example.com"
host = "web-*"
slack_channel = "CDEPLOY"

[[route]]
host = "db-*"
# no slack_channel: db requests stay off Slack

[[route]]
slack_channel = "CREST"
"#
        ),
    )
    .unwrap();
    let routes = &config.routes;
    let slack = |host: &str, owner: &str, subject: &str| {
        target(routes, &request(host, owner, subject), Platform::Slack).map(str::to_owned)
    };
    assert_eq!(
        slack("web-1", "alice@example.com", "deploy-bot").as_deref(),
        Some("CDEPLOY")
    );
    // Each matcher must match.
    assert_eq!(
        slack("web-1", "alice@other.org", "deploy-bot").as_deref(),
        Some("CREST")
    );
    assert_eq!(
        slack("web-1", "alice@example.com", "coder").as_deref(),
        Some("CREST")
    );
    assert_eq!(
        slack("api-1", "alice@example.com", "deploy-bot").as_deref(),
        Some("CREST")
    );
    // A matching route without a target keeps the request off that platform.
    assert_eq!(slack("db-1", "alice@example.com", "coder"), None);
    assert_eq!(
        target(
            routes,
            &request("web-1", "a@example.com", "x"),
            Platform::Teams
        ),
        None
    );
}

#[test]
fn a_teams_conversation_needs_a_teams_section_and_its_problems_have_a_place() {
    let dir = dir_with_secrets();
    let f = dir.path().join("chat.toml");
    let f = f.display();
    assert_eq!(
        error(
            dir.path(),
            &format!("{SLACK}[[route]]\nteams_conversation = \"19:x@thread.tacv2\"\n")
        ),
        format!("{f}:6:22: teams_conversation without a [teams] section")
    );
    let missing = error(
        dir.path(),
        "[teams]\napp_id = \"a\"\napp_password_file = \"nope\"\n[[route]]\n",
    );
    assert!(
        missing.starts_with(&format!("{f}:1:1: ")) && missing.contains("nope"),
        "{missing}"
    );
}
