//! [`Location`]: where an archive or a view store lives, and its
//! `object_store` handle.

use std::sync::Arc;

use object_store::path::Path as ObjPath;
use object_store::{ClientConfigKey, ObjectStore, RetryConfig};
use weft_config::S3Section;

use crate::{Result, ViewError};

/// Where an archive (or a view store) lives: a local directory or an
/// object-store URL (`s3://bucket/prefix`, `gs://bucket/prefix`,
/// `file:///path`). S3 is reached as `[s3]` says ([`S3Section`]: endpoint,
/// credentials, timeouts), each unset key falling back to its `AWS_*`
/// environment variable; Google Cloud Storage reads `GOOGLE_*`.
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
    pub fn parse(location: &str, must_exist: bool, s3: &S3Section) -> Result<Location> {
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
                        s3_builder(s3, &text)
                            .map_err(ViewError::Argument)?
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

/// An S3 client for `url` as `[s3]` says, unset keys from `AWS_*` (the
/// client options `from_env` reads, proxies among them, are kept).
fn s3_builder(s3: &S3Section, url: &str) -> Result<object_store::aws::AmazonS3Builder, String> {
    use object_store::aws::{AmazonS3ConfigKey as Key, AwsCredential};
    let mut b = object_store::aws::AmazonS3Builder::from_env().with_url(url);
    if let Some(endpoint) = &s3.endpoint {
        // Both keys: an `AWS_ENDPOINT_URL_S3` would otherwise win.
        b = b
            .with_config(Key::Endpoint, endpoint)
            .with_config(Key::S3Endpoint, endpoint);
    }
    if let Some(region) = &s3.region {
        b = b.with_region(region);
    }
    let secret = |key: &str, s: &weft_config::Secret| {
        s.resolve()
            .map(|s| s.expose().to_string())
            .map_err(|e| format!("s3.{key}: {e}"))
    };
    match (&s3.access_key_id, &s3.secret_access_key) {
        // Keys from the config go without the environment's session token
        // (temporary AWS credentials would be refused by another store).
        (Some(id), Some(key)) => {
            b = b.with_credentials(Arc::new(object_store::StaticCredentialProvider::new(
                AwsCredential {
                    key_id: secret("access_key_id", id)?,
                    secret_key: secret("secret_access_key", key)?,
                    token: None,
                },
            )));
        }
        (None, None) => {}
        _ => {
            return Err("s3.access_key_id and s3.secret_access_key: set both or neither".into());
        }
    }
    if s3.allow_http {
        b = b.with_allow_http(true);
    }
    Ok(b.with_config(
        Key::Client(ClientConfigKey::ConnectTimeout),
        format!("{}ms", s3.connect_timeout_ms),
    )
    .with_config(
        Key::Client(ClientConfigKey::Timeout),
        format!("{}ms", s3.request_timeout_ms),
    )
    .with_retry(RetryConfig {
        max_retries: s3.max_retries,
        retry_timeout: std::time::Duration::from_millis(s3.retry_timeout_ms),
        ..RetryConfig::default()
    }))
}
