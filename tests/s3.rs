//! The archive and the view store on S3, against a real S3-compatible
//! server on loopback (moto's, with request signing checked:
//! `tests/python/s3_server.py`, installed by `.ci/run`). One test, in
//! stages, every `weft` command a real process reaching S3 through the
//! `[s3]` section of its `--config` file:
//!
//! 1. `weft archive --root s3://…` is killed with -9 at random moments while
//!    it archives 100k events (1 % malformed) and restarted: after every
//!    kill each visible object reads whole, and at the end the archive's
//!    (partition, offset) set is the topic's valid records exactly, with
//!    nothing but data files and the commit record in the bucket;
//! 2. `weft batch run` from that archive to an S3 view store, and
//!    `weft serve` from the S3 store: GetProfile (and BatchGetProfiles) ==
//!    reference for every user;
//! 3. faults, each named and publishing nothing: a corrupt archive object,
//!    a view object gone missing, a wrong secret key (the bucket and the
//!    refused operation named), an unreachable endpoint (failing within the
//!    configured retry timeout); and the `AWS_*` variables alone reach the
//!    store when `[s3]` is absent.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use rand::SeedableRng;
use weft_config::{S3Section, Secret};
use weft_core::archive::{ArchiverState, read_archive};
use weft_core::generator::GenConfig;
use weft_core::spec::DAY_MS;
use weft_view::Location;

use crate::common::{kill_9_repeatedly, log_text, stop_cleanly, wait_while_running};
use crate::generation_switch::{Fixture, PARTITIONS, fixture};
use crate::serving::{assert_every_user, start_serve, tenant_names, write_serve_config};
use crate::whole_loop::{published_version, wait_served};

const EVENTS: usize = 100_000;
const KILLS: usize = 5;

/// A running `tests/python/s3_server.py`: one bucket and one key.
pub(crate) struct S3Server {
    _child: crate::common::Reaped,
    pub(crate) endpoint: String,
    pub(crate) bucket: String,
    access_key_id: String,
    secret_access_key: String,
}

impl S3Server {
    pub(crate) fn start(log: &Path) -> S3Server {
        let script = format!("{}/tests/python/s3_server.py", crate::common::repo_root());
        let mut child = Command::new("python3")
            .args([script.as_str(), "weft"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("python3 runs the S3 server");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let info: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!(
                "the S3 server did not start ({e}); is moto installed (tests/python/requirements.txt)? log:\n{}",
                log_text(log)
            )
        });
        let field = |k: &str| info[k].as_str().unwrap().to_string();
        S3Server {
            endpoint: field("endpoint"),
            bucket: field("bucket"),
            access_key_id: field("access_key_id"),
            secret_access_key: field("secret_access_key"),
            _child: crate::common::Reaped(child),
        }
    }

    pub(crate) fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// The `[s3]` section reaching this server.
    pub(crate) fn section(&self) -> S3Section {
        S3Section {
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            access_key_id: Some(Secret::new(&self.access_key_id)),
            secret_access_key: Some(Secret::new(&self.secret_access_key)),
            allow_http: true,
            retry_timeout_ms: 10_000,
            ..S3Section::default()
        }
    }

    /// The same as TOML, for a `--config` file.
    pub(crate) fn toml(&self) -> String {
        format!(
            "[s3]\nendpoint = \"{}\"\nregion = \"us-east-1\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\nallow_http = true\nretry_timeout_ms = 10000\n",
            self.endpoint, self.access_key_id, self.secret_access_key
        )
    }

    fn location(&self, prefix: &str) -> Location {
        Location::parse(&self.url(prefix), false, &self.section()).unwrap()
    }

    /// Every object under `prefix`, relative to it, sorted.
    pub(crate) fn list(&self, rt: &tokio::runtime::Runtime, prefix: &str) -> Vec<String> {
        let loc = self.location(prefix);
        let metas: Vec<_> = rt
            .block_on(loc.store.list(Some(loc.prefix())).try_collect())
            .unwrap();
        let mut names: Vec<String> = metas
            .iter()
            .map(|m| {
                let parts: Vec<_> = m.location.prefix_match(loc.prefix()).unwrap().collect();
                parts
                    .iter()
                    .map(|p| p.as_ref().to_string())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .collect();
        names.sort();
        names
    }

    /// Downloads every object under `prefix` into `to` (replacing it).
    fn mirror(&self, rt: &tokio::runtime::Runtime, prefix: &str, to: &Path) {
        let _ = std::fs::remove_dir_all(to);
        std::fs::create_dir_all(to).unwrap();
        let loc = self.location(prefix);
        for name in self.list(rt, prefix) {
            let bytes = rt
                .block_on(async { loc.store.get(&loc.child(&name)).await?.bytes().await })
                .unwrap();
            let path = to.join(&name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
    }

    fn put(&self, rt: &tokio::runtime::Runtime, key: &str, bytes: &'static [u8]) {
        let loc = self.location("");
        rt.block_on(loc.store.put(&loc.child(key), bytes.into()))
            .unwrap();
    }

    fn delete(&self, rt: &tokio::runtime::Runtime, key: &str) {
        let loc = self.location("");
        rt.block_on(loc.store.delete(&loc.child(key))).unwrap();
    }
}

/// The archiver's commit record in the S3 archive.
fn s3_state(s3: &S3Server, rt: &tokio::runtime::Runtime) -> ArchiverState {
    let loc = s3.location("archive");
    let got = rt.block_on(async {
        match loc.store.get(&loc.child("_archiver/state.json")).await {
            Ok(g) => Some(g.bytes().await.unwrap()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("reading the state: {e}"),
        }
    });
    got.map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap_or_default()
}

/// `weft ARGS --config CONFIG` with `env` set; (success, stdout + stderr).
fn weft(config: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .args(["--config", config.to_str().unwrap()])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn archive_batch_and_serve_on_s3() {
    let f: Fixture = fixture();
    let rt = &f.rt;
    let s3 = S3Server::start(&f.dir.path().join("s3.log"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut gen_config = GenConfig::new(37, EVENTS as u64, 4, 5_000);
    gen_config.start_ms = now - 21 * DAY_MS;
    gen_config.days = 20;
    let mut topic = f.topic(gen_config, 41);
    topic.produce(Vec::new(), EVENTS, 0.01);
    let ends = topic.produced.end_offsets(PARTITIONS);

    // One config file for every command: the broker, S3, the archive and
    // the view store on S3, serving's tenants.
    let names = tenant_names(&topic.produced);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let state = f.dir.path().join("serve");
    let views = s3.url("views");
    let config = write_serve_config(&f, &state, Some(&views), &names);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text += &s3.toml();
    text += &format!("[archive]\nroot = \"{}\"\n", s3.url("archive"));
    std::fs::write(&config, text).unwrap();

    // Stage 1: the archiver, killed with -9 while it writes to S3.
    let log = f.dir.path().join("archive.log");
    let mirror = f.dir.path().join("mirror");
    let start = || {
        crate::archive_crash::start_archiver(
            f.broker.bootstrap(),
            s3.url("archive"),
            &log,
            &["--config", config.to_str().unwrap()],
        )
    };
    let mut last_flush = 0;
    let flushed = || {
        let state = s3_state(&s3, rt);
        let done = (0..PARTITIONS as i32)
            .all(|p| state.offsets.get(&p).copied().unwrap_or(0) == ends[p as usize]);
        let progressed = state.flush > last_flush || done;
        last_flush = state.flush;
        progressed
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut kills = 0;
    kill_9_repeatedly(
        KILLS,
        &mut rng,
        || {
            // Whatever the previous kill left visible reads whole.
            if kills > 0 {
                s3.mirror(rt, "archive", &mirror);
                read_archive(&mirror).unwrap_or_else(|e| {
                    panic!("a visible object does not read after kill -9: {e}")
                });
            }
            kills += 1;
            start()
        },
        flushed,
    );
    let started = log_text(&log).matches("archiver consuming").count();
    let mut archiver = start();
    let deadline = Instant::now() + Duration::from_secs(300);
    // Its signal handlers are in place once it logged its start.
    crate::common::wait_for_start(&log, "archiver consuming", started, deadline);
    wait_while_running(&mut archiver, &log, deadline, || {
        let state = s3_state(&s3, rt);
        if (0..PARTITIONS as i32)
            .all(|p| state.offsets.get(&p).copied().unwrap_or(0) >= ends[p as usize])
        {
            Ok(())
        } else {
            Err(format!("archiver at {:?}, end {ends:?}", state.offsets))
        }
    });
    stop_cleanly(archiver, &log);
    let objects = s3.list(rt, "archive");
    let stray: Vec<&String> = objects
        .iter()
        .filter(|o| !o.ends_with(".parquet") && o.as_str() != "_archiver/state.json")
        .collect();
    assert!(
        stray.is_empty(),
        "objects other than data and the commit record: {stray:?}"
    );
    s3.mirror(rt, "archive", &mirror);
    crate::archive_crash::assert_archive_is_the_topic(&mirror, &topic.produced);

    // Stage 2: batch on S3, serving from S3.
    let batch = ["batch", "run", "--memory-mb", "512", "--partitions", "2"];
    let (ok, out) = weft(&config, &batch, &[]);
    assert!(ok, "weft batch run on S3 failed:\n{out}");
    assert_eq!(published_version(&out), Some(1), "{out}");
    let serve_log = f.dir.path().join("serve.log");
    let mut serve = start_serve(&config, &serve_log);
    wait_served(&mut serve, &serve_log, &topic.produced, 1);
    assert_every_user(&f, serve.grpc.parse().unwrap(), &topic.produced, 1);
    stop_cleanly(serve.child, &serve_log);

    // Stage 3: faults. The AWS variables alone reach the store.
    let bare = f.dir.path().join("bare.toml");
    std::fs::write(&bare, format!("[views]\nstore = \"{views}\"\n")).unwrap();
    let aws = [
        ("AWS_ENDPOINT_URL", s3.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", s3.access_key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", s3.secret_access_key.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ALLOW_HTTP", "true"),
    ];
    let (ok, out) = weft(&bare, &["batch", "list"], &aws);
    assert!(ok && out.contains("* v000001"), "{out}");

    // A wrong secret: refused, naming the bucket and the operation.
    let (ok, out) = weft(
        &config,
        &["batch", "list"],
        &[("WEFT__S3__SECRET_ACCESS_KEY", "not-the-secret")],
    );
    assert!(!ok, "a wrong secret was accepted:\n{out}");
    let request = format!("GET {}/{}/views/CURRENT", s3.endpoint, s3.bucket);
    assert!(
        out.contains(&request)
            && out.contains("403 Forbidden")
            && out.contains("SignatureDoesNotMatch"),
        "{out}"
    );
    assert_eq!(out.matches("403 Forbidden").count(), 1, "said once: {out}");
    assert!(
        !out.contains(&s3.secret_access_key),
        "the secret printed: {out}"
    );

    // An unreachable endpoint fails within the configured retry timeout.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let started = Instant::now();
    let (ok, out) = weft(
        &config,
        &batch,
        &[
            ("WEFT__S3__ENDPOINT", dead.as_str()),
            ("WEFT__S3__RETRY_TIMEOUT_MS", "2000"),
            ("WEFT__S3__CONNECT_TIMEOUT_MS", "500"),
        ],
    );
    assert!(!ok && out.contains(&dead), "{out}");
    assert!(
        out.contains("retry_timeout: 2s"),
        "the configured retry timeout: {out}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}:\n{out}",
        started.elapsed()
    );

    // A corrupt archive object is named, and nothing is published.
    let corrupt = "archive/tenant=t0/date=2026-01-01/part-f99999999-0000.parquet";
    s3.put(rt, corrupt, b"not parquet at all");
    let (ok, out) = weft(&config, &batch, &[]);
    assert!(!ok && out.contains("part-f99999999-0000.parquet"), "{out}");
    let (_, list) = weft(&config, &["batch", "list"], &[]);
    assert!(
        list.contains("* v000001") && !list.contains("v000002"),
        "{list}"
    );
    s3.delete(rt, corrupt);

    // A view object gone missing is named by whoever opens the view.
    let sst = s3
        .list(rt, "views/v000001")
        .into_iter()
        .find(|o| o.ends_with(".sst"))
        .unwrap();
    s3.delete(rt, &format!("views/v000001/{sst}"));
    let (ok, out) = weft(&config, &["batch", "export", "--out", "/dev/null"], &[]);
    assert!(!ok && out.contains(&sst), "{out}");
}
