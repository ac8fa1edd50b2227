//! Slack: requests posted to channels with Block Kit buttons ([`blocks`]), through the
//! Web API ([`client`]); button presses arrive signed at
//! `POST /chat/slack/interactions` on the console's listener ([`interactions`], checked
//! by [`verify`] before anything is parsed), or over a WebSocket belay-server opens to
//! Slack in Socket Mode ([`socket`]); the pressing user is mapped to a belay identity
//! ([`users`]).

pub mod blocks;
pub mod client;
pub mod interactions;
pub mod socket;
pub mod users;
pub mod verify;

use crate::chat::card::RequestCard;
use crate::chat::surface::{Platform, PostedMessage, SendError, Surface};

pub use client::SlackClient;

/// Slack as the outbox uses it.
#[derive(Debug, Clone)]
pub struct SlackSurface {
    client: SlackClient,
}

impl SlackSurface {
    pub fn new(client: SlackClient) -> Self {
        Self { client }
    }
}

/// A posted message is its channel and `ts`; channel ids never hold a space.
fn message_ref(channel: &str, ts: &str) -> PostedMessage {
    PostedMessage(format!("{channel} {ts}"))
}

impl Surface for SlackSurface {
    fn platform(&self) -> Platform {
        Platform::Slack
    }

    async fn post(&self, target: &str, card: &RequestCard) -> Result<PostedMessage, SendError> {
        let ts = self
            .client
            .post_message(target, &blocks::render(card))
            .await?;
        Ok(message_ref(target, &ts))
    }

    async fn update(&self, message: &PostedMessage, card: &RequestCard) -> Result<(), SendError> {
        let (channel, ts) = message
            .0
            .split_once(' ')
            .ok_or_else(|| SendError::Permanent(format!("not a Slack message: {:?}", message.0)))?;
        self.client.update(channel, ts, &blocks::render(card)).await
    }
}
