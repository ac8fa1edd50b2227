//! Decision latencies, from the agent's send to the agent's receipt.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Latencies {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    micros: Vec<u64>,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Latencies {
    pub fn record(&self, sent: Instant, received: Instant) {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let micros = u64::try_from(received.duration_since(sent).as_micros()).unwrap_or(u64::MAX);
        inner.micros.push(micros);
        inner.first = Some(inner.first.map_or(sent, |first| first.min(sent)));
        inner.last = Some(inner.last.map_or(received, |last| last.max(received)));
    }

    pub fn count(&self) -> usize {
        self.lock().micros.len()
    }

    /// From the first request sent to the last decision received.
    pub fn window(&self) -> Duration {
        let inner = self.lock();
        match (inner.first, inner.last) {
            (Some(first), Some(last)) => last.duration_since(first),
            _ => Duration::ZERO,
        }
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        let mut micros = self.lock().micros.clone();
        if micros.is_empty() {
            return f64::NAN;
        }
        micros.sort_unstable();
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let index = ((p / 100.0) * (micros.len() - 1) as f64).round() as usize;
        #[allow(clippy::cast_precision_loss)]
        let ms = micros[index.min(micros.len() - 1)] as f64 / 1000.0;
        ms
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The `p`th percentile of `values` (nearest rank), NaN when empty.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let index = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}
