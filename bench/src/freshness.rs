//! `weft-bench freshness`: the speed layer end to end, as a widget sees it.
//!
//! `weft-bench freshness` measures the speed layer end to end: produce one
//! event for a brand-new user to Kafka, then poll `GetProfile` every
//! millisecond until the profile is found. The time from starting to
//! produce to the first reply that has it is what a widget waits before a
//! click shows. The producer is flushed only after the sample (to confirm
//! delivery): rust-rdkafka's `flush` polls in 100 ms steps, which would
//! otherwise put a 100 ms floor under every sample. Samples are spaced by a
//! random pause, so they sample every phase of any periodic cycle in the
//! pipeline instead of locking onto one. With `--collector`, each event is
//! posted to `weft serve`'s event collector (`POST /v1/events`) instead,
//! as a page's tag sends it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use weft_core::{Event, EventKind};
use weft_proto::v1::profile_service_client::ProfileServiceClient;
use weft_speed::kafka::EventProducer;

use crate::common::{
    authorized, bearer, connect, histogram, micros, profile_request, status_error, unix_ms,
    write_json,
};

#[derive(Debug, Args)]
pub(crate) struct FreshnessArgs {
    /// `weft serve`'s gRPC address.
    #[arg(long)]
    weft: String,
    /// API key of --tenant.
    #[arg(long)]
    key: String,
    /// Kafka bootstrap address of the broker `weft serve` consumes.
    #[arg(long)]
    bootstrap: String,
    #[arg(long, default_value = "events")]
    topic: String,
    /// The tenant of --key (the events' tenant).
    #[arg(long)]
    tenant: String,
    #[arg(long, default_value_t = 300)]
    samples: u32,
    /// Pause between samples.
    #[arg(long, default_value_t = 20)]
    interval_ms: u64,
    /// Plus a uniformly random 0..=this, so that samples do not lock onto
    /// a periodic cycle in the pipeline (e.g. a consumer's fetch wait) and
    /// always see the same phase of it.
    #[arg(long, default_value_t = 500)]
    jitter_ms: u64,
    /// Send each event through `weft serve`'s event collector at this
    /// HTTP address (`http://host:port`, `POST /v1/events` with --key,
    /// which needs `events:write`) instead of producing it to Kafka: what
    /// a page's tag waits before its own click shows.
    #[arg(long)]
    collector: Option<String>,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Posts `event` to the collector at `addr` (`host:port`) with `key`, on a
/// new connection; the answer's status line and body.
fn post_event(addr: &str, key: &str, event: &Event) -> Result<String> {
    use std::io::{Read, Write};
    let body = serde_json::json!({
        "event_id": event.event_id, "user_id": event.user_id, "ts_ms": event.ts_ms,
        "kind": event.kind.as_str(), "item_id": event.item_id, "quantity": event.quantity,
    })
    .to_string();
    let mut s =
        std::net::TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_nodelay(true)?;
    write!(
        s,
        "POST /v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[derive(Debug, Serialize)]
struct FreshnessReport {
    samples: u32,
    seen: u64,
    timeouts: u32,
    poll_errors: u64,
    /// Produce start → first GetProfile reply with the user found.
    visible_p50_us: u64,
    visible_p99_us: u64,
    visible_max_us: u64,
}

/// Polls `GetProfile` every millisecond until `user` is found; the time
/// of that reply, or `None` at `deadline`.
async fn wait_found(
    client: &mut ProfileServiceClient<Channel>,
    auth: &MetadataValue<Ascii>,
    user: &str,
    deadline: Instant,
    poll_errors: &mut u64,
) -> Option<Instant> {
    loop {
        match client
            .get_profile(authorized(profile_request(user, &[]), auth))
            .await
        {
            Ok(r) if r.get_ref().profile.as_ref().is_some_and(|p| p.found) => {
                return Some(Instant::now());
            }
            Ok(_) => {}
            Err(_) => *poll_errors += 1,
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// `weft-bench freshness`: produce → visible in GetProfile.
pub(crate) fn freshness(a: &FreshnessArgs) -> Result<()> {
    const GIVE_UP: Duration = Duration::from_secs(5);
    let rt = weft_core::runtime::multi_thread("weft-freshness", 1)?;
    let auth = bearer(&a.key)?;
    let mut client = ProfileServiceClient::new(rt.block_on(connect(&a.weft))?);
    // The key works (and a never-seen user is simply not found).
    rt.block_on(client.get_profile(authorized(profile_request("fresh-probe", &[]), &auth)))
        .map_err(|s| status_error(&format!("GetProfile from {}", a.weft), &s))?;
    let collector = a.collector.as_deref().map(|u| {
        u.trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string()
    });
    let mut producer = EventProducer::new(&a.bootstrap, &a.topic)
        .with_context(|| format!("producing to {} on {}", a.topic, a.bootstrap))?;
    let run = unix_ms()?;
    let mut rng = ChaCha8Rng::seed_from_u64(run as u64);
    let mut visible = histogram()?;
    let (mut timeouts, mut poll_errors) = (0u32, 0u64);
    eprintln!(
        "freshness: {} samples, one view event each for a new user of {}, {} ms + 0..={} ms apart",
        a.samples, a.tenant, a.interval_ms, a.jitter_ms
    );
    let event_for = |user: &str| -> Result<Event> {
        Ok(Event {
            event_id: format!("{user}-0"),
            tenant: a.tenant.clone(),
            user_id: user.to_string(),
            ts_ms: unix_ms()?,
            kind: EventKind::View,
            item_id: "i000001".into(),
            category: String::new(),
            price_minor: 0,
            quantity: 1,
            attributes: BTreeMap::new(),
        })
    };
    // A new producer's first event waits for its connection, metadata and
    // producer id (about half a second against Tansu): not what a
    // long-lived producer pays, so one unmeasured event goes first.
    producer.send_event(&event_for(&format!("fresh-{run}-warmup"))?)?;
    producer
        .flush(GIVE_UP)
        .context("delivering the warm-up event")?;
    for i in 0..a.samples {
        let user = format!("fresh-{run}-{i}");
        let event = event_for(&user)?;
        let started = Instant::now();
        // Through the collector: posted on a thread of its own (its answer
        // comes once the broker acknowledged) while we poll.
        let posted = match &collector {
            Some(addr) => {
                let (addr, key, event) = (addr.clone(), a.key.clone(), event.clone());
                Some(std::thread::spawn(move || post_event(&addr, &key, &event)))
            }
            None => {
                // librdkafka sends it within the producer's linger (5 ms)
                // while we poll; no flush on the measured path.
                producer.send_event(&event)?;
                None
            }
        };
        match rt.block_on(wait_found(
            &mut client,
            &auth,
            &user,
            started + GIVE_UP,
            &mut poll_errors,
        )) {
            Some(seen) => visible.saturating_record(micros(seen - started)),
            None => timeouts += 1,
        }
        if let Some(posted) = posted {
            let answer = posted
                .join()
                .map_err(|_| anyhow::anyhow!("the collector's request thread panicked"))??;
            anyhow::ensure!(
                answer.starts_with("HTTP/1.1 202"),
                "the collector refused sample {i}: {answer}"
            );
        }
        producer
            .flush(GIVE_UP)
            .with_context(|| format!("delivering sample {i}"))?;
        std::thread::sleep(Duration::from_millis(
            a.interval_ms + rng.random_range(0..=a.jitter_ms),
        ));
    }
    let report = FreshnessReport {
        samples: a.samples,
        seen: visible.len(),
        timeouts,
        poll_errors,
        visible_p50_us: visible.value_at_quantile(0.5),
        visible_p99_us: visible.value_at_quantile(0.99),
        visible_max_us: visible.max(),
    };
    let ms = |us: u64| us as f64 / 1000.0;
    let path = match &collector {
        Some(addr) => format!("POST http://{addr}/v1/events, a new connection each"),
        None => format!("produced to {} ({})", a.topic, a.bootstrap),
    };
    println!(
        "weft-bench freshness: {} samples {path}, tenant {}, {} ms + 0..={} ms apart, polling GetProfile every 1 ms",
        a.samples, a.tenant, a.interval_ms, a.jitter_ms
    );
    println!("| send start → | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|");
    println!(
        "| visible in GetProfile | {:.1} | {:.1} | {:.1} |",
        ms(report.visible_p50_us),
        ms(report.visible_p99_us),
        ms(report.visible_max_us)
    );
    println!(
        "seen {} of {}, timeouts (> {} s) {timeouts}, poll errors {poll_errors}",
        report.seen,
        a.samples,
        GIVE_UP.as_secs()
    );
    if let Some(path) = &a.json {
        write_json(path, &report)?;
    }
    Ok(())
}
