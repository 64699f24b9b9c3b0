//! [`Location`]: where an archive or a view store lives, and its
//! `object_store` handle.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path as ObjPath;

use crate::{Result, ViewError};

/// Where an archive (or a view store) lives: a local directory or an
/// object-store URL (`s3://bucket/prefix`, `gs://bucket/prefix`,
/// `file:///path`). Cloud credentials come from the usual environment
/// variables (`AWS_*`, `GOOGLE_*`).
#[derive(Debug, Clone)]
pub struct Location {
    /// As the user wrote it, for messages.
    pub display: String,
    /// The directory as a URL ending in `/`.
    pub url: url::Url,
    /// The directory's path inside [`Location::store`].
    prefix: ObjPath,
    pub store: Arc<dyn ObjectStore>,
    /// The local directory, when the location is on this machine.
    pub local: Option<std::path::PathBuf>,
}

impl Location {
    /// Resolves `location`. A local directory must exist when `must_exist`
    /// ([`ViewError::Missing`] otherwise).
    pub fn parse(location: &str, must_exist: bool) -> Result<Location> {
        let display = location.to_string();
        let (scheme, _) = location.split_once("://").unwrap_or(("", location));
        let bad_url = |e: &dyn std::fmt::Display| ViewError::Argument(format!("{location}: {e}"));
        match scheme {
            "" | "file" => {
                let path =
                    std::path::Path::new(location.strip_prefix("file://").unwrap_or(location));
                if !path.is_dir() {
                    if must_exist || path.exists() {
                        return Err(ViewError::Missing(display));
                    }
                    std::fs::create_dir_all(path).map_err(ViewError::io(path))?;
                }
                let abs = path.canonicalize().map_err(ViewError::io(path))?;
                // As DataFusion's `ListingTableUrl` makes it: a directory URL,
                // parsed again to resolve relative segments.
                let url = url::Url::from_directory_path(&abs)
                    .map_err(|()| bad_url(&"not an absolute path"))
                    .and_then(|u| url::Url::parse(u.as_str()).map_err(|e| bad_url(&e)))?;
                Ok(Location {
                    display,
                    prefix: ObjPath::from_url_path(url.path()).map_err(|e| bad_url(&e))?,
                    url,
                    store: Arc::new(object_store::local::LocalFileSystem::new()),
                    local: Some(abs),
                })
            }
            "s3" | "s3a" | "gs" => {
                let text = format!("{}/", location.trim_end_matches('/'));
                let store: Arc<dyn ObjectStore> = if scheme == "gs" {
                    Arc::new(
                        object_store::gcp::GoogleCloudStorageBuilder::from_env()
                            .with_url(&text)
                            .build()?,
                    )
                } else {
                    Arc::new(
                        object_store::aws::AmazonS3Builder::from_env()
                            .with_url(&text)
                            .build()?,
                    )
                };
                let url = url::Url::parse(&text).map_err(|e| bad_url(&e))?;
                Ok(Location {
                    display,
                    prefix: ObjPath::from_url_path(url.path()).map_err(|e| bad_url(&e))?,
                    url,
                    store,
                    local: None,
                })
            }
            other => Err(ViewError::Argument(format!(
                "{location}: unsupported scheme '{other}' (use a local path, file://, s3:// or gs://)"
            ))),
        }
    }

    pub fn prefix(&self) -> &ObjPath {
        &self.prefix
    }

    /// The object path of `rel` (slash-separated) under this location.
    pub fn child(&self, rel: &str) -> ObjPath {
        let rel = ObjPath::from(rel);
        let mut parts: Vec<_> = self.prefix().parts().collect();
        parts.extend(rel.parts());
        ObjPath::from_iter(parts)
    }
}
