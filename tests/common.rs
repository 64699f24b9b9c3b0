//! Helpers shared by the end-to-end tests that run `weft` processes.

use std::path::Path;
use std::process::{Child, Command};

/// A local Tansu broker (its log under `dir/logs`) with the `events` topic
/// of `partitions` partitions, and a two-thread runtime for async calls.
/// The repository root, read when the test runs (cargo sets
/// `CARGO_MANIFEST_DIR` for it): a path compiled in with `env!` would name
/// whichever checkout built the binary, and a shared target directory
/// reuses binaries across checkouts.
pub(crate) fn repo_root() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into())
}

/// The `weft-bench` binary (package `weft-bench`), which cargo puts next to
/// `weft`: `cargo test --workspace` builds it (its own tests need it), and
/// so does `cargo build -p weft-bench` before `cargo test -p weft`.
pub(crate) fn weft_bench() -> std::path::PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_weft")).with_file_name("weft-bench");
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build -p weft-bench` (or run `cargo test --workspace`)",
        path.display()
    );
    path
}

/// `deploy/features.example.toml` of [`repo_root`].
pub(crate) fn example_spec_path() -> String {
    format!("{}/deploy/features.example.toml", repo_root())
}

/// Events the crash tests replay: 200k, or `WEFT_CRASH_EVENTS` (the issue's
/// 1M-event run is `WEFT_CRASH_EVENTS=1000000 cargo test --test e2e crash`,
/// recorded in docs/benchmarks.md).
pub(crate) fn crash_events() -> u64 {
    match std::env::var("WEFT_CRASH_EVENTS") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("WEFT_CRASH_EVENTS={v:?} is not a number of events")),
        Err(_) => 200_000,
    }
}

pub(crate) fn broker_with_events(
    dir: &Path,
    partitions: u32,
) -> (weft_speed::broker::LocalBroker, tokio::runtime::Runtime) {
    let broker = weft_speed::broker::LocalBroker::start(None, &dir.join("logs")).unwrap();
    let rt = weft_core::runtime::multi_thread("weft-test", 2).unwrap();
    rt.block_on(weft_speed::kafka::ensure_topic(
        broker.bootstrap(),
        "events",
        partitions,
    ))
    .unwrap();
    (broker, rt)
}

/// The log a test process appended to (empty if unreadable).
pub(crate) fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Sends SIGTERM and asserts the process stops cleanly (exit status 0).
pub(crate) fn stop_cleanly(mut child: Child, log: &Path) {
    Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "clean stop; log:\n{}",
        log_text(log)
    );
}

/// Starts a process with `start` and kill -9s it `kills` times: each time
/// once `progressed` says the run got somewhere (so the kill lands mid-work,
/// not before the work began; at most 60 s, or until the process exits),
/// then a random 0-800 ms later.
pub(crate) fn kill_9_repeatedly(
    kills: usize,
    rng: &mut impl rand::Rng,
    mut start: impl FnMut() -> Child,
    mut progressed: impl FnMut() -> bool,
) {
    for _ in 0..kills {
        let mut child = start();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !progressed()
            && child.try_wait().unwrap().is_none()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(rng.random_range(0..800)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
}

/// A `progressed` check for [`kill_9_repeatedly`]: true once `log` holds
/// `needle` more often than when last true (a new run logged its start).
pub(crate) fn logged_again<'a>(log: &'a Path, needle: &'a str) -> impl FnMut() -> bool + 'a {
    let mut seen = log_text(log).matches(needle).count();
    move || {
        let n = log_text(log).matches(needle).count();
        let again = n > seen;
        seen = n;
        again
    }
}

/// Waits until `log` holds `needle` more than `after` times, where `after`
/// was counted just before starting a run: that run has logged its start,
/// so its signal handlers are in place. (Killed runs may die before logging
/// theirs, so the count of earlier runs is not a fixed number.)
pub(crate) fn wait_for_start(log: &Path, needle: &str, after: usize, deadline: std::time::Instant) {
    while log_text(log).matches(needle).count() <= after {
        assert!(
            std::time::Instant::now() < deadline,
            "the run did not start; log:\n{}",
            log_text(log)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Polls `done` until it holds, failing if `child` exits or the deadline
/// passes first.
pub(crate) fn wait_while_running(
    child: &mut Child,
    log: &Path,
    deadline: std::time::Instant,
    mut done: impl FnMut() -> Result<(), String>,
) {
    loop {
        let Err(progress) = done() else { return };
        assert!(
            std::time::Instant::now() < deadline,
            "not done in time: {progress}\nlog:\n{}",
            log_text(log)
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the process exited; log:\n{}",
            log_text(log)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Runs `python3` with `args` (a script of tests/python and its arguments,
/// or `-c CODE ...`), asserts it succeeded and returns its stdout.
pub(crate) fn python(args: &[&str]) -> String {
    let out = Command::new("python3").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "python3 {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A child process killed (-9) and reaped when dropped, so a failing test
/// leaves nothing running.
pub(crate) struct Reaped(pub(crate) std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Reaped {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}
