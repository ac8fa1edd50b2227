//! Chat approvals: requests that need a person are posted to Slack and Microsoft Teams,
//! and reviewers decide with the message's buttons, under the same rules as every other
//! surface (roles, no self-approval, quorum), because every decision ends in the same
//! [`crate::approvals::Approvals::decide_counted`] call.
//!
//! The parts:
//! - [`config`]: the `--chat-config` file; [`routing`]: which channel a request goes to;
//! - [`surface`]: what a chat platform must do (post, update, say who a user is); one
//!   implementation per platform ([`slack`], `teams`);
//! - [`card`]: what a message shows, independent of the platform's markup;
//! - [`outbox`]: the worker that posts and updates messages (a platform that is down
//!   delays messages, and never holds up a decision);
//! - [`decide`]: a decision from a chat button, checked and recorded.
//!
//! The inbound endpoints (`/chat/slack/interactions`, `/chat/teams/messages`) are served
//! on the reviewer console's HTTPS listener, so chat needs `--console-listen`; with Slack
//! in Socket Mode alone that listener need not be reachable from Slack.

pub mod card;
pub mod config;
pub mod decide;
pub mod outbox;
pub mod routing;
pub mod slack;
pub mod surface;
pub mod teams;

#[cfg(test)]
mod fixtures;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::post;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::approvals::{Approvals, Store};
use crate::metrics::Metrics;
pub use config::ChatConfig;

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("cannot build the Slack client: {0}")]
    SlackClient(#[source] reqwest::Error),
}

/// Chat, started: the routes to mount on the console, and the outbox workers.
pub struct Started {
    /// `POST /chat/slack/interactions` (and the Teams part's); to be merged into the
    /// console's router, outside its cookie and CSRF checks (they authenticate by the
    /// platform's signature), inside its security headers.
    pub routes: Router,
    pub tasks: Vec<JoinHandle<()>>,
}

/// Starts the outbox workers of the configured platforms until `stop`.
pub fn start<S: Store>(
    config: ChatConfig,
    approvals: &Arc<Approvals<S>>,
    metrics: &Arc<Metrics>,
    stop: &CancellationToken,
) -> Result<Started, ChatError> {
    let config = Arc::new(config);
    let routes_config = Arc::new(config.routes.clone());
    let mut routes = Router::new();
    let mut tasks = Vec::new();
    if let Some(slack) = &config.slack {
        let client = slack::SlackClient::new(&slack.api_url, slack.bot_token.expose())
            .map_err(ChatError::SlackClient)?;
        let surface = Arc::new(slack::SlackSurface::new(client.clone()));
        let worker =
            outbox::Worker::new(Arc::clone(approvals), surface, Arc::clone(&routes_config))
                .with_metrics(Arc::clone(metrics));
        tasks.push(tokio::spawn(worker.run(stop.clone())));
        let interactions = Arc::new(slack::interactions::Interactions {
            approvals: Arc::clone(approvals),
            verifier: slack
                .signing_secret
                .as_ref()
                .map(|secret| slack::verify::Verifier::new(secret.expose())),
            client,
            users: slack::users::UserMap::new(slack.users.clone(), slack.map_by_email),
            config: Arc::clone(&config),
            metrics: Some(Arc::clone(metrics)),
        });
        if let Some(app_token) = &slack.app_token {
            tasks.push(tokio::spawn(slack::socket::run(
                Arc::clone(&interactions),
                app_token.clone(),
                stop.clone(),
            )));
        }
        if slack.signing_secret.is_some() {
            routes = routes.route(
                "/chat/slack/interactions",
                post(slack::interactions::handle::<S>)
                    .layer(DefaultBodyLimit::max(slack::interactions::MAX_BODY))
                    .with_state(interactions),
            );
        }
        tracing::info!(
            routes = config.routes.len(),
            http = slack.signing_secret.is_some(),
            socket_mode = slack.app_token.is_some(),
            "Slack approvals on"
        );
    }
    if let Some(teams) = &config.teams {
        let worker = outbox::Worker::new(
            Arc::clone(approvals),
            Arc::new(teams.connector.clone()),
            Arc::clone(&routes_config),
        )
        .with_metrics(Arc::clone(metrics));
        tasks.push(tokio::spawn(worker.run(stop.clone())));
        let reviewers: std::collections::BTreeMap<_, _> = config
            .reviewers
            .iter()
            .map(|(identity, role)| (identity.clone(), *role))
            .collect();
        routes = routes.merge(teams::router(
            teams::TeamsEndpoint::new(Arc::clone(approvals), teams, Arc::new(reviewers))
                .with_metrics(Arc::clone(metrics)),
        ));
        tracing::info!(routes = config.routes.len(), "Teams approvals on");
    }
    Ok(Started { routes, tasks })
}
