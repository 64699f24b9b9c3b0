//! What every measurement shares: user ids, histograms, clocks, gRPC
//! connections and keys, JSON output, and CPU time read from `/proc`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use weft_proto::v1::GetProfileRequest;

/// Longest latency a histogram holds, in microseconds (one hour).
const MAX_MICROS: u64 = 3_600_000_000;

pub(crate) fn user_id(rank: u32) -> String {
    format!("u{rank:07}")
}

pub(crate) fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).context("creating a histogram")
}

pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

pub(crate) fn unix_ms() -> Result<i64> {
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_millis() as i64)
}

/// `authorization: Bearer <key>`, parsed once.
pub(crate) fn bearer(key: &str) -> Result<MetadataValue<Ascii>> {
    format!("Bearer {key}")
        .parse()
        .context("the API key is not valid ASCII metadata")
}

/// A gRPC address (`host:port` or `http://host:port`) as a URI.
pub(crate) fn grpc_uri(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// One HTTP/2 connection (TCP_NODELAY) to a gRPC address (see [`grpc_uri`]).
pub(crate) async fn connect(addr: &str) -> Result<Channel> {
    let uri = grpc_uri(addr);
    Endpoint::from_shared(uri.clone())
        .with_context(|| format!("{uri:?} is not a gRPC address"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("connecting to {uri}"))
}

/// A request carrying the key.
pub(crate) fn authorized<T>(message: T, auth: &MetadataValue<Ascii>) -> Request<T> {
    let mut req = Request::new(message);
    req.metadata_mut().insert("authorization", auth.clone());
    req
}

pub(crate) fn profile_request(user: &str, features: &[String]) -> GetProfileRequest {
    GetProfileRequest {
        user_id: user.to_string(),
        features: features.to_vec(),
    }
}

pub(crate) fn status_error(what: &str, s: &Status) -> anyhow::Error {
    anyhow::anyhow!("{what}: {:?}: {}", s.code(), s.message())
}

pub(crate) fn write_json(path: &PathBuf, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// CPU time a process (`None`: this one) has used so far, all threads,
/// user + system, from `/proc/PID/stat` in clock ticks (`USER_HZ`, 100 on
/// Linux); `None` where that file cannot be read.
pub(crate) fn process_cpu(pid: Option<u32>) -> Option<Duration> {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_string(),
        |p| format!("/proc/{p}/stat"),
    );
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14 and stime 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    Some(Duration::from_millis(ticks * 10))
}

/// CPU time used between two readings of [`process_cpu`].
pub(crate) fn cpu_since(pid: Option<u32>, before: Option<Duration>) -> Option<Duration> {
    Some(process_cpu(pid)?.saturating_sub(before?))
}
