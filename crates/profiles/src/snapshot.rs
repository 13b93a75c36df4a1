//! Snapshots of the profiles state, so that a restart reads only the log written since the
//! last one, and the log's retention can delete what came before without losing a profile.
//!
//! - One file per tenant, `<dir>/<tenant>.snap`: the tenant's whole [`Engine`] (identity
//!   graph and merge log, profiles, groups, segments, memberships, sizes, timers), what the
//!   log has announced of its memberships, and the log offset it reflects.
//! - A round [freezes](Frozen) every tenant that changed (the follower waits for this
//!   alone), writes them on another task while the follower goes on, then writes
//!   `<dir>/MANIFEST` (the round's offset and every tenant with a file); the follower then
//!   commits the offset for the `profiles` log consumer, so retention keeps every record
//!   after it. Each file is replaced atomically (temporary file,
//!   sync, rename, sync the directory); a crash mid-round leaves the previous round usable.
//! - Format: `LVPS`, a format byte, a flags byte, then compact MessagePack (structs as
//!   arrays; segment definitions as JSON text) compressed with zstd. With encryption at rest (flag 1)
//!   the compressed body is sealed with AES-256-GCM under the tenant key, the tenant id and
//!   a label authenticated with it: profiles hold decrypted traits, and they never reach the
//!   disk in the clear.
//!
//! # Formats and versions
//!
//! - Tenant files: the format byte after `LVPS`, [`FORMAT`] (1). Another is refused with
//!   [`SnapshotError::UnsupportedFormat`] (and the tenant is rebuilt from the log while the
//!   log still holds everything, like any unreadable snapshot).
//! - `MANIFEST`: JSON with a `version` field, [`MANIFEST_VERSION`] (1); a manifest without
//!   it (written before the field existed) is version 1, another version is refused.
//!
//! A snapshot directory written by version 1 (unencrypted: an encrypted file's tenant key is
//! random and kept wrapped in the metadata store, so it is not fixtured) is committed in
//! `crates/profiles/tests/compat/v1/` and read back by the tests in `src/compat_tests.rs`.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use livora_model::TenantId;

use crate::identity::PersonId;
use crate::segments::Engine;

/// The log consumer whose committed offset is the newest complete round.
pub const CONSUMER: &str = "profiles";

/// What the tenant key's seal is labelled with.
pub const LABEL: &str = "profiles-snapshot";

const MAGIC: &[u8; 4] = b"LVPS";
/// The tenant file format this build writes and reads.
pub const FORMAT: u8 = 1;
/// The `MANIFEST` format this build writes and reads.
pub const MANIFEST_VERSION: u32 = 1;
const ENCRYPTED: u8 = 1;

/// How a node keeps profiles.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `None`: no snapshots; every start reads the whole log again.
    pub snapshots: Option<Snapshots>,
    /// The memory the profiles may take (`None`: all decoded); see [`crate::people`].
    pub budget: Option<std::sync::Arc<crate::people::Budget>>,
}

/// Where and how often snapshots are written.
#[derive(Debug, Clone)]
pub struct Snapshots {
    pub dir: PathBuf,
    /// The time between rounds (a round also follows soon after a segment is saved or
    /// deleted, an un-merge, or an erasure).
    pub every: Duration,
}

/// Memberships the log has announced, per (segment or tag id, is a tag).
pub type Announced = HashMap<(String, bool), AnnouncedSet>;

/// The persons the log has announced as members of one segment or tag, as a compressed
/// bitmap: person ids are given in order, so a set of them costs a few bits a member where a
/// hash set took 9 bytes and more (this is a second copy of every membership, held for as
/// long as the service runs). Serialized as the sequence of ids the hash set was, so
/// snapshots keep their format.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnnouncedSet(roaring::RoaringTreemap);

impl AnnouncedSet {
    /// Adds `p`; whether it was not there.
    pub fn insert(&mut self, p: PersonId) -> bool {
        self.0.insert(p)
    }

    /// Removes `p`; whether it was there.
    pub fn remove(&mut self, p: PersonId) -> bool {
        self.0.remove(p)
    }

    pub fn contains(&self, p: PersonId) -> bool {
        self.0.contains(p)
    }

    /// The members in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = PersonId> + '_ {
        self.0.iter()
    }
}

impl FromIterator<PersonId> for AnnouncedSet {
    fn from_iter<I: IntoIterator<Item = PersonId>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl Serialize for AnnouncedSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

impl<'de> Deserialize<'de> for AnnouncedSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Ids;
        impl<'de> serde::de::Visitor<'de> for Ids {
            type Value = AnnouncedSet;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sequence of person ids")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut set = AnnouncedSet::default();
                while let Some(p) = seq.next_element::<PersonId>()? {
                    set.insert(p);
                }
                Ok(set)
            }
        }
        d.deserialize_seq(Ids)
    }
}

/// A tenant's state to write.
#[derive(Serialize)]
pub struct BodyRef<'a> {
    pub tenant: TenantId,
    pub applied: u64,
    pub history_from: u64,
    pub engine: &'a Engine,
    pub announced: &'a Announced,
}

/// A tenant's state as read back.
#[derive(Deserialize)]
pub struct Body {
    pub tenant: TenantId,
    /// One past the last log offset it reflects.
    pub applied: u64,
    /// The log offset from which the tenant's every event was applied (0: from the start).
    pub history_from: u64,
    pub engine: Engine,
    pub announced: Announced,
}

/// A tenant's state held still for writing. Taken under the tenant's lock in a fraction of
/// the time encoding takes (profiles and identifier sets are shared with the live engine,
/// which copies one only when it changes it meanwhile: see [`Engine::frozen`]), then
/// encoded, sealed and written while the follower goes on.
pub struct Frozen {
    pub tenant: TenantId,
    pub applied: u64,
    history_from: u64,
    engine: Engine,
    announced: Announced,
}

impl Frozen {
    pub fn new(
        tenant: TenantId,
        applied: u64,
        history_from: u64,
        engine: &Engine,
        announced: &Announced,
    ) -> Self {
        Self {
            tenant,
            applied,
            history_from,
            engine: engine.frozen(),
            announced: announced.clone(),
        }
    }

    /// The snapshot body, as [`encode`] writes a live engine.
    pub fn encode(&self) -> Result<Vec<u8>, SnapshotError> {
        encode(&BodyRef {
            tenant: self.tenant,
            applied: self.applied,
            history_from: self.history_from,
            engine: &self.engine,
            announced: &self.announced,
        })
    }
}

/// The newest complete round.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub offset: u64,
    pub tenants: Vec<TenantId>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("cannot encode the profiles of tenant {0}: {1}")]
    Encode(TenantId, String),
    #[error("{0} is not a readable profiles snapshot: {1}")]
    Decode(PathBuf, String),
    #[error(
        "{path} is in format version {found} of the {what}, and this build reads version {supported}: use a newer Livora"
    )]
    UnsupportedFormat {
        path: PathBuf,
        /// `profiles snapshot` or `profiles snapshot manifest`.
        what: &'static str,
        found: u32,
        supported: u32,
    },
    #[error("{0} is encrypted, and encryption at rest is off: turn it back on to read it")]
    NeedsKey(PathBuf),
    #[error(transparent)]
    Crypto(#[from] livora_store::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |e| SnapshotError::Io(path.to_owned(), e)
}

/// The file of a tenant.
pub(crate) fn tenant_path(dir: &Path, tenant: TenantId) -> PathBuf {
    dir.join(format!("{tenant}.snap"))
}

/// Small parts whose types skip fields when serialized (segment definitions, selectors),
/// kept as JSON text inside the MessagePack: compact MessagePack (structs as arrays) cannot
/// hold a struct that leaves a field out.
pub(crate) mod as_json {
    use serde::de::{DeserializeOwned, Error as _};
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(v).map_err(S::Error::custom)?;
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(
        d: D,
    ) -> Result<T, D::Error> {
        let text = String::deserialize(d)?;
        serde_json::from_str(&text).map_err(D::Error::custom)
    }
}

/// Compact MessagePack (structs as arrays), compressed (level 1: a snapshot is written
/// often and read once). The service encodes a [`Frozen`] copy rather than the live engine.
pub fn encode(body: &BodyRef<'_>) -> Result<Vec<u8>, SnapshotError> {
    let bad = |e: String| SnapshotError::Encode(body.tenant, e);
    let mut z = zstd::Encoder::new(Vec::new(), 1).map_err(|e| bad(e.to_string()))?;
    // Compressed on a worker thread while this one serializes: the state is held still
    // (the follower waits) for the serialization alone, not for both one after the other.
    z.multithread(1).map_err(|e| bad(e.to_string()))?;
    // MessagePack writes a few bytes at a time: buffered, zstd sees large blocks.
    let mut w = std::io::BufWriter::with_capacity(1 << 16, z);
    rmp_serde::encode::write(&mut w, body).map_err(|e| bad(e.to_string()))?;
    w.into_inner()
        .map_err(|e| bad(e.to_string()))?
        .finish()
        .map_err(|e| bad(e.to_string()))
}

pub fn decode(path: &Path, packed: &[u8]) -> Result<Body, SnapshotError> {
    let bad = |e: String| SnapshotError::Decode(path.to_owned(), e);
    let z = zstd::Decoder::new(packed).map_err(|e| bad(e.to_string()))?;
    let r = std::io::BufReader::with_capacity(1 << 16, z);
    let mut body: Body = rmp_serde::decode::from_read(r).map_err(|e| bad(e.to_string()))?;
    body.engine.reindex();
    Ok(body)
}

/// The file's bytes: the header, then the body (`encrypted`: already sealed).
pub(crate) fn frame(body: &[u8], encrypted: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 6);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.push(if encrypted { ENCRYPTED } else { 0 });
    out.extend_from_slice(body);
    out
}

/// The body of a file, and whether it is sealed.
pub(crate) fn unframe<'a>(path: &Path, bytes: &'a [u8]) -> Result<(&'a [u8], bool), SnapshotError> {
    match bytes {
        [m0, m1, m2, m3, format, flags, body @ ..] if [*m0, *m1, *m2, *m3] == *MAGIC => {
            if *format != FORMAT {
                return Err(SnapshotError::UnsupportedFormat {
                    path: path.to_owned(),
                    what: "profiles snapshot",
                    found: (*format).into(),
                    supported: FORMAT.into(),
                });
            }
            Ok((body, flags & ENCRYPTED != 0))
        }
        _ => Err(SnapshotError::Decode(
            path.to_owned(),
            "no snapshot header".into(),
        )),
    }
}

/// Replaces `path` with `bytes` atomically and durably.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, SnapshotError> {
    let mut out = Vec::new();
    fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut out))
        .map_err(io(path))?;
    Ok(out)
}

/// The `MANIFEST` as written: the manifest and its format version.
#[derive(Serialize)]
struct ManifestOut<'a> {
    version: u32,
    #[serde(flatten)]
    manifest: &'a Manifest,
}

fn manifest_v1() -> u32 {
    1
}

pub(crate) fn read_manifest(dir: &Path) -> Result<Option<Manifest>, SnapshotError> {
    let path = dir.join("MANIFEST");
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SnapshotError::Io(path, e)),
    };
    // The version first (a manifest without one is version 1), so that a newer manifest is
    // named as such even when the rest of it is not what this build expects.
    #[derive(Deserialize)]
    struct Version {
        #[serde(default = "manifest_v1")]
        version: u32,
    }
    let Version { version } = serde_json::from_slice(&bytes)
        .map_err(|e| SnapshotError::Decode(path.clone(), e.to_string()))?;
    if version != MANIFEST_VERSION {
        return Err(SnapshotError::UnsupportedFormat {
            path,
            what: "profiles snapshot manifest",
            found: version,
            supported: MANIFEST_VERSION,
        });
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| SnapshotError::Decode(path, e.to_string()))
}

pub(crate) fn write_manifest(dir: &Path, m: &Manifest) -> Result<(), SnapshotError> {
    let text = serde_json::to_vec(&ManifestOut {
        version: MANIFEST_VERSION,
        manifest: m,
    })
    .unwrap_or_default();
    write_atomic(&dir.join("MANIFEST"), &text)
}

/// Deletes the files of tenants no longer in a round.
pub(crate) fn remove_others(dir: &Path, keep: &[TenantId]) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".snap")) else {
            continue;
        };
        if !keep.iter().any(|k| k.to_string() == id)
            && let Err(err) = fs::remove_file(e.path())
        {
            tracing::warn!(error = %err, "cannot delete an old profiles snapshot");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PersonSet;
    use proptest::prelude::*;

    proptest! {
        /// An announced set answers as the hash set it replaced, after any inserts and
        /// removals (ids spread over several bitmap containers), and each reads what the
        /// other wrote: snapshots keep their format.
        #[test]
        fn an_announced_set_is_the_hash_set_it_replaced(
            ops in prop::collection::vec((any::<bool>(), 0u64..200_000), 0..400)
        ) {
            let (mut set, mut reference) = (AnnouncedSet::default(), PersonSet::default());
            for (insert, p) in ops {
                if insert {
                    prop_assert_eq!(set.insert(p), reference.insert(p));
                } else {
                    prop_assert_eq!(set.remove(p), reference.remove(&p));
                }
            }
            let mut expected: Vec<PersonId> = reference.iter().copied().collect();
            expected.sort_unstable();
            prop_assert_eq!(set.iter().collect::<Vec<_>>(), expected.clone());
            prop_assert_eq!(set.iter().count(), expected.len());
            prop_assert!(expected.iter().all(|p| set.contains(*p)));
            let from_old: AnnouncedSet =
                rmp_serde::from_slice(&rmp_serde::to_vec(&reference).expect("encode")).expect("decode");
            prop_assert_eq!(&from_old, &set);
            let back: PersonSet =
                rmp_serde::from_slice(&rmp_serde::to_vec(&set).expect("encode")).expect("decode");
            prop_assert_eq!(back, reference);
        }
    }
}
