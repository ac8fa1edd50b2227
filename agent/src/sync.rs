//! Locking shared by the daemon's tasks.
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, also after a panic in another holder: every guarded value in the daemon
/// is updated by single assignments or map operations, never left half-changed.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
