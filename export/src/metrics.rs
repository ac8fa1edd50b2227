//! Export counters and gauges, rendered in the Prometheus text format by [`Metrics::render`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Delivered events, per sink.
pub const DELIVERED: &str = "belay_export_delivered_total";
/// Failed delivery attempts that will be retried, per sink and reason.
pub const RETRIED: &str = "belay_export_retried_total";
/// Events that will never be delivered, per sink and reason (`spool_full`, `corrupt`,
/// `queue_full`, `rejected`: an OTLP receiver took them and refused them).
pub const DROPPED: &str = "belay_export_dropped_total";
/// Bytes on disk in the spool.
pub const SPOOL_BYTES: &str = "belay_export_spool_bytes";
/// Spooled events a sink has not delivered yet.
pub const LAG: &str = "belay_export_lag_events";

#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, String, String), u64>>,
    gauges: Mutex<BTreeMap<(&'static str, String), u64>>,
}

impl Metrics {
    pub fn add(&self, name: &'static str, sink: &str, reason: &str, n: u64) {
        let mut counters = self.counters.lock().expect("metrics lock");
        *counters
            .entry((name, sink.to_owned(), reason.to_owned()))
            .or_default() += n;
    }

    pub fn set(&self, name: &'static str, sink: &str, value: u64) {
        self.gauges
            .lock()
            .expect("metrics lock")
            .insert((name, sink.to_owned()), value);
    }

    /// A counter summed over reasons (`reason` `None`) or for one.
    pub fn counter(&self, name: &str, sink: &str, reason: Option<&str>) -> u64 {
        self.counters
            .lock()
            .expect("metrics lock")
            .iter()
            .filter(|((n, s, r), _)| *n == name && s == sink && reason.is_none_or(|x| x == r))
            .map(|(_, v)| v)
            .sum()
    }

    pub fn gauge(&self, name: &str, sink: &str) -> Option<u64> {
        let gauges = self.gauges.lock().expect("metrics lock");
        gauges
            .iter()
            .find(|((n, s), _)| *n == name && s == sink)
            .map(|(_, v)| *v)
    }

    /// The Prometheus text exposition of every export metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters = self.counters.lock().expect("metrics lock");
        let mut last = "";
        for ((name, sink, reason), value) in counters.iter() {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name} counter");
                last = name;
            }
            if reason.is_empty() {
                let _ = writeln!(out, "{name}{{sink=\"{sink}\"}} {value}");
            } else {
                let _ = writeln!(out, "{name}{{sink=\"{sink}\",reason=\"{reason}\"}} {value}");
            }
        }
        drop(counters);
        let gauges = self.gauges.lock().expect("metrics lock");
        for ((name, sink), value) in gauges.iter() {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name} gauge");
                last = name;
            }
            if sink.is_empty() {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name}{{sink=\"{sink}\"}} {value}");
            }
        }
        out
    }
}

/// Metrics of every exporter running in this process, for the process's /metrics page.
static RUNNING: Mutex<Vec<std::sync::Weak<Metrics>>> = Mutex::new(Vec::new());

/// Adds `metrics` to what [`render_running`] shows, until it is dropped.
pub fn register(metrics: &std::sync::Arc<Metrics>) {
    let mut running = RUNNING.lock().expect("metrics lock");
    running.retain(|m| m.strong_count() > 0);
    running.push(std::sync::Arc::downgrade(metrics));
}

/// The export metrics of this process (empty without export), in the Prometheus text
/// format: what the agent's and server's /metrics append.
pub fn render_running() -> String {
    let running = RUNNING.lock().expect("metrics lock");
    running
        .iter()
        .filter_map(std::sync::Weak::upgrade)
        .map(|m| m.render())
        .collect()
}
