//! The whole Lambda loop as an operator runs it, against a live broker:
//! generated events → Kafka → `weft serve` (the speed layer runs inside)
//! and `weft archive` → `weft batch run` → `weft serve`, all three real
//! processes. `GetProfile` (and `BatchGetProfiles`) == reference for every
//! user at every stage:
//!
//! 1. before any batch view (speed generation 0 holds everything);
//! 2. after the first view (its boundary is wherever the archiver was);
//! 3. after more events arrive: late events (hours to days old, new ids)
//!    and exact redeliveries of events the view already holds, besides the
//!    generator's own late and duplicate events;
//! 4. after a second view;
//! 5. after kill -9 and restart of the serving process and of the archiver,
//!    three times each, while events are produced;
//! 6. after a third view, built from the archive the killed archivers
//!    wrote (a gap or a duplicate there would show), with serving killed
//!    again while it switches to it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::{Rng, SeedableRng};
use weft_core::Event;
use weft_core::generator::GenConfig;
use weft_core::spec::DAY_MS;
use weft_speed::archiver::read_state;
use weft_speed::kafka::Produced;

use crate::common::{log_text, stop_cleanly, wait_while_running};
use crate::generation_switch::{Fixture, PARTITIONS, Topic, fixture};
use crate::serving::{
    ServeProcess, assert_every_user, http_get, start_serve, tenant_names, write_serve_config,
};

const USERS: u32 = 4_000;
const KILLS: usize = 3;
const WAIT: Duration = Duration::from_secs(180);

/// The platform's processes and where they keep their state.
struct Loop<'f> {
    f: &'f Fixture,
    serve_config: PathBuf,
    serve_log: PathBuf,
    serve: ServeProcess,
    archive: PathBuf,
    archive_log: PathBuf,
    archiver: Child,
    views: PathBuf,
}

pub(crate) fn start_archiver(f: &Fixture, root: &Path, log: &Path) -> Child {
    crate::archive_crash::start_archiver(f.broker.bootstrap(), root, log, &[])
}

/// Values of the `name` metric by label set, from Prometheus text.
pub(crate) fn metric(text: &str, name: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let labels = match key.strip_prefix(name)? {
                "" => "",
                rest if rest.starts_with('{') => rest,
                _ => return None, // another metric whose name starts with `name`
            };
            Some((labels.to_string(), value.parse().ok()?))
        })
        .collect()
}

impl Loop<'_> {
    fn grpc_addr(&self) -> SocketAddr {
        self.serve.grpc.parse().unwrap()
    }

    fn wait_served(&mut self, produced: &Produced, view: u64) {
        wait_served(&mut self.serve, &self.serve_log, produced, view);
    }

    fn wait_archived(&mut self, produced: &Produced) {
        wait_archived(
            &mut self.archiver,
            &self.archive,
            &self.archive_log,
            produced,
        );
    }

    fn batch_run(&self) -> u64 {
        batch_run(self.f, &self.archive, &self.views)
    }

    fn kill_serve(&mut self) {
        self.serve.child.kill().unwrap(); // SIGKILL
        self.serve.child.wait().unwrap();
    }

    fn restart_serve(&mut self) {
        self.serve = start_serve(&self.serve_config, &self.serve_log);
    }

    fn kill_archiver(&mut self) {
        self.archiver.kill().unwrap(); // SIGKILL
        self.archiver.wait().unwrap();
    }

    fn assert_every_user(&self, produced: &Produced, view: u64) {
        assert_every_user(self.f, self.grpc_addr(), produced, view);
    }
}

/// Waits until the archiver (`archiver`, writing `root`) has committed
/// every record produced.
pub(crate) fn wait_archived(archiver: &mut Child, root: &Path, log: &Path, produced: &Produced) {
    let ends = produced.end_offsets(PARTITIONS);
    let deadline = Instant::now() + WAIT;
    wait_while_running(archiver, log, deadline, || {
        let state = read_state(root).map_err(|e| e.to_string())?;
        if (0..PARTITIONS as i32)
            .all(|p| state.offsets.get(&p).copied().unwrap_or(0) >= ends[p as usize])
        {
            Ok(())
        } else {
            Err(format!("archiver at {:?}, end {ends:?}", state.offsets))
        }
    });
}

/// `weft batch run` over `archive` into `views`; returns the version it
/// published.
pub(crate) fn batch_run(f: &Fixture, archive: &Path, views: &Path) -> u64 {
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["batch", "run", "--archive"])
        .arg(archive)
        .args(["--features", &f.spec_path, "--views"])
        .arg(views)
        .args(["--memory-mb", "512", "--partitions", "2"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "weft batch run failed:\n{text}");
    published_version(&text).unwrap_or_else(|| panic!("no version published:\n{text}"))
}

/// Waits until `weft serve` serves batch view `view` and its speed layer
/// has applied every record produced.
pub(crate) fn wait_served(serve: &mut ServeProcess, log: &Path, produced: &Produced, view: u64) {
    let all: Vec<i32> = (0..PARTITIONS as i32).collect();
    wait_served_partitions(serve, log, produced, view, &all);
}

/// [`wait_served`] for a shard: every record produced to `partitions` is
/// applied.
pub(crate) fn wait_served_partitions(
    serve: &mut ServeProcess,
    log: &Path,
    produced: &Produced,
    view: u64,
    partitions: &[i32],
) {
    let ends = produced.end_offsets(PARTITIONS);
    let http: SocketAddr = serve.http.strip_prefix("http://").unwrap().parse().unwrap();
    let deadline = Instant::now() + WAIT;
    wait_while_running(&mut serve.child, log, deadline, || {
        let (code, text) = http_get(http, "/metrics", &[]);
        if code != 200 {
            return Err(format!("/metrics: {code}"));
        }
        let version = metric(&text, "weft_serving_batch_view_version");
        if version.get("") != Some(&(view as f64)) {
            return Err(format!("serving view {version:?}, waiting for {view}"));
        }
        let positions = metric(&text, "weft_speed_position");
        let behind: Vec<(usize, f64, i64)> = ends
            .iter()
            .enumerate()
            .filter(|(p, _)| partitions.contains(&(*p as i32)))
            .map(|(p, end)| {
                let at = positions
                    .get(&format!("{{partition=\"{p}\"}}"))
                    .copied()
                    .unwrap_or(0.0);
                (p, at, *end)
            })
            .filter(|(_, at, end)| *at < *end as f64)
            .collect();
        if behind.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "speed layer behind (partition, at, end): {behind:?}"
            ))
        }
    });
}

/// The version in `weft batch run`'s "published v000001 to …" line.
pub(crate) fn published_version(output: &str) -> Option<u64> {
    let rest = &output[output.find("published v")? + "published v".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Events arriving late after `produced`: copies of every `step`th valid
/// event under a new id, `1 h ..= 10 d` older.
fn late_events(produced: &Produced, step: usize, rng: &mut impl Rng) -> Vec<Event> {
    produced
        .valid
        .iter()
        .step_by(step)
        .enumerate()
        .map(|(i, (_, _, e))| {
            let mut late = e.clone();
            late.event_id = format!("late-{i}-{}", e.event_id);
            late.ts_ms -= rng.random_range(3_600_000..=10 * DAY_MS);
            late
        })
        .collect()
}

/// Exact redeliveries (same id) of every `step`th valid event so far.
fn redeliveries(produced: &Produced, step: usize) -> Vec<Event> {
    produced
        .valid
        .iter()
        .skip(step / 2)
        .step_by(step)
        .map(|(_, _, e)| e.clone())
        .collect()
}

/// Produces `chunks` chunks of `chunk` generated events, pausing `pause`
/// between them.
fn produce_slowly(topic: &mut Topic, chunks: usize, chunk: usize, pause: Duration) {
    for _ in 0..chunks {
        topic.produce(Vec::new(), chunk, 0.005);
        std::thread::sleep(pause);
    }
}

#[test]
fn served_equals_the_reference_around_the_whole_loop() {
    let f = fixture();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // Events of the last 3 weeks: the 7- and 30-day windows hold some at
    // query time (the wall clock), and some leave them as days pass.
    let mut config = GenConfig::new(91, 150_000, 4, USERS);
    config.start_ms = now - 21 * DAY_MS;
    config.days = 20;
    config.late_rate = 0.02;
    config.duplicate_rate = 0.01;
    let mut topic = f.topic(config, 17);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(23);

    // Stage 1: no batch view yet.
    topic.produce(Vec::new(), 40_000, 0.005);
    let names = tenant_names(&topic.produced);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let state = f.dir.path().join("serve");
    let views = f.dir.path().join("views");
    let serve_config = write_serve_config(&f, &state, views.to_str(), &names);
    std::fs::create_dir_all(f.dir.path().join("views")).unwrap();
    let serve_log = f.dir.path().join("serve.log");
    let archive = f.dir.path().join("archive");
    let archive_log = f.dir.path().join("archive.log");
    let mut l = Loop {
        f: &f,
        serve: start_serve(&serve_config, &serve_log),
        serve_config,
        serve_log,
        archiver: start_archiver(&f, &archive, &archive_log),
        archive,
        archive_log,
        views: f.dir.path().join("views"),
    };
    l.wait_served(&topic.produced, 0);
    l.assert_every_user(&topic.produced, 0);

    // Stage 2: the first view, from whatever the archiver has committed by
    // then (events keep arriving meanwhile).
    l.wait_archived(&topic.produced);
    topic.produce(Vec::new(), 10_000, 0.005);
    assert_eq!(l.batch_run(), 1);
    l.wait_served(&topic.produced, 1);
    l.assert_every_user(&topic.produced, 1);

    // Stage 3: late events and redeliveries of events the view holds.
    let late = late_events(&topic.produced, 97, &mut rng);
    let again = redeliveries(&topic.produced, 89);
    let (late_n, again_n) = (late.len(), again.len());
    topic.produce(late.into_iter().chain(again).collect(), 30_000, 0.005);
    assert!(
        late_n >= 400 && again_n >= 400,
        "{late_n} late, {again_n} again"
    );
    l.wait_served(&topic.produced, 1);
    l.assert_every_user(&topic.produced, 1);

    // Stage 4: a second view.
    l.wait_archived(&topic.produced);
    assert_eq!(l.batch_run(), 2);
    l.wait_served(&topic.produced, 2);
    l.assert_every_user(&topic.produced, 2);

    // Stage 5: kill -9 serving and the archiver at random moments while
    // events (late ones and redeliveries included) keep coming.
    let late = late_events(&topic.produced, 211, &mut rng);
    let again = redeliveries(&topic.produced, 199);
    std::thread::scope(|s| {
        let topic = &mut topic;
        let producer = s.spawn(move || {
            topic.produce(late.into_iter().chain(again).collect(), 0, 0.005);
            produce_slowly(topic, 60, 500, Duration::from_millis(100));
        });
        for _ in 0..KILLS {
            std::thread::sleep(Duration::from_millis(rng.random_range(300..1_500)));
            l.kill_serve();
            l.restart_serve();
            std::thread::sleep(Duration::from_millis(rng.random_range(300..1_500)));
            l.kill_archiver();
            l.archiver = start_archiver(&f, &l.archive, &l.archive_log);
        }
        producer.join().unwrap();
    });
    l.wait_served(&topic.produced, 2);
    l.assert_every_user(&topic.produced, 2);

    // Stage 6: a third view from the archive the killed archivers wrote,
    // published while the archiver is down and more events arrive, so its
    // boundary is behind the speed layer; serving is killed while it builds
    // the view's generation (replaying the tail after the boundary).
    l.wait_archived(&topic.produced);
    l.kill_archiver();
    topic.produce(Vec::new(), usize::MAX, 0.005);
    let builds = log_text(&l.serve_log)
        .matches("building a generation")
        .count();
    assert_eq!(l.batch_run(), 3);
    crate::common::wait_for_start(
        &l.serve_log,
        "building a generation",
        builds,
        Instant::now() + WAIT,
    );
    l.kill_serve();
    l.restart_serve();
    l.wait_served(&topic.produced, 3);
    l.assert_every_user(&topic.produced, 3);

    // The restarted archiver completes the archive: every valid record
    // exactly once, whatever the kills interrupted.
    l.archiver = start_archiver(&f, &l.archive, &l.archive_log);
    l.wait_archived(&topic.produced);
    crate::archive_crash::assert_archive_is_the_topic(&l.archive, &topic.produced);
    stop_cleanly(l.serve.child, &l.serve_log);
    stop_cleanly(l.archiver, &l.archive_log);
}
