//! `weft up` as a newcomer runs it: a local broker, demo traffic, a batch
//! view, a GetProfile for a demo user with features and freshness, and the
//! demo storefront with the recommendations widget in Chromium. It
//! runs outside the source tree: everything it needs is built in.

use std::io::BufRead;
use std::time::{Duration, Instant};

use crate::common::{log_text, stop_cleanly};
use crate::serving::poll_profile;

#[test]
fn weft_up_serves_demo_profiles_with_freshness() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("weft-data");
    let log = dir.path().join("up.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .current_dir(dir.path())
        .args(["up"])
        .args([
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--demo-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--batch-every-secs",
            "4",
            "--demo-rate",
            "3000",
            "--demo-users",
            "500",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut grpc = None;
    let mut key = None;
    let mut user = None;
    let mut store = None;
    let mut ops = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while grpc.is_none() || key.is_none() || user.is_none() || store.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no endpoints printed; log:\n{}", log_text(&log)));
        if let Some(rest) = line.strip_prefix("ops") {
            ops = rest.split_whitespace().next().map(str::to_string);
        }
        if let Some(rest) = line.strip_prefix("demo") {
            store = rest.split_whitespace().next().map(str::to_string);
        }
        if let Some(rest) = line.strip_prefix("gRPC") {
            grpc = rest.split_whitespace().next().map(str::to_string);
        }
        if let Some(at) = line.find("Bearer ") {
            key = line[at + 7..].split('\'').next().map(str::to_string);
        }
        if let Some(at) = line.find("\"user_id\":\"") {
            user = line[at + 11..].split('"').next().map(str::to_string);
        }
    }
    let (grpc, key, user, store) = (grpc.unwrap(), key.unwrap(), user.unwrap(), store.unwrap());

    // Wait until a batch view is served, then read the user of the printed
    // lines (one the demo traffic has sent events for).
    let rt = weft_core::runtime::current_thread().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let reply = rt.block_on(poll_profile(&grpc, &key, &user, deadline, &log, |r| {
        r.freshness.as_ref().unwrap().batch_view_version >= 1 && r.profile.as_ref().unwrap().found
    }));
    let (profile, fresh) = (reply.profile.unwrap(), reply.freshness.unwrap());
    assert!(profile.features.contains_key("last_seen"), "{profile:?}");
    assert_eq!(fresh.speed_generation, fresh.batch_view_version);
    assert!(!fresh.batch_offsets.is_empty());
    assert!(fresh.as_of_ms > 0);
    // Demo events happen now: the newest applied one is seconds old.
    assert!(fresh.speed_lag_ms < 60_000, "{fresh:?}");
    assert!(data.join("keys.json").exists());

    // The demo store in Chromium (tests/python/browser_widget.py): the
    // widget on a page of the store's origin renders recommendations,
    // reflects a click on the next page, shows nothing for a wrong or a
    // server-side key (the console says 401 / 403) and shows markup in ids
    // as text. Screenshots land in target/browser-widget.
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-widget");
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/browser_widget.py"
        ))
        .args([store.as_str(), key.as_str()])
        .arg(&shots)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "the browser checks failed:\n{stdout}\n{stderr}\nweft up log:\n{}",
        log_text(&log)
    );
    println!("browser: {stdout}(screenshots in {})", shots.display());

    // The ops page the newcomer is pointed to (the server key is admin): it
    // renders in Chromium; a fresh archive has no past weeks to expect from.
    let ops = ops.expect("an ops line among the endpoints");
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/ops_page.py"
        ))
        .args([ops.as_str(), key.as_str(), "no-history"])
        .arg(shots.join("ops.png"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the ops page of weft up:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(rt); // closes the client's connection
    stop_cleanly(child, &log);
    // The next start sets the in-memory broker's old state aside.
    assert!(data.join("archive").exists());
}
