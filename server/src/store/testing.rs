//! Runs the same tests against every [`Store`] backend.
//!
//! A contract test is written once, as `async fn name<B: Backend>()`, and
//! [`for_each_backend!`] turns it into one `#[tokio::test]` per backend
//! (`memory::name`, `sqlite::name`, `postgres::name`). The SQLite store is a real file in
//! a temporary directory that lives as long as the store; the PostgreSQL store a fresh
//! database in the test process's throwaway cluster (see [`crate::testing::postgres`]).

use std::ops::Deref;

use tempfile::TempDir;

use super::{MemoryStore, PostgresStore, SqliteStore, Store};
use crate::audit::{self, AuditKey, AuditSigner};

pub(crate) trait Backend {
    type Store: Store;

    fn open() -> Opened<Self::Store>;
}

pub(crate) struct Memory;

pub(crate) struct Sqlite;

pub(crate) struct Postgres;

impl Backend for Memory {
    type Store = MemoryStore;

    fn open() -> Opened<MemoryStore> {
        Opened {
            value: MemoryStore::new(),
            _dir: None,
        }
    }
}

impl Backend for Sqlite {
    type Store = SqliteStore;

    fn open() -> Opened<SqliteStore> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = SqliteStore::open(dir.path().join("server.db")).expect("open SQLite store");
        Opened {
            value: store,
            _dir: Some(dir),
        }
    }
}

impl Backend for Postgres {
    type Store = PostgresStore;

    /// Opened on the process-wide test runtime, so that its writer and listener keep
    /// running while the test's own runtime blocks here.
    fn open() -> Opened<PostgresStore> {
        let url = crate::testing::postgres::database_blocking();
        let key = AuditKey::generate().expect("audit key");
        let signer = AuditSigner::new(key, audit::DEFAULT_CHECKPOINT_EVERY);
        let store =
            crate::testing::postgres::block_on(PostgresStore::connect_with_signer(&url, signer))
                .expect("open PostgreSQL store");
        Opened {
            value: store,
            _dir: None,
        }
    }
}

/// A store, or something built on one, with whatever it needs kept alive (the SQLite
/// file's directory). Fields drop in order: the store closes before its directory goes.
pub(crate) struct Opened<T> {
    value: T,
    _dir: Option<TempDir>,
}

impl<T> Opened<T> {
    pub(crate) fn map<U>(self, build: impl FnOnce(T) -> U) -> Opened<U> {
        Opened {
            value: build(self.value),
            _dir: self._dir,
        }
    }
}

impl<T> Deref for Opened<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

/// `for_each_backend!(a, b)` after `async fn a<B: Backend>()` and `async fn b<B: Backend>()`
/// defines the tests `memory::a`, `memory::b`, `sqlite::a`, `sqlite::b`, `postgres::a` and
/// `postgres::b`.
macro_rules! for_each_backend {
    ($($test:ident),+ $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test::<$crate::store::testing::Memory>().await;
                }
            )+
        }

        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test::<$crate::store::testing::Sqlite>().await;
                }
            )+
        }

        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test::<$crate::store::testing::Postgres>().await;
                }
            )+
        }
    };
}

pub(crate) use for_each_backend;
