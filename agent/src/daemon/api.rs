//! The local API on the daemon's Unix socket: enrollment, requests, decisions, status.
use belay_proto::display::Escaped;
use tokio::{io::AsyncWriteExt as _, net::UnixStream};
use tracing::{Instrument as _, info, info_span, warn};

use super::{
    Shared,
    socket::{READ_TIMEOUT, ReadError, WRITE_TIMEOUT, read_request},
};
use crate::{
    api::{ApiRequest, ApiResponse, MAX_REQUEST_BYTES, StatusView},
    authz,
    requests::Outcome,
};

pub(super) async fn serve(shared: Shared, stream: UnixStream) {
    let cred = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "no peer credentials on the socket");
            return;
        }
    };
    let span = info_span!("api", peer_uid = cred.uid(), peer_pid = cred.pid());
    async move {
        let (read, mut write) = stream.into_split();
        let response = match read_request(read, MAX_REQUEST_BYTES, READ_TIMEOUT).await {
            Err(e @ ReadError::TimedOut(_)) => {
                // Nobody to answer: whatever held the connection open gets nothing.
                warn!(error = %e, "dropping a client that sent no request");
                return;
            }
            Err(e) => ApiResponse::Error {
                message: e.to_string(),
            },
            Ok(line) => match serde_json::from_str::<ApiRequest>(&line) {
                Err(e) => ApiResponse::Error {
                    message: format!("malformed request: {e}"),
                },
                Ok(req) => handle(&shared, (cred.uid(), cred.gid()), cred.pid(), req).await,
            },
        };
        let mut out = serde_json::to_vec(&response).unwrap_or_default();
        out.push(b'\n');
        match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&out)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "writing the answer failed"),
            Err(_) => warn!("dropping a client that does not read its answer"),
        }
    }
    .instrument(span)
    .await;
}

fn error(message: impl Into<String>) -> ApiResponse {
    ApiResponse::Error {
        message: message.into(),
    }
}

/// Who the caller is, for [`authz::may_decide`].
async fn caller(
    shared: &Shared,
    uid: u32,
    gid: u32,
    pid: Option<i32>,
) -> Result<authz::Caller, String> {
    let Some(pid) = pid.and_then(|p| u32::try_from(p).ok()) else {
        return Err("caller's pid is unknown; refusing to decide".into());
    };
    let watched = shared
        .enforcer
        .is_watched(pid)
        .await
        .map_err(|e| format!("cannot check the caller: {e}"))?;
    Ok(authz::Caller {
        pid,
        uid,
        gid,
        groups: authz::groups_of(pid),
        watched,
    })
}

async fn handle(
    shared: &Shared,
    (uid, gid): (u32, u32),
    pid: Option<i32>,
    req: ApiRequest,
) -> ApiResponse {
    match req {
        ApiRequest::Enroll { subject } => {
            let Some(tgid) = pid.and_then(|p| u32::try_from(p).ok()) else {
                return error("caller's pid is unknown; cannot enroll it");
            };
            enroll(shared, tgid, uid, subject.as_deref()).await
        }
        ApiRequest::Pending => ApiResponse::Requests {
            requests: shared.book().list(),
        },
        ApiRequest::Show { id } => match shared.book().get(id) {
            Some(p) => ApiResponse::Request {
                request: p.view.clone(),
            },
            None => error(format!("no pending request {id}")),
        },
        ApiRequest::Decide {
            id,
            verdict,
            reason,
        } => {
            let owner_uid = match shared.book().get(id) {
                Some(p) if p.view.server_id.is_some() => {
                    let url = shared.upstream.as_ref().map_or("", |u| u.url.as_str());
                    return error(format!(
                        "request {id} is decided on belay-server ({url}): use `belay --server {url}`"
                    ));
                }
                Some(p) => p.view.uid,
                None => {
                    return error(format!(
                        "no pending request {id} (unknown, or already ended)"
                    ));
                }
            };
            let allowed = match caller(shared, uid, gid, pid).await {
                Ok(c) => authz::may_decide(&c, shared.config.decider_gid, owner_uid),
                Err(why) => Err(why),
            };
            if let Err(why) = allowed {
                warn!(request = id, %why, "decision refused");
                return error(why);
            }
            // Closing is the decision: of two concurrent deciders, one gets None here.
            let Some(p) = shared.book().close(id) else {
                return error(format!(
                    "no pending request {id} (unknown, or already ended)"
                ));
            };
            info!(request = id, %verdict, reason = %Escaped(reason.as_deref().unwrap_or("")), uid, "decided");
            shared.end(p, Outcome::Decided(verdict)).await;
            ApiResponse::Decided { id, verdict }
        }
        ApiRequest::Intent(declaration) => {
            let Some(tgid) = pid.and_then(|p| u32::try_from(p).ok()) else {
                return error("caller's pid is unknown; cannot record its intent");
            };
            declare_intent(shared, tgid, uid, declaration)
        }
        ApiRequest::Status => {
            let kernel = match shared.enforcer.counters().await {
                Ok(c) => c,
                Err(e) => return error(format!("reading kernel counters: {e}")),
            };
            let watched = shared.enforcer.watched().await.map_or(0, |w| w.len());
            let book = shared.book();
            ApiResponse::Status {
                status: StatusView {
                    version: env!("CARGO_PKG_VERSION").into(),
                    pending: book.len(),
                    decided: book.decided(),
                    watched,
                    kernel,
                    policy: shared.policy.status(),
                    server: shared
                        .upstream
                        .as_ref()
                        .map(crate::upstream::Upstream::status),
                },
            }
        }
    }
}

/// Records what the caller (the socket's peer, as the kernel names it) declares about
/// its next actions.
fn declare_intent(
    shared: &Shared,
    tgid: u32,
    uid: u32,
    declaration: belay_agent_api::IntentDeclaration,
) -> ApiResponse {
    let Some(start_time) = crate::context::start_time(tgid) else {
        return error(format!("process {tgid} is gone; no intent recorded"));
    };
    let declared = shared.intents().declare(
        tgid,
        start_time,
        declaration,
        std::time::Instant::now(),
        std::time::SystemTime::now(),
    );
    match declared {
        Ok(expires) => {
            info!(tgid, uid, "intent declared");
            ApiResponse::IntentDeclared {
                tgid,
                expires_unix_ms: expires
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            }
        }
        Err(why) => {
            warn!(tgid, uid, %why, "intent refused");
            error(why)
        }
    }
}

/// Watches the caller as a subject that accepts enrollment. A process already watched
/// keeps its subject: an agent must not move itself to a more lenient one.
async fn enroll(shared: &Shared, tgid: u32, uid: u32, asked: Option<&str>) -> ApiResponse {
    let policy = shared.policy.get();
    let subject = match asked {
        Some(name) => match policy.subject_by_name(name) {
            Some(s) if s.enrolled => s,
            Some(_) => {
                return error(format!(
                    "subject {name:?} does not accept enrollment (its match has no `enrolled: true`)"
                ));
            }
            None => return error(format!("the policy has no subject {name:?}")),
        },
        None => match policy.default_enroll_subject() {
            Some(s) => s,
            None => {
                let open: Vec<&str> = policy
                    .subjects
                    .iter()
                    .filter(|s| s.enrolled)
                    .map(|s| s.name.as_str())
                    .collect();
                return error(if open.is_empty() {
                    "no subject in the policy accepts enrollment (`match: {enrolled: true}`)"
                        .to_string()
                } else {
                    format!(
                        "several subjects accept enrollment ({}); name one with --subject",
                        open.join(", ")
                    )
                });
            }
        },
    };
    match shared.enforcer.watched_subject(tgid).await {
        Ok(Some(current)) if current != subject.id => {
            let name = policy
                .subject(current)
                .map_or_else(|| format!("id {current}"), |s| s.name.clone());
            warn!(tgid, uid, current = %name, asked = %subject.name, "enrollment refused: already watched");
            return error(format!(
                "process {tgid} is already watched as subject {name}; a watched process cannot change its subject"
            ));
        }
        Ok(Some(_)) => {}
        Ok(None) => {
            if let Err(e) = shared.enforcer.watch_as(tgid, subject.id).await {
                return error(format!("enrolling {tgid}: {e}"));
            }
        }
        Err(e) => return error(format!("enrolling {tgid}: {e}")),
    }
    info!(tgid, uid, subject = %subject.name, "process enrolled");
    ApiResponse::Enrolled {
        tgid,
        subject: subject.name.clone(),
    }
}
