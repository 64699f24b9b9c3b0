//! The operator page (`GET /ops`) in Chromium, with an injected outage.
//!
//! The archive holds four past weeks of arrivals at this hour of the week
//! (and the next hour, should the test cross it): 36,000 an hour for
//! `acme`, 30 for `tiny`, so acme expects 10 events a second. A producer
//! sends acme's events live at that rate; the page (admin key as the Basic
//! password) shows acme "ok" with every chart, and tiny as a small tenant.
//! Then the producer stops: within the status window the page shows acme's
//! actual below expected.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use weft_config::{KeyConfig, TenantConfig, WeftConfig};
use weft_core::archive::ArchiveWriter;
use weft_core::generator::Sequenced;
use weft_core::{Event, EventKind};
use weft_speed::kafka::EventProducer;

use crate::generation_switch::fixture;

const HOUR_MS: i64 = 3_600_000;
const WEEK_MS: i64 = 7 * 24 * HOUR_MS;
const ACME_PER_HOUR: i64 = 36_000;
const TINY_PER_HOUR: i64 = 30;

fn admin_key(tenant: &str) -> String {
    format!("adm-{tenant}-0123456789abcdef")
}

fn event(tenant: &str, n: i64, ts_ms: i64) -> Event {
    Event {
        event_id: format!("{tenant}-{n}"),
        tenant: tenant.into(),
        user_id: format!("u{:04}", n % 2_000),
        ts_ms,
        kind: EventKind::View,
        item_id: format!("i{:03}", n % 100),
        category: "shoes".into(),
        price_minor: 0,
        quantity: 0,
        attributes: Default::default(),
    }
}

/// Four past weeks of arrivals in this hour and the next, for each tenant.
fn write_history(root: &std::path::Path, now: i64) -> usize {
    let mut writer = ArchiveWriter::new(root, "history", 100_000);
    let hour = now.div_euclid(HOUR_MS) * HOUR_MS;
    let mut written = 0;
    for (tenant, per_hour) in [("acme", ACME_PER_HOUR), ("tiny", TINY_PER_HOUR)] {
        for week in 1..=4 {
            for h in [hour, hour + HOUR_MS] {
                let start = h - week * WEEK_MS;
                for i in 0..per_hour {
                    let ts = start + i * HOUR_MS / per_hour;
                    let n = written as i64;
                    writer
                        .push(&Sequenced {
                            partition: 0,
                            offset: n,
                            event: event(tenant, n, ts),
                            ingest_ms: ts,
                        })
                        .unwrap();
                    written += 1;
                }
            }
        }
    }
    writer.finish().unwrap();
    written
}

fn ops_page(url: &str, key: &str, status: &str, png: &std::path::Path) -> serde_json::Value {
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/ops_page.py"
        ))
        .args([url, key, status])
        .arg(png)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the ops page ({key}, want {status}):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

#[test]
fn the_ops_page_shows_actual_against_expected_and_an_outage() {
    let f = fixture();
    let now = weft_core::time::now_ms();
    let archive = f.dir.path().join("archive");
    let written = write_history(&archive, now);

    let mut c = WeftConfig {
        features: (&f.spec_path).into(),
        ..Default::default()
    };
    c.kafka.bootstrap = f.broker.bootstrap().to_string();
    c.speed.data_dir = f.dir.path().join("speed");
    c.archive.root = archive.to_str().unwrap().to_string();
    c.serve.grpc_listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.serve.http_listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.serve.drain_secs = 0;
    c.serve.ops_sample_secs = 1;
    c.tenants = ["acme", "tiny"]
        .iter()
        .map(|t| TenantConfig {
            name: t.to_string(),
            allowed_origins: vec![],
            keys: vec![KeyConfig {
                name: format!("{t}-ops"),
                key: admin_key(t).into(),
                scopes: vec!["admin".into()],
                publishable: false,
            }],
        })
        .collect();
    let running = f.rt.block_on(weft_serving::start(c)).unwrap();
    let url = format!("http://{}/ops", running.http_addr);

    // Without the key: 401 with a Basic challenge, so a browser asks.
    let (status, head, _) =
        crate::serving::http_request(running.http_addr, "GET", "/ops", &[], b"");
    assert_eq!(status, 401, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: basic realm=\"weft ops\""),
        "{head}"
    );

    // acme's events at the expected rate, 10 a second.
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (stop, bootstrap) = (stop.clone(), f.broker.bootstrap().to_string());
        std::thread::spawn(move || {
            let mut p = EventProducer::new(&bootstrap, "events").unwrap();
            // One event per 100 ms, each flushed: the rate is steady.
            let started = Instant::now();
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let due = Duration::from_millis(100 * n as u64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
                p.send_event(&event("acme", 1_000_000_000 + n, weft_core::time::now_ms()))
                    .unwrap();
                p.flush(Duration::from_secs(5)).unwrap();
                n += 1;
            }
            n
        })
    };
    // Twelve samples of live traffic fill the status window.
    std::thread::sleep(Duration::from_secs(13));
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ops-page");
    std::fs::create_dir_all(&shots).unwrap();
    let live = ops_page(
        &url,
        &admin_key("acme"),
        "ok",
        &shots.join("1-acme-live.png"),
    );
    let tiny = ops_page(&url, &admin_key("tiny"), "ok", &shots.join("2-tiny.png"));
    assert_eq!(tiny["small"], "true", "{tiny}");

    // The outage: the producer stops.
    stop.store(true, Ordering::Relaxed);
    let sent = producer.join().unwrap();
    std::thread::sleep(Duration::from_secs(8));
    let outage = ops_page(
        &url,
        &admin_key("acme"),
        "below",
        &shots.join("3-acme-outage.png"),
    );
    println!(
        "ops: {written} archived arrivals of history; live {live}; tiny {tiny}; {sent} sent, then stopped: {outage}"
    );
    f.rt.block_on(running.stop()).unwrap();
}
