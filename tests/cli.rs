//! `weft gen` and `weft features` as a user runs them.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use weft_core::Event;
use weft_core::archive::read_archive;
use weft_speed::broker::LocalBroker;
use weft_speed::kafka::base_config;

fn weft(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .output()
        .expect("the weft binary runs")
}

fn ok(args: &[&str]) -> String {
    let out = weft(args);
    assert!(
        out.status.success(),
        "weft {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn gen_into(dir: &Path, seed: &str) {
    let archive = dir.join("archive");
    // A directory that does not exist yet, as in the README's command.
    let jsonl = dir.join("out").join("events.jsonl");
    ok(&[
        "gen",
        "--events",
        "60000",
        "--seed",
        seed,
        "--users",
        "3000",
        "--quiet",
        "--parquet",
        archive.to_str().unwrap(),
        "--jsonl",
        jsonl.to_str().unwrap(),
        "--rows-per-file",
        "10000",
    ]);
}

fn jsonl_events(path: &Path) -> Vec<(i32, i64, Event)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let e: Event = serde_json::from_value(v.clone()).unwrap();
            (
                v["_partition"].as_i64().unwrap() as i32,
                v["_offset"].as_i64().unwrap(),
                e,
            )
        })
        .collect()
}

#[test]
fn gen_is_deterministic_and_archive_matches_jsonl() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    gen_into(a.path(), "9");
    gen_into(b.path(), "9");
    gen_into(c.path(), "10");
    let (ja, jb, jc) = (
        std::fs::read(a.path().join("out/events.jsonl")).unwrap(),
        std::fs::read(b.path().join("out/events.jsonl")).unwrap(),
        std::fs::read(c.path().join("out/events.jsonl")).unwrap(),
    );
    assert_eq!(ja, jb, "same seed, same events");
    assert_ne!(ja, jc, "another seed, other events");

    let mut from_jsonl = jsonl_events(&a.path().join("out/events.jsonl"));
    assert_eq!(from_jsonl.len(), 60_000);
    from_jsonl.sort_by_key(|(p, o, _)| (*p, *o));
    let archive = read_archive(&a.path().join("archive")).unwrap();
    assert_eq!(archive.len(), from_jsonl.len());
    for (s, (p, o, e)) in archive.iter().zip(&from_jsonl) {
        assert_eq!((s.partition, s.offset, &s.event), (*p, *o, e));
    }
    assert_eq!(read_archive(&b.path().join("archive")).unwrap(), archive);
}

#[test]
fn duckdb_and_pyarrow_read_the_archive_with_the_documented_schema() {
    let dir = tempfile::tempdir().unwrap();
    gen_into(dir.path(), "21");
    let script = format!(
        "{}/tests/python/check_archive.py",
        crate::common::repo_root()
    );
    let out = Command::new("python3")
        .arg(script)
        .arg(dir.path().join("archive"))
        .arg(dir.path().join("out/events.jsonl"))
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "DuckDB/pyarrow missing: run `python3 -m pip install -r tests/python/requirements.txt`\n{stderr}"
    );
    assert!(out.status.success(), "check_archive.py failed:\n{stderr}");
}

/// docs/batch.md's worked example ("Training sets"), as a data scientist
/// runs it: `weft gen`, labels made with DuckDB ("purchased within 24 h
/// after ts"), `weft batch training-set`, the result read with pandas and
/// DuckDB (tests/python/training_example.py).
#[test]
fn the_training_set_example_of_the_docs_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (archive, labels, train) = (
        format!("{d}/archive"),
        format!("{d}/labels.parquet"),
        format!("{d}/train.parquet"),
    );
    ok(&[
        "gen",
        "--events",
        "50000",
        "--users",
        "2000",
        "--quiet",
        "--parquet",
        &archive,
    ]);
    let script = format!(
        "{}/tests/python/training_example.py",
        crate::common::repo_root()
    );
    let made = crate::common::python(&[&script, "labels", &archive, &labels]);
    assert!(made.contains("labels: "), "{made}");
    let spec = crate::common::example_spec_path();
    let out = ok(&[
        "batch",
        "training-set",
        "--archive",
        &archive,
        "--features",
        &spec,
        "--labels",
        &labels,
        "--out",
        &train,
    ]);
    assert!(
        out.contains("label rows") && out.contains("18 feature columns"),
        "{out}"
    );
    let read = crate::common::python(&[&script, "read", &train, &labels]);
    assert!(
        read.contains("pandas: ") && read.contains("duckdb: "),
        "{read}"
    );
    // A subset of the features; a label file without ts_ms is refused.
    let only = format!("{d}/only.parquet");
    ok(&[
        "batch",
        "training-set",
        "--archive",
        &archive,
        "--features",
        &spec,
        "--labels",
        &labels,
        "--out",
        &only,
        "--only",
        "views_7d,spend_90d",
    ]);
    let bad = weft(&[
        "batch",
        "training-set",
        "--archive",
        &archive,
        "--features",
        &spec,
        "--labels",
        &archive,
        "--out",
        &only,
    ]);
    assert!(!bad.status.success());
    // The export's exact cut reads the archive; without --at it is refused.
    let exported = format!("{d}/export.parquet");
    let out = ok(&[
        "batch",
        "export",
        "--point-in-time",
        "--at",
        "2026-09-15",
        "--archive",
        &archive,
        "--features",
        &spec,
        "--out",
        &exported,
    ]);
    assert!(out.contains("known then (point in time)"), "{out}");
    let no_at = weft(&["batch", "export", "--point-in-time", "--out", &exported]);
    assert!(!no_at.status.success());
}

#[test]
fn features_check_explains_a_spec_and_names_errors() {
    let spec = &crate::common::example_spec_path();
    let out = ok(&["features", "check", spec]);
    assert!(
        out.contains("spend_90d") && out.contains("spec hash"),
        "{out}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[feature]]\nname = \"spend\"\naggregate = \"sum\"\nfield = \"category\"\nwindow = \"7d\"\n").unwrap();
    let out = weft(&["features", "check", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("feature 'spend': key 'field'"), "{err}");
}

/// The data scientist's loop: run a batch job, inspect a user, export every
/// profile and open the export in DuckDB; a bad spec publishes nothing.
#[test]
fn batch_run_inspect_and_export_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    gen_into(dir.path(), "31");
    let (archive, views) = (dir.path().join("archive"), dir.path().join("views"));
    let spec = &crate::common::example_spec_path();

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[feature]]\nname = \"n\"\naggregate = \"count\"\nwindow = \"7 days\"\n",
    )
    .unwrap();
    let out = weft(&[
        "batch",
        "run",
        "--archive",
        archive.to_str().unwrap(),
        "--features",
        bad.to_str().unwrap(),
        "--views",
        views.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("key 'window'"),
        "{err}"
    );
    assert!(!views.join("CURRENT").exists());

    let out = ok(&[
        "batch",
        "run",
        "--archive",
        archive.to_str().unwrap(),
        "--features",
        spec,
        "--views",
        views.to_str().unwrap(),
    ]);
    assert!(out.contains("published v000001"), "{out}");
    let events = jsonl_events(&dir.path().join("out/events.jsonl"));
    let user = &events[0].2;
    let who = format!("{}/{}", user.tenant, user.user_id);
    let out = ok(&[
        "batch",
        "inspect",
        "--views",
        views.to_str().unwrap(),
        "--user",
        &who,
        "--verify",
    ]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["view"], "v000001");
    assert_eq!(json["found"], true, "{out}");
    assert!(json["features"]["last_seen"].is_i64(), "{out}");

    let export = dir.path().join("profiles.parquet");
    let out = ok(&[
        "batch",
        "export",
        "--views",
        views.to_str().unwrap(),
        "--out",
        export.to_str().unwrap(),
    ]);
    assert!(out.contains("users"), "{out}");
    let users: std::collections::HashSet<_> = events
        .iter()
        .map(|(_, _, e)| (e.tenant.clone(), e.user_id.clone()))
        .collect();
    let duck = crate::common::python(&[
        "-c",
        "import duckdb,sys; print(duckdb.sql(f\"select count(*), count(distinct tenant || '/' || user_id) from '{sys.argv[1]}'\").fetchone())",
        export.to_str().unwrap(),
    ]);
    let n = users.len();
    assert_eq!(duck.trim(), format!("({n}, {n})"));
    let out = ok(&["batch", "list", "--views", views.to_str().unwrap()]);
    assert!(out.starts_with("* v000001"), "{out}");
}

#[test]
fn help_lists_only_working_subcommands() {
    let help = ok(&["--help"]);
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l.starts_with("   ")) // wrapped description lines
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        commands,
        [
            "up", "gen", "speed", "archive", "serve", "batch", "features", "help"
        ]
    );
    let out = weft(&["gen"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to write"));
}

/// `weft gen --kafka` with malformed records: the valid records sit at the
/// offsets the JSONL (and so the archive) records, the malformed ones fill
/// the gaps and none of them decodes.
#[test]
fn gen_to_kafka_mixes_malformed_records_at_known_offsets() {
    let logs = tempfile::tempdir().unwrap();
    let broker = LocalBroker::start(None, logs.path()).expect("local broker starts");
    let jsonl = logs.path().join("events.jsonl");
    let stderr = {
        let out = weft(&[
            "gen",
            "--events",
            "20000",
            "--seed",
            "4",
            "--users",
            "2000",
            "--quiet",
            "--kafka",
            broker.bootstrap(),
            "--topic",
            "events",
            "--malformed-rate",
            "0.01",
            "--jsonl",
            jsonl.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let valid: HashMap<(i32, i64), Event> = jsonl_events(&jsonl)
        .into_iter()
        .map(|(p, o, e)| ((p, o), e))
        .collect();
    assert_eq!(valid.len(), 20_000);

    let consumer: BaseConsumer = base_config(broker.bootstrap())
        .set("group.id", "gen-check")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["events"]).unwrap();
    let (mut good, mut bad) = (0usize, 0usize);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut idle_since = Instant::now();
    while Instant::now() < deadline && idle_since.elapsed() < Duration::from_secs(5) {
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        idle_since = Instant::now();
        let msg = msg.unwrap();
        let decoded = Event::decode_record(msg.key(), msg.payload().unwrap_or_default());
        match valid.get(&(msg.partition(), msg.offset())) {
            Some(expected) => {
                assert_eq!(
                    decoded.as_ref(),
                    Ok(expected),
                    "{}:{}",
                    msg.partition(),
                    msg.offset()
                );
                good += 1;
            }
            None => {
                assert!(
                    decoded.is_err(),
                    "{}:{} should be malformed",
                    msg.partition(),
                    msg.offset()
                );
                bad += 1;
            }
        }
    }
    assert_eq!(good, 20_000);
    assert!(
        (100..=320).contains(&bad),
        "{bad} malformed records for a 1 % rate"
    );
    assert!(stderr.contains(&format!("({bad} malformed)")), "{stderr}");
}

/// No Docker engine runs here: the Compose file and Kubernetes manifests are
/// parsed (tests/python/check_deploy.py checks images, ports, volumes and
/// commands), and every config they embed loads as a `WeftConfig`
/// against the example feature spec, which the image installs at
/// /etc/weft/features.toml.
#[test]
fn deploy_manifests_and_example_configs_load() {
    let root = crate::common::repo_root();
    let out = crate::common::python(&[&format!("{root}/tests/python/check_deploy.py"), &root]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let configs = v["configs"].as_object().unwrap();
    assert_eq!(configs.len(), 2);
    let dockerfile = std::fs::read_to_string(format!("{root}/deploy/Dockerfile")).unwrap();
    assert!(dockerfile.contains("COPY deploy/features.example.toml /etc/weft/features.toml"));
    assert!(dockerfile.contains("EXPOSE 50051 8080"));
    for (name, text) in configs {
        // Keys come from the environment in deployments.
        let text = text
            .as_str()
            .unwrap()
            .replace("env:WEFT_ACME_SERVER_KEY", "server-key-0123456789")
            .replace("env:WEFT_ACME_WIDGET_KEY", "widget-key-0123456789");
        let c = weft_config::WeftConfig::from_toml(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(c.features, Path::new("/etc/weft/features.toml"), "{name}");
        assert_eq!(c.serve.grpc_listen.port(), 50051, "{name}");
        assert_eq!(c.serve.http_listen.port(), 8080, "{name}");
        assert_eq!(c.speed.data_dir, Path::new("/var/lib/weft/speed"), "{name}");
        assert_eq!(
            c.views.store.as_deref(),
            Some("/var/lib/weft/views"),
            "{name}"
        );
        assert!(c.tenants[0].keys.iter().any(|k| k.publishable), "{name}");
    }
}

fn weft_env(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("the weft binary runs")
}

/// One config tree for every command: `WEFT__SECTION__KEY` variables win
/// over the file, flags over both; a variable that only starts with `WEFT_`
/// is not configuration; an unknown `WEFT__` key is refused naming the
/// variable; keys print as `***`.
#[test]
fn configuration_layers_as_a_user_sets_them() {
    let root = crate::common::repo_root();
    let example = format!("{root}/deploy/weft.example.toml");
    let env = [
        ("WEFT_ACME_BIDDER_KEY", "bidder-key-0123456789"),
        ("WEFT_ACME_ADMIN_KEY", "admin-key-0123456789"),
        // Not configuration (one underscore): must not stop anything.
        ("WEFT_PROTO", "proto/weft/v1/weft.proto"),
        ("WEFT__SERVE__MAX_IN_FLIGHT", "7"),
        ("WEFT__SERVE__MAX_BATCH_IDS", "8"),
    ];
    let out = weft_env(
        &[
            "serve",
            "--config",
            &example,
            "--print-config",
            "--views",
            "/tmp/flag-views",
        ],
        &env,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: weft_config::WeftConfig = toml::from_str(&stdout).unwrap();
    assert_eq!(printed.serve.max_in_flight, 7, "env over the file");
    assert_eq!(printed.serve.max_batch_ids, 8, "env over the default");
    assert_eq!(
        printed.views.store.as_deref(),
        Some("/tmp/flag-views"),
        "flag over the file"
    );
    assert_eq!(printed.tenants[0].name, "acme", "the file over the default");
    assert!(!stdout.contains("bidder-key-0123456789"), "{stdout}");
    assert!(stdout.contains("key = \"***\""), "{stdout}");

    // The global flag works before the subcommand too.
    let out = weft_env(&["--config", &example, "serve", "--print-config"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut bad = env.to_vec();
    bad.push(("WEFT__SERVE__GRPC_LISTN", "127.0.0.1:1"));
    let out = weft_env(&["serve", "--config", &example, "--print-config"], &bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("serve.grpc_listn: unknown key")
            && stderr.contains("environment variable WEFT__SERVE__GRPC_LISTN"),
        "{stderr}"
    );

    // A shard's assignment is checked as the config loads: peers must
    // cover the other partitions, each once, at addresses a client can use.
    let mut shard = env.to_vec();
    shard.push(("WEFT__SERVE__SHARD", "0/2"));
    let out = weft_env(&["serve", "--config", &example, "--print-config"], &shard);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains(
                "serve.peers: partitions 4-7 of 8 (kafka.partitions) are owned by no node"
            ),
        "{stderr}"
    );
    let dir = tempfile::tempdir().unwrap();
    let sharded = dir.path().join("shard.toml");
    std::fs::write(
        &sharded,
        "[serve]\nshard = \"0/2\"\n[[serve.peers]]\npartitions = \"3-7\"\n\
         grpc = \"127.0.0.1:50052\"\n",
    )
    .unwrap();
    let out = weft(&[
        "serve",
        "--config",
        sharded.to_str().unwrap(),
        "--print-config",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("serve.peers[0].partitions: partitions 3 are owned twice"),
        "{stderr}"
    );

    // Every command reads the tree: `batch list` takes views.store from it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("weft.toml");
    let views = dir.path().join("views");
    std::fs::create_dir_all(&views).unwrap();
    std::fs::write(&file, format!("[views]\nstore = \"{}\"\n", views.display())).unwrap();
    ok(&["batch", "list", "--config", file.to_str().unwrap()]);
    let out = weft_env(
        &["batch", "list"],
        &[("WEFT__VIEWS__STORE", views.to_str().unwrap())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = weft(&["batch", "list"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("views.store: not set"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&file, "[batch]\nkeep = \"three\"\n").unwrap();
    let out = weft(&["batch", "list", "--config", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("batch.keep: invalid type") && stderr.contains(&file.display().to_string()),
        "{stderr}"
    );
}
