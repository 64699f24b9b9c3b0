//! A local Kafka-compatible broker: a Tansu process on 127.0.0.1 with
//! in-memory storage. Tests start one per test run; `weft up` starts one when
//! no broker is configured. Production runs Apache Kafka (see `deploy/`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseProducer, Producer};

use crate::SpeedError;
use crate::kafka::base_config;

/// How to install the broker, quoted in errors.
pub const TANSU_INSTALL: &str = "cargo install tansu@0.6.0 --locked --features dynostore,libsql";

/// A running broker process; stopped (killed and reaped) on drop.
#[derive(Debug)]
pub struct LocalBroker {
    child: Child,
    bootstrap: String,
    binary: PathBuf,
    log: PathBuf,
}

/// Finds the `tansu` binary: an explicit path, else `PATH`, else
/// `~/.cargo/bin`.
pub fn find_tansu(explicit: Option<&Path>) -> Result<PathBuf, SpeedError> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(SpeedError::LocalBroker(format!(
                "{} does not exist; install Tansu with `{TANSU_INSTALL}`",
                p.display()
            )))
        };
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("tansu"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cargo/bin/tansu"));
    }
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        SpeedError::LocalBroker(format!(
            "the `tansu` broker is not on PATH or in ~/.cargo/bin; install it with `{TANSU_INSTALL}`"
        ))
    })
}

fn free_port() -> Result<u16, SpeedError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| SpeedError::Io {
        path: "127.0.0.1:0".into(),
        source: e,
    })?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| SpeedError::Io {
            path: "127.0.0.1:0".into(),
            source: e,
        })
}

impl LocalBroker {
    /// Starts Tansu on a free loopback port and waits until it answers
    /// metadata requests. `log_dir` receives the broker's output.
    pub fn start(binary: Option<&Path>, log_dir: &Path) -> Result<LocalBroker, SpeedError> {
        let binary = find_tansu(binary)?;
        std::fs::create_dir_all(log_dir).map_err(|e| SpeedError::Io {
            path: log_dir.to_path_buf(),
            source: e,
        })?;
        let mut last_err = None;
        // A port found free can be taken before Tansu binds it: retry.
        for attempt in 0..3 {
            let port = free_port()?;
            let log = log_dir.join(format!("tansu-{port}.log"));
            match LocalBroker::spawn(&binary, port, &log) {
                Ok(b) => return Ok(b),
                Err(e) => {
                    tracing::warn!(attempt, port, error = %e, "local broker did not start");
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.expect("three attempts were made"))
    }

    fn spawn(binary: &Path, port: u16, log: &Path) -> Result<LocalBroker, SpeedError> {
        let url = format!("tcp://127.0.0.1:{port}");
        let out = std::fs::File::create(log).map_err(|e| SpeedError::Io {
            path: log.to_path_buf(),
            source: e,
        })?;
        let err = out.try_clone().map_err(|e| SpeedError::Io {
            path: log.to_path_buf(),
            source: e,
        })?;
        let child = Command::new(binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| {
                SpeedError::LocalBroker(format!("cannot run {}: {e}", binary.display()))
            })?;
        let mut broker = LocalBroker {
            child,
            bootstrap: format!("127.0.0.1:{port}"),
            binary: binary.to_path_buf(),
            log: log.to_path_buf(),
        };
        broker.wait_ready(Duration::from_secs(30))?;
        Ok(broker)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), SpeedError> {
        let client: BaseProducer = base_config(&self.bootstrap)
            .set("log_level", "3")
            .create()
            .map_err(SpeedError::kafka("creating readiness probe"))?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: String = log
                    .lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                return Err(SpeedError::LocalBroker(format!(
                    "{} exited with {status} before answering; its log ({}):\n{tail}",
                    self.binary.display(),
                    self.log.display()
                )));
            }
            if client
                .client()
                .fetch_metadata(None, Duration::from_millis(500))
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(SpeedError::LocalBroker(format!(
                    "{} did not answer on {} within {timeout:?}; see {}",
                    self.binary.display(),
                    self.bootstrap,
                    self.log.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The broker binary in use (so callers can say where it came from).
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for LocalBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
