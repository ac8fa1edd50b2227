use std::path::Path;

use super::config::AuthConfig;
use super::{Role, required_role};

fn parse(text: &str) -> Result<AuthConfig, String> {
    AuthConfig::parse(Path::new("auth.toml"), text).map_err(|e| e.to_string())
}

#[test]
fn methods_need_their_roles_and_unknown_ones_need_admin() {
    assert_eq!(
        required_role("/belay.v1.ReviewerService/ListPending"),
        Role::Viewer
    );
    assert_eq!(
        required_role("/belay.v1.ReviewerService/WatchRequests"),
        Role::Viewer
    );
    assert_eq!(
        required_role("/belay.v1.ReviewerService/Decide"),
        Role::Reviewer
    );
    assert_eq!(
        required_role("/belay.v1.ReviewerService/CreateEnrollmentToken"),
        Role::Admin
    );
    assert_eq!(
        required_role("/belay.v1.ReviewerService/GetPolicy"),
        Role::Viewer
    );
    assert_eq!(
        required_role("/belay.v1.ReviewerService/PushPolicy"),
        Role::Admin
    );
}

#[test]
fn unknown_key_is_refused_with_its_position() {
    let err = parse(
        "[[oidc]]\nissuer = \"https://id.example.com\"\naudience = \"belay\"\naudiense = \"x\"\n",
    )
    .unwrap_err();
    assert!(
        err.starts_with("auth.toml:4:1: unknown field `audiense`"),
        "{err}"
    );
}

#[test]
fn api_token_expiry_and_lookup() {
    use std::time::{Duration, UNIX_EPOCH};

    use super::api_token::{ApiTokens, hash_line};
    let line = hash_line("belay_secret");
    let config = parse(&format!(
        "[[api_token]]\nname = \"bot\"\n{line}\nroles = [\"viewer\", \"reviewer\"]\nexpires = 2030-01-01T01:00:00+01:00\n"
    ))
    .unwrap();
    let token = &config.api_tokens[0];
    assert_eq!(token.role, Role::Reviewer, "the highest role listed");
    assert_eq!(
        token.expires,
        Some(UNIX_EPOCH + Duration::from_secs(1_893_456_000)),
        "2030-01-01T00:00:00Z"
    );
    let tokens = ApiTokens::new(&config.api_tokens);
    let before = UNIX_EPOCH + Duration::from_secs(1_893_455_999);
    assert_eq!(
        tokens.verify("belay_secret", before).unwrap().identity,
        "bot"
    );
    let err = tokens
        .verify("belay_secret", before + Duration::from_secs(1))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "API token \"bot\" expired (at unix time 1893456000)"
    );
    assert!(tokens.verify("belay_Secret", before).is_err());
}

#[test]
fn semantic_problems_point_at_their_value() {
    let twice = "[[oidc]]\nissuer = \"https://a.example\"\naudience = \"x\"\n[[oidc]]\nissuer = \"https://a.example\"\naudience = \"y\"\n";
    assert_eq!(
        parse(twice).unwrap_err(),
        "auth.toml:5:10: issuer \"https://a.example\" is declared twice"
    );
    let local_time = "[[api_token]]\nname = \"bot\"\nsha256 = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"\nroles = [\"viewer\"]\nexpires = 2030-01-01T00:00:00\n";
    let err = parse(local_time).unwrap_err();
    assert!(
        err.starts_with("auth.toml:5:11: expires needs a time zone"),
        "{err}"
    );
    let no_roles = "[[api_token]]\nname = \"bot\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nroles = []\n";
    let err = parse(no_roles).unwrap_err();
    assert!(err.starts_with("auth.toml:4:9: roles must name"), "{err}");
    assert_eq!(
        parse("").unwrap_err(),
        "auth.toml: declares no [[oidc]] issuer and no [[api_token]]: nobody could sign in"
    );
}

#[test]
fn the_decider_is_the_credential_not_the_message() {
    use super::{Caller, Reviewer, Via};
    let bob = Caller::Authenticated(Reviewer {
        identity: "bob@example.com".into(),
        role: Some(Role::Reviewer),
        via: Via::ApiToken { name: "ci".into() },
    });
    assert_eq!(bob.decider("").unwrap(), "bob@example.com");
    assert_eq!(bob.decider("bob@example.com").unwrap(), "bob@example.com");
    assert_eq!(
        bob.decider("alice@example.com").unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
    assert_eq!(Caller::Insecure.decider("alice").unwrap(), "alice");
}

#[test]
fn identities_from_claims_other_than_email_are_scoped_to_their_issuer() {
    use super::scoped_identity;
    let email = scoped_identity("https://a.example", "email", "Alice@Example.com").unwrap();
    assert_eq!(email.as_str(), "alice@example.com");
    // A `sub` means something only to its issuer: the same value from two issuers is
    // two people, and neither passes for an owner written without the issuer.
    let a = scoped_identity("https://a.example", "sub", "248289761001").unwrap();
    let b = scoped_identity("https://b.example", "sub", "248289761001").unwrap();
    assert_eq!(a.as_str(), "https://a.example#248289761001");
    assert!(!a.same_as(&b));
    let owner = belay_proto::domain::Identity::new("248289761001").unwrap();
    assert!(!a.same_as(&owner));
}

#[test]
fn api_tokens_may_act_for_an_owner_and_names_differ_beyond_case() {
    use std::time::UNIX_EPOCH;

    use super::api_token::{ApiTokens, hash_line};
    let line = hash_line("belay_alice");
    let config = parse(&format!(
        "[[api_token]]\nname = \"alice-ci\"\n{line}\nroles = [\"reviewer\"]\nowner = \"Alice@Example.com\"\n"
    ))
    .unwrap();
    let tokens = ApiTokens::new(&config.api_tokens);
    let reviewer = tokens.verify("belay_alice", UNIX_EPOCH).unwrap();
    assert_eq!(reviewer.identity, "alice@example.com");
    let err = parse(&format!(
        "[[api_token]]\nname = \"x\"\n{line}\nroles = [\"reviewer\"]\nowner = \"has space\"\n"
    ))
    .unwrap_err();
    assert!(err.starts_with("auth.toml:5:9: owner:"), "{err}");
    let other = hash_line("belay_other");
    let err = parse(&format!(
        "[[api_token]]\nname = \"bot\"\n{line}\nroles = [\"reviewer\"]\n\n[[api_token]]\nname = \"BOT\"\n{other}\nroles = [\"reviewer\"]\n"
    ))
    .unwrap_err();
    assert!(err.contains("declared twice"), "{err}");
}
