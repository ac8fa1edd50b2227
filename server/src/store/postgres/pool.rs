//! Connections: how one is opened, and the small pool the reads (and the operations
//! that take no part in the audit chain) share.
//!
//! A tokio-postgres client pipelines the queries of concurrent callers over its one
//! connection, so a few connections serve many tasks; each keeps its prepared statements.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

use super::super::StoreError;

/// Opens a connection and drives it on a task of its own until the client is dropped.
pub(super) async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::warn!(error = %err, "PostgreSQL connection lost");
        }
    });
    Ok(client)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while these locks are held; a poisoned one still guards valid data.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A connection with its prepared statements, by SQL text.
pub(super) struct Conn {
    client: Client,
    statements: Mutex<HashMap<&'static str, Statement>>,
}

impl Conn {
    fn new(client: Client) -> Self {
        Self {
            client,
            statements: Mutex::default(),
        }
    }

    async fn statement(&self, sql: &'static str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = lock(&self.statements).get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await?;
        lock(&self.statements).insert(sql, statement.clone());
        Ok(statement)
    }

    pub async fn query(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let statement = self.statement(sql).await?;
        Ok(self.client.query(&statement, params).await?)
    }

    pub async fn query_opt(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        let statement = self.statement(sql).await?;
        Ok(self.client.query_opt(&statement, params).await?)
    }

    pub async fn execute(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let statement = self.statement(sql).await?;
        Ok(self.client.execute(&statement, params).await?)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// A fixed number of connections handed out in turn, each reopened when found closed.
pub(super) struct Pool {
    config: Config,
    slots: Vec<Mutex<Option<Arc<Conn>>>>,
    next: AtomicUsize,
    reopening: tokio::sync::Mutex<()>,
}

impl Pool {
    pub async fn open(config: Config, size: usize) -> Result<Self, tokio_postgres::Error> {
        let mut slots = Vec::with_capacity(size.max(1));
        for _ in 0..size.max(1) {
            let conn = Conn::new(connect(&config).await?);
            slots.push(Mutex::new(Some(Arc::new(conn))));
        }
        Ok(Self {
            config,
            slots,
            next: AtomicUsize::new(0),
            reopening: tokio::sync::Mutex::new(()),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub async fn get(&self) -> Result<Arc<Conn>, StoreError> {
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let usable = || lock(slot).clone().filter(|conn| !conn.client.is_closed());
        if let Some(conn) = usable() {
            return Ok(conn);
        }
        // One reconnection at a time: a database that went away is not hammered by every
        // waiting caller at once.
        let _reopening = self.reopening.lock().await;
        if let Some(conn) = usable() {
            return Ok(conn);
        }
        let conn = Arc::new(Conn::new(connect(&self.config).await?));
        *lock(slot) = Some(Arc::clone(&conn));
        tracing::info!("PostgreSQL connection reopened");
        Ok(conn)
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(err: tokio_postgres::Error) -> Self {
        Self::Backend(Box::new(err))
    }
}
