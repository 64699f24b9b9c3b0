//! A generation switch against a live broker: the speed layer consumes,
//! a batch view is published with a boundary behind the speed layer, the
//! speed layer builds the view's generation by replaying the tail, switches
//! to it, and consumes more events (duplicates of events the view holds
//! included). Then for every user: view ⊕ ready generation == reference.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use weft_batch::{BatchConfig, JobProgress};
use weft_core::archive::{ARCHIVER_STATE_DIR, ARCHIVER_STATE_FILE, ArchiveWriter, ArchiverState};
use weft_core::eval::compare_profiles;
use weft_core::generator::{GenConfig, Generator, Sequenced, Sequencer};
use weft_core::spec::DAY_MS;
use weft_core::{Event, FeatureSpec, reference};
use weft_speed::broker::LocalBroker;
use weft_speed::consumer::{NewGeneration, SpeedConfig, SpeedMetrics, run};
use weft_speed::kafka::{EventProducer, Produced, produce_generated};
use weft_speed::store::SpeedStore;
use weft_view::{BlockCache, OpenedView, ViewStore};

pub(crate) const PARTITIONS: u32 = 8;

pub(crate) fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn consumed_everything(metrics: &SpeedMetrics, produced: &Produced) -> bool {
    let positions = metrics.positions();
    produced
        .end_offsets(PARTITIONS)
        .iter()
        .enumerate()
        .all(|(p, end)| positions.get(&(p as i32)).copied().unwrap_or(0) >= *end)
}

/// A live broker with the `events` topic, a runtime, and the example spec.
pub(crate) struct Fixture {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) broker: LocalBroker,
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) spec_path: String,
    pub(crate) text: String,
    pub(crate) spec: Arc<FeatureSpec>,
}

pub(crate) fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (broker, rt) = crate::common::broker_with_events(dir.path(), PARTITIONS);
    let spec_path = crate::common::example_spec_path();
    let text = std::fs::read_to_string(&spec_path).unwrap();
    let spec = Arc::new(FeatureSpec::parse(&text).unwrap());
    Fixture {
        dir,
        broker,
        rt,
        spec_path,
        text,
        spec,
    }
}

/// Generated events produced to `events` as a test goes.
pub(crate) struct Topic {
    events: Generator,
    producer: EventProducer,
    seq: Sequencer,
    rng: rand_chacha::ChaCha8Rng,
    pub(crate) produced: Produced,
}

impl Topic {
    /// What an archiver that lags `behind` offsets per partition has
    /// committed: next offset per partition.
    pub(crate) fn committed_behind(&self, behind: i64) -> HashMap<i32, i64> {
        self.produced
            .end_offsets(PARTITIONS)
            .iter()
            .enumerate()
            .map(|(p, end)| (p as i32, (end - behind).max(0)))
            .collect()
    }

    /// The newest event time produced so far.
    pub(crate) fn latest_ts(&self) -> i64 {
        self.produced
            .valid
            .iter()
            .map(|(_, _, e)| e.ts_ms)
            .max()
            .unwrap()
    }

    /// Produces `first`, then up to `take` more generated events, with
    /// malformed records mixed in at `malformed_rate`.
    pub(crate) fn produce(&mut self, first: Vec<Event>, take: usize, malformed_rate: f64) {
        let events = first.into_iter().chain(self.events.by_ref().take(take));
        produce_generated(
            &mut self.producer,
            &mut self.seq,
            events,
            malformed_rate,
            &mut self.rng,
            &mut self.produced,
        )
        .unwrap();
    }
}

impl Fixture {
    pub(crate) fn topic(&self, config: GenConfig, seed: u64) -> Topic {
        Topic {
            events: Generator::new(config).unwrap(),
            producer: EventProducer::new(self.broker.bootstrap(), "events").unwrap(),
            seq: Sequencer::new(PARTITIONS),
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
            produced: Produced::default(),
        }
    }

    /// Writes the archive as the archiver would have, having committed the
    /// offsets below `committed` (valid events only; malformed records
    /// below it are no gaps), runs the batch job and returns the view store.
    pub(crate) fn publish_view(
        &self,
        produced: &Produced,
        committed: &HashMap<i32, i64>,
    ) -> (std::path::PathBuf, weft_batch::JobSummary) {
        let archive = self.dir.path().join("archive");
        let mut writer = ArchiveWriter::new(&archive, "part", 20_000);
        for (p, o, e) in &produced.valid {
            if *o < committed[p] {
                writer
                    .push(&Sequenced {
                        partition: *p,
                        offset: *o,
                        event: e.clone(),
                        ingest_ms: e.ts_ms,
                    })
                    .unwrap();
            }
        }
        writer.finish().unwrap();
        std::fs::create_dir_all(archive.join(ARCHIVER_STATE_DIR)).unwrap();
        let state = ArchiverState {
            flush: 1,
            offsets: committed.clone(),
        };
        std::fs::write(
            archive.join(ARCHIVER_STATE_DIR).join(ARCHIVER_STATE_FILE),
            serde_json::to_vec(&state).unwrap(),
        )
        .unwrap();
        self.run_batch(&archive)
    }

    /// Runs the batch job over `archive` into the view store `views`.
    pub(crate) fn run_batch(
        &self,
        archive: &std::path::Path,
    ) -> (std::path::PathBuf, weft_batch::JobSummary) {
        let views = self.dir.path().join("views");
        let batch = BatchConfig::new(
            archive.to_str().unwrap(),
            views.to_str().unwrap(),
            self.spec.clone(),
            self.text.clone(),
        );
        let summary = self
            .rt
            .block_on(weft_batch::run(&batch, Arc::new(JobProgress::default())))
            .unwrap();
        (views, summary)
    }

    /// Asserts view ⊕ generation `g` == reference for every user at `times`.
    pub(crate) fn assert_view_plus_generation(
        &self,
        views: &std::path::Path,
        store: &SpeedStore,
        g: u32,
        produced: &Produced,
        times: &[i64],
    ) {
        let work = tempfile::tempdir().unwrap();
        let view = self
            .rt
            .block_on(OpenedView::open(
                &ViewStore::open(views.to_str().unwrap(), &Default::default()).unwrap(),
                None,
                work.path(),
                true,
                &BlockCache::default(),
            ))
            .unwrap();
        let by_user = produced.by_user();
        for &t in times {
            for ((tenant, user), events) in &by_user {
                // Read as a request reads: only what the windows cover at t.
                let mut partials = view.user_partials(tenant, user, Some(t)).unwrap();
                partials.extend(store.user_partials(g, tenant, user, Some(t)).unwrap());
                let expected = reference::evaluate(&self.spec, events, t);
                if let Err(d) = compare_profiles(&self.spec, &partials.evaluate(t), &expected) {
                    panic!("{tenant}/{user} at {t}: {d}");
                }
            }
        }
        assert!(by_user.len() > 1_000, "{} users checked", by_user.len());
    }
}

#[test]
fn view_plus_new_generation_equals_the_reference_for_every_user() {
    let f = fixture();
    let (dir, broker, spec) = (&f.dir, &f.broker, &f.spec);
    let mut config = SpeedConfig::new(broker.bootstrap(), dir.path().join("speed"));
    config.dedup_horizon = Duration::from_secs(24 * 3_600);
    let metrics = Arc::new(SpeedMetrics::default());
    let shutdown = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let speed = {
        let (config, spec, metrics, shutdown) = (
            config.clone(),
            spec.clone(),
            metrics.clone(),
            shutdown.clone(),
        );
        std::thread::spawn(move || run(&config, spec, metrics, shutdown, Some(rx)))
    };

    // Phase 1: 60k events (0.5 % malformed records in between).
    let mut topic = f.topic(GenConfig::new(41, 90_000, 4, 4_000), 9);
    topic.produce(Vec::new(), 60_000, 0.005);

    wait_for("phase 1", Duration::from_secs(120), || {
        consumed_everything(&metrics, &topic.produced)
    });
    assert_eq!(metrics.ready_generation.load(Ordering::Relaxed), 0);

    // The archiver has committed all but the last ~400 offsets of each
    // partition; the batch view's boundary is therefore behind the speed
    // layer, and malformed records below it are no gaps.
    let committed = topic.committed_behind(400);
    let (views, summary) = f.publish_view(&topic.produced, &committed);
    assert_eq!(summary.version, 1);
    for (p, next) in &committed {
        assert_eq!(summary.manifest.boundary_of(*p), next - 1);
    }

    // The speed layer builds generation 1 from O_p + 1 and switches.
    tx.send(NewGeneration {
        view: 1,
        boundary: summary
            .manifest
            .boundary
            .offsets
            .clone()
            .into_iter()
            .collect(),
    })
    .unwrap();
    wait_for("generation 1", Duration::from_secs(120), || {
        metrics.ready_generation.load(Ordering::Relaxed) == 1
    });

    // Phase 2: redeliveries of 300 events the view holds, then 30k more.
    let again: Vec<Event> = topic
        .produced
        .valid
        .iter()
        .filter(|(p, o, _)| *o < committed[p])
        .step_by(97)
        .take(300)
        .map(|(_, _, e)| e.clone())
        .collect();
    topic.produce(again, usize::MAX, 0.005);
    wait_for("phase 2", Duration::from_secs(120), || {
        consumed_everything(&metrics, &topic.produced)
    });
    shutdown.store(true, Ordering::Relaxed);
    speed.join().unwrap().unwrap();

    let store = SpeedStore::open(&config.data_dir, spec.clone(), false).unwrap();
    assert_eq!(store.ready_generation().unwrap(), 1);
    assert_eq!(store.building_generation().unwrap(), None);
    assert!(
        store.partial_count(0).unwrap() > 0,
        "generation 0 stays, frozen, until the next switch (readers in flight finish on it)"
    );
    // Redeliveries across the boundary happened (first copy in the view,
    // second after the boundary), so dedup seeding was exercised.
    let mut first: HashMap<(&str, &str, &str), (i32, i64)> = HashMap::new();
    let mut across = 0;
    for (p, o, e) in &topic.produced.valid {
        match first.get(&(e.tenant.as_str(), e.user_id.as_str(), e.event_id.as_str())) {
            Some((fp, fo)) if *fo < committed[fp] && *o >= committed[p] => across += 1,
            Some(_) => {}
            None => {
                first.insert((&e.tenant, &e.user_id, &e.event_id), (*p, *o));
            }
        }
    }
    assert!(across >= 300, "{across} redeliveries across the boundary");

    let end = topic.latest_ts();
    f.assert_view_plus_generation(
        &views,
        &store,
        1,
        &topic.produced,
        &[end, end - 5 * DAY_MS, end + 40 * DAY_MS],
    );
}

/// `weft speed --views` as an operator runs it: a view is published, the
/// process builds and switches to its generation by itself, and keeps
/// consuming; view ⊕ generation 1 then equals the reference for every user.
#[test]
fn weft_speed_follows_a_view_store() {
    use crate::common::{log_text, stop_cleanly, wait_for_start, wait_while_running};
    use rdkafka::consumer::BaseConsumer;

    let f = fixture();
    let (dir, broker, spec_path, spec) = (&f.dir, &f.broker, f.spec_path.as_str(), &f.spec);

    let mut topic = f.topic(GenConfig::new(43, 30_000, 3, 2_000), 4);
    topic.produce(Vec::new(), 20_000, 0.0);

    // v1 holds everything topic.produced so far (the archiver's record says so).
    let ends = topic.produced.end_offsets(PARTITIONS);
    let committed = ends
        .iter()
        .enumerate()
        .map(|(p, e)| (p as i32, *e))
        .collect();
    let (views, _) = f.publish_view(&topic.produced, &committed);

    let data = dir.path().join("speed");
    let log = dir.path().join("speed.log");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args([
            "speed",
            "--bootstrap",
            broker.bootstrap(),
            "--spec",
            spec_path,
            "--views",
        ])
        .arg(&views)
        .args(["--views-poll-secs", "1", "--data-dir"])
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut child = child;
    let deadline = Instant::now() + Duration::from_secs(120);
    wait_for_start(&log, "generation ready", 0, deadline);

    topic.produce(Vec::new(), usize::MAX, 0.0);
    let watcher: BaseConsumer = weft_speed::kafka::base_config(broker.bootstrap())
        .set("group.id", "weft-speed")
        .create()
        .unwrap();
    let ends = topic.produced.end_offsets(PARTITIONS);
    wait_while_running(&mut child, &log, deadline, || {
        crate::speed_crash::caught_up(&watcher, &ends)
    });
    stop_cleanly(child, &log);

    let store = SpeedStore::open(&data, spec.clone(), false).unwrap();
    assert_eq!(
        store.ready_generation().unwrap(),
        1,
        "log:\n{}",
        log_text(&log)
    );
    let end = topic.latest_ts();
    f.assert_view_plus_generation(&views, &store, 1, &topic.produced, &[end]);
}
