//! Per-method gRPC metrics: `belay_grpc_requests_total{method,code}` and
//! `belay_grpc_request_duration_seconds{method}`, counted by [`MetricsLayer`], a tower
//! layer around every service of the tonic server (so refusals by the reviewer
//! authentication wrapper and enrollment count too).
//!
//! A call is counted once, when its status is known: from the response headers when
//! the handler failed at once (a "trailers-only" response), else from the trailers at
//! the end of the response body, so a stream is counted when it ends, with its own
//! final status, and its duration is the stream's whole life. A response body dropped
//! before its trailers (the client went away) counts as CANCELLED.
//!
//! Labels stay bounded whatever clients send: a path outside the services served here,
//! and any call answered UNIMPLEMENTED (the generated servers' answer to an unknown
//! method; no handler here returns it), is counted under `method="other"`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body::Frame;
use tonic::Code;
use tonic::codegen::http::{HeaderMap, Request, Response};
use tonic::codegen::{BoxFuture, Bytes, Service};

use super::{Histogram, Metrics};

/// Upper bounds (seconds) of the call duration buckets: unary calls take milliseconds,
/// streams (agent sessions, watches) last minutes to days.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0,
    3600.0,
];

/// The label of calls outside the served methods.
pub const OTHER: &str = "other";

/// Every gRPC status code, in numeric order, with its canonical name.
const CODES: [(Code, &str); 17] = [
    (Code::Ok, "OK"),
    (Code::Cancelled, "CANCELLED"),
    (Code::Unknown, "UNKNOWN"),
    (Code::InvalidArgument, "INVALID_ARGUMENT"),
    (Code::DeadlineExceeded, "DEADLINE_EXCEEDED"),
    (Code::NotFound, "NOT_FOUND"),
    (Code::AlreadyExists, "ALREADY_EXISTS"),
    (Code::PermissionDenied, "PERMISSION_DENIED"),
    (Code::ResourceExhausted, "RESOURCE_EXHAUSTED"),
    (Code::FailedPrecondition, "FAILED_PRECONDITION"),
    (Code::Aborted, "ABORTED"),
    (Code::OutOfRange, "OUT_OF_RANGE"),
    (Code::Unimplemented, "UNIMPLEMENTED"),
    (Code::Internal, "INTERNAL"),
    (Code::Unavailable, "UNAVAILABLE"),
    (Code::DataLoss, "DATA_LOSS"),
    (Code::Unauthenticated, "UNAUTHENTICATED"),
];

fn code_index(code: Code) -> usize {
    CODES
        .iter()
        .position(|(known, _)| *known == code)
        .unwrap_or(2)
}

/// The calls of one method: a counter per status code and one duration histogram.
#[derive(Debug)]
struct Method {
    codes: [AtomicU64; CODES.len()],
    duration: Histogram,
}

impl Default for Method {
    fn default() -> Self {
        Self {
            codes: Default::default(),
            duration: Histogram::new(DURATION_BUCKETS),
        }
    }
}

/// The gRPC calls counted so far, by method (`package.Service/Method`).
#[derive(Debug, Default)]
pub struct Calls {
    methods: Mutex<BTreeMap<String, Arc<Method>>>,
}

impl Calls {
    fn record(&self, method: &str, code: Code, duration: Duration) {
        let series = {
            let mut methods = self.methods.lock().unwrap_or_else(PoisonError::into_inner);
            match methods.get(method) {
                Some(series) => Arc::clone(series),
                None => Arc::clone(methods.entry(method.to_owned()).or_default()),
            }
        };
        series.codes[code_index(code)].fetch_add(1, Ordering::Relaxed);
        series.duration.observe(duration);
    }

    /// How many calls of `method` ended with `code` (for tests and the render).
    pub fn count(&self, method: &str, code: Code) -> u64 {
        self.methods
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(method)
            .map_or(0, |series| {
                series.codes[code_index(code)].load(Ordering::Relaxed)
            })
    }

    pub(super) fn render(&self, out: &mut String, header: impl Fn(&mut String, &str, &str, &str)) {
        let methods: Vec<(String, Arc<Method>)> = self
            .methods
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, series)| (name.clone(), Arc::clone(series)))
            .collect();
        header(
            out,
            "belay_grpc_requests_total",
            "counter",
            "gRPC calls served by this process that ended, by method and status code.",
        );
        for (method, series) in &methods {
            for ((_, name), count) in CODES.iter().zip(&series.codes) {
                let count = count.load(Ordering::Relaxed);
                // Only the codes seen: 17 series per method would mostly be zeros.
                if count > 0 {
                    let _ = writeln!(
                        out,
                        "belay_grpc_requests_total{{method=\"{method}\",code=\"{name}\"}} {count}"
                    );
                }
            }
        }
        header(
            out,
            "belay_grpc_request_duration_seconds",
            "histogram",
            "Duration of the gRPC calls that ended, by method: to the response for unary \
             calls, the whole stream for streaming ones.",
        );
        for (method, series) in &methods {
            series.duration.render_labelled(
                out,
                "belay_grpc_request_duration_seconds",
                &format!("method=\"{method}\","),
            );
        }
    }
}

/// Counts every call of the services it wraps into [`Metrics`]; see the module comment.
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    metrics: Arc<Metrics>,
    /// Names of the services served (`package.Service`), whose methods get a label.
    services: Arc<[&'static str]>,
}

impl MetricsLayer {
    /// `services`: the `NamedService::NAME` of every service the server serves.
    pub fn new(metrics: Arc<Metrics>, services: &[&'static str]) -> Self {
        Self {
            metrics,
            services: services.into(),
        }
    }

    /// The method label of a request path: `package.Service/Method`, or [`OTHER`].
    fn method(&self, path: &str) -> String {
        let known = path.strip_prefix('/').and_then(|rest| {
            let (service, method) = rest.split_once('/')?;
            let plausible = !method.is_empty()
                && method.len() <= 64
                && method
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_');
            (plausible && self.services.contains(&service)).then_some(rest)
        });
        known.unwrap_or(OTHER).to_owned()
    }
}

impl<S> tower_layer::Layer<S> for MetricsLayer {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Metered<S> {
        Metered {
            inner,
            layer: self.clone(),
        }
    }
}

/// A service wrapped by [`MetricsLayer`].
#[derive(Debug, Clone)]
pub struct Metered<S> {
    inner: S,
    layer: MetricsLayer,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Metered<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
{
    type Response = Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The clone that was polled ready serves this call (tower's usual dance).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let call = Call {
            metrics: Arc::clone(&self.layer.metrics),
            method: self.layer.method(request.uri().path()),
            started: Instant::now(),
            done: false,
        };
        Box::pin(async move {
            let mut call = call;
            let response = match inner.call(request).await {
                Ok(response) => response,
                Err(err) => {
                    call.finish(Code::Unknown);
                    return Err(err);
                }
            };
            if let Some(code) = status(response.headers()) {
                // Trailers-only: the call ended with its headers.
                call.finish(code);
            }
            Ok(response.map(|body| MeteredBody { inner: body, call }))
        })
    }
}

/// The `grpc-status` of a header or trailer map, if it has one.
fn status(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    value.parse::<i32>().ok().map(Code::from_i32)
}

/// One call being counted; counted once, at [`Call::finish`] or when dropped unfinished.
#[derive(Debug)]
struct Call {
    metrics: Arc<Metrics>,
    method: String,
    started: Instant,
    done: bool,
}

impl Call {
    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let method = if code == Code::Unimplemented {
            OTHER
        } else {
            &self.method
        };
        self.metrics
            .grpc()
            .record(method, code, self.started.elapsed());
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // The body went away before its trailers: the client cancelled, or the
        // connection broke.
        self.finish(Code::Cancelled);
    }
}

/// A response body that counts its call when the trailers go by (or it ends, or is
/// dropped).
#[derive(Debug)]
pub struct MeteredBody<B> {
    inner: B,
    call: Call,
}

impl<B> http_body::Body for MeteredBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.call.finish(status(trailers).unwrap_or(Code::Unknown));
                }
            }
            // A body that fails cannot deliver its status.
            Poll::Ready(Some(Err(_))) => this.call.finish(Code::Unknown),
            // Ended without trailers: only a trailers-only response (counted already)
            // does that legitimately.
            Poll::Ready(None) => this.call.finish(Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_served_services_share_one_label() {
        let layer = MetricsLayer::new(Arc::new(Metrics::default()), &["belay.v1.EnrollService"]);
        assert_eq!(
            layer.method("/belay.v1.EnrollService/Enroll"),
            "belay.v1.EnrollService/Enroll"
        );
        for path in [
            "/belay.v1.Nope/Enroll",
            "/belay.v1.EnrollService/",
            "/belay.v1.EnrollService/a\"b",
            "/belay.v1.EnrollService/Enroll/more",
            "belay.v1.EnrollService/Enroll",
            "/",
        ] {
            assert_eq!(layer.method(path), OTHER, "{path}");
        }
    }

    #[test]
    fn calls_render_by_method_and_seen_code() {
        let calls = Calls::default();
        calls.record("s/A", Code::Ok, Duration::from_millis(3));
        calls.record("s/A", Code::PermissionDenied, Duration::from_millis(30));
        calls.record("s/A", Code::PermissionDenied, Duration::from_millis(30));
        assert_eq!(calls.count("s/A", Code::PermissionDenied), 2);
        assert_eq!(calls.count("s/A", Code::NotFound), 0);
        let mut out = String::new();
        calls.render(&mut out, |_, _, _, _| {});
        assert!(out.contains("belay_grpc_requests_total{method=\"s/A\",code=\"OK\"} 1\n"));
        assert!(
            out.contains(
                "belay_grpc_requests_total{method=\"s/A\",code=\"PERMISSION_DENIED\"} 2\n"
            )
        );
        assert!(!out.contains("NOT_FOUND"), "{out}");
        assert!(
            out.contains(
                "belay_grpc_request_duration_seconds_bucket{method=\"s/A\",le=\"0.005\"} 1\n"
            ),
            "{out}"
        );
        assert!(out.contains("belay_grpc_request_duration_seconds_count{method=\"s/A\"} 3\n"));
    }
}
