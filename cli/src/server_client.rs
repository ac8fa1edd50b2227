//! The connection to belay-server's reviewer service: the endpoint (TLS trusted through
//! the given CA only), the credential sent with every call, and how its errors read.
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use belay_proto::v1::reviewer_service_client::ReviewerServiceClient;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::credentials::Bearer;

/// The client [`connect`] returns; one name to change if its stack changes.
pub type Client = ReviewerServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
>;

/// A refused call, as the CLI says it.
pub fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("belay-server: {}", s.message())
}

/// The channel settings for `url`: an https:// server is trusted through `ca` (its CA
/// certificate, PEM) and nothing else.
fn endpoint(url: &str, ca: Option<&Path>) -> anyhow::Result<Endpoint> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("bad server URL {url:?}"))?
        .connect_timeout(Duration::from_secs(10));
    if !url.starts_with("https://") {
        return Ok(endpoint);
    }
    let ca = ca.with_context(|| {
        format!("{url} uses TLS: name the server's CA with --server-ca FILE (BELAY_SERVER_CA)")
    })?;
    let pem =
        std::fs::read(ca).with_context(|| format!("cannot read the server CA {}", ca.display()))?;
    endpoint
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
        .context("cannot set up TLS")
}

/// tonic's transport errors say "transport error"; the why is in their sources.
fn with_sources(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}

/// Connects to `url` with the stored credential (or `BELAY_TOKEN`); also says whether a
/// credential is sent (signed in).
pub async fn connect(url: &str, ca: Option<&Path>) -> anyhow::Result<(Client, bool)> {
    let channel = endpoint(url, ca)?.connect().await.map_err(|err| {
        anyhow::anyhow!("cannot reach belay-server at {url}: {}", with_sources(&err))
    })?;
    let bearer = Bearer::new(crate::login::bearer().await?)?;
    let signed_in = bearer.is_some();
    Ok((
        ReviewerServiceClient::with_interceptor(channel, bearer),
        signed_in,
    ))
}
