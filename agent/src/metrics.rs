//! Prometheus metrics of the daemon and the kernel programs, served as text on
//! `--metrics-listen` (GET /metrics).
use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};

use crate::kernel::{Counters, Verdict};
use crate::policy::Action;

/// Upper bounds (seconds) of the pause-duration histogram: from an automatic decision
/// to a person answering within the default 5-minute deadline.
const PAUSE_BUCKETS: [f64; 9] = [0.001, 0.01, 0.1, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0];

/// How requests end, as the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Allowed,
    Denied,
    Killed,
    /// Ended by the deadline's default verdict.
    Expired,
    /// The process went away while paused.
    Cancelled,
    /// belay-server refused it (or it could not be sent there): ended without a person.
    Refused,
}

impl From<Verdict> for Ended {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Allow => Self::Allowed,
            Verdict::Deny => Self::Denied,
            Verdict::Kill => Self::Killed,
        }
    }
}

/// Policy actions, as the `action` label, in the order of [`action_index`].
const ACTIONS: [Action; 5] = [
    Action::Allow,
    Action::Deny,
    Action::Ask,
    Action::Kill,
    Action::Audit,
];

/// Where `action` counts in [`ACTIONS`]; exhaustive, so a new action cannot be counted
/// as another.
fn action_index(action: Action) -> usize {
    match action {
        Action::Allow => 0,
        Action::Deny => 1,
        Action::Ask => 2,
        Action::Kill => 3,
        Action::Audit => 4,
    }
}

impl Ended {
    const ALL: [(Self, &'static str); 6] = [
        (Self::Allowed, "allowed"),
        (Self::Denied, "denied"),
        (Self::Killed, "killed"),
        (Self::Expired, "expired"),
        (Self::Cancelled, "cancelled"),
        (Self::Refused, "refused"),
    ];
}

#[derive(Debug, Default)]
pub struct Metrics {
    ended: [AtomicU64; Ended::ALL.len()],
    pause_buckets: [AtomicU64; PAUSE_BUCKETS.len()],
    pause_count: AtomicU64,
    pause_sum_micros: AtomicU64,
    /// Pauses the daemon settled by a policy rule, by action.
    daemon_policy: [AtomicU64; ACTIONS.len()],
    /// Kernel decisions reported to the daemon (deny, kill, audit), by action.
    kernel_policy: [AtomicU64; ACTIONS.len()],
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    /// DNS answers that taught no name, by [`crate::dns::Untrusted`] reason.
    dns_ignored: [AtomicU64; crate::dns::Untrusted::ALL.len()],
}

impl Metrics {
    /// Records a DNS answer a watched process received that taught belay nothing.
    pub fn dns_ignored(&self, why: crate::dns::Untrusted) {
        self.dns_ignored[why as usize].fetch_add(1, Relaxed);
    }

    /// Records a request that ended after being paused for `paused`.
    pub fn ended(&self, how: Ended, paused: Duration) {
        let i = Ended::ALL.iter().position(|(e, _)| *e == how).unwrap_or(0);
        self.ended[i].fetch_add(1, Relaxed);
        let secs = paused.as_secs_f64();
        for (bound, bucket) in PAUSE_BUCKETS.iter().zip(&self.pause_buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.pause_count.fetch_add(1, Relaxed);
        self.pause_sum_micros
            .fetch_add(paused.as_micros() as u64, Relaxed);
    }

    pub fn policy_decided(&self, action: Action) {
        self.daemon_policy[action_index(action)].fetch_add(1, Relaxed);
    }

    pub fn kernel_policy_reported(&self, action: Action) {
        self.kernel_policy[action_index(action)].fetch_add(1, Relaxed);
    }

    pub fn policy_reloaded(&self, ok: bool) {
        if ok {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        }
        .fetch_add(1, Relaxed);
    }

    /// The text exposition format, version 0.0.4.
    pub fn render(&self, pending: usize, kernel: &Counters) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            "belay_kernel_paused_total",
            "Tasks stopped by the kernel programs.",
            kernel.paused,
        );
        counter(
            "belay_kernel_verdicts_applied_total",
            "Verdicts consumed by restarted syscalls.",
            kernel.verdicts_applied,
        );
        counter(
            "belay_kernel_dropped_events_total",
            "Actions denied because the event ring buffer was full.",
            kernel.dropped_events,
        );
        counter(
            "belay_kernel_signal_failed_total",
            "Actions denied because the stop signal could not be sent.",
            kernel.signal_failed,
        );
        counter(
            "belay_kernel_unpausable_denied_total",
            "Actions denied without a pause (io_uring, ptraced, not restartable).",
            kernel.unpausable_denied,
        );
        counter(
            "belay_kernel_fail_mode_total",
            "Actions decided by the fail mode while the daemon was not running.",
            kernel.fail_mode,
        );
        counter(
            "belay_kernel_fork_refused_total",
            "Forks of watched processes refused because the child could not be watched.",
            kernel.fork_refused,
        );
        counter(
            "belay_kernel_policy_decided_total",
            "Actions of watched processes decided by policy in the kernel, without a pause.",
            kernel.policy_decided,
        );
        counter(
            "belay_kernel_watch_failed_total",
            "Processes that should have become watched but did not fit the map.",
            kernel.watch_failed,
        );
        counter(
            "belay_kernel_dns_dropped_total",
            "DNS answers to watched processes that could not be passed on.",
            kernel.dns_dropped,
        );
        counter(
            "belay_kernel_unclassified_denied_total",
            "Sends and connects on IP sockets with an address family belay cannot classify, denied.",
            kernel.unclassified_denied,
        );
        counter(
            "belay_kernel_ptrace_denied_total",
            "ptrace, /proc/PID/mem, process_vm_writev or pidfd_getfd from a watched process to one outside its subject, denied.",
            kernel.ptrace_denied,
        );
        counter(
            "belay_kernel_unix_peer_denied_total",
            "Unix connects and sends allowed by a verdict that reached another socket than the one reviewed (its path changed during the pause), denied.",
            kernel.unix_peer_denied,
        );
        counter(
            "belay_kernel_exec_mismatch_killed_total",
            "Execs killed because the new image's argv or environment was not what was reviewed.",
            kernel.exec_mismatch_killed,
        );
        counter(
            "belay_kernel_watch_killed_total",
            "Processes that exec'd into a subject but did not fit the watch list, killed.",
            kernel.watch_killed,
        );
        counter(
            "belay_undecodable_events_total",
            "Kernel events the daemon could not decode (their tasks were denied).",
            kernel.undecodable_events,
        );
        let _ = writeln!(
            out,
            "# HELP belay_requests_pending Requests waiting for a decision.\n\
             # TYPE belay_requests_pending gauge\nbelay_requests_pending {pending}"
        );
        let _ = writeln!(
            out,
            "# HELP belay_requests_total Requests ended, by outcome.\n# TYPE belay_requests_total counter"
        );
        for ((_, label), n) in Ended::ALL.iter().zip(&self.ended) {
            let _ = writeln!(
                out,
                "belay_requests_total{{outcome=\"{label}\"}} {}",
                n.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP belay_policy_decisions_total Actions settled by a policy rule, by where and action.\n\
             # TYPE belay_policy_decisions_total counter"
        );
        for (place, values) in [
            ("daemon", &self.daemon_policy),
            ("kernel", &self.kernel_policy),
        ] {
            for (label, n) in ACTIONS.iter().zip(values) {
                let _ = writeln!(
                    out,
                    "belay_policy_decisions_total{{where=\"{place}\",action=\"{label}\"}} {}",
                    n.load(Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP belay_policy_reloads_total Policy reloads, by result.\n\
             # TYPE belay_policy_reloads_total counter\n\
             belay_policy_reloads_total{{result=\"ok\"}} {}\n\
             belay_policy_reloads_total{{result=\"failed\"}} {}",
            self.reloads_ok.load(Relaxed),
            self.reloads_failed.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP belay_dns_answers_ignored_total DNS answers to watched processes that taught \
             no hostname (not from a trusted resolver, in a namespace a process may have made, or \
             answering no query the process sent).\n\
             # TYPE belay_dns_answers_ignored_total counter"
        );
        for why in crate::dns::Untrusted::ALL {
            let _ = writeln!(
                out,
                "belay_dns_answers_ignored_total{{reason=\"{}\"}} {}",
                why.as_str(),
                self.dns_ignored[why as usize].load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP belay_pause_seconds How long requests kept their process paused.\n\
             # TYPE belay_pause_seconds histogram"
        );
        for (bound, bucket) in PAUSE_BUCKETS.iter().zip(&self.pause_buckets) {
            let _ = writeln!(
                out,
                "belay_pause_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Relaxed)
            );
        }
        let count = self.pause_count.load(Relaxed);
        let _ = writeln!(out, "belay_pause_seconds_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.pause_sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "belay_pause_seconds_sum {sum}\nbelay_pause_seconds_count {count}"
        );
        out.push_str(&belay_export::metrics::render_running());
        out
    }
}

/// Serves GET /metrics on `listener`; `render` produces the body for each scrape.
pub async fn serve<F, Fut>(listener: TcpListener, render: F)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = String> + Send,
{
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await
            {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let response = if request.starts_with("GET /metrics ") {
                let body = render().await;
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
            };
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_dns_answers_are_counted_by_reason() {
        let m = Metrics::default();
        m.dns_ignored(crate::dns::Untrusted::Unasked);
        m.dns_ignored(crate::dns::Untrusted::Unasked);
        m.dns_ignored(crate::dns::Untrusted::Resolver);
        let text = m.render(0, &Counters::default());
        for line in [
            "belay_dns_answers_ignored_total{reason=\"unasked\"} 2",
            "belay_dns_answers_ignored_total{reason=\"resolver\"} 1",
            "belay_dns_answers_ignored_total{reason=\"other_question\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_outcomes_counted() {
        let m = Metrics::default();
        m.ended(Ended::Allowed, Duration::from_millis(5));
        m.ended(Ended::Denied, Duration::from_secs(2));
        m.ended(Ended::Denied, Duration::from_secs(1000));
        m.policy_decided(Action::Deny);
        m.kernel_policy_reported(Action::Audit);
        m.policy_reloaded(false);
        let text = m.render(
            3,
            &Counters {
                paused: 7,
                ..Counters::default()
            },
        );
        for line in [
            "belay_requests_pending 3",
            "belay_kernel_paused_total 7",
            "belay_requests_total{outcome=\"allowed\"} 1",
            "belay_requests_total{outcome=\"denied\"} 2",
            "belay_requests_total{outcome=\"expired\"} 0",
            "belay_pause_seconds_bucket{le=\"0.001\"} 0",
            "belay_pause_seconds_bucket{le=\"0.01\"} 1",
            "belay_pause_seconds_bucket{le=\"5\"} 2",
            "belay_pause_seconds_bucket{le=\"900\"} 2",
            "belay_pause_seconds_bucket{le=\"+Inf\"} 3",
            "belay_pause_seconds_count 3",
            "belay_policy_decisions_total{where=\"daemon\",action=\"deny\"} 1",
            "belay_policy_decisions_total{where=\"daemon\",action=\"allow\"} 0",
            "belay_policy_decisions_total{where=\"kernel\",action=\"audit\"} 1",
            "belay_policy_reloads_total{result=\"failed\"} 1",
            "belay_policy_reloads_total{result=\"ok\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[tokio::test]
    async fn serves_metrics_and_404s_the_rest() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, || async { "belay_up 1\n".to_owned() }));
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let ok = get("/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nbelay_up 1\n"), "{ok}");
        assert!(get("/").await.starts_with("HTTP/1.1 404"));
    }
}
