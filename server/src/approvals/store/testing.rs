//! Runs the same tests against every [`Store`] backend.
//!
//! A contract test is written once, as `async fn name<B: Backend>()`, and
//! [`for_each_backend!`] turns it into one `#[tokio::test]` per backend
//! (`memory::name`, `sqlite::name`). The SQLite store is a real file in a temporary
//! directory that lives as long as the store.

use std::ops::Deref;

use tempfile::TempDir;

use super::{MemoryStore, SqliteStore, Store};

pub(crate) trait Backend {
    type Store: Store;

    fn open() -> Opened<Self::Store>;
}

pub(crate) struct Memory;

pub(crate) struct Sqlite;

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
/// defines the tests `memory::a`, `memory::b`, `sqlite::a` and `sqlite::b`.
macro_rules! for_each_backend {
    ($($test:ident),+ $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test::<$crate::approvals::store::testing::Memory>().await;
                }
            )+
        }

        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test::<$crate::approvals::store::testing::Sqlite>().await;
                }
            )+
        }
    };
}

pub(crate) use for_each_backend;
