use std::sync::Arc;
use std::time::{Duration, SystemTime};

use belay_proto::display::Escaped;
use belay_proto::domain::{
    AgentMessage, Decision, Hello, NewRequest, PolicyReport, RequestState, VerdictApplied,
    Withdraw, limits,
};
use belay_proto::v1;
use belay_proto::v1::agent_service_server::AgentService;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::approvals::{AgentIdentity, AgentSession, Approvals, MemoryStore, Store, Submitted};
use crate::pki::AgentAuthenticator;
use crate::policy_push::{FleetPolicy, Published};

/// An agent that opens a stream but never says hello holds a task and a socket.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued towards one agent before the session waits for it to read.
const OUTBOUND_BUFFER: usize = 64;

/// `belay.v1.AgentService` for host agents.
#[derive(Debug)]
pub struct AgentApi<S = MemoryStore> {
    approvals: Arc<Approvals<S>>,
    shutdown: CancellationToken,
    /// `None` only with `--insecure`: then the hello alone names the host.
    agents: Option<Arc<AgentAuthenticator>>,
    /// Sent down every session; a server without one never pushed has none to send.
    policy: Arc<FleetPolicy>,
}

impl<S: Store> AgentApi<S> {
    /// Sessions end, with status UNAVAILABLE, when `shutdown` is cancelled: graceful
    /// server shutdown waits for open streams, and agent streams would never end by
    /// themselves.
    pub fn new(approvals: Arc<Approvals<S>>, shutdown: CancellationToken) -> Self {
        Self {
            approvals,
            shutdown,
            agents: None,
            policy: Arc::default(),
        }
    }

    /// The fleet policy this server sends to agents, shared with the reviewer service
    /// that pushes it.
    pub fn with_policy(mut self, policy: Arc<FleetPolicy>) -> Self {
        self.policy = policy;
        self
    }

    /// Requires a client certificate from this CA, and a hello naming the host in it.
    pub fn with_client_auth(mut self, agents: Option<Arc<AgentAuthenticator>>) -> Self {
        self.agents = agents;
        self
    }
}

#[tonic::async_trait]
impl<S: Store> AgentService for AgentApi<S> {
    type SessionStream = ReceiverStream<Result<v1::ServerMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<v1::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let peer = request.remote_addr();
        let certified = match &self.agents {
            Some(agents) => {
                Some(agents.authenticate(request.peer_certs().as_deref().map(Vec::as_slice))?)
            }
            None => None,
        };
        let mut inbound = request.into_inner();
        // Reading the hello before answering lets a bad hello fail the call itself.
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Err(_elapsed) => {
                return Err(Status::deadline_exceeded(format!(
                    "no hello within {} s",
                    HELLO_TIMEOUT.as_secs()
                )));
            }
            Ok(Err(status)) => return Err(status),
            Ok(Ok(None)) => {
                return Err(Status::failed_precondition(
                    "the stream ended before a hello",
                ));
            }
            Ok(Ok(Some(first))) => expect_hello(first)?,
        };
        if let Some(host) = certified
            && host != hello.host
        {
            return Err(Status::permission_denied(format!(
                "the hello names host {}, but the client certificate is for host {host}",
                hello.host
            )));
        }

        let (session, decisions) = self.approvals.attach_agent(&hello);
        // Answers of an earlier session describe that session; this one answers anew.
        self.policy.forget(&hello.host);
        let policy_updates = self.policy.subscribe();
        // As the agent named them: escaped, like every value a person reads.
        tracing::info!(host = %Escaped(hello.host.as_str()), owner = %Escaped(hello.owner.as_str()), version = %Escaped(hello.version.as_str()), ?peer, "agent connected");
        let (outbound, outbound_stream) = mpsc::channel(OUTBOUND_BUFFER);
        let driver = SessionDriver {
            approvals: Arc::clone(&self.approvals),
            session,
            outbound,
            shutdown: self.shutdown.clone(),
            policy: Arc::clone(&self.policy),
        };
        tokio::spawn(driver.run(inbound, decisions, policy_updates));
        Ok(Response::new(ReceiverStream::new(outbound_stream)))
    }
}

fn expect_hello(first: v1::AgentMessage) -> Result<Hello, Status> {
    match first.kind {
        Some(v1::agent_message::Kind::Hello(hello)) => {
            Ok(Hello::try_from(hello).map_err(|err| err.within("hello"))?)
        }
        _ => Err(Status::failed_precondition(
            "the first message of a session must be a hello",
        )),
    }
}

/// Runs one agent session: requests in, decisions out, until either side ends.
struct SessionDriver<S> {
    approvals: Arc<Approvals<S>>,
    session: AgentSession,
    outbound: mpsc::Sender<Result<v1::ServerMessage, Status>>,
    shutdown: CancellationToken,
    policy: Arc<FleetPolicy>,
}

/// Whether the session goes on after a step.
enum Flow {
    Continue,
    Stop,
}

impl<S: Store> SessionDriver<S> {
    async fn run(
        self,
        mut inbound: Streaming<v1::AgentMessage>,
        mut decisions: mpsc::UnboundedReceiver<Decision>,
        mut policy_updates: watch::Receiver<Option<Arc<Published>>>,
    ) {
        // The policy in force goes first, right after the hello; newer ones as pushed.
        let initial = policy_updates.borrow_and_update().clone();
        let mut flow = match initial {
            Some(policy) => self.send(Ok(policy_message(&policy))).await,
            None => Flow::Continue,
        };
        let mut policy_open = true;
        while let Flow::Continue = flow {
            flow = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => {
                    self.send(Err(Status::unavailable("the server is shutting down"))).await;
                    Flow::Stop
                }
                changed = policy_updates.changed(), if policy_open => match changed {
                    Ok(()) => {
                        let policy = policy_updates.borrow_and_update().clone();
                        match policy {
                            Some(policy) => self.send(Ok(policy_message(&policy))).await,
                            None => Flow::Continue,
                        }
                    }
                    Err(_) => {
                        policy_open = false;
                        Flow::Continue
                    }
                },
                decision = decisions.recv() => match decision {
                    Some(decision) => self.send(Ok(decision_message(decision))).await,
                    None => {
                        self.send(Err(Status::aborted(
                            "a newer session of this host replaced this one",
                        )))
                        .await;
                        Flow::Stop
                    }
                },
                message = inbound.message() => match message {
                    Ok(Some(message)) => self.handle(message).await,
                    Ok(None) => Flow::Stop,
                    Err(status) => {
                        tracing::debug!(%status, "agent stream failed");
                        Flow::Stop
                    }
                },
            };
        }
        tracing::info!(host = %self.session.identity().host, "agent disconnected");
    }

    async fn handle(&self, message: v1::AgentMessage) -> Flow {
        let raw_request_id = raw_request_id(&message);
        match AgentMessage::try_from(message) {
            Ok(AgentMessage::Request(request)) => self.submit(request).await,
            Ok(AgentMessage::Withdraw(withdraw)) => {
                self.withdraw(withdraw).await;
                Flow::Continue
            }
            Ok(AgentMessage::VerdictApplied(applied)) => {
                self.verdict_applied(&applied);
                Flow::Continue
            }
            Ok(AgentMessage::PolicyReport(report)) => {
                self.policy_report(report);
                Flow::Continue
            }
            Ok(AgentMessage::Hello(_)) => {
                tracing::warn!(host = %self.identity().host, "ignoring a second hello");
                Flow::Continue
            }
            // A bad submission is refused on its own: one odd event must not tear down
            // the stream that carries every other paused process of the host.
            Err(err) => match raw_request_id {
                Some(id) => self.send(Ok(cancel_message(id, err.into()))).await,
                None => {
                    tracing::warn!(host = %self.identity().host, error = %err, "ignoring an invalid agent message");
                    Flow::Continue
                }
            },
        }
    }

    async fn submit(&self, request: NewRequest) -> Flow {
        let id = request.id.to_string();
        match self
            .approvals
            .submit(self.identity(), request, SystemTime::now())
            .await
        {
            // Its decision arrives through the outbox, even one settled at once.
            Ok(Submitted::New(_)) => Flow::Continue,
            // A resubmission after a reconnect: answer now if the answer is known.
            Ok(Submitted::Existing(existing)) => match Decision::for_request(&existing) {
                Some(decision) => self.send(Ok(decision_message(decision))).await,
                None if existing.state() == RequestState::Cancelled => {
                    let status =
                        Status::failed_precondition(format!("request {id} is already cancelled"));
                    self.send(Ok(cancel_message(id, status))).await
                }
                None => Flow::Continue,
            },
            Err(err) => self.send(Ok(cancel_message(id, err.into()))).await,
        }
    }

    async fn withdraw(&self, withdraw: Withdraw) {
        let id = withdraw.request_id.clone();
        if let Err(err) = self
            .approvals
            .withdraw(self.identity(), withdraw, SystemTime::now())
            .await
        {
            // Usually a race with a decision that is already on its way to the agent.
            tracing::info!(host = %self.identity().host, request = %id, error = %err, "withdraw refused");
        }
    }

    fn verdict_applied(&self, applied: &VerdictApplied) {
        // Goes to the audit trail once it exists; the log is the record until then.
        tracing::info!(host = %self.identity().host, request = %applied.request_id, verdict = %applied.verdict, "verdict applied");
    }

    fn policy_report(&self, report: PolicyReport) {
        let host = &self.identity().host;
        match report.outcome {
            belay_proto::domain::PolicyOutcome::Applied => {
                tracing::info!(%host, version = report.version, "fleet policy applied");
            }
            outcome => {
                tracing::warn!(host = %Escaped(host.as_str()), version = report.version, %outcome, message = %Escaped(&report.message), "fleet policy not in force on an agent");
            }
        }
        self.policy.report(host, report, SystemTime::now());
    }

    fn identity(&self) -> &AgentIdentity {
        self.session.identity()
    }

    async fn send(&self, item: Result<v1::ServerMessage, Status>) -> Flow {
        tokio::select! {
            // Send first: the shutdown notice itself is sent after cancellation, and it
            // must go out whenever there is room for it.
            biased;
            sent = self.outbound.send(item) => match sent {
                Ok(()) => Flow::Continue,
                // The agent's side of the stream is gone.
                Err(_) => Flow::Stop,
            },
            // An agent that stops reading must not hold up shutdown.
            () = self.shutdown.cancelled() => Flow::Stop,
        }
    }
}

/// For a submission, the request id as the agent sent it, to answer one that fails
/// validation; clipped so a huge bogus id is not echoed back.
fn raw_request_id(message: &v1::AgentMessage) -> Option<String> {
    let Some(v1::agent_message::Kind::Request(request)) = &message.kind else {
        return None;
    };
    let id = request.id.as_str();
    let mut end = id.len().min(limits::MAX_ID_LEN);
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    Some(id[..end].to_owned())
}

fn decision_message(decision: Decision) -> v1::ServerMessage {
    v1::ServerMessage {
        kind: Some(v1::server_message::Kind::Decision(decision.into())),
    }
}

fn policy_message(policy: &Published) -> v1::ServerMessage {
    v1::ServerMessage {
        kind: Some(v1::server_message::Kind::Policy(policy.wire.clone())),
    }
}

fn cancel_message(request_id: String, status: Status) -> v1::ServerMessage {
    v1::ServerMessage {
        kind: Some(v1::server_message::Kind::Cancel(v1::Cancel {
            request_id,
            code: status.code() as i32,
            message: status.message().to_owned(),
        })),
    }
}
