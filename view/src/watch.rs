//! [`spawn_watcher`]: follows a view store's `CURRENT` from a background
//! thread.

use crate::ViewError;
use crate::format::{Manifest, version_name};
use crate::store::ViewStore;

/// Watches a view store from a background thread: calls `on_new` with each
/// newly published view whose spec hash is `spec_hash` (the current one at
/// start included), every `every`. Views of another spec are logged and
/// skipped. The thread ends when `on_new` returns false.
pub fn spawn_watcher(
    store: ViewStore,
    spec_hash: String,
    every: std::time::Duration,
    mut on_new: impl FnMut(&Manifest) -> bool + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("weft-view-watch".into())
        .spawn(move || {
            let rt = match weft_core::runtime::current_thread() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "view watcher: no runtime");
                    return;
                }
            };
            let mut seen: Option<u64> = None;
            loop {
                let found = rt.block_on(async {
                    match store.current().await? {
                        Some(v) if Some(v) != seen => Ok(Some(store.manifest(v).await?)),
                        _ => Ok::<_, ViewError>(None),
                    }
                });
                match found {
                    Ok(Some(m)) => {
                        seen = Some(m.version);
                        if m.spec_hash != spec_hash {
                            tracing::error!(
                                view = %version_name(m.version),
                                view_spec = %m.spec_hash,
                                spec = %spec_hash,
                                "ignoring a batch view of another feature spec"
                            );
                        } else if !on_new(&m) {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, store = %store.display(), "view watcher"),
                }
                std::thread::sleep(every);
            }
        })
}
