//! The object stores of a cluster process: `s3://bucket` URLs in a plan
//! (the archive's files) resolved with this process's `[s3]` settings, each
//! bucket's client made once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use object_store::ObjectStore;
use url::Url;
use weft_config::S3Section;
use weft_view::Location;

#[derive(Debug)]
pub(crate) struct WeftStores {
    s3: S3Section,
    /// `file://` and anything registered explicitly.
    default: DefaultObjectStoreRegistry,
    /// Per `s3://bucket`.
    buckets: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl WeftStores {
    pub(crate) fn new(s3: S3Section) -> WeftStores {
        WeftStores {
            s3,
            default: DefaultObjectStoreRegistry::new(),
            buckets: Mutex::new(HashMap::new()),
        }
    }
}

impl ObjectStoreRegistry for WeftStores {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.default.register_store(url, store)
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        if url.scheme() != "s3" {
            return self.default.get_store(url);
        }
        let bucket = format!("s3://{}", url.host_str().unwrap_or_default());
        let mut buckets = self
            .buckets
            .lock()
            .map_err(|_| DataFusionError::Internal("object store registry poisoned".into()))?;
        if let Some(store) = buckets.get(&bucket) {
            return Ok(store.clone());
        }
        let store = Location::parse(&bucket, false, &self.s3)
            .map_err(|e| DataFusionError::External(Box::new(e)))?
            .store;
        buckets.insert(bucket, store.clone());
        Ok(store)
    }
}
