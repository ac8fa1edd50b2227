//! The WebSocket side of a fake Slack in Socket Mode, on a loopback port: each
//! connection gets `hello` first, then whatever the test sends (envelopes, `disconnect`);
//! what the client sends back (acknowledgements: `{"envelope_id": ...}`) is recorded.
//! [`crate::fake_slack::FakeSlack::set_socket_url`] makes `apps.connections.open` hand
//! out its URL. Included with `#[path]` as `fake_slack_socket`.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

#[derive(Default)]
struct State {
    /// One sender per open connection, newest last.
    connections: Vec<mpsc::UnboundedSender<String>>,
    /// Every text frame the clients sent, parsed.
    received: Vec<Value>,
}

#[derive(Clone)]
pub struct FakeSocket {
    pub url: String,
    state: Arc<Mutex<State>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl FakeSocket {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/link/", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(connection(tcp, Arc::clone(&shared)));
            }
        });
        Self {
            url,
            state,
            task: Arc::new(task),
        }
    }

    /// Sends `message` on the newest open connection.
    pub fn send(&self, message: &Value) {
        let state = self.state.lock().unwrap();
        let live = state
            .connections
            .iter()
            .rev()
            .find(|c| !c.is_closed())
            .expect("no open Socket Mode connection");
        live.send(message.to_string()).unwrap();
    }

    /// An `interactive` envelope carrying `payload`, as Slack sends a button press.
    pub fn interactive(&self, envelope_id: &str, payload: &Value) {
        self.send(&json!({
            "envelope_id": envelope_id,
            "type": "interactive",
            "accepts_response_payload": false,
            "payload": payload,
        }));
    }

    /// Open connections now.
    pub fn open_connections(&self) -> usize {
        let state = self.state.lock().unwrap();
        state.connections.iter().filter(|c| !c.is_closed()).count()
    }

    /// Envelope ids acknowledged so far, in order.
    pub fn acks(&self) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state
            .received
            .iter()
            .filter_map(|m| m["envelope_id"].as_str().map(str::to_owned))
            .collect()
    }

    /// Waits until `check` holds of the fake (10 s at most).
    pub async fn wait(&self, what: &str, check: impl Fn(&Self) -> bool) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !check(self) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("Socket Mode fake: waited in vain for {what}"));
    }
}

impl Drop for FakeSocket {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

async fn connection(tcp: tokio::net::TcpStream, state: Arc<Mutex<State>>) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let (to_client, mut outbox) = mpsc::unbounded_channel::<String>();
    let hello = json!({
        "type": "hello",
        "num_connections": 1,
        "debug_info": {"host": "fake-slack", "approximate_connection_time": 18060},
        "connection_info": {"app_id": "A0001"},
    });
    if ws
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    state.lock().unwrap().connections.push(to_client);
    loop {
        tokio::select! {
            out = outbox.recv() => {
                let Some(text) = out else { break };
                let disconnect = text.contains("\"disconnect\"");
                if ws.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
                if disconnect {
                    // Slack closes the connection a little after telling the client.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let _ = ws.close(None).await;
                    break;
                }
            }
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    if let Ok(value) = serde_json::from_str(text.as_str()) {
                        state.lock().unwrap().received.push(value);
                    }
                }
                Some(Ok(_)) => {}
                _ => break,
            },
        }
    }
    outbox.close();
}
