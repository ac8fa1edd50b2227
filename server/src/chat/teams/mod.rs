//! Microsoft Teams: request cards posted by an Azure Bot into channels and chats
//! (Adaptive Cards 1.5 with Universal Actions), and reviewers' button presses received
//! as `adaptiveCard/action` invokes on `POST /chat/teams/messages`.
//!
//! - [`config`]: the `[teams]` table and [`load`], which builds the rest;
//! - [`auth`]: every inbound activity's Bot Framework JWT, verified before anything;
//! - [`card`]: the Adaptive Card of a request, untrusted text never read as Markdown;
//! - [`connector`]: the bot's token and the Connector REST calls, the [`Surface`];
//! - [`endpoint`]: the messaging endpoint, deciding through [`crate::chat::decide`].
//!
//! [`Surface`]: crate::chat::surface::Surface

pub mod auth;
pub mod card;
pub mod config;
pub mod connector;
pub mod endpoint;

use std::time::Duration;

pub use auth::{BotAuthError, BotVerifier};
pub use config::{Teams, TeamsConfig, TeamsConfigError, TeamsUserConfig, TeamsUsers, load};
pub use connector::{TeamsConnector, TeamsMessage};
pub use endpoint::{MESSAGES_PATH, TeamsEndpoint, router};

/// Every call to Microsoft (keys, tokens, the Connector) gives up after this.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
