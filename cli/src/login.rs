//! `belay login`: an OIDC ID token through the device authorization flow (RFC 8628), or
//! an API token typed in; `belay logout`; and the token each `--server` call sends,
//! refreshed when it is about to expire.

use std::io::{BufRead as _, IsTerminal as _};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use serde::Deserialize;

use crate::credentials::{self, Credential};
use crate::render::esc;

/// RFC 8628 §3.5: the default polling interval, and how much `slow_down` adds.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Refresh an ID token this long before it expires, so it does not lapse in flight.
const EXPIRY_MARGIN_SECS: u64 = 30;

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// OIDC issuer to sign in with (device flow); belay-server must trust it.
    #[arg(
        long,
        env = "BELAY_OIDC_ISSUER",
        value_name = "URL",
        required_unless_present = "token"
    )]
    issuer: Option<String>,
    /// OAuth client id of belay at the issuer: the audience belay-server expects.
    #[arg(
        long,
        env = "BELAY_OIDC_CLIENT_ID",
        default_value = "belay",
        value_name = "ID"
    )]
    client_id: String,
    /// Scopes to ask for; `openid` is needed for an ID token.
    #[arg(long, default_value = "openid email profile groups offline_access")]
    scope: String,
    /// Store an API token instead, read from stdin (or prompted for, unechoed): never
    /// from the command line, where other users could see it.
    #[arg(long, conflicts_with = "issuer")]
    token: bool,
}

pub fn login(args: &LoginArgs) -> anyhow::Result<()> {
    let credential = if args.token {
        Credential::ApiToken {
            token: read_token()?,
        }
    } else {
        let issuer = args.issuer.as_deref().context("--issuer URL is needed")?;
        runtime()?.block_on(device_flow(issuer, &args.client_id, &args.scope))?
    };
    let path = credentials::store(&credential)?;
    eprintln!("belay: credential stored in {}", path.display());
    Ok(())
}

pub fn logout() -> anyhow::Result<()> {
    if credentials::remove()? {
        eprintln!("belay: logged out");
    } else {
        eprintln!("belay: no stored credential");
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn read_token() -> anyhow::Result<String> {
    let token = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("API token: ").context("reading the token")?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the token on stdin")?;
        line
    };
    let token = token.trim().to_owned();
    if token.is_empty() {
        bail!("no token given");
    }
    Ok(token)
}

fn http() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .user_agent(concat!("belay/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("cannot build the HTTP client")
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    token_endpoint: String,
    device_authorization_endpoint: Option<String>,
}

#[derive(Deserialize)]
struct DeviceAuthorization {
    device_code: String,
    user_code: String,
    // Google calls it verification_url.
    #[serde(alias = "verification_url")]
    verification_uri: String,
    verification_uri_complete: Option<String>,
    expires_in: u64,
    interval: Option<u64>,
}

#[derive(Deserialize)]
struct TokenReply {
    id_token: Option<String>,
    refresh_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn discover(http: &reqwest::Client, issuer: &str) -> anyhow::Result<Discovery> {
    belay_config_file::check_url(issuer).map_err(|err| anyhow::anyhow!("--issuer {err}"))?;
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let discovery: Discovery = http
        .get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("GET {url}"))?
        .json()
        .await
        .with_context(|| format!("{url}: not an OpenID configuration"))?;
    if discovery.issuer != issuer {
        bail!("{url} names issuer {:?}, not {issuer:?}", discovery.issuer);
    }
    Ok(discovery)
}

/// Signs in through the browser of any device: prints where to go and the code to enter,
/// then polls the token endpoint until the user has approved.
async fn device_flow(issuer: &str, client_id: &str, scope: &str) -> anyhow::Result<Credential> {
    let http = http()?;
    let discovery = discover(&http, issuer).await?;
    let endpoint = discovery
        .device_authorization_endpoint
        .with_context(|| format!("{issuer} offers no device authorization endpoint (RFC 8628)"))?;
    let response = http
        .post(&endpoint)
        .form(&[("client_id", client_id), ("scope", scope)])
        .send()
        .await
        .with_context(|| format!("POST {endpoint}"))?;
    if !response.status().is_success() {
        let status = response.status();
        let reply: Option<TokenReply> = response.json().await.ok();
        bail!(
            "{endpoint} refused the sign-in: HTTP {status}{}",
            describe(reply.as_ref())
        );
    }
    let device: DeviceAuthorization = response
        .json()
        .await
        .with_context(|| format!("{endpoint}: unexpected answer"))?;

    // As the issuer sent them: escaped, like everything else a person reads.
    eprintln!("To sign in, open {}", esc(&device.verification_uri));
    eprintln!("and enter the code: {}", esc(&device.user_code));
    if let Some(complete) = &device.verification_uri_complete {
        eprintln!("(or open {})", esc(complete));
    }

    let deadline = Instant::now() + Duration::from_secs(device.expires_in);
    let mut interval = device
        .interval
        .map_or(DEFAULT_INTERVAL, Duration::from_secs)
        .max(Duration::from_secs(1));
    loop {
        tokio::time::sleep(interval).await;
        if Instant::now() >= deadline {
            bail!("the code expired before the sign-in was approved: run `belay login` again");
        }
        let reply: TokenReply = http
            .post(&discovery.token_endpoint)
            .form(&[
                ("grant_type", DEVICE_GRANT),
                ("device_code", &device.device_code),
                ("client_id", client_id),
            ])
            .send()
            .await
            .with_context(|| format!("POST {}", discovery.token_endpoint))?
            .json()
            .await
            .with_context(|| format!("{}: unexpected answer", discovery.token_endpoint))?;
        match reply.error.as_deref() {
            None => {
                let id_token = reply
                    .id_token
                    .context("the issuer sent no id_token: the scope must include `openid`")?;
                return Ok(Credential::Oidc {
                    issuer: issuer.to_owned(),
                    client_id: client_id.to_owned(),
                    id_token,
                    refresh_token: reply.refresh_token,
                });
            }
            Some("authorization_pending") => {}
            Some("slow_down") => interval += SLOW_DOWN_STEP,
            Some("access_denied") => bail!("the sign-in was denied"),
            Some("expired_token") => {
                bail!("the code expired before the sign-in was approved: run `belay login` again")
            }
            Some(other) => bail!(
                "the issuer refused the sign-in: {other}{}",
                describe(Some(&reply))
            ),
        }
    }
}

fn describe(reply: Option<&TokenReply>) -> String {
    match reply.and_then(|r| r.error_description.as_deref().or(r.error.as_deref())) {
        Some(text) => format!(" ({text})"),
        None => String::new(),
    }
}

/// A new ID token for `refresh_token` (OAuth 2 refresh grant).
pub async fn refresh(
    issuer: &str,
    client_id: &str,
    refresh_token: &str,
) -> anyhow::Result<Credential> {
    let http = http()?;
    let discovery = discover(&http, issuer).await?;
    let reply: TokenReply = http
        .post(&discovery.token_endpoint)
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", client_id),
        ])
        .send()
        .await
        .with_context(|| format!("POST {}", discovery.token_endpoint))?
        .json()
        .await
        .with_context(|| format!("{}: unexpected answer", discovery.token_endpoint))?;
    if reply.error.is_some() {
        bail!("the issuer refused the refresh{}", describe(Some(&reply)));
    }
    let id_token = reply
        .id_token
        .context("the issuer's refresh answer has no id_token")?;
    Ok(Credential::Oidc {
        issuer: issuer.to_owned(),
        client_id: client_id.to_owned(),
        id_token,
        // Issuers that rotate refresh tokens send a new one; others keep the old valid.
        refresh_token: reply
            .refresh_token
            .or_else(|| Some(refresh_token.to_owned())),
    })
}

/// The bearer token to send, refreshing a stored ID token that is about to expire when
/// the issuer gave a refresh token.
pub async fn bearer() -> anyhow::Result<Option<String>> {
    if let Some(token) = std::env::var("BELAY_TOKEN").ok().filter(|t| !t.is_empty()) {
        return Ok(Some(token));
    }
    match credentials::load()? {
        None => Ok(None),
        Some(Credential::ApiToken { token }) => Ok(Some(token)),
        Some(Credential::Oidc {
            issuer,
            client_id,
            id_token,
            refresh_token,
        }) => {
            let expired =
                jwt_expiry(&id_token).is_some_and(|exp| exp <= unix_now() + EXPIRY_MARGIN_SECS);
            if !expired {
                return Ok(Some(id_token));
            }
            let Some(refresh_token) = refresh_token else {
                bail!("the ID token from `belay login` has expired: run `belay login` again");
            };
            let refreshed = refresh(&issuer, &client_id, &refresh_token).await.context(
                "the ID token has expired and refreshing it failed: run `belay login` again",
            )?;
            let token = match &refreshed {
                Credential::Oidc { id_token, .. } => id_token.clone(),
                Credential::ApiToken { token } => token.clone(),
            };
            credentials::store(&refreshed)?;
            Ok(Some(token))
        }
    }
}

/// The `exp` of a JWT, read without verifying it: only to decide when to refresh.
fn jwt_expiry(token: &str) -> Option<u64> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("exp")?.as_u64()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
