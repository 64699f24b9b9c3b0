//! The one way Weft builds a tokio runtime, so every command, thread and
//! test gets the same drivers (I/O and time enabled) and named threads.

use std::io;

use tokio::runtime::{Builder, Runtime};

/// A runtime on the calling thread: for a thread that only needs to wait
/// on a few futures (a Kafka admin call, an object store read).
pub fn current_thread() -> io::Result<Runtime> {
    Builder::new_current_thread().enable_all().build()
}

/// A multi-threaded runtime of `workers` threads named `name` (0: one per
/// core).
pub fn multi_thread(name: &str, workers: usize) -> io::Result<Runtime> {
    let mut b = Builder::new_multi_thread();
    if workers > 0 {
        b.worker_threads(workers);
    }
    b.thread_name(name).enable_all().build()
}
