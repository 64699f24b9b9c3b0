use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::*;

const EXAMPLE: &str = include_str!("../../deploy/weft.example.toml");

/// The example with its two `env:` keys replaced by literal keys.
fn example_text() -> String {
    EXAMPLE
        .replace("env:WEFT_ACME_BIDDER_KEY", "bidder-key-0123456789")
        .replace("env:WEFT_ACME_ADMIN_KEY", "admin-key-0123456789")
}

/// Every dotted key of a TOML table, arrays of tables left out.
fn keys(table: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => keys(t, &key, out),
            toml::Value::Array(a) if a.iter().all(|x| x.is_table()) && !a.is_empty() => {}
            _ => {
                out.insert(key);
            }
        }
    }
}

fn env(vars: &[(&str, &str)]) -> EnvLayer {
    EnvLayer::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

#[test]
fn defaults_are_valid() {
    WeftConfig::default().validate().expect("valid defaults");
}

#[test]
fn the_example_loads() {
    // The example reads two keys from the environment.
    let e = WeftConfig::from_toml(EXAMPLE).expect_err("env keys unset");
    assert_eq!(
        e.to_string(),
        "tenants[0].keys[0].key: environment variable WEFT_ACME_BIDDER_KEY is not set"
    );
    let c = WeftConfig::from_toml(&example_text()).expect("example loads");
    assert_eq!(c.tenants[0].keys.len(), 3);
    assert_eq!(c.views.store.as_deref(), Some("weft-data/views"));
    assert_eq!(
        c.batch.spill_dir,
        Some(PathBuf::from("/var/tmp/weft-spill"))
    );
    // Apart from the keys marked "example", the example shows the defaults.
    let mut expected = WeftConfig::default();
    expected.views.store = c.views.store.clone();
    expected.batch.spill_dir = c.batch.spill_dir.clone();
    assert_eq!(c.s3.region.as_deref(), Some("us-east-1"));
    for (example, value) in [
        (&mut expected.s3.endpoint, &c.s3.endpoint),
        (&mut expected.s3.region, &c.s3.region),
    ] {
        *example = value.clone();
    }
    assert_eq!(c.cluster.scheduler.as_deref(), Some("df://10.0.0.5:50050"));
    expected.cluster.scheduler = c.cluster.scheduler.clone();
    expected.s3.access_key_id = c.s3.access_key_id.clone();
    expected.s3.secret_access_key = c.s3.secret_access_key.clone();
    expected.tenants = c.tenants.clone();
    assert_eq!(c, expected);
    // The example's spec path is relative to the repository root.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    assert!(root.join(&c.features).exists());
}

#[test]
fn the_example_documents_every_key() {
    let example: toml::Table = EXAMPLE.parse().expect("example parses");
    let mut documented = BTreeSet::new();
    keys(&example, "", &mut documented);
    let defaults: toml::Table = WeftConfig::default()
        .to_toml()
        .parse()
        .expect("defaults render");
    let mut all = BTreeSet::new();
    keys(&defaults, "", &mut all);
    // Keys unset by default are not rendered.
    all.insert("views.store".into());
    all.insert("batch.spill_dir".into());
    all.insert("cluster.scheduler".into());
    for key in ["endpoint", "region", "access_key_id", "secret_access_key"] {
        all.insert(format!("s3.{key}"));
    }
    all.remove("tenants");
    // Sharding is documented commented out: setting it makes a node a
    // shard (serve.partitions, serve.shard and [[serve.peers]]).
    all.remove("serve.peers");
    assert_eq!(
        documented, all,
        "deploy/weft.example.toml vs the config tree"
    );
}

#[test]
fn errors_name_the_key() {
    let e = WeftConfig::from_toml("[serve]\nmax_batch_ids = \"many\"\n").expect_err("type");
    assert!(
        e.to_string()
            .starts_with("serve.max_batch_ids: invalid type"),
        "{e}"
    );
    let e = WeftConfig::from_toml("[serve]\nmax_batch_ids = 0\n").expect_err("zero");
    assert_eq!(e.to_string(), "serve.max_batch_ids: must be at least 1");
    let e = WeftConfig::from_toml("[serve]\nmax_batchids = 3\n").expect_err("unknown");
    assert!(
        e.to_string().starts_with("serve.max_batchids: unknown key"),
        "{e}"
    );
    let e = WeftConfig::from_toml("[speeed]\ndata_dir = \"x\"\n").expect_err("section");
    assert!(e.to_string().starts_with("speeed: unknown key"), "{e}");
    let e = WeftConfig::from_toml("[batch]\nkeep = 0\n").expect_err("keep");
    assert_eq!(e.to_string(), "batch.keep: must be at least 1");
    let e = WeftConfig::from_toml("[cluster]\nscheduler = \"http://h:1\"\n").expect_err("url");
    assert_eq!(
        e.to_string(),
        "cluster.scheduler: 'http://h:1': expected df://host:port"
    );
    let e = WeftConfig::from_toml("[cluster]\nscheduler = \"df://h:port\"\n").expect_err("port");
    assert_eq!(
        e.to_string(),
        "cluster.scheduler: 'df://h:port': 'port' is not a port"
    );
    assert_eq!(
        crate::parse_scheduler("df://sched/").unwrap(),
        ("sched".to_string(), 50050)
    );
    let e = WeftConfig::from_toml(
        "[[tenants]]\nname = \"a\"\n[[tenants.keys]]\nname = \"k\"\nkey = \"0123456789abcdef\"\nscopes = [\"profile:write\"]\n",
    )
    .expect_err("scope");
    assert!(
        e.to_string()
            .starts_with("tenants[0].keys[0].scopes[0]: unknown scope"),
        "{e}"
    );
    let e = WeftConfig::from_toml(
        "[[tenants]]\nname = \"a\"\n[[tenants.keys]]\nname = \"w\"\nkey = \"0123456789abcdef\"\nscopes = [\"profile:read\"]\npublishable = true\n",
    )
    .expect_err("publishable");
    assert!(e.to_string().contains("publishable"), "{e}");
}

#[test]
fn layers_win_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("weft.toml");
    std::fs::write(
        &file,
        "[serve]\nmax_in_flight = 10\nmax_batch_ids = 11\nmax_id_bytes = 12\n",
    )
    .expect("write");
    let env = env(&[
        ("WEFT__SERVE__MAX_BATCH_IDS", "21"),
        ("WEFT__SERVE__MAX_ID_BYTES", "22"),
        ("WEFT__KAFKA__BOOTSTRAP", "kafka-1:9092,kafka-2:9092"),
        ("WEFT__VIEWS__STORE", "s3://bucket/views"),
    ]);
    let flags = Overrides::new().set("serve.max_id_bytes", "--max-id-bytes", Some(32u64));
    let c = WeftConfig::load(Some(&file), &env, &flags).expect("loads");
    assert_eq!(c.serve.max_in_flight, 10, "file over default");
    assert_eq!(c.serve.max_batch_ids, 21, "env over file");
    assert_eq!(c.serve.max_id_bytes, 32, "flag over env");
    assert_eq!(c.kafka.bootstrap, "kafka-1:9092,kafka-2:9092");
    assert_eq!(c.views.store.as_deref(), Some("s3://bucket/views"));
    assert_eq!(c.serve.default_deadline_ms, 1_000, "default kept");
}

#[test]
fn unrelated_variables_are_not_configuration() {
    let env = env(&[
        ("WEFT_PROTO", "proto/weft.proto"),
        ("WEFT_ACME_SERVER_KEY", "0123456789abcdef0123"),
        ("WEFT_", "x"),
        ("HOME", "/root"),
    ]);
    assert!(env.is_empty());
    WeftConfig::load(None, &env, &Overrides::new()).expect("unrelated variables are ignored");
}

#[test]
fn a_bad_variable_is_named() {
    let e = WeftConfig::load(
        None,
        &env(&[("WEFT__SERVE__GRPC_LISTN", "127.0.0.1:1")]),
        &Overrides::new(),
    )
    .expect_err("unknown key");
    let msg = e.to_string();
    assert!(msg.starts_with("serve.grpc_listn: unknown key"), "{msg}");
    assert!(
        msg.contains("environment variable WEFT__SERVE__GRPC_LISTN"),
        "{msg}"
    );
    let e = WeftConfig::load(
        None,
        &env(&[("WEFT__SERVE__MAX_IN_FLIGHT", "lots")]),
        &Overrides::new(),
    )
    .expect_err("bad value");
    let msg = e.to_string();
    assert!(
        msg.starts_with("serve.max_in_flight: invalid type"),
        "{msg}"
    );
    assert!(
        msg.ends_with("(from environment variable WEFT__SERVE__MAX_IN_FLIGHT)"),
        "{msg}"
    );
}

#[test]
fn a_bad_file_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nope.toml");
    let e = WeftConfig::load(Some(&missing), &EnvLayer::default(), &Overrides::new())
        .expect_err("missing");
    assert_eq!(
        e.to_string(),
        format!("config: {}: does not exist", missing.display())
    );
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[serve]\nmax_in_flight = = 3\n").expect("write");
    let e =
        WeftConfig::load(Some(&file), &EnvLayer::default(), &Overrides::new()).expect_err("syntax");
    assert!(e.to_string().contains("line 2"), "{e}");
    std::fs::write(&file, "[serve]\nmax_inflight = 3\n").expect("write");
    let e = WeftConfig::load(Some(&file), &EnvLayer::default(), &Overrides::new())
        .expect_err("unknown");
    assert!(
        e.to_string().ends_with(&format!("(in {})", file.display())),
        "{e}"
    );
}

#[test]
fn printed_config_hides_keys() {
    let c = WeftConfig::from_toml(&example_text()).expect("example loads");
    let printed = c.to_toml();
    assert!(!printed.contains("bidder-key-0123456789"), "{printed}");
    assert!(!printed.contains("pk_acme_widget"), "{printed}");
    assert!(printed.contains("key = \"***\""), "{printed}");
    let debug = format!("{c:?}");
    assert!(!debug.contains("bidder-key-0123456789"), "{debug}");
}

#[test]
fn a_shard_and_its_peers_cover_every_partition_once() {
    let shard = |toml: &str| WeftConfig::from_toml(toml).map(|c| c.shard().unwrap());
    // Unsharded by default.
    assert_eq!(WeftConfig::default().shard().unwrap(), None);
    let two = "[kafka]\npartitions = 8\n[serve]\nshard = \"0/2\"\n\
               [[serve.peers]]\npartitions = \"1/2\"\ngrpc = \"http://10.0.0.2:50051/\"\n";
    let s = shard(two).unwrap().unwrap();
    assert_eq!((s.owned.to_string(), s.partitions), ("0-3".to_string(), 8));
    assert_eq!(s.peers[0].partitions.to_string(), "4-7");
    assert_eq!(s.peers[0].grpc, "http://10.0.0.2:50051");
    let three = "[serve]\npartitions = \"3-5\"\n\
                 [[serve.peers]]\npartitions = \"0-2\"\ngrpc = \"http://a:1\"\n\
                 [[serve.peers]]\npartitions = \"6,7\"\ngrpc = \"https://b:2\"\n";
    assert_eq!(shard(three).unwrap().unwrap().owned.to_string(), "3-5");

    let error = |toml: &str| shard(toml).unwrap_err().to_string();
    for (toml, says) in [
        (
            "[serve]\npartitions = \"0-3\"\n",
            "serve.peers: partitions 4-7 of 8 (kafka.partitions) are owned by no node",
        ),
        (
            "[serve]\npartitions = \"0-4\"\n[[serve.peers]]\npartitions = \"4-7\"\ngrpc = \"http://a:1\"\n",
            "serve.peers[0].partitions: partitions 4 are owned twice",
        ),
        (
            "[serve]\npartitions = \"0-8\"\n",
            "serve.partitions: partitions 8 are not in a topic of 8 (kafka.partitions)",
        ),
        (
            "[serve]\npartitions = \"0-3\"\nshard = \"0/2\"\n",
            "serve.shard: set serve.partitions or serve.shard, not both",
        ),
        (
            "[serve]\nshard = \"2/2\"\n",
            "serve.shard: shard 2/2: the index counts from 0",
        ),
        (
            "[serve]\npartitions = \"3-1\"\n",
            "serve.partitions: '3-1': a range runs upwards",
        ),
        (
            "[serve]\nshard = \"0/2\"\n[[serve.peers]]\npartitions = \"1/2\"\ngrpc = \"10.0.0.2:50051\"\n",
            "serve.peers[0].grpc: \"10.0.0.2:50051\" is not an address",
        ),
        (
            "[[serve.peers]]\npartitions = \"1/2\"\ngrpc = \"http://a:1\"\n",
            "serve.peers: peers are for a shard",
        ),
    ] {
        let e = error(toml);
        assert!(e.starts_with(says), "{toml}: {e}");
    }
}
