//! The daemon's liveness in the `DAEMON` map, written by a thread of its own.
//!
//! The hooks stop pausing once the heartbeat is older than `--stale-after`. If the task
//! that drains kernel events also wrote the heartbeat, a flood of events (DNS answers a
//! watched process makes itself receive) could delay it long enough to push the hooks
//! into the fail mode. A plain thread that only sleeps and writes one map entry cannot
//! be starved by the async runtime, whatever the rest of the daemon is doing.
use std::{
    sync::mpsc::{self, RecvTimeoutError},
    thread::JoinHandle,
    time::Duration,
};

use agent_common::DaemonState;
use aya::maps::{Array, MapData};
use tracing::error;

use super::backend::EnforcerError;

/// How often the heartbeat is written.
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(250);

enum Beat {
    /// A new fail verdict, written at once.
    FailVerdict(u32, mpsc::SyncSender<Result<(), EnforcerError>>),
    /// Stop writing (a deliberate detach): the hooks go with the links.
    Stop,
}

/// Owner of the `DAEMON` map. Dropping it stops the thread.
pub struct Heartbeat {
    tx: mpsc::Sender<Beat>,
    thread: Option<JoinHandle<()>>,
}

fn monotonic_ns() -> u64 {
    // CLOCK_MONOTONIC is the clock of bpf_ktime_get_ns.
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    })
}

fn write(
    map: &mut Array<MapData, DaemonState>,
    state: &mut DaemonState,
) -> Result<(), EnforcerError> {
    state.heartbeat_ns = monotonic_ns();
    map.set(0, *state, 0).map_err(|source| EnforcerError::Map {
        map: "DAEMON",
        source,
    })
}

impl Heartbeat {
    /// Writes the first heartbeat (an error if it cannot), then keeps writing it every
    /// [`HEARTBEAT_EVERY`] from a thread of its own.
    pub fn start(
        mut map: Array<MapData, DaemonState>,
        mut state: DaemonState,
    ) -> Result<Self, EnforcerError> {
        write(&mut map, &mut state)?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("belay-heartbeat".into())
            .spawn(move || {
                loop {
                    match rx.recv_timeout(HEARTBEAT_EVERY) {
                        Err(RecvTimeoutError::Timeout) => {
                            if let Err(e) = write(&mut map, &mut state) {
                                error!(error = %e, "writing the heartbeat failed");
                            }
                        }
                        Ok(Beat::FailVerdict(v, reply)) => {
                            state.fail_verdict = v;
                            let _ = reply.send(write(&mut map, &mut state));
                        }
                        Ok(Beat::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            })
            .map_err(EnforcerError::Thread)?;
        Ok(Self {
            tx,
            thread: Some(thread),
        })
    }

    /// Changes the verdict the hooks apply once the heartbeat is stale.
    pub fn set_fail_verdict(&self, verdict: u32) -> Result<(), EnforcerError> {
        let (reply, rx) = mpsc::sync_channel(1);
        self.tx
            .send(Beat::FailVerdict(verdict, reply))
            .map_err(|_| EnforcerError::Stopped)?;
        rx.recv().map_err(|_| EnforcerError::Stopped)?
    }

    /// Stops the heartbeat for good.
    pub fn stop(&mut self) {
        let _ = self.tx.send(Beat::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop();
    }
}
