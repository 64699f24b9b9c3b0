//! Helpers shared by the end-to-end tests that run `weft` processes.

use std::path::Path;
use std::process::{Child, Command};

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
