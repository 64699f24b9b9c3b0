//! `weft batch run --cluster`: the batch job on a Ballista cluster of real
//! processes on loopback (a `weft batch scheduler` and two
//! `weft batch executor`s), the archive and the view stores on S3 (moto's
//! server, `tests/python/s3_server.py`, as in `tests/s3.rs`), every process
//! reaching S3 through the `[s3]` section of one `--config` file:
//!
//! 1. the same job, local and on the cluster (4 partitions each), publishes
//!    the same view: equal manifests (counts, boundary, spec hash, file
//!    names, kinds and entry counts; not sizes or checksums, since SST
//!    properties carry timestamps) and every entry of every file
//!    byte-equal, keys and values, the recommendation file included; the
//!    fold ran on the executors, every task through the external sort
//!    (the executors' memory is smaller than a task's grouped rows) where
//!    the local run grouped every partition in memory; no `_staging/`
//!    object is left behind;
//! 2. `weft batch training-set`, local and on the cluster (the labels'
//!    keys staged in an S3 view store, both sides shuffled by user, every
//!    task sorting externally in the executors' small pools): the same
//!    file, every row and column in order, for label rows at spread and
//!    exact event times and of users the archive does not have (the
//!    local run equals the reference row for row: batch/tests/training.rs);
//! 3. one executor killed with -9 as soon as it starts a fold task: the job
//!    either completes (Ballista ran the task again elsewhere) with the
//!    view of a local run of the same partitions, or fails with a message
//!    and publishes nothing, leaving no object at all in its store; never a
//!    partial view;
//! 4. an unreachable scheduler: a failure naming its address, in bounded
//!    time, nothing published.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use object_store::ObjectStoreExt;
use weft_view::format::{FileKind, MANIFEST_FILE, SPEC_FILE, ViewFile};
use weft_view::{BlockCache, Location, Manifest, OpenedView, ViewStore, version_name};

use crate::common::log_text;
use crate::s3::S3Server;
use crate::whole_loop::published_version;

/// Events generated (duplicates included).
const EVENTS: u64 = 150_000;
/// Each executor's memory (its one task slot's pool): less than a fold
/// task's rows take grouped (about 37,500 rows of 4 partitions), so every
/// fold task on the cluster sorts its rows externally, spilling to disk,
/// while the local runs (512 MiB) group theirs in memory: the two paths
/// must publish the same view.
const EXECUTOR_MEMORY_MB: u32 = 2;
/// Longest any `weft` command may run before the test kills it and fails.
const WAIT: Duration = Duration::from_secs(300);
/// What an executor logs when a fold task begins (and ends).
const FOLD_STARTED: &str = "weft fold task started";
const FOLD_FINISHED: &str = "weft fold task finished";
/// And a training-set task.
const TRAINING_STARTED: &str = weft_batch::training::TASK_STARTED;
const TRAINING_FINISHED: &str = weft_batch::training::TASK_FINISHED;

/// A child process, killed (-9) and reaped on drop: a failing test leaves
/// no scheduler, executor or client behind. Its stderr (and stdout) go to
/// `log`.
struct Proc {
    child: crate::common::Reaped,
    log: PathBuf,
}

impl Proc {
    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// How often its log holds `needle`.
    fn logged(&self, needle: &str) -> usize {
        log_text(&self.log).matches(needle).count()
    }
}

/// The scheduler and the executors (killed on drop, in that order).
struct Cluster {
    scheduler: Proc,
    executors: Vec<Proc>,
    /// `df://127.0.0.1:PORT`, for `--cluster`.
    url: String,
}

impl Cluster {
    /// Fold tasks the executors logged as started and as finished.
    fn fold_tasks(&self) -> (usize, usize) {
        self.executors.iter().fold((0, 0), |(s, f), e| {
            (s + e.logged(FOLD_STARTED), f + e.logged(FOLD_FINISHED))
        })
    }

    /// How often the executors logged `needle`.
    fn logged(&self, needle: &str) -> usize {
        self.executors.iter().map(|e| e.logged(needle)).sum()
    }

    fn logs(&self) -> String {
        std::iter::once(&self.scheduler)
            .chain(&self.executors)
            .map(|p| format!("--- {}:\n{}", p.log.display(), log_text(&p.log)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A finished `weft` command.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Run {
    fn text(&self) -> String {
        format!(
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// What the stages share: the S3 server, one config file for every
/// process, the generated archive's location.
struct Env {
    dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    s3: S3Server,
    config: PathBuf,
    spec: String,
}

/// `n` distinct ports free on loopback a moment ago (each bound to port 0,
/// all held until every one is picked, then released for the process
/// that takes them).
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Waits until `process` accepts connections on `port`, failing if it exits
/// or a minute passes.
fn wait_listening(process: &mut Proc, port: u16, what: &str) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            process.alive(),
            "{what} exited before listening on {addr}; log:\n{}",
            log_text(&process.log)
        );
        assert!(
            Instant::now() < deadline,
            "{what} not listening on {addr} after 60 s; log:\n{}",
            log_text(&process.log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Env {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `weft --config CONFIG ARGS`, its stdout and stderr in `NAME.log`
    /// (RUST_LOG=info: the executors' task lines are info).
    fn spawn(&self, name: &str, args: &[&str]) -> Proc {
        let log = self.path(&format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_weft"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Proc {
            child: crate::common::Reaped(child),
            log,
        }
    }

    /// Starts `weft ARGS` as a client: stdout and stderr apart, in
    /// `NAME.out` and `NAME.err`.
    fn start(&self, name: &str, args: &[&str]) -> (Proc, Instant) {
        let err = self.path(&format!("{name}.err"));
        let child = Command::new(env!("CARGO_BIN_EXE_weft"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(self.path(&format!("{name}.out"))).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        (
            Proc {
                child: crate::common::Reaped(child),
                log: err,
            },
            Instant::now(),
        )
    }

    /// Waits for a client [`Env::start`]ed, calling `tick` every 20 ms
    /// while it runs; kills it and fails after [`WAIT`].
    fn finish(
        &self,
        name: &str,
        (mut client, started): (Proc, Instant),
        mut tick: impl FnMut(),
    ) -> Run {
        let status = loop {
            tick();
            if let Some(status) = client.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < WAIT,
                "weft ({name}) still running after {WAIT:?}; stderr:\n{}",
                log_text(&client.log)
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Run {
            status,
            stdout: log_text(&self.path(&format!("{name}.out"))),
            stderr: log_text(&client.log),
            took: started.elapsed(),
        }
    }

    fn run(&self, name: &str, args: &[&str]) -> Run {
        self.finish(name, self.start(name, args), || {})
    }

    /// `weft batch run` from the S3 archive into `s3://weft/VIEWS` with
    /// `partitions`, on `cluster` if given.
    fn batch_args(&self, views: &str, partitions: u32, cluster: Option<&str>) -> Vec<String> {
        let mut args: Vec<String> = [
            "batch",
            "run",
            "--archive",
            &self.s3.url("archive"),
            "--views",
            &self.s3.url(views),
            "--features",
            &self.spec,
            "--memory-mb",
            "512",
            "--partitions",
            &partitions.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(url) = cluster {
            args.extend(["--cluster".to_string(), url.to_string()]);
        }
        args
    }

    /// A `weft batch run` that must publish view 1 of `views`.
    fn publish(&self, name: &str, views: &str, partitions: u32, cluster: Option<&str>) -> Run {
        let args = self.batch_args(views, partitions, cluster);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = self.run(name, &args);
        assert!(
            run.status.success(),
            "weft batch run ({name}) failed:\n{}",
            run.text()
        );
        assert_eq!(published_version(&run.stdout), Some(1), "{}", run.text());
        println!(
            "{name}: {:.1} s: {}",
            run.took.as_secs_f64(),
            run.stdout.trim()
        );
        run
    }

    fn location(&self, prefix: &str) -> Location {
        Location::parse(&self.s3.url(prefix), false, &self.s3.section()).unwrap()
    }

    /// Every object under `prefix` of the bucket, relative to it, sorted.
    fn objects(&self, prefix: &str) -> Vec<String> {
        self.s3.list(&self.rt, prefix)
    }

    /// Fails naming them if any object of the bucket is a cluster job's
    /// staged file.
    fn assert_no_staging_left(&self, when: &str) {
        let staged: Vec<String> = self
            .objects("")
            .into_iter()
            .filter(|o| o.contains("_staging/"))
            .collect();
        assert!(staged.is_empty(), "{when}: staged objects left: {staged:?}");
    }

    /// Uploads the local directory `from` under `prefix`, keeping relative
    /// paths; returns the number of files.
    fn upload(&self, from: &Path, prefix: &str) -> usize {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push(path);
                }
            }
        }
        let mut files = Vec::new();
        walk(from, &mut files);
        let loc = self.location(prefix);
        for path in &files {
            let rel = path.strip_prefix(from).unwrap().to_str().unwrap();
            let bytes = std::fs::read(path).unwrap();
            self.rt
                .block_on(loc.store.put(&loc.child(rel), bytes.into()))
                .unwrap();
        }
        files.len()
    }

    /// A training set of labels made from the local copy of the archive,
    /// from the S3 archive in this process and on `cluster` (4 partitions
    /// each): the same file; the tasks ran on the executors.
    fn assert_same_training_set(&self, archive: &Path, cluster: &Cluster) {
        let script = format!(
            "{}/tests/python/training_labels.py",
            crate::common::repo_root()
        );
        let labels = self.path("labels.parquet");
        let made = crate::common::python(&[
            &script,
            "make",
            archive.to_str().unwrap(),
            labels.to_str().unwrap(),
        ]);
        println!("training set: {}", made.trim());
        let archive_url = self.s3.url("archive");
        let views_url = self.s3.url("views-training");
        let training = |name: &str, cluster: Option<&str>| {
            let out = self.path(&format!("{name}.parquet"));
            let mut args = vec![
                "batch",
                "training-set",
                "--archive",
                &archive_url,
                "--features",
                &self.spec,
                "--labels",
                labels.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--memory-mb",
                "512",
                "--partitions",
                "4",
            ];
            if let Some(url) = cluster {
                args.extend(["--cluster", url, "--views", &views_url]);
            }
            let run = self.run(name, &args);
            assert!(
                run.status.success(),
                "weft batch training-set ({name}) failed:\n{}",
                run.text()
            );
            println!(
                "{name}: {:.1} s: {}",
                run.took.as_secs_f64(),
                run.stdout.trim()
            );
            (out, run)
        };
        let (local, _) = training("training-local", None);
        let started = cluster.logged(TRAINING_STARTED);
        let (remote, run) = training("training-cluster", Some(cluster.url.as_str()));
        assert!(
            run.stdout.contains("(4 training tasks)")
                && run
                    .stdout
                    .contains("rows grouped in memory in 0 of 4 partitions")
                && cluster.logged(TRAINING_FINISHED) >= started + 4,
            "the 4 training tasks ran on the executors, each sorting externally:\n{}\nlogs:\n{}",
            run.text(),
            cluster.logs()
        );
        let same = crate::common::python(&[
            &script,
            "same",
            local.to_str().unwrap(),
            remote.to_str().unwrap(),
        ]);
        println!("training set: {}", same.trim());
        self.assert_no_staging_left("after the training set on the cluster");
    }

    /// The current view of `s3://weft/VIEWS` and its manifest.
    fn manifest(&self, views: &str) -> Manifest {
        let store = ViewStore::open(&self.s3.url(views), &self.s3.section()).unwrap();
        let v = self
            .rt
            .block_on(store.current())
            .unwrap()
            .unwrap_or_else(|| panic!("{views}: no current view"));
        self.rt.block_on(store.manifest(v)).unwrap()
    }

    /// Every entry (key, value) of one file of a view on S3, in order.
    /// There is no public reader of one SST file, so this builds a local
    /// store holding a copy of the view with only that file (its manifest
    /// listing only it, checksum verified) and reads the whole of it
    /// through [`OpenedView::db`].
    fn file_entries(
        &self,
        views: &str,
        m: &Manifest,
        file: &ViewFile,
        cache: &BlockCache,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        let name = version_name(m.version);
        let root = self.path(&format!("read/{views}/{}", file.name));
        let dir = root.join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let loc = self.location(views);
        for f in [file.name.as_str(), SPEC_FILE] {
            let bytes = self
                .rt
                .block_on(async {
                    loc.store
                        .get(&loc.child(&format!("{name}/{f}")))
                        .await?
                        .bytes()
                        .await
                })
                .unwrap_or_else(|e| panic!("{views}/{name}/{f}: {e}"));
            std::fs::write(dir.join(f), bytes).unwrap();
        }
        let mut single = m.clone();
        single.files = vec![file.clone()];
        std::fs::write(
            dir.join(MANIFEST_FILE),
            serde_json::to_vec_pretty(&single).unwrap(),
        )
        .unwrap();
        let store = ViewStore::open(root.to_str().unwrap(), &Default::default()).unwrap();
        let view = self
            .rt
            .block_on(OpenedView::open(
                &store,
                Some(m.version),
                &root.join("open"),
                true,
                cache,
            ))
            .unwrap_or_else(|e| panic!("{views}/{name}/{}: {e}", file.name));
        let mut entries = Vec::new();
        let mut it = view.db().raw_iterator();
        it.seek_to_first();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            entries.push((k.to_vec(), v.to_vec()));
            it.next();
        }
        it.status().unwrap();
        entries
    }

    /// The views current in `a` and `b` are the same view: manifests equal
    /// but for when they were made (and so the files' sizes and checksums:
    /// SST properties hold a creation time), and every entry of every file
    /// byte-equal.
    fn assert_same_view(&self, a: &str, b: &str) {
        let (ma, mb) = (self.manifest(a), self.manifest(b));
        assert_eq!(ma.format, mb.format, "format: {a} vs {b}");
        assert_eq!(ma.counts, mb.counts, "counts: {a} vs {b}");
        assert_eq!(ma.boundary, mb.boundary, "boundary: {a} vs {b}");
        assert_eq!(ma.spec_hash, mb.spec_hash, "spec hash: {a} vs {b}");
        assert_eq!(ma.archive, mb.archive, "archive: {a} vs {b}");
        assert_eq!(ma.max_event_ms, mb.max_event_ms, "max event: {a} vs {b}");
        assert_eq!(ma.recs, mb.recs, "recs config: {a} vs {b}");
        let files = |m: &Manifest| {
            let mut f: Vec<(String, FileKind, u64)> = m
                .files
                .iter()
                .map(|f| (f.name.clone(), f.kind, f.entries))
                .collect();
            f.sort_by(|x, y| x.0.cmp(&y.0));
            f
        };
        assert_eq!(
            files(&ma),
            files(&mb),
            "files (name, kind, entries): {a} vs {b}"
        );
        assert!(
            ma.files.iter().any(|f| f.kind == FileKind::Recs),
            "{a}: no recommendation file: {:?}",
            ma.files
        );
        let cache = BlockCache::new(64 << 20);
        let mut user_entries = 0u64;
        for fa in &ma.files {
            let fb = mb.files.iter().find(|f| f.name == fa.name).unwrap();
            let (ea, eb) = (
                self.file_entries(a, &ma, fa, &cache),
                self.file_entries(b, &mb, fb, &cache),
            );
            // A partials file has one entry a user (its `entries` counts
            // partials); the recs file one a list.
            assert!(!ea.is_empty(), "{a}/{}: no entries read", fa.name);
            if fa.kind == FileKind::Partials {
                user_entries += ea.len() as u64;
            }
            if fa.kind == FileKind::Recs {
                assert_eq!(
                    ea.len() as u64,
                    fa.entries,
                    "{a}/{}: entries read vs manifest",
                    fa.name
                );
            }
            assert_eq!(ea.len(), eb.len(), "{}: entries in {a} vs {b}", fa.name);
            if let Some(i) = (0..ea.len()).find(|&i| ea[i] != eb[i]) {
                /// The first 64 bytes in hex.
                fn hex(bytes: &[u8]) -> String {
                    bytes.iter().take(64).map(|x| format!("{x:02x}")).collect()
                }
                panic!(
                    "{}: entry {i} of {} differs:\n{a}: key {} ({} bytes), value {} bytes, {}\n{b}: key {} ({} bytes), value {} bytes, {}",
                    fa.name,
                    ea.len(),
                    hex(&ea[i].0),
                    ea[i].0.len(),
                    ea[i].1.len(),
                    hex(&ea[i].1),
                    hex(&eb[i].0),
                    eb[i].0.len(),
                    eb[i].1.len(),
                    hex(&eb[i].1),
                );
            }
        }
        assert_eq!(user_entries, ma.counts.users, "{a}: user entries vs users");
        println!(
            "{a} == {b}: {} files, {} users, {} events",
            ma.files.len(),
            ma.counts.users,
            ma.counts.events
        );
    }

    /// Nothing was published to `s3://weft/VIEWS`: `weft batch list` says
    /// so, and the store holds no object at all.
    fn assert_nothing_published(&self, views: &str) {
        let list = self.run(
            &format!("list-{views}"),
            &["batch", "list", "--views", &self.s3.url(views)],
        );
        assert!(
            list.status.success() && list.stdout.contains("no views in"),
            "weft batch list {views}:\n{}",
            list.text()
        );
        let objects = self.objects(views);
        assert!(
            objects.is_empty(),
            "{views}: objects left by a failed run: {objects:?}"
        );
    }

    /// A scheduler (executors declared lost after 5 s without a heartbeat)
    /// and two executors (one task slot each, a heartbeat every second,
    /// each its own work directory), all on loopback.
    fn start_cluster(&self) -> Cluster {
        let ports = free_ports(5);
        let scheduler_addr = format!("127.0.0.1:{}", ports[0]);
        let url = format!("df://{scheduler_addr}");
        let mut scheduler = self.spawn(
            "scheduler",
            &[
                "batch",
                "scheduler",
                "--bind",
                &scheduler_addr,
                "--executor-timeout-secs",
                "5",
            ],
        );
        wait_listening(&mut scheduler, ports[0], "weft batch scheduler");
        let mut executors = Vec::new();
        for i in 0..2 {
            let work = self.path(&format!("executor-{i}"));
            std::fs::create_dir_all(&work).unwrap();
            let (flight, grpc) = (ports[1 + 2 * i].to_string(), ports[2 + 2 * i].to_string());
            let mut executor = self.spawn(
                &format!("executor-{i}"),
                &[
                    "batch",
                    "executor",
                    "--scheduler",
                    &url,
                    "--host",
                    "127.0.0.1",
                    "--flight-port",
                    &flight,
                    "--grpc-port",
                    &grpc,
                    "--work-dir",
                    work.to_str().unwrap(),
                    "--vcores",
                    "1",
                    "--memory-mb",
                    &EXECUTOR_MEMORY_MB.to_string(),
                    "--heartbeat-secs",
                    "1",
                ],
            );
            wait_listening(
                &mut executor,
                ports[1 + 2 * i],
                &format!("weft batch executor {i} (Flight)"),
            );
            executors.push(executor);
        }
        Cluster {
            scheduler,
            executors,
            url,
        }
    }
}

/// The sort spills a `weft batch run` reports ("... sort spills N (B
/// bytes)").
fn sort_spills(stdout: &str) -> Option<u64> {
    let (_, after) = stdout.split_once("sort spills ")?;
    after.split_whitespace().next()?.parse().ok()
}

#[test]
fn cluster_batch_equals_local_and_survives_a_lost_executor() {
    let dir = tempfile::tempdir().unwrap();
    let rt = weft_core::runtime::multi_thread("weft-test", 2).unwrap();
    let s3 = S3Server::start(&dir.path().join("s3.log"));
    let config = dir.path().join("weft.toml");
    std::fs::write(&config, s3.toml()).unwrap();
    let env = Env {
        spec: crate::common::example_spec_path(),
        dir,
        rt,
        s3,
        config,
    };

    // The archive: generated locally (several tenants, duplicates and
    // late events), uploaded to the bucket.
    let archive = env.path("archive");
    let gen_run = env.run(
        "gen",
        &[
            "gen",
            "--events",
            &EVENTS.to_string(),
            "--seed",
            "24",
            "--tenants",
            "3",
            "--users",
            "6000",
            "--duplicate-rate",
            "0.01",
            "--rows-per-file",
            "20000",
            "--quiet",
            "--parquet",
            archive.to_str().unwrap(),
        ],
    );
    assert!(gen_run.status.success(), "weft gen:\n{}", gen_run.text());
    let files = env.upload(&archive, "archive");
    println!(
        "archive: {files} files uploaded to {}",
        env.s3.url("archive")
    );

    let mut cluster = env.start_cluster();

    // 1. Local and cluster runs publish the same view.
    let local_run = env.publish("local", "views-local", 4, None);
    let local = env.manifest("views-local");
    assert!(
        local.counts.rows == EVENTS && local.counts.duplicates > 0 && local.counts.users > 0,
        "the local view covers the archive: {:?}",
        local.counts
    );
    let before = cluster.fold_tasks();
    let cluster_run = env.publish("cluster", "views-cluster", 4, Some(cluster.url.as_str()));
    let after = cluster.fold_tasks();
    assert!(
        after.0 - before.0 >= 4 && after.1 - before.1 >= 4,
        "the 4 fold tasks ran on the executors: (started, finished) {before:?} -> {after:?}; logs:\n{}",
        cluster.logs()
    );
    assert!(
        local_run
            .stdout
            .contains("rows grouped in memory in 4 of 4 partitions"),
        "the local run grouped every partition in memory:\n{}",
        local_run.text()
    );
    let spills = sort_spills(&cluster_run.stdout);
    assert!(
        cluster_run
            .stdout
            .contains("rows grouped in memory in 0 of 4 partitions")
            && spills.is_some_and(|n| n >= 4),
        "every fold task on the {EXECUTOR_MEMORY_MB} MiB executors sorted externally and spilled:\n{}",
        cluster_run.text()
    );
    env.assert_same_view("views-local", "views-cluster");
    env.assert_no_staging_left("after the cluster run");

    // 2. A training set, local and on the cluster, row for row the same.
    env.assert_same_training_set(&archive, &cluster);

    // 3. An executor killed with -9 as soon as it starts a fold task.
    let started: Vec<usize> = cluster
        .executors
        .iter()
        .map(|e| e.logged(FOLD_STARTED))
        .collect();
    let mut killed: Option<usize> = None;
    let args = env.batch_args("views-kill", 8, Some(cluster.url.as_str()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let client = env.start("kill", &args);
    let run = env.finish("kill", client, || {
        if killed.is_some() {
            return;
        }
        for (i, e) in cluster.executors.iter_mut().enumerate() {
            if e.logged(FOLD_STARTED) > started[i] {
                e.child.kill().unwrap(); // SIGKILL
                e.child.wait().unwrap();
                killed = Some(i);
                println!("kill: executor {i} killed with -9 after it started a fold task");
                return;
            }
        }
    });
    let Some(victim) = killed else {
        panic!(
            "no executor logged '{FOLD_STARTED}' while the run was going; run:\n{}\nlogs:\n{}",
            run.text(),
            cluster.logs()
        );
    };
    if run.status.success() {
        println!(
            "kill: outcome (a): the job completed without executor {victim} in {:.1} s: {}",
            run.took.as_secs_f64(),
            run.stdout.trim()
        );
        assert_eq!(published_version(&run.stdout), Some(1), "{}", run.text());
        env.publish("local-8", "views-local-8", 8, None);
        env.assert_same_view("views-local-8", "views-kill");
    } else {
        println!(
            "kill: outcome (b): the job failed in {:.1} s ({}); stderr:\n{}",
            run.took.as_secs_f64(),
            run.status,
            run.stderr
        );
        assert!(
            !run.stderr.trim().is_empty()
                && !run.stderr.contains("panicked")
                && !run.stdout.contains("published v"),
            "a failed run says why, without a panic, and publishes nothing:\n{}",
            run.text()
        );
        // A task still running on the surviving executor when the job
        // failed may finish after the client cleaned up: give it the time
        // to (its files must not be left behind either).
        let survivor = &cluster.executors[1 - victim];
        let deadline = Instant::now() + Duration::from_secs(30);
        while survivor.logged(FOLD_STARTED) > survivor.logged(FOLD_FINISHED)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        env.assert_nothing_published("views-kill");
    }
    env.assert_no_staging_left("after the run that lost an executor");

    // 4. An unreachable scheduler: a clear error, nothing published.
    let closed = free_ports(1)[0];
    let dead = format!("127.0.0.1:{closed}");
    let dead_url = format!("df://{dead}");
    let args = env.batch_args("views-dead", 4, Some(dead_url.as_str()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = env.run("dead", &args);
    println!(
        "dead scheduler: {} in {:.1} s; stderr:\n{}",
        run.status,
        run.took.as_secs_f64(),
        run.stderr
    );
    assert!(
        !run.status.success() && run.stderr.contains(&dead),
        "a run against no scheduler fails naming {dead}:\n{}",
        run.text()
    );
    assert!(
        run.took < Duration::from_secs(60),
        "took {:?} to give up on {dead}:\n{}",
        run.took,
        run.text()
    );
    env.assert_nothing_published("views-dead");
    env.assert_no_staging_left("at the end");

    // The surviving processes are still up (none crashed along the way).
    let survivor_up = cluster.executors[1 - victim].alive();
    assert!(
        cluster.scheduler.alive() && survivor_up,
        "the scheduler or executor {} exited; logs:\n{}",
        1 - victim,
        cluster.logs()
    );
    drop(cluster);
}
