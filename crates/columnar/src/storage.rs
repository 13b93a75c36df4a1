//! Where sealed segments live: the data directory, or object storage given a URL
//! (`s3://`, `gs://`, `az://`, `file://`) through the `object_store` crate.
//!
//! Layout under the root (Hive-style, so `read_parquet('…/events/**/*.parquet',
//! hive_partitioning = true)` in DuckDB sees `tenant` and `date` as columns):
//!
//! ```text
//! manifest.json                                    what is sealed, and the log offset
//! events/tenant=<uuid>/date=<YYYY-MM-DD>/<seq>-<n>.parquet
//! persons/tenant=<uuid>/<seq>.parquet
//! ```
//!
//! A seal writes its files first and the manifest last (a single put, atomic in every
//! backend), so a crash leaves either the old manifest or the new one, never a manifest
//! naming a file that is not there. Files no manifest names are left-overs of an
//! interrupted seal.
//!
//! # Formats and versions
//!
//! | file | version | where it is |
//! |---|---|---|
//! | `manifest.json` | [`VERSION`] (1) | its `version` field |
//! | events and persons Parquet files | [`crate::format::VERSION`] (1) | key-value metadata `livora:format` (absent: 1) |
//!
//! A file of an unknown version is refused with [`Error::UnsupportedFormat`]. A store written
//! by version 1 is committed in `crates/columnar/tests/compat/v1/` and read back, row by row,
//! by `tests/compat.rs` (see the README there).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Error;

/// What is sealed. Written last by every seal.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub version: u32,
    /// Every log record below this offset is in a sealed segment.
    pub offset: u64,
    /// The number of the last seal.
    pub seq: u64,
    pub tenants: BTreeMap<Uuid, TenantManifest>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TenantManifest {
    /// The persons snapshot taken with the last seal.
    pub persons: String,
    pub person_count: u64,
    /// Late events sealed so far (older than what was already sealed when they arrived).
    pub late_events: u64,
    /// In the order their rows are loaded.
    pub segments: Vec<SegmentMeta>,
}

/// One events file and its statistics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SegmentMeta {
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    /// Event time bounds, µs since the epoch.
    pub min_ts: i64,
    pub max_ts: i64,
}

pub const MANIFEST: &str = "manifest.json";
/// The manifest's format version (its `version` field).
pub const VERSION: u32 = 1;

/// An object store and the prefix Livora's files live under.
#[derive(Clone)]
pub struct SegmentStore {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// For a local directory: its path, to fsync what was written (object_store's local
    /// backend renames into place but does not sync).
    local: Option<PathBuf>,
    description: String,
}

impl std::fmt::Debug for SegmentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

impl SegmentStore {
    /// A local directory (created if missing).
    pub fn local(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir)?;
        let store = LocalFileSystem::new_with_prefix(dir)?;
        Ok(Self {
            store: Arc::new(store),
            prefix: ObjectPath::default(),
            local: Some(dir.to_path_buf()),
            description: dir.display().to_string(),
        })
    }

    /// A store from a URL. `options` are object_store configuration keys
    /// (`aws_endpoint`, `aws_access_key_id`, `google_service_account`,
    /// `azure_storage_account_name`…); unknown keys are ignored by the backends.
    pub fn from_url(
        url: &str,
        options: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, Error> {
        let parsed = url::Url::parse(url).map_err(|e| Error::Url(format!("{url:?}: {e}")))?;
        match parsed.scheme() {
            "file" => {
                let path = parsed
                    .to_file_path()
                    .map_err(|()| Error::Url(format!("{url:?} is not a local path")))?;
                Self::local(&path)
            }
            "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" => {
                let (store, prefix) = object_store::parse_url_opts(&parsed, options)
                    .map_err(|e| Error::Url(format!("{url:?}: {e}")))?;
                Ok(Self {
                    store: Arc::from(store),
                    prefix,
                    local: None,
                    description: url.to_owned(),
                })
            }
            other => Err(Error::Url(format!(
                "{url:?}: unsupported scheme {other:?} (use s3://, gs://, az:// or file://)"
            ))),
        }
    }

    fn path(&self, rel: &str) -> ObjectPath {
        rel.split('/')
            .filter(|p| !p.is_empty())
            .fold(self.prefix.clone(), |p, part| p.join(part))
    }

    pub async fn put(&self, rel: &str, bytes: Bytes) -> Result<(), Error> {
        self.store
            .put(&self.path(rel), PutPayload::from_bytes(bytes))
            .await?;
        if let Some(dir) = &self.local {
            let file = dir.join(rel);
            tokio::task::spawn_blocking(move || sync_file_and_dir(&file))
                .await
                .map_err(|e| Error::Io(std::io::Error::other(e)))??;
        }
        Ok(())
    }

    pub async fn get(&self, rel: &str) -> Result<Bytes, Error> {
        Ok(self.store.get(&self.path(rel)).await?.bytes().await?)
    }

    /// Deletes `rel`; a missing object is not an error.
    pub async fn delete(&self, rel: &str) -> Result<(), Error> {
        match self.store.delete(&self.path(rel)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every object under `dir` (a relative folder such as `events`), as paths relative to
    /// this store.
    pub async fn list(&self, dir: &str) -> Result<Vec<String>, Error> {
        use futures::TryStreamExt;
        let root = self.path(dir);
        let prefix = self.prefix.as_ref();
        let objects: Vec<object_store::ObjectMeta> =
            self.store.list(Some(&root)).try_collect().await?;
        Ok(objects
            .into_iter()
            .map(|o| {
                let full = o.location.as_ref();
                full.strip_prefix(prefix)
                    .map(|r| r.trim_start_matches('/'))
                    .unwrap_or(full)
                    .to_owned()
            })
            .collect())
    }

    /// The manifest, or `None` if nothing was ever sealed here.
    pub async fn manifest(&self) -> Result<Option<Manifest>, Error> {
        let bytes = match self.store.get(&self.path(MANIFEST)).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let m: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Segment(format!("{MANIFEST}: {e}")))?;
        if m.version != VERSION {
            return Err(Error::UnsupportedFormat {
                what: MANIFEST.to_owned(),
                found: m.version.to_string(),
                supported: VERSION,
            });
        }
        Ok(Some(m))
    }

    pub async fn put_manifest(&self, m: &Manifest) -> Result<(), Error> {
        let mut m = m.clone();
        m.version = VERSION;
        let json = serde_json::to_vec_pretty(&m)
            .map_err(|e| Error::Segment(format!("{MANIFEST}: {e}")))?;
        self.put(MANIFEST, Bytes::from(json)).await
    }
}

fn sync_file_and_dir(file: &Path) -> Result<(), Error> {
    std::fs::File::open(file)?.sync_all()?;
    if let Some(dir) = file.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// `events/tenant=<t>/date=<d>/<seq>-<n>.parquet`
pub fn events_path(tenant: Uuid, day_start_us: i64, seq: u64, n: usize) -> String {
    let date = chrono::DateTime::from_timestamp_micros(day_start_us)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "invalid".into());
    format!("events/tenant={tenant}/date={date}/{seq:08}-{n:04}.parquet")
}

/// `persons/tenant=<t>/<seq>.parquet`
pub fn persons_path(tenant: Uuid, seq: u64) -> String {
    format!("persons/tenant={tenant}/{seq:08}.parquet")
}
