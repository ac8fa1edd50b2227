//! Reads on connections of their own, beside the writer thread.
//!
//! In WAL mode readers never wait for the writer nor block it, so lookups (a request
//! before deciding it, grants when a request arrives, the pending list) need not queue
//! behind the writer's batches and their fsyncs. Every write is answered only once
//! committed, so a read issued after a write returns sees it.

use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use super::super::StoreError;

/// Reader threads, each with its own connection.
const READERS: usize = 2;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

#[derive(Debug)]
pub(super) struct Readers {
    /// `None` only while dropping.
    jobs: Option<mpsc::Sender<ReadJob>>,
    workers: Vec<thread::JoinHandle<()>>,
}

impl Readers {
    /// Opens the reader connections on an existing, migrated database.
    pub(super) fn open(path: &Path) -> Result<Self, StoreError> {
        let (jobs, receiver) = mpsc::channel::<ReadJob>();
        let receiver = Arc::new(Mutex::new(receiver));
        let mut workers = Vec::with_capacity(READERS);
        for index in 0..READERS {
            let connection = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .and_then(|connection| {
                connection.busy_timeout(BUSY_TIMEOUT)?;
                super::stable_plans(&connection)?;
                Ok(connection)
            })
            .map_err(|err| StoreError::Open {
                path: path.to_path_buf(),
                problem: Box::new(err),
            })?;
            let receiver = Arc::clone(&receiver);
            let worker = thread::Builder::new()
                .name(format!("belay-sqlite-read-{index}"))
                .spawn(move || {
                    loop {
                        // Holding the lock only to take one job; a poisoned lock still
                        // guards a valid receiver.
                        let job = receiver
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .recv();
                        match job {
                            Ok(job) => job(&connection),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|err| StoreError::Open {
                    path: path.to_path_buf(),
                    problem: format!("cannot start a reader thread: {err}").into(),
                })?;
            workers.push(worker);
        }
        Ok(Self {
            jobs: Some(jobs),
            workers,
        })
    }

    /// Runs `op` on a reader connection.
    pub(super) async fn read<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let stopped = || StoreError::Backend("the database reader threads have stopped".into());
        let (reply, answer) = oneshot::channel();
        let job: ReadJob = Box::new(move |connection| {
            // The caller may have stopped waiting.
            let _ = reply.send(op(connection));
        });
        self.jobs
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

impl Readers {
    /// Closes the reader connections. Called before the writer closes: the last
    /// connection to close folds the WAL back into the database file, and read-only
    /// connections cannot do that.
    pub(super) fn close(&mut self) {
        drop(self.jobs.take());
        for worker in self.workers.drain(..) {
            if worker.join().is_err() {
                tracing::error!("a database reader thread panicked");
            }
        }
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        self.close();
    }
}
