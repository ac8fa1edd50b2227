//! `POST /chat/teams/messages`: the Azure Bot's messaging endpoint. Every activity's
//! token is verified before the body is looked at; only `adaptiveCard/action` invokes
//! do anything, and they decide as the belay identity the *verified* Teams user maps to
//! (`from.aadObjectId` in the configured map), never as anyone the card's data names.
//!
//! The answer to an invoke is the card the presser sees next: the request as it now is
//! (quorum progress, or the outcome), or the same with a notice saying why nothing was
//! decided. Other viewers get the current card through the card's `refresh`, and
//! everyone through the outbox's update once the request is final.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use belay_proto::display::escape;
use belay_proto::domain::{Identity, RequestId};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::Instrument as _;

use super::auth::BotVerifier;
use super::card::{CARD_CONTENT_TYPE, REFRESH_VERB, render, with_notice};
use super::config::{Teams, TeamsUsers};
use super::connector::TeamsConnector;
use crate::approvals::{ApprovalError, Approvals, Store};
use crate::auth::Role;
use crate::chat::card::RequestCard;
use crate::chat::decide::{Button, ChatDecisionError, ChatReviewer, decide};
use crate::metrics::Metrics;
use crate::metrics::chat::{
    PRESS_COUNTED, PRESS_DECIDED, PRESS_REFUSED, PRESS_UNAUTHENTICATED, PRESS_UNMAPPED,
};

pub const MESSAGES_PATH: &str = "/chat/teams/messages";
/// Activities are a few KB; a card action is far less. Anything larger is not Teams.
pub const MAX_BODY: usize = 256 * 1024;
const TEAMS_CHANNEL: &str = "msteams";
const ACTION_INVOKE: &str = "adaptiveCard/action";

/// What the endpoint needs; the lead builds it from [`super::load`]'s [`Teams`] and the
/// chat config's reviewers.
pub struct TeamsEndpoint<S> {
    pub approvals: Arc<Approvals<S>>,
    pub verifier: Arc<BotVerifier>,
    pub users: Arc<TeamsUsers>,
    /// Canonical identity -> role (the chat config's reviewers).
    pub reviewers: Arc<BTreeMap<String, Role>>,
    /// Asked for a user's UPN when only a UPN maps them (see [`TeamsConnector::member`]).
    pub connector: TeamsConnector,
    /// Tenant ids (lower case) whose activities may decide; empty: any.
    pub allowed_tenants: Arc<Vec<String>>,
    /// Counts actions (`belay_chat_presses_total`); see [`Self::with_metrics`].
    pub metrics: Option<Arc<Metrics>>,
}

impl<S> TeamsEndpoint<S> {
    pub fn new(
        approvals: Arc<Approvals<S>>,
        teams: &Teams,
        reviewers: Arc<BTreeMap<String, Role>>,
    ) -> Self {
        Self {
            approvals,
            verifier: Arc::clone(&teams.verifier),
            users: Arc::clone(&teams.users),
            reviewers,
            connector: teams.connector.clone(),
            allowed_tenants: Arc::clone(&teams.allowed_tenants),
            metrics: None,
        }
    }

    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn count(&self, result: &'static str) {
        if let Some(metrics) = &self.metrics {
            metrics.chat_presses().record("teams", result);
        }
    }

    /// Whether the activity comes from a tenant allowed to decide (Teams names it in
    /// `channelData.tenant.id`; an activity without it is refused when a list is set).
    fn tenant_allowed(&self, activity: &Activity) -> bool {
        if self.allowed_tenants.is_empty() {
            return true;
        }
        let tenant = activity
            .channel_data
            .as_ref()
            .and_then(|data| data.tenant.as_ref());
        tenant.is_some_and(|tenant| {
            self.allowed_tenants
                .contains(&tenant.id.to_ascii_lowercase())
        })
    }
}

/// The router serving [`MESSAGES_PATH`], to be merged into the console's.
pub fn router<S: Store>(endpoint: TeamsEndpoint<S>) -> Router {
    Router::new()
        .route(MESSAGES_PATH, post(messages::<S>))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Arc::new(endpoint))
}

#[derive(Deserialize)]
struct Activity {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(rename = "serviceUrl")]
    service_url: String,
    #[serde(rename = "channelId")]
    channel_id: String,
    #[serde(default)]
    from: Option<Account>,
    #[serde(default)]
    conversation: Option<Conversation>,
    #[serde(default)]
    value: Option<Value>,
    #[serde(rename = "channelData", default)]
    channel_data: Option<ChannelData>,
}

#[derive(Deserialize)]
struct ChannelData {
    #[serde(default)]
    tenant: Option<Tenant>,
}

#[derive(Deserialize)]
struct Tenant {
    id: String,
}

#[derive(Deserialize)]
struct Account {
    id: String,
    #[serde(rename = "aadObjectId", default)]
    aad_object_id: Option<String>,
}

#[derive(Deserialize)]
struct Conversation {
    id: String,
}

/// `value` of an `adaptiveCard/action` invoke.
#[derive(Deserialize)]
struct ActionValue {
    action: ExecuteAction,
}

#[derive(Deserialize)]
struct ExecuteAction {
    verb: String,
    #[serde(default)]
    data: Value,
}

async fn messages<S: Store>(
    State(endpoint): State<Arc<TeamsEndpoint<S>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = match endpoint.verifier.verify(authorization).await {
        Ok(token) => token,
        Err(err) => {
            tracing::warn!(error = %err, "Teams activity refused");
            endpoint.count(PRESS_UNAUTHENTICATED);
            return (StatusCode::UNAUTHORIZED, "unauthorized").into_response();
        }
    };
    let activity: Activity = match serde_json::from_slice(&body) {
        Ok(activity) => activity,
        Err(err) => {
            tracing::warn!(error = %err, "Teams activity is not an activity");
            return (StatusCode::BAD_REQUEST, "not an activity").into_response();
        }
    };
    if let Err(err) = token.check_activity(&activity.service_url, &activity.channel_id) {
        tracing::warn!(error = %err, "Teams activity refused");
        endpoint.count(PRESS_UNAUTHENTICATED);
        return (StatusCode::UNAUTHORIZED, "unauthorized").into_response();
    }
    if activity.kind != "invoke" || activity.name.as_deref() != Some(ACTION_INVOKE) {
        // Messages to the bot, installs, membership changes: nothing to do.
        return StatusCode::OK.into_response();
    }
    if activity.channel_id != TEAMS_CHANNEL {
        return invoke_response(with_notice(
            "belay takes decisions from Microsoft Teams only.",
            None,
        ));
    }
    let Some(executed) = action(&activity) else {
        return invoke_response(with_notice("This is not a belay action.", None));
    };
    if !endpoint.tenant_allowed(&activity) {
        tracing::warn!(request_id = %executed.id, "Teams action from a tenant not allowed; nothing decided");
        endpoint.count(PRESS_UNAUTHENTICATED);
        return invoke_response(with_notice(
            "Your Microsoft Teams tenant may not decide belay requests; nothing was decided.",
            None,
        ));
    }
    let span =
        tracing::info_span!("teams_action", request_id = %executed.id, verb = %executed.verb);
    endpoint.act(&activity, executed).instrument(span).await
}

/// An `Action.Execute`: its verb, the request its data names, and the card's reason
/// input (Teams merges the inputs into the data).
struct Executed {
    verb: String,
    id: RequestId,
    reason: Option<String>,
}

fn action(activity: &Activity) -> Option<Executed> {
    let value: ActionValue = serde_json::from_value(activity.value.clone()?).ok()?;
    let data = &value.action.data;
    let id = RequestId::new(data.get("request_id")?.as_str()?).ok()?;
    let reason = data
        .get(super::card::REASON_INPUT)
        .and_then(Value::as_str)
        .map(str::to_owned);
    Some(Executed {
        verb: value.action.verb,
        id,
        reason,
    })
}

impl<S: Store> TeamsEndpoint<S> {
    async fn act(&self, activity: &Activity, executed: Executed) -> Response {
        let Executed { verb, id, reason } = executed;
        let verb = verb.as_str();
        let Some(reviewer) = self.reviewer(activity).await else {
            // The object id is what an administrator adds to the map.
            let from = activity.from.as_ref();
            tracing::warn!(
                aad_object_id = %escape(from.and_then(|f| f.aad_object_id.as_deref()).unwrap_or("")),
                user_id = %escape(from.map_or("", |f| f.id.as_str())),
                "Teams user not mapped to a belay identity"
            );
            self.count(PRESS_UNMAPPED);
            // No request details: an unmapped user may not even be a colleague.
            return invoke_response(with_notice(
                "Your Teams account is not mapped to a belay identity: nothing was decided. \
                 Ask your belay administrator to add it to the [teams] users.",
                None,
            ));
        };
        if verb == REFRESH_VERB {
            return invoke_response(self.current(&id, None).await);
        }
        let Some(button) = Button::from_id(verb) else {
            return invoke_response(
                self.current(&id, Some("Unknown action: nothing was decided."))
                    .await,
            );
        };
        match decide(
            &self.approvals,
            &reviewer,
            id.clone(),
            button,
            reason.as_deref(),
        )
        .await
        {
            Ok(decided) => {
                tracing::info!(reviewer = %reviewer.identity, via = %reviewer.via, state = %decided.request.state(), approvals = decided.approvals, "decided from Teams");
                self.count(if decided.request.resolution.is_none() {
                    PRESS_COUNTED
                } else {
                    PRESS_DECIDED
                });
                let card = RequestCard {
                    request: decided.request,
                    approvals: decided.approvals,
                    quorum: decided.quorum,
                };
                invoke_response(render(&card, self.users.refresh_ids()))
            }
            Err(err) => {
                tracing::warn!(reviewer = %reviewer.identity, via = %reviewer.via, error = %err, "decision from Teams refused");
                self.count(PRESS_REFUSED);
                let notice = refusal(&err);
                invoke_response(self.current(&id, Some(&notice)).await)
            }
        }
    }

    /// The belay reviewer the activity's verified sender is: by Entra ID object id, or
    /// by the UPN the Connector itself reports for them.
    async fn reviewer(&self, activity: &Activity) -> Option<ChatReviewer> {
        let from = activity.from.as_ref()?;
        let aad = from.aad_object_id.as_deref().filter(|id| !id.is_empty());
        let identity = match aad.and_then(|id| self.users.by_object_id(id)) {
            Some(identity) => identity.clone(),
            None => self.by_upn(activity, from, aad).await?,
        };
        let role = self.reviewers.get(identity.canonical().as_str()).copied();
        // The object id in the form the map compares it in, so the audit log names one
        // user one way.
        let via = match aad {
            Some(aad) => format!("teams:{}", aad.to_ascii_lowercase()),
            None => format!("teams:{}", from.id),
        };
        Some(ChatReviewer {
            identity,
            role,
            via,
        })
    }

    async fn by_upn(
        &self,
        activity: &Activity,
        from: &Account,
        aad: Option<&str>,
    ) -> Option<Identity> {
        if !self.users.has_upns() {
            return None;
        }
        let conversation = activity.conversation.as_ref()?;
        let member = match self
            .connector
            .member(&activity.service_url, &conversation.id, &from.id)
            .await
        {
            Ok(member) => member,
            Err(err) => {
                tracing::warn!(error = %err, "cannot look up the Teams user's UPN");
                return None;
            }
        };
        // The Connector must describe the same person the activity came from.
        if aad.is_some()
            && member.aad_object_id.as_deref().map(str::to_ascii_lowercase)
                != aad.map(str::to_ascii_lowercase)
        {
            return None;
        }
        self.users
            .by_upn(member.user_principal_name.as_deref()?)
            .cloned()
    }

    /// The card of request `id` as it is now, under `notice` when there is one.
    async fn current(&self, id: &RequestId, notice: Option<&str>) -> Value {
        let request = match self.approvals.get(id).await {
            Ok(request) => request,
            Err(ApprovalError::NotFound(_)) => {
                return with_notice(notice.unwrap_or("No such request."), None);
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot read the request");
                return with_notice(
                    "belay cannot read this request right now; try again, or use the console.",
                    None,
                );
            }
        };
        let approvals = match self.approvals.store().votes(id).await {
            Ok(votes) => u32::try_from(votes.len()).unwrap_or(u32::MAX),
            Err(_) => 0,
        };
        let card = RequestCard {
            request,
            approvals,
            quorum: self.approvals.quorum(),
        };
        let refresh = self.users.refresh_ids();
        match notice {
            Some(notice) => with_notice(notice, Some((&card, refresh))),
            None => render(&card, refresh),
        }
    }
}

/// Why a decision was not taken, for the person who pressed the button.
fn refusal(err: &ChatDecisionError) -> String {
    let nothing = "nothing was decided.";
    match err {
        ChatDecisionError::NotAReviewer { identity } => {
            format!("{identity} has no belay reviewer role: {nothing}")
        }
        ChatDecisionError::Rule(ApprovalError::SelfApproval { .. }) => format!(
            "You own the agent that made this request and may not approve it (denying is allowed): {nothing}"
        ),
        ChatDecisionError::Rule(ApprovalError::AlreadyResolved { state, .. }) => {
            format!("This request is already {state}: {nothing}")
        }
        ChatDecisionError::Rule(ApprovalError::AlreadyVoted { quorum, .. }) => {
            format!("You have already approved; it needs {quorum} different reviewers: {nothing}")
        }
        ChatDecisionError::Rule(ApprovalError::NotFound(_)) => {
            format!("No such request: {nothing}")
        }
        ChatDecisionError::BadReason(problem) => {
            format!("The reason is refused ({problem}): {nothing}")
        }
        _ => format!("belay could not record the decision ({err}); try again, or use the console."),
    }
}

/// The HTTP answer to an `adaptiveCard/action` invoke: the card to show in place.
fn invoke_response(card: Value) -> Response {
    let body = json!({
        "statusCode": 200,
        "type": CARD_CONTENT_TYPE,
        "value": card,
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}
