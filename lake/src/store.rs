//! A lake URL turned into an [`ObjectStore`], plus the two things object stores do not
//! give uniformly: durability of a local put (fsync) and compare-and-swap updates of
//! small shared files such as the registry.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use crate::LakeError;

/// An opened lake: the store, rooted at the lake's prefix, and, for a local folder, its
/// path on disk.
#[derive(Clone)]
pub struct Lake {
    store: Arc<dyn ObjectStore>,
    url: String,
    local_root: Option<PathBuf>,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lake").field("url", &self.url).finish()
    }
}

fn memory_stores() -> &'static Mutex<HashMap<String, Arc<InMemory>>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

fn with_prefix(store: Arc<dyn ObjectStore>, prefix: &str) -> Arc<dyn ObjectStore> {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        store
    } else {
        Arc::new(PrefixStore::new(store, Path::from(prefix)))
    }
}

impl Lake {
    /// Opens a lake named by a URL (SPEC §1): `s3://bucket/prefix`, `gs://…`, `az://…`,
    /// `file:///abs/path`, a plain relative or absolute path (created when missing), or
    /// `memory://name` (one store per name within a process, for tests). Object stores read
    /// their credentials from the usual environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
    pub fn open(url_text: &str) -> Result<Lake, LakeError> {
        let invalid = |reason: String| LakeError::InvalidUrl { url: url_text.to_string(), reason };
        if url_text.trim().is_empty() {
            return Err(invalid("empty".into()));
        }
        let Some((scheme, rest)) = url_text.split_once("://") else {
            return Lake::open_local(url_text, PathBuf::from(url_text));
        };
        match scheme {
            "file" => {
                let url = url::Url::parse(url_text).map_err(|e| invalid(e.to_string()))?;
                let path = url.to_file_path().map_err(|_| invalid("not an absolute file path".into()))?;
                Lake::open_local(url_text, path)
            }
            "memory" => {
                let store = memory_stores()
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(rest.to_string())
                    .or_insert_with(|| Arc::new(InMemory::new()))
                    .clone();
                Ok(Lake { store, url: url_text.to_string(), local_root: None })
            }
            "s3" | "s3a" | "gs" | "az" | "abfs" | "abfss" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(invalid("missing bucket or container name".into()));
                }
                let built: Result<Arc<dyn ObjectStore>, object_store::Error> = match scheme {
                    "s3" | "s3a" => object_store::aws::AmazonS3Builder::from_env()
                        .with_bucket_name(bucket)
                        .build()
                        .map(|s| Arc::new(s) as _),
                    "gs" => object_store::gcp::GoogleCloudStorageBuilder::from_env()
                        .with_bucket_name(bucket)
                        .build()
                        .map(|s| Arc::new(s) as _),
                    _ => object_store::azure::MicrosoftAzureBuilder::from_env()
                        .with_container_name(bucket)
                        .build()
                        .map(|s| Arc::new(s) as _),
                };
                let store = built.map_err(|e| invalid(e.to_string()))?;
                Ok(Lake { store: with_prefix(store, prefix), url: url_text.to_string(), local_root: None })
            }
            other => Err(invalid(format!(
                "unknown scheme {other:?}; use s3://, gs://, az://, file://, memory:// or a folder path"
            ))),
        }
    }

    fn open_local(url_text: &str, path: PathBuf) -> Result<Lake, LakeError> {
        std::fs::create_dir_all(&path).map_err(|e| LakeError::io(&path, e))?;
        let root = std::fs::canonicalize(&path).map_err(|e| LakeError::io(&path, e))?;
        let store = LocalFileSystem::new_with_prefix(&root).map_err(|e| LakeError::store(root.display(), e))?;
        Ok(Lake { store: Arc::new(store), url: url_text.to_string(), local_root: Some(root) })
    }

    /// The store, rooted at the lake (paths are relative to the lake root).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The folder on disk when the lake is local.
    pub fn local_root(&self) -> Option<&FsPath> {
        self.local_root.as_deref()
    }

    /// The on-disk path of an object of a local lake.
    pub fn local_path(&self, path: &Path) -> Option<PathBuf> {
        self.local_root.as_ref().map(|root| {
            let mut p = root.clone();
            for part in path.parts() {
                p.push(part.as_ref());
            }
            p
        })
    }

    /// Makes an object that was just written durable. Object stores are durable once a put
    /// returns; the local filesystem store never fsyncs, so for a local lake this fsyncs the
    /// file and every folder from it up to the lake root (a new folder's entry must be
    /// durable too).
    pub async fn make_durable(&self, path: &Path) -> Result<(), LakeError> {
        let (Some(root), Some(file)) = (self.local_root.clone(), self.local_path(path)) else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || sync_path_and_parents(&file, &root))
            .await
            .map_err(|e| LakeError::Invalid(format!("fsync task failed: {e}")))?
    }

    /// Puts an object and returns once it is durable.
    pub async fn put_durable(&self, path: &Path, payload: PutPayload) -> Result<(), LakeError> {
        self.store.put(path, payload).await.map_err(|e| LakeError::store(path, e))?;
        self.make_durable(path).await
    }

    /// Reads an object; `None` when it does not exist.
    pub async fn get_optional(&self, path: &Path) -> Result<Option<Bytes>, LakeError> {
        match self.store.get(path).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(|e| LakeError::store(path, e))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(LakeError::store(path, e)),
        }
    }

    /// Reads an object unless its e-tag is still `etag`: `Ok(None)` when unchanged (or
    /// missing and `etag` is the empty marker), else the bytes and the new e-tag.
    pub async fn get_if_changed(&self, path: &Path, etag: Option<&str>) -> Result<Option<(Bytes, String)>, LakeError> {
        let opts = GetOptions { if_none_match: etag.map(str::to_string), ..Default::default() };
        match self.store.get_opts(path, opts).await {
            Ok(r) => {
                let tag = r.meta.e_tag.clone().unwrap_or_else(|| format!("{}-{}", r.meta.last_modified.timestamp_micros(), r.meta.size));
                let bytes = r.bytes().await.map_err(|e| LakeError::store(path, e))?;
                Ok(Some((bytes, tag)))
            }
            Err(object_store::Error::NotModified { .. }) => Ok(None),
            Err(object_store::Error::NotFound { .. }) => {
                if etag == Some(MISSING_ETAG) {
                    Ok(None)
                } else {
                    Ok(Some((Bytes::new(), MISSING_ETAG.to_string())))
                }
            }
            Err(e) => Err(LakeError::store(path, e)),
        }
    }

    /// Compare-and-swap update of a small object. `change` sees the current content (`None`
    /// when missing) and returns the new content, or `None` to leave it as it is. Concurrent
    /// updaters (other processes, other machines) never lose each other's changes: object
    /// stores use conditional puts (`If-Match` / `If-None-Match`) and retry on conflict; a
    /// local lake takes an exclusive lock beside the file and replaces it atomically.
    pub async fn update<T, F>(&self, path: &Path, mut change: F) -> Result<T, LakeError>
    where
        F: FnMut(Option<&[u8]>) -> Result<(Option<Bytes>, T), LakeError> + Send + 'static,
        T: Send + 'static,
    {
        if let Some(file) = self.local_path(path) {
            let root = self.local_root.clone().unwrap_or_default();
            return tokio::task::spawn_blocking(move || update_local(&file, &root, change))
                .await
                .map_err(|e| LakeError::Invalid(format!("update task failed: {e}")))?;
        }
        const ATTEMPTS: u32 = 50;
        for attempt in 0..ATTEMPTS {
            let (current, mode) = match self.store.get(path).await {
                Ok(r) => {
                    let version = UpdateVersion { e_tag: r.meta.e_tag.clone(), version: r.meta.version.clone() };
                    let bytes = r.bytes().await.map_err(|e| LakeError::store(path, e))?;
                    (Some(bytes), PutMode::Update(version))
                }
                Err(object_store::Error::NotFound { .. }) => (None, PutMode::Create),
                Err(e) => return Err(LakeError::store(path, e)),
            };
            let (new, out) = change(current.as_deref())?;
            let Some(new) = new else { return Ok(out) };
            let opts = PutOptions { mode, ..Default::default() };
            match self.store.put_opts(path, PutPayload::from_bytes(new), opts).await {
                Ok(_) => return Ok(out),
                Err(object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. }) => {
                    let jitter = rand::random::<u64>() % (10 + 10 * u64::from(attempt.min(20)));
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
                Err(e) => return Err(LakeError::store(path, e)),
            }
        }
        Err(LakeError::Contention { path: path.to_string(), attempts: ATTEMPTS })
    }
}

/// The e-tag [`Lake::get_if_changed`] reports for a missing object.
pub const MISSING_ETAG: &str = "<missing>";

fn update_local<T, F>(file: &FsPath, root: &FsPath, mut change: F) -> Result<T, LakeError>
where
    F: FnMut(Option<&[u8]>) -> Result<(Option<Bytes>, T), LakeError>,
{
    use fs2::FileExt;
    let dir = file.parent().ok_or_else(|| LakeError::Invalid(format!("{} has no folder", file.display())))?;
    std::fs::create_dir_all(dir).map_err(|e| LakeError::io(dir, e))?;
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // The lock file is a dot-file beside the object; readers only read named objects.
    let lock_path = dir.join(format!(".{name}.lock"));
    let lock = File::options().create(true).truncate(false).write(true).open(&lock_path).map_err(|e| LakeError::io(&lock_path, e))?;
    lock.lock_exclusive().map_err(|e| LakeError::io(&lock_path, e))?;
    let current = match std::fs::read(file) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(LakeError::io(file, e)),
    };
    let (new, out) = change(current.as_deref())?;
    if let Some(new) = new {
        let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(&new)?;
            f.sync_all()?;
            std::fs::rename(&tmp, file)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(LakeError::io(file, e));
        }
        sync_path_and_parents(file, root)?;
    }
    drop(lock);
    Ok(out)
}

/// fsyncs a file, then each folder from its parent up to and including `root`.
pub fn sync_path_and_parents(file: &FsPath, root: &FsPath) -> Result<(), LakeError> {
    File::open(file).and_then(|f| f.sync_all()).map_err(|e| LakeError::io(file, e))?;
    let mut dir = file.parent();
    while let Some(d) = dir {
        File::open(d).and_then(|f| f.sync_all()).map_err(|e| LakeError::io(d, e))?;
        if d == root || !d.starts_with(root) {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn append_line(lake: &Lake, path: &Path, line: String) {
        lake.update(path, move |cur| {
            let mut v = cur.map(<[u8]>::to_vec).unwrap_or_default();
            v.extend_from_slice(line.as_bytes());
            v.push(b'\n');
            Ok((Some(Bytes::from(v)), ()))
        })
        .await
        .unwrap();
    }

    async fn concurrent_updates_lose_nothing(lake: Lake) {
        let path = Path::from("registry/test.txt");
        let mut tasks = Vec::new();
        for i in 0..40 {
            let lake = lake.clone();
            let path = path.clone();
            tasks.push(tokio::spawn(async move { append_line(&lake, &path, format!("line {i}")).await }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let text = String::from_utf8(lake.get_optional(&path).await.unwrap().unwrap().to_vec()).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort();
        lines.dedup();
        assert_eq!(lines.len(), 40);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn memory_cas_loses_nothing() {
        concurrent_updates_lose_nothing(Lake::open("memory://cas-test").unwrap()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn local_cas_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        concurrent_updates_lose_nothing(Lake::open(dir.path().to_str().unwrap()).unwrap()).await;
    }

    #[tokio::test]
    async fn urls() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("lake").display());
        let lake = Lake::open(&url).unwrap();
        lake.put_durable(&Path::from("a/b.txt"), PutPayload::from_static(b"x")).await.unwrap();
        assert!(dir.path().join("lake/a/b.txt").exists());
        assert!(Lake::open("ftp://x").is_err());
        assert!(Lake::open("").is_err());
        assert!(Lake::open("s3:///nobucket").is_err());
        // The same memory name is the same store.
        let a = Lake::open("memory://same").unwrap();
        a.store().put(&Path::from("k"), PutPayload::from_static(b"v")).await.unwrap();
        let b = Lake::open("memory://same").unwrap();
        assert!(b.get_optional(&Path::from("k")).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn get_if_changed_tracks_etags() {
        let lake = Lake::open("memory://etag").unwrap();
        let p = Path::from("f");
        let (b, tag) = lake.get_if_changed(&p, None).await.unwrap().unwrap();
        assert!(b.is_empty());
        assert!(lake.get_if_changed(&p, Some(&tag)).await.unwrap().is_none());
        lake.store().put(&p, PutPayload::from_static(b"1")).await.unwrap();
        let (b, tag2) = lake.get_if_changed(&p, Some(&tag)).await.unwrap().unwrap();
        assert_eq!(&b[..], b"1");
        assert!(lake.get_if_changed(&p, Some(&tag2)).await.unwrap().is_none());
    }
}
