//! Admission control and deadlines.
//!
//! The [`Gate`] counts requests from the moment the HTTP/2 (or HTTP/1)
//! layer hands them over, so requests waiting for a worker thread count as
//! well as running ones. Past `max_in_flight` a request is answered
//! RESOURCE_EXHAUSTED at once instead of joining an unbounded queue. The
//! gate also stamps each request's arrival ([`Arrival`]), from which the
//! handlers measure the client's deadline.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::error::ApiError;
use crate::metrics::{InFlight, RequestMetrics};

/// When the server first saw a request.
#[derive(Debug, Clone, Copy)]
pub struct Arrival(pub Instant);

/// Counts admitted requests.
#[derive(Debug)]
pub struct Gate {
    in_flight: AtomicUsize,
    max: usize,
}

/// One admitted request; leaving on drop.
#[derive(Debug)]
pub struct Permit(Arc<Gate>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Gate {
    pub fn new(max: usize) -> Arc<Gate> {
        Arc::new(Gate {
            in_flight: AtomicUsize::new(0),
            max,
        })
    }

    /// Admits a request, or refuses it when `max` are in flight.
    pub fn enter(self: &Arc<Gate>) -> Result<Permit, ApiError> {
        let before = self.in_flight.fetch_add(1, Ordering::Relaxed);
        let permit = Permit(self.clone());
        if before >= self.max {
            return Err(ApiError::ResourceExhausted(format!(
                "overloaded: {} requests in flight (serve.max_in_flight); retry with backoff",
                self.max
            )));
        }
        Ok(permit)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

impl InFlight for Gate {
    fn in_flight(&self) -> usize {
        Gate::in_flight(self)
    }
}

/// The time by which a request must be answered.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    pub arrival: Instant,
    pub at: Instant,
}

impl Deadline {
    pub fn new(arrival: Instant, budget: Duration) -> Deadline {
        Deadline {
            arrival,
            at: arrival + budget,
        }
    }

    /// DEADLINE_EXCEEDED once the deadline has passed: checked before the
    /// work (a request that queued too long is refused at once) and after
    /// it (an answer the client no longer waits for is not sent).
    pub fn check(&self) -> Result<(), ApiError> {
        if Instant::now() >= self.at {
            Err(ApiError::DeadlineExceeded(format!(
                "the deadline of {} µs has passed",
                self.at.saturating_duration_since(self.arrival).as_micros()
            )))
        } else {
            Ok(())
        }
    }
}

/// Parses a `grpc-timeout` header value: up to 8 digits and a unit
/// (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The gate as a tower layer in front of the tonic server.
#[derive(Debug, Clone)]
pub struct GrpcGateLayer {
    pub gate: Arc<Gate>,
    pub metrics: Arc<RequestMetrics>,
}

impl<S> tower::Layer<S> for GrpcGateLayer {
    type Service = GrpcGate<S>;

    fn layer(&self, inner: S) -> GrpcGate<S> {
        GrpcGate {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcGate<S> {
    inner: S,
    layer: GrpcGateLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The method name of a gRPC path, for metrics (`/pkg.Service/Method`).
pub fn grpc_method(path: &str) -> &'static str {
    match path.rsplit('/').next() {
        Some("GetProfile") => "GetProfile",
        Some("BatchGetProfiles") => "BatchGetProfiles",
        Some("GetRecommendations") => "GetRecommendations",
        Some("Check") | Some("Watch") => "Health",
        _ => "other",
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for GrpcGate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let arrival = Instant::now();
        req.extensions_mut().insert(Arrival(arrival));
        match self.layer.gate.enter() {
            Err(e) => {
                let method = grpc_method(req.uri().path());
                self.layer
                    .metrics
                    .observe("grpc", method, e.code(), arrival);
                let status: tonic::Status = e.into();
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
            Ok(permit) => {
                let fut = self.inner.call(req);
                Box::pin(async move {
                    let out = fut.await;
                    drop(permit);
                    out
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("5m"), Some(Duration::from_millis(5)));
        assert_eq!(parse_grpc_timeout("250u"), Some(Duration::from_micros(250)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_grpc_timeout("99999999S"),
            Some(Duration::from_secs(99_999_999))
        );
        for bad in ["", "m", "123456789m", "5x", "-5m", "5 m"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[test]
    fn gate_refuses_past_its_limit() {
        let gate = Gate::new(2);
        let a = gate.enter().unwrap();
        let _b = gate.enter().unwrap();
        assert!(matches!(gate.enter(), Err(ApiError::ResourceExhausted(_))));
        assert_eq!(gate.in_flight(), 2);
        drop(a);
        assert!(gate.enter().is_ok());
    }
}
