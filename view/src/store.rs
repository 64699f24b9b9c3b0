//! The view store: staging, publishing, `CURRENT` (rollback), retention and
//! fetching a view's files.
//!
//! The store's `CURRENT` file names the published view. Publishing writes the
//! whole view first (locally in a staging directory renamed into place in one
//! step; on an object store, `manifest.json` created only-if-absent after
//! the data), then replaces `CURRENT` atomically, so a reader that goes
//! through `CURRENT` sees the old view or the new one, never a partial one.
//! Older views are kept (`keep`) for rollback ([`ViewStore::set_current`]).

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::format::{
    CURRENT_FILE, MANIFEST_FILE, Manifest, OLDEST_VIEW_FORMAT, SPEC_FILE, VIEW_FORMAT,
    parse_version, version_name,
};
use crate::location::Location;
use crate::{Result, ViewError};
use weft_config::S3Section;

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(ViewError::io(path))?;
    f.write_all(bytes).map_err(ViewError::io(path))?;
    f.sync_all().map_err(ViewError::io(path))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ViewError::io(dir))
}

/// Where a cluster job's tasks put their files in a remote store, under
/// the job's id: `<store>/_staging/<job>/`. (In a local store the job's
/// staging directory, `.staging-<job>`, is shared instead.)
pub const STAGING_PREFIX: &str = "_staging";

/// Cluster job `job`'s staging directory in the local store at `root`.
fn job_dir(root: &Path, job: &str) -> PathBuf {
    root.join(format!(".staging-{job}"))
}

/// A directory a job writes a view into before publishing it. Removed on
/// drop unless published.
///
/// A cluster job's tasks put their files in the store themselves
/// ([`ViewStore::stage_file`]) under names of their own (an attempt that
/// was retried leaves its file behind); the job adopts the files of the
/// attempts that counted ([`Staging::adopt`]) and publishing moves those,
/// and only those, into the view.
#[derive(Debug)]
pub struct Staging {
    pub dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    published: bool,
    /// The cluster job whose tasks stage files, if any.
    job: Option<String>,
    /// (staged name, name in the view) of the tasks' files.
    adopted: Vec<(String, String)>,
}

impl Staging {
    fn new(dir: PathBuf, temp: Option<tempfile::TempDir>) -> Staging {
        Staging {
            dir,
            _temp: temp,
            published: false,
            job: None,
            adopted: Vec::new(),
        }
    }

    /// Takes the task file staged as `staged` into the view as `name`.
    pub fn adopt(&mut self, staged: &str, name: &str) {
        self.adopted.push((staged.to_string(), name.to_string()));
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.published && self._temp.is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Where views are published: a local directory or an object-store URL.
#[derive(Debug, Clone)]
pub struct ViewStore {
    loc: Location,
}

impl ViewStore {
    /// Opens a view store, creating a local directory if it is missing;
    /// `s3` says how an `s3://` store is reached.
    pub fn open(location: &str, s3: &S3Section) -> Result<ViewStore> {
        Ok(ViewStore {
            loc: Location::parse(location, false, s3)?,
        })
    }

    pub fn display(&self) -> &str {
        &self.loc.display
    }

    pub(crate) fn err(&self, problem: impl Into<String>) -> ViewError {
        ViewError::Store {
            store: self.loc.display.clone(),
            problem: problem.into(),
        }
    }

    /// A fresh staging directory: inside a local store (so publishing is a
    /// rename), or a temporary directory for a remote one.
    pub fn staging(&self) -> Result<Staging> {
        match &self.loc.local {
            Some(root) => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default();
                let dir = root.join(format!(".staging-{}-{nanos}", std::process::id()));
                fs::create_dir_all(&dir).map_err(ViewError::io(&dir))?;
                Ok(Staging::new(dir, None))
            }
            None => {
                let temp = tempfile::tempdir().map_err(ViewError::io(std::env::temp_dir()))?;
                Ok(Staging::new(temp.path().to_path_buf(), Some(temp)))
            }
        }
    }

    /// The staging of cluster job `job` (an id unique to the run): the
    /// directory its tasks share in a local store, or a temporary
    /// directory for the files the client writes itself when the store is
    /// remote (the tasks' files go to `_staging/<job>/` in the store).
    pub fn job_staging(&self, job: &str) -> Result<Staging> {
        let mut staging = match &self.loc.local {
            Some(root) => {
                let dir = job_dir(root, job);
                fs::create_dir_all(&dir).map_err(ViewError::io(&dir))?;
                Staging::new(dir, None)
            }
            None => self.staging()?,
        };
        staging.job = Some(job.to_string());
        Ok(staging)
    }

    /// A task's side of [`ViewStore::job_staging`]: puts the finished local
    /// file `from` into job `job`'s staging area as `name`, whole or not at
    /// all (a temporary renamed into place locally; one upload, completed
    /// last, remotely).
    pub async fn stage_file(&self, job: &str, from: &Path, name: &str) -> Result<()> {
        match &self.loc.local {
            Some(root) => {
                let dir = job_dir(root, job);
                fs::create_dir_all(&dir).map_err(ViewError::io(&dir))?;
                let (tmp, target) = (dir.join(format!(".{name}.tmp")), dir.join(name));
                if fs::rename(from, &tmp).is_err() {
                    fs::copy(from, &tmp).map_err(ViewError::io(&tmp))?;
                }
                // Temporary files are private; a view's files are not.
                {
                    use std::os::unix::fs::PermissionsExt;
                    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))
                        .map_err(ViewError::io(&tmp))?;
                }
                File::open(&tmp)
                    .and_then(|f| f.sync_all())
                    .map_err(ViewError::io(&tmp))?;
                fs::rename(&tmp, &target).map_err(ViewError::io(&target))
            }
            None => self.upload(from, &self.staged_object(job, name)).await,
        }
    }

    /// The bytes a task of job `job` staged as `name`.
    pub async fn read_staged(&self, job: &str, name: &str) -> Result<Vec<u8>> {
        match &self.loc.local {
            Some(root) => {
                let path = job_dir(root, job).join(name);
                fs::read(&path).map_err(ViewError::io(&path))
            }
            None => {
                let got = self.loc.store.get(&self.staged_object(job, name)).await?;
                Ok(got.bytes().await?.to_vec())
            }
        }
    }

    /// The names of the files job `job`'s tasks have staged so far (none
    /// if nothing was staged yet); a temporary being written is not one.
    pub async fn staged_names(&self, job: &str) -> Result<Vec<String>> {
        let mut names: Vec<String> = match &self.loc.local {
            Some(root) => {
                let dir = job_dir(root, job);
                match fs::read_dir(&dir) {
                    Ok(entries) => entries
                        .filter_map(|e| e.ok()?.file_name().into_string().ok())
                        .filter(|name| !name.starts_with('.'))
                        .collect(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                    Err(e) => return Err(ViewError::io(&dir)(e)),
                }
            }
            None => {
                let prefix = self.loc.child(&format!("{STAGING_PREFIX}/{job}"));
                let metas: Vec<_> = self.loc.store.list(Some(&prefix)).try_collect().await?;
                metas
                    .iter()
                    .filter_map(|m| Some(m.location.filename()?.to_string()))
                    .collect()
            }
        };
        names.sort_unstable();
        Ok(names)
    }

    /// The URL of the file job `job` staged (or will stage) as `name`, for
    /// readers that resolve URLs themselves, such as DataFusion's scans
    /// (the store's object store: [`ViewStore::location`]).
    pub fn staged_url(&self, job: &str, name: &str) -> Result<url::Url> {
        match &self.loc.local {
            Some(root) => {
                let path = job_dir(root, job).join(name);
                let path = std::path::absolute(&path).map_err(ViewError::io(&path))?;
                url::Url::from_file_path(&path)
                    .map_err(|()| self.err(format!("{}: not a file URL", path.display())))
            }
            None => self
                .loc
                .url
                .join(&format!("{STAGING_PREFIX}/{job}/{name}"))
                .map_err(|e| self.err(e.to_string())),
        }
    }

    /// Where the store is, and its object store.
    pub fn location(&self) -> &Location {
        &self.loc
    }

    fn staged_object(&self, job: &str, name: &str) -> ObjPath {
        self.loc.child(&format!("{STAGING_PREFIX}/{job}/{name}"))
    }

    /// Deletes job `job`'s staging area: after publishing, or when the job
    /// failed (what its tasks staged is never visible to readers, who go
    /// through manifests).
    pub async fn discard_job(&self, job: &str) -> Result<()> {
        match &self.loc.local {
            Some(root) => {
                let dir = job_dir(root, job);
                match fs::remove_dir_all(&dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Err(ViewError::io(&dir)(e))
                    }
                    _ => Ok(()),
                }
            }
            None => {
                self.delete_under(&self.loc.child(&format!("{STAGING_PREFIX}/{job}")))
                    .await
            }
        }
    }

    /// Published views (those with a manifest), oldest first.
    pub async fn versions(&self) -> Result<Vec<u64>> {
        let prefix = self.loc.prefix().clone();
        let metas: Vec<_> = self.loc.store.list(Some(&prefix)).try_collect().await?;
        let mut out: Vec<u64> = metas
            .iter()
            .filter_map(|m| {
                let parts: Vec<_> = m.location.prefix_match(&prefix)?.collect();
                match parts.as_slice() {
                    [dir, file] if file.as_ref() == MANIFEST_FILE => parse_version(dir.as_ref()),
                    _ => None,
                }
            })
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// The published view's version (None: nothing published yet).
    pub async fn current(&self) -> Result<Option<u64>> {
        match self.loc.store.get(&self.loc.child(CURRENT_FILE)).await {
            Ok(got) => {
                let bytes = got.bytes().await?;
                let text = String::from_utf8_lossy(&bytes);
                parse_version(text.trim())
                    .map(Some)
                    .ok_or_else(|| self.err(format!("{CURRENT_FILE} holds '{}'", text.trim())))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn manifest(&self, version: u64) -> Result<Manifest> {
        let path = self
            .loc
            .child(&format!("{}/{MANIFEST_FILE}", version_name(version)));
        let bytes = match self.loc.store.get(&path).await {
            Ok(got) => got.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(self.err(format!("view {} does not exist", version_name(version))));
            }
            Err(e) => return Err(e.into()),
        };
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| self.err(format!("{path}: not a view manifest: {e}")))?;
        if !(OLDEST_VIEW_FORMAT..=VIEW_FORMAT).contains(&manifest.format) {
            return Err(self.err(format!(
                "{path}: view format {} is not supported (this build reads {OLDEST_VIEW_FORMAT} to {VIEW_FORMAT})",
                manifest.format
            )));
        }
        Ok(manifest)
    }

    /// Publishes a staged view as the next version and makes it current;
    /// then deletes all but the newest `keep` views (never the current one).
    /// Returns the version.
    pub async fn publish(
        &self,
        mut staging: Staging,
        mut manifest: Manifest,
        keep: usize,
    ) -> Result<u64> {
        if self.loc.local.is_some() && staging.job.is_some() {
            self.settle_local(&staging, &manifest)?;
        }
        let version = match &self.loc.local {
            Some(root) => loop {
                let dirs = fs::read_dir(root).map_err(ViewError::io(root))?;
                let highest = dirs
                    .filter_map(|d| parse_version(d.ok()?.file_name().to_str()?))
                    .max()
                    .unwrap_or(0);
                manifest.version = highest + 1;
                let bytes =
                    serde_json::to_vec_pretty(&manifest).map_err(|e| self.err(e.to_string()))?;
                write_synced(&staging.dir.join(MANIFEST_FILE), &bytes)?;
                for entry in fs::read_dir(&staging.dir).map_err(ViewError::io(&staging.dir))? {
                    let path = entry.map_err(ViewError::io(&staging.dir))?.path();
                    File::open(&path)
                        .and_then(|f| f.sync_all())
                        .map_err(ViewError::io(&path))?;
                }
                sync_dir(&staging.dir)?;
                let target = root.join(version_name(manifest.version));
                match fs::rename(&staging.dir, &target) {
                    Ok(()) => {
                        staging.published = true;
                        sync_dir(root)?;
                        break manifest.version;
                    }
                    // Another job took this version: take the next one.
                    Err(e) if target.exists() => {
                        tracing::warn!(error = %e, "view {} exists; retrying", target.display());
                    }
                    Err(e) => return Err(ViewError::io(&target)(e)),
                }
            },
            None => {
                let highest = self.versions().await?.last().copied().unwrap_or(0);
                manifest.version = highest + 1;
                let dir = version_name(manifest.version);
                for entry in fs::read_dir(&staging.dir).map_err(ViewError::io(&staging.dir))? {
                    let path = entry.map_err(ViewError::io(&staging.dir))?.path();
                    let name = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or_default();
                    self.upload(&path, &self.loc.child(&format!("{dir}/{name}")))
                        .await?;
                }
                if let Some(job) = &staging.job {
                    for (staged, name) in &staging.adopted {
                        self.loc
                            .store
                            .copy(
                                &self.staged_object(job, staged),
                                &self.loc.child(&format!("{dir}/{name}")),
                            )
                            .await
                            .map_err(|e| self.err(format!("publishing {dir}: {e}")))?;
                    }
                }
                let bytes =
                    serde_json::to_vec_pretty(&manifest).map_err(|e| self.err(e.to_string()))?;
                let put = PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                };
                self.loc
                    .store
                    .put_opts(
                        &self.loc.child(&format!("{dir}/{MANIFEST_FILE}")),
                        bytes.into(),
                        put,
                    )
                    .await
                    .map_err(|e| self.err(format!("publishing {dir}: {e}")))?;
                manifest.version
            }
        };
        self.set_current(version).await?;
        if let (None, Some(job)) = (&self.loc.local, &staging.job)
            && let Err(e) = self.discard_job(job).await
        {
            tracing::warn!(error = %e, job, "the published job's staging area was not removed");
        }
        self.prune(keep).await?;
        Ok(version)
    }

    /// A local cluster job's staging directory made into the view: the
    /// adopted task files renamed to their names in the view, everything
    /// else the tasks left (files of retried attempts, temporaries)
    /// removed.
    fn settle_local(&self, staging: &Staging, manifest: &Manifest) -> Result<()> {
        for (staged, name) in &staging.adopted {
            let (from, to) = (staging.dir.join(staged), staging.dir.join(name));
            fs::rename(&from, &to).map_err(ViewError::io(&from))?;
        }
        for entry in fs::read_dir(&staging.dir).map_err(ViewError::io(&staging.dir))? {
            let path = entry.map_err(ViewError::io(&staging.dir))?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let keep = name == SPEC_FILE || manifest.files.iter().any(|f| f.name == name);
            if !keep {
                fs::remove_file(&path).map_err(ViewError::io(&path))?;
            }
        }
        Ok(())
    }

    /// Deletes every object under `prefix` (a remote store).
    async fn delete_under(&self, prefix: &ObjPath) -> Result<()> {
        let objects: Vec<_> = self.loc.store.list(Some(prefix)).try_collect().await?;
        for o in objects {
            self.loc.store.delete(&o.location).await?;
        }
        Ok(())
    }

    async fn upload(&self, from: &Path, to: &ObjPath) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let mut writer = object_store::buffered::BufWriter::new(self.loc.store.clone(), to.clone());
        let mut f = File::open(from).map_err(ViewError::io(from))?;
        let mut buf = vec![0u8; 8 << 20];
        loop {
            let n = f.read(&mut buf).map_err(ViewError::io(from))?;
            if n == 0 {
                break;
            }
            writer
                .write_all(&buf[..n])
                .await
                .map_err(|e| self.err(format!("uploading {}: {e}", from.display())))?;
        }
        writer
            .shutdown()
            .await
            .map_err(|e| self.err(format!("uploading {}: {e}", from.display())))
    }

    /// Makes `version` the published view (also: rollback). It must exist.
    pub async fn set_current(&self, version: u64) -> Result<()> {
        self.manifest(version).await?;
        let text = format!("{}\n", version_name(version));
        match &self.loc.local {
            Some(root) => {
                let tmp = root.join(format!(".{CURRENT_FILE}.tmp"));
                write_synced(&tmp, text.as_bytes())?;
                let path = root.join(CURRENT_FILE);
                fs::rename(&tmp, &path).map_err(ViewError::io(&path))?;
                sync_dir(root)
            }
            None => {
                self.loc
                    .store
                    .put(&self.loc.child(CURRENT_FILE), PutPayload::from(text))
                    .await?;
                Ok(())
            }
        }
    }

    /// Deletes all but the newest `keep` views, never the current one.
    pub async fn prune(&self, keep: usize) -> Result<Vec<u64>> {
        let current = self.current().await?;
        let versions = self.versions().await?;
        let doomed: Vec<u64> = versions
            .iter()
            .rev()
            .skip(keep.max(1))
            .copied()
            .filter(|v| Some(*v) != current)
            .collect();
        for v in &doomed {
            match &self.loc.local {
                Some(root) => {
                    let dir = root.join(version_name(*v));
                    // The manifest goes first, so a half-deleted view is
                    // never listed as published.
                    fs::remove_file(dir.join(MANIFEST_FILE)).map_err(ViewError::io(&dir))?;
                    fs::remove_dir_all(&dir).map_err(ViewError::io(&dir))?;
                }
                None => {
                    self.loc
                        .store
                        .delete(
                            &self
                                .loc
                                .child(&format!("{}/{MANIFEST_FILE}", version_name(*v))),
                        )
                        .await?;
                    self.delete_under(&self.loc.child(&version_name(*v)))
                        .await?;
                }
            }
        }
        Ok(doomed)
    }

    /// A local directory holding the view's files: the view itself for a
    /// local store, a download into `cache` otherwise.
    pub(crate) async fn fetch(
        &self,
        version: u64,
        manifest: &Manifest,
        cache: &Path,
    ) -> Result<PathBuf> {
        let name = version_name(version);
        if let Some(root) = &self.loc.local {
            return Ok(root.join(name));
        }
        let dir = cache.join(format!("download-{name}"));
        fs::create_dir_all(&dir).map_err(ViewError::io(&dir))?;
        let names = manifest
            .files
            .iter()
            .map(|f| f.name.clone())
            .chain([SPEC_FILE.to_string()]);
        for file in names {
            let got = self
                .loc
                .store
                .get(&self.loc.child(&format!("{name}/{file}")))
                .await?;
            let mut stream = got.into_stream();
            let path = dir.join(&file);
            let mut out = File::create(&path).map_err(ViewError::io(&path))?;
            while let Some(chunk) = stream.try_next().await? {
                out.write_all(&chunk).map_err(ViewError::io(&path))?;
            }
        }
        Ok(dir)
    }
}
