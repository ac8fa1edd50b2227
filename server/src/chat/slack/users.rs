//! Who pressed a button: the Slack user id mapped to a belay identity by the config's
//! explicit `[[slack.user]]` list, else (with `map_by_email`) by the email Slack has
//! confirmed for the account. Never by a name in the payload, which the user controls.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use belay_proto::domain::Identity;

use super::client::SlackClient;
use crate::chat::surface::SendError;

/// An email mapping is asked again after this long: a changed or removed address stops
/// counting within minutes, and a burst of presses costs one `users.info`.
const EMAIL_TTL: Duration = Duration::from_secs(300);
const CACHE_MAX: usize = 10_000;

#[derive(Debug)]
pub struct UserMap {
    explicit: HashMap<String, Identity>,
    by_email: bool,
    cache: Mutex<HashMap<String, (Option<Identity>, Instant)>>,
}

impl UserMap {
    pub fn new(explicit: HashMap<String, Identity>, by_email: bool) -> Self {
        Self {
            explicit,
            by_email,
            cache: Mutex::default(),
        }
    }

    /// The identity of Slack user `user`; `None`: not mapped.
    pub async fn identity(
        &self,
        client: &SlackClient,
        user: &str,
    ) -> Result<Option<Identity>, SendError> {
        if let Some(identity) = self.explicit.get(user) {
            return Ok(Some(identity.clone()));
        }
        if !self.by_email {
            return Ok(None);
        }
        if let Some(known) = self.cached(user) {
            return Ok(known);
        }
        let email = client.user_email(user).await?.0;
        let identity = email
            .and_then(|email| Identity::new(email).ok())
            .map(|identity| identity.canonical());
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(user.to_owned(), (identity.clone(), Instant::now()));
        Ok(identity)
    }

    fn cached(&self, user: &str) -> Option<Option<Identity>> {
        let cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache
            .get(user)
            .filter(|(_, at)| at.elapsed() < EMAIL_TTL)
            .map(|(identity, _)| identity.clone())
    }
}
