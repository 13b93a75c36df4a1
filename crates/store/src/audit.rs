//! The audit log: an append-only file of JSON lines, one per administrative action, hash
//! chained so that an edited, inserted, reordered or deleted entry is detected.
//!
//! Each entry holds `seq` (1, 2, …), `at`, `actor`, `action`, `tenant`, `target`, `from` (the
//! client address, or `cli`), `before`/`after` where they apply, `prev` (the previous entry's
//! hash; 64 zeros for the first) and `hash`. [`verify_with`] recomputes every hash and checks
//! `seq` and `prev`.
//!
//! Two entry formats, in one file:
//! - version 1 (no `v` field, the first format): `hash` = SHA-256 of `prev`, a newline and the
//!   entry's JSON without `hash`. Anyone who can write the file can edit an entry and
//!   recompute every later hash.
//! - version 2 (`"v":2`): `hash` = HMAC-SHA256 under the audit key ([`AuditKey`], kept
//!   wrapped by the master key or KMS: [`crate::crypto::audit_key`]) of the same text. An edit
//!   cannot be re-hashed without the key.
//!
//! A log opened with a key appends version 2 entries; an older log goes on as one chain (its
//! version 1 entries stay checkable, and the first keyed entry's HMAC covers their last hash).
//! Once a keyed entry is written, an unkeyed one after it, or a log that ends unkeyed while its
//! key already existed, is refused: rewriting the chain without the key is detected.
//!
//! A file with both versions (under a fixed test key) is committed in
//! `crates/store/tests/compat/v2/audit.jsonl` and verified by a test here; an entry of
//! another version is refused by its line.
//!
//! Removing entries from the end leaves a valid shorter chain: keep the head (`seq:hash`)
//! reported by `livora admin audit verify` elsewhere, and give it back with `--head`
//! ([`check_head`]) to detect that.
//!
//! Appends are serialised by a lock within the process and by an exclusive file lock across
//! processes (the server and `livora admin` may both append): an append that finds the file
//! grown by someone else first reads the new head from its last line. Each entry is synced to
//! disk before [`AuditLog::record`] returns.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit log line {line}: {reason}")]
    Broken { line: u64, reason: String },
}

/// The format version of keyed entries.
pub const KEYED: u8 = 2;

/// The key of a keyed chain (HMAC-SHA256).
#[derive(Clone)]
pub struct AuditKey([u8; 32]);

impl AuditKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(…)")
    }
}

/// What an action records; the log adds `seq`, `at`, `prev` and `hash`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewEntry {
    pub actor: String,
    pub action: String,
    pub tenant: Option<String>,
    pub target: Option<String>,
    pub from: Option<String>,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub at: String,
    #[serde(flatten)]
    pub what: NewEntry,
    /// The format version: absent for version 1 (unkeyed), [`KEYED`] for keyed entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v: Option<u8>,
    pub prev: String,
    pub hash: String,
}

/// The hash of an entry: over `prev`, a newline and the entry's JSON without `hash`;
/// HMAC-SHA256 under `key` for a keyed entry, SHA-256 for a version 1 one.
fn hash_of(
    seq: u64,
    at: &str,
    what: &NewEntry,
    v: Option<u8>,
    prev: &str,
    key: Option<&AuditKey>,
) -> String {
    #[derive(Serialize)]
    struct Unhashed<'a> {
        seq: u64,
        at: &'a str,
        #[serde(flatten)]
        what: &'a NewEntry,
        #[serde(skip_serializing_if = "Option::is_none")]
        v: Option<u8>,
        prev: &'a str,
    }
    let body = serde_json::to_string(&Unhashed {
        seq,
        at,
        what,
        v,
        prev,
    })
    .unwrap_or_default();
    let digest: Vec<u8> = match key {
        Some(key) => {
            let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&key.0)
                .expect("HMAC takes a key of any length");
            m.update(prev.as_bytes());
            m.update(b"\n");
            m.update(body.as_bytes());
            m.finalize().into_bytes().to_vec()
        }
        None => {
            let mut h = Sha256::new();
            h.update(prev.as_bytes());
            h.update(b"\n");
            h.update(body.as_bytes());
            h.finalize().to_vec()
        }
    };
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The log's state after reading a file: how many entries, and the last hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub entries: u64,
    pub hash: String,
}

impl Head {
    /// Parses a head as `livora admin audit verify` prints it: `<seq>:<hash>`.
    pub fn parse(text: &str) -> Option<Self> {
        let (seq, hash) = text.trim().split_once(':')?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(Head {
            entries: seq.parse().ok()?,
            hash: hash.to_ascii_lowercase(),
        })
    }
}

impl std::fmt::Display for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.entries, self.hash)
    }
}

/// Checks that `entries` (a whole verified log) still hold `exported`, a head taken from the
/// log earlier: entries cut from the end, or a chain rewritten since, are found.
pub fn check_head(entries: &[Entry], exported: &Head) -> Result<(), AuditError> {
    if exported.entries == 0 {
        return Ok(());
    }
    let broken = |reason: String| AuditError::Broken {
        line: exported.entries,
        reason,
    };
    let at = usize::try_from(exported.entries - 1).unwrap_or(usize::MAX);
    match entries.get(at) {
        None => Err(broken(format!(
            "the log has {} entries but the exported head is entry {}: entries were removed from the end",
            entries.len(),
            exported.entries
        ))),
        Some(e) if e.hash != exported.hash => Err(broken(format!(
            "entry {} does not have the exported head's hash: the log was rewritten",
            exported.entries
        ))),
        Some(_) => Ok(()),
    }
}

/// Reads and checks every entry of an unkeyed log at `path` (a missing file is an empty
/// log); a keyed entry is refused (it needs the key: [`verify_with`]).
pub fn verify(path: &Path) -> Result<(Head, Vec<Entry>), AuditError> {
    verify_with(path, None, false)
}

/// Reads and checks every entry of the log at `path` (a missing file is an empty log), keyed
/// entries under `key`. With a key, the log must end with a keyed entry unless
/// `unkeyed_tail_ok` (a log from before keying, opened with a key for the first time).
pub fn verify_with(
    path: &Path,
    key: Option<&AuditKey>,
    unkeyed_tail_ok: bool,
) -> Result<(Head, Vec<Entry>), AuditError> {
    let io = |source| AuditError::Io {
        path: path.to_owned(),
        source,
    };
    let mut head = Head {
        entries: 0,
        hash: GENESIS.to_owned(),
    };
    let mut entries = Vec::new();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((head, entries)),
        Err(e) => return Err(io(e)),
    };
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line_no = i as u64 + 1;
        let broken = |reason: String| AuditError::Broken {
            line: line_no,
            reason,
        };
        let line = line.map_err(io)?;
        let e: Entry =
            serde_json::from_str(&line).map_err(|e| broken(format!("not an entry: {e}")))?;
        if e.seq != head.entries + 1 {
            return Err(broken(format!(
                "seq {} where {} was expected: an entry was deleted or inserted",
                e.seq,
                head.entries + 1
            )));
        }
        if e.prev != head.hash {
            return Err(broken(
                "prev is not the previous entry's hash: an entry was deleted, inserted or moved"
                    .into(),
            ));
        }
        let keyed = match e.v {
            None => false,
            Some(KEYED) => true,
            Some(v) => return Err(broken(format!("unknown entry format version {v}"))),
        };
        if keyed && key.is_none() {
            return Err(broken(
                "a keyed entry: verifying it needs the audit key (configure the master key or KMS as the server has it)"
                    .into(),
            ));
        }
        if !keyed && entries.last().is_some_and(|p: &Entry| p.v.is_some()) {
            return Err(broken(
                "an unkeyed entry after keyed ones: the chain was rewritten without the key".into(),
            ));
        }
        let k = if keyed { key } else { None };
        if hash_of(e.seq, &e.at, &e.what, e.v, &e.prev, k) != e.hash {
            return Err(broken(
                "the hash does not match: the entry was edited".into(),
            ));
        }
        head = Head {
            entries: e.seq,
            hash: e.hash.clone(),
        };
        entries.push(e);
    }
    if key.is_some() && !unkeyed_tail_ok && entries.last().is_some_and(|e| e.v.is_none()) {
        return Err(AuditError::Broken {
            line: head.entries,
            reason: "the log ends with an unkeyed entry although it is keyed: its keyed entries were removed or rewritten".into(),
        });
    }
    Ok((head, entries))
}

/// The head after the last entry of the file (another process appended since we looked).
fn last_head(path: &Path) -> Result<Head, AuditError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuditError::Io {
        path: path.to_owned(),
        source,
    })?;
    let count = text.lines().count() as u64;
    let Some(last) = text.lines().last() else {
        return Ok(Head {
            entries: 0,
            hash: GENESIS.to_owned(),
        });
    };
    let e: Entry = serde_json::from_str(last).map_err(|e| AuditError::Broken {
        line: count,
        reason: format!("not an entry: {e}"),
    })?;
    Ok(Head {
        entries: e.seq,
        hash: e.hash,
    })
}

/// Writes entries as CSV (one header row; `before`/`after` as JSON text), for auditors. Cells
/// that a spreadsheet would read as a formula are quoted ([`crate::csv_cell::neutralise`]).
pub fn write_csv(out: impl Write, entries: &[Entry]) -> Result<(), csv::Error> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record([
        "seq", "at", "actor", "action", "tenant", "target", "from", "before", "after", "prev",
        "hash",
    ])?;
    let text =
        |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string()).unwrap_or_default();
    for e in entries {
        w.write_record(
            [
                e.seq.to_string(),
                e.at.clone(),
                e.what.actor.clone(),
                e.what.action.clone(),
                e.what.tenant.clone().unwrap_or_default(),
                e.what.target.clone().unwrap_or_default(),
                e.what.from.clone().unwrap_or_default(),
                text(&e.what.before),
                text(&e.what.after),
                e.prev.clone(),
                e.hash.clone(),
            ]
            .iter()
            .map(|cell| crate::csv_cell::neutralise(cell).into_owned()),
        )?;
    }
    w.flush()?;
    Ok(())
}

/// An open audit log, appending to its file.
pub struct AuditLog {
    path: PathBuf,
    /// Keyed entries are written and checked under it; `None`: version 1 entries.
    key: Option<AuditKey>,
    /// The file, the head as last seen, and the file length it was seen at.
    state: Mutex<(File, Head, u64)>,
}

impl AuditLog {
    /// Opens (or creates) an unkeyed log at `path`; refuses a broken chain.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        Self::open_keyed(path, None, false)
    }

    /// Opens (or creates) the log at `path`, appending keyed entries under `key`; refuses a
    /// broken chain. `new_key`: the key was just made, so a log that ends unkeyed is one from
    /// before keying: an `audit.keyed` entry is appended to it at once (with an existing key
    /// such a log was rewritten without the key, and is refused).
    pub fn open_keyed(
        path: &Path,
        key: Option<AuditKey>,
        new_key: bool,
    ) -> Result<Self, AuditError> {
        let (head, entries) = verify_with(path, key.as_ref(), new_key)?;
        let unkeyed = entries.iter().filter(|e| e.v.is_none()).count();
        let migrate = key.is_some() && entries.last().is_some_and(|e| e.v.is_none());
        drop(entries);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| AuditError::Io {
                path: path.to_owned(),
                source,
            })?;
        let len = file
            .metadata()
            .map_err(|source| AuditError::Io {
                path: path.to_owned(),
                source,
            })?
            .len();
        let log = Self {
            path: path.to_owned(),
            key,
            state: Mutex::new((file, head, len)),
        };
        if migrate {
            log.record(NewEntry {
                actor: "livora".into(),
                action: "audit.keyed".into(),
                after: Some(serde_json::json!({"unkeyed_entries": unkeyed})),
                ..NewEntry::default()
            })?;
        }
        Ok(log)
    }

    /// Whether entries are keyed.
    pub fn keyed(&self) -> bool {
        self.key.is_some()
    }

    /// The log's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// [`verify`], holding the log's locks so that no append is half-written meanwhile.
    pub fn read_verified(&self) -> Result<(Head, Vec<Entry>), AuditError> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let io = |source| AuditError::Io {
            path: self.path.clone(),
            source,
        };
        state.0.lock_shared().map_err(io)?;
        let result = verify_with(&self.path, self.key.as_ref(), false);
        state.0.unlock().map_err(io)?;
        result
    }

    /// Appends an entry and syncs it to disk.
    pub fn record(&self, what: NewEntry) -> Result<Entry, AuditError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (file, head, seen_len) = &mut *state;
        let io = |source| AuditError::Io {
            path: self.path.clone(),
            source,
        };
        file.lock().map_err(io)?;
        let written = self.append_locked(file, head, seen_len, what);
        let unlocked = file.unlock().map_err(io);
        let entry = written?;
        unlocked?;
        Ok(entry)
    }

    fn append_locked(
        &self,
        file: &mut File,
        head: &mut Head,
        seen_len: &mut u64,
        what: NewEntry,
    ) -> Result<Entry, AuditError> {
        let io = |source| AuditError::Io {
            path: self.path.clone(),
            source,
        };
        let len = file.metadata().map_err(io)?.len();
        if len != *seen_len {
            *head = last_head(&self.path)?;
        }
        let seq = head.entries + 1;
        let at = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        let v = self.key.as_ref().map(|_| KEYED);
        let hash = hash_of(seq, &at, &what, v, &head.hash, self.key.as_ref());
        let entry = Entry {
            seq,
            at,
            what,
            v,
            prev: head.hash.clone(),
            hash,
        };
        let mut line = serde_json::to_string(&entry).unwrap_or_default();
        line.push('\n');
        file.write_all(line.as_bytes()).map_err(io)?;
        file.sync_data().map_err(io)?;
        *seen_len = len + line.len() as u64;
        *head = Head {
            entries: seq,
            hash: entry.hash.clone(),
        };
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(n: u32) -> NewEntry {
        NewEntry {
            actor: "cli".into(),
            action: "key.create".into(),
            tenant: Some("t".into()),
            target: Some(format!("key_{n}")),
            from: Some("cli".into()),
            before: None,
            after: Some(serde_json::json!({"kind": "write", "n": n})),
        }
    }

    /// Rewrites entries `from..to` (0-based) as a forger without the key would:
    /// `edit` changes an entry, then `seq`/`prev`/`hash` are recomputed, keyed entries with
    /// `key` (a guess) or as version 1 entries (`None`).
    fn forge(
        lines: &[&str],
        from: usize,
        to: usize,
        key: Option<&AuditKey>,
        edit: impl Fn(&mut Entry),
    ) -> String {
        let mut out = Vec::new();
        let mut prev = GENESIS.to_owned();
        for (i, line) in lines.iter().enumerate() {
            let mut e: Entry = serde_json::from_str(line).expect("entry");
            if (from..to).contains(&i) {
                if i == from {
                    edit(&mut e);
                }
                e.prev = prev.clone();
                e.v = key.map(|_| KEYED);
                e.hash = hash_of(e.seq, &e.at, &e.what, e.v, &e.prev, key);
            }
            prev = e.hash.clone();
            out.push(serde_json::to_string(&e).expect("json"));
        }
        out.join("\n") + "\n"
    }

    #[test]
    fn a_keyed_chain_finds_recomputed_edits_downgrades_and_cut_ends() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("audit.jsonl");
        // A log from before keying: three version 1 entries.
        let old = AuditLog::open(&path).expect("open");
        for n in 0..3 {
            old.record(action(n)).expect("record");
        }
        drop(old);
        let key = AuditKey::from_bytes([7; 32]);
        // Opened with an existing key, a log that ends unkeyed is refused.
        assert!(AuditLog::open_keyed(&path, Some(key.clone()), false).is_err());
        // With a new key it goes on, keyed, after an `audit.keyed` entry.
        let log = AuditLog::open_keyed(&path, Some(key.clone()), true).expect("migrates");
        assert!(log.keyed());
        log.record(action(3)).expect("record");
        drop(log);
        let (head, entries) = verify_with(&path, Some(&key), false).expect("intact");
        assert_eq!(head.entries, 5);
        assert_eq!(entries[3].what.action, "audit.keyed");
        assert_eq!(
            entries.iter().map(|e| e.v).collect::<Vec<_>>(),
            [None, None, None, Some(KEYED), Some(KEYED)]
        );
        assert!(verify(&path).is_err(), "keyed entries need the key");
        let wrong = AuditKey::from_bytes([8; 32]);
        assert!(verify_with(&path, Some(&wrong), false).is_err());
        let exported = head.clone();
        assert_eq!(Head::parse(&exported.to_string()), Some(exported.clone()));

        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        let check = |text: &str| {
            std::fs::write(&path, text).expect("write");
            verify_with(&path, Some(&key), false)
        };
        let retarget = |e: &mut Entry| e.what.target = Some("key_9".into());
        // A keyed entry edited and every later hash recomputed, under a guessed key.
        let err = check(&forge(&lines, 4, 5, Some(&wrong), retarget)).expect_err("edited");
        assert!(matches!(err, AuditError::Broken { line: 5, .. }), "{err}");
        // An old entry edited and the unkeyed chain recomputed: the first keyed entry's HMAC
        // covers the last unkeyed hash.
        let err = check(&forge(&lines, 1, 3, None, retarget)).expect_err("edited");
        assert!(matches!(err, AuditError::Broken { line: 4, .. }), "{err}");
        // The whole log rewritten without the key, as version 1 entries.
        let err = check(&forge(&lines, 0, 5, None, retarget)).expect_err("downgraded");
        assert!(matches!(err, AuditError::Broken { .. }), "{err}");
        assert!(AuditLog::open_keyed(&path, Some(key.clone()), false).is_err());
        // Entries cut from the end: a valid shorter chain, found with the exported head.
        let cut = lines[..4].join("\n") + "\n";
        let (_, shorter) = check(&cut).expect("a valid shorter chain");
        let err = check_head(&shorter, &exported).expect_err("cut");
        assert!(err.to_string().contains("removed from the end"), "{err}");
        // The intact log holds the head; a rewritten one does not.
        let (_, all) = check(&text).expect("intact");
        check_head(&all, &exported).expect("holds the head");
        let mut other = exported.clone();
        other.hash = GENESIS.to_owned();
        assert!(check_head(&all, &other).is_err());
        assert_eq!(Head::parse("5:xyz"), None);
        assert_eq!(Head::parse("five"), None);
    }

    #[test]
    fn csv_export_neutralises_formula_cells() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = AuditLog::open(&dir.path().join("audit.jsonl")).expect("open");
        let mut what = action(1);
        what.target = Some("=HYPERLINK(\"http://evil.test\",\"x\")".into());
        what.actor = "+cmd|' /C calc'!A0".into();
        what.from = Some("@evil".into());
        let entry = log.record(what).expect("record");
        let mut out = Vec::new();
        write_csv(&mut out, &[entry]).expect("csv");
        let text = String::from_utf8(out).expect("utf-8");
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let row = reader.records().next().expect("a row").expect("row");
        assert_eq!(&row[2], "'+cmd|' /C calc'!A0", "{text}");
        assert_eq!(&row[5], "'=HYPERLINK(\"http://evil.test\",\"x\")", "{text}");
        assert_eq!(&row[6], "'@evil", "{text}");
        assert_eq!(&row[3], "key.create", "{text}");
    }

    #[test]
    fn the_chain_finds_edited_deleted_and_moved_entries() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).expect("open");
        for n in 0..3 {
            log.record(action(n)).expect("record");
        }
        drop(log);
        let (head, entries) = verify(&path).expect("intact");
        assert_eq!(head.entries, 3);
        assert_eq!(entries[2].what, action(2));
        assert_eq!(entries[0].prev, GENESIS);
        // Reopening continues the chain.
        AuditLog::open(&path)
            .expect("reopen")
            .record(action(3))
            .expect("record");
        assert_eq!(verify(&path).expect("intact").0.entries, 4);

        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        let check = |lines: &[&str]| {
            std::fs::write(&path, lines.join("\n") + "\n").expect("write");
            verify(&path)
        };
        // An edited field.
        let edited = lines[1].replace("key_1", "key_9");
        let err = check(&[lines[0], &edited, lines[2], lines[3]]).expect_err("edited");
        assert!(matches!(err, AuditError::Broken { line: 2, .. }), "{err}");
        // A deleted entry.
        let err = check(&[lines[0], lines[2], lines[3]]).expect_err("deleted");
        assert!(matches!(err, AuditError::Broken { line: 2, .. }), "{err}");
        // Two entries swapped.
        let err = check(&[lines[0], lines[2], lines[1], lines[3]]).expect_err("moved");
        assert!(matches!(err, AuditError::Broken { line: 2, .. }), "{err}");
        // A re-hashed edit still breaks the next entry's `prev`.
        let mut forged: Entry = serde_json::from_str(lines[1]).expect("entry");
        forged.what.target = Some("key_9".into());
        forged.hash = hash_of(
            forged.seq,
            &forged.at,
            &forged.what,
            None,
            &forged.prev,
            None,
        );
        let forged = serde_json::to_string(&forged).expect("json");
        let err = check(&[lines[0], &forged, lines[2], lines[3]]).expect_err("forged");
        assert!(matches!(err, AuditError::Broken { line: 3, .. }), "{err}");
        // A broken log is not appended to.
        assert!(AuditLog::open(&path).is_err());
        // The intact log again.
        check(&lines).expect("intact");
        // Two handles on one file (the server and the CLI) keep one chain.
        let a = AuditLog::open(&path).expect("a");
        let b = AuditLog::open(&path).expect("b");
        a.record(action(4)).expect("a");
        b.record(action(5)).expect("b");
        a.record(action(6)).expect("a");
        assert_eq!(verify(&path).expect("one chain").0.entries, 7);
    }

    /// The key the compat fixture's keyed entries are under.
    const FIXTURE_KEY: [u8; 32] = [7; 32];

    fn fixture_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/v2/audit.jsonl")
    }

    /// The fixture's entries: two version 1 entries, then the `audit.keyed` entry a keyed
    /// build appends to such a log, then a version 2 entry. Fixed times.
    fn fixture_entries() -> Vec<(NewEntry, &'static str, bool)> {
        vec![
            (action(1), "2026-01-01T00:00:00.000000Z", false),
            (
                NewEntry {
                    actor: "staff:ada@example.com".into(),
                    action: "tenant.update".into(),
                    tenant: Some("00000000-0000-0000-0000-00000000000e".into()),
                    target: None,
                    from: Some("127.0.0.1".into()),
                    before: Some(serde_json::json!({"name": "Old"})),
                    after: Some(serde_json::json!({"name": "New \u{e9}"})),
                },
                "2026-01-01T00:00:01.000000Z",
                false,
            ),
            (
                NewEntry {
                    actor: "livora".into(),
                    action: "audit.keyed".into(),
                    after: Some(serde_json::json!({"unkeyed_entries": 2})),
                    ..NewEntry::default()
                },
                "2026-01-01T00:00:02.000000Z",
                true,
            ),
            (action(4), "2026-01-01T00:00:03.123456Z", true),
        ]
    }

    /// Writes `tests/compat/v2/audit.jsonl`: entries hashed and serialised as
    /// [`AuditLog::record`] does, at fixed times.
    #[test]
    #[ignore = "writes the fixture; set LIVORA_WRITE_FIXTURES=1"]
    fn write_fixtures() {
        if std::env::var("LIVORA_WRITE_FIXTURES").as_deref() != Ok("1") {
            eprintln!("set LIVORA_WRITE_FIXTURES=1 to write the fixture");
            return;
        }
        let key = AuditKey::from_bytes(FIXTURE_KEY);
        let mut prev = GENESIS.to_owned();
        let mut text = String::new();
        for (i, (what, at, keyed)) in fixture_entries().into_iter().enumerate() {
            let seq = i as u64 + 1;
            let v = keyed.then_some(KEYED);
            let k = keyed.then_some(&key);
            let hash = hash_of(seq, at, &what, v, &prev, k);
            let entry = Entry {
                seq,
                at: at.into(),
                what,
                v,
                prev: prev.clone(),
                hash: hash.clone(),
            };
            text += &serde_json::to_string(&entry).expect("json");
            text.push('\n');
            prev = hash;
        }
        let path = fixture_path();
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(&path, text).expect("write");
    }

    #[test]
    fn reads_the_compat_fixture_of_both_entry_versions() {
        let path = fixture_path();
        let key = AuditKey::from_bytes(FIXTURE_KEY);
        let (head, entries) = verify_with(&path, Some(&key), false).expect("verifies");
        assert_eq!(
            head.to_string(),
            "4:dbe34ac95df0fbfda8038a77ba669a54b571a6f6d20f90630e49f0fb165ca107"
        );
        let got: Vec<(NewEntry, &str, bool)> = entries
            .iter()
            .map(|e| (e.what.clone(), e.at.as_str(), e.v.is_some()))
            .collect();
        assert_eq!(got, fixture_entries());
        let versions: Vec<Option<u8>> = entries.iter().map(|e| e.v).collect();
        assert_eq!(versions, [None, None, Some(2), Some(2)]);
        assert_eq!(entries[0].prev, GENESIS);
        // Without the key the keyed entries cannot be checked; with another key they fail.
        assert!(verify(&path).is_err());
        let wrong = AuditKey::from_bytes([8; 32]);
        assert!(matches!(
            verify_with(&path, Some(&wrong), false),
            Err(AuditError::Broken { line: 3, .. })
        ));
        // The version 1 part alone verifies without a key.
        let text = std::fs::read_to_string(&path).expect("read");
        let dir = tempfile::tempdir().expect("tmp");
        let v1 = dir.path().join("audit.jsonl");
        let first: Vec<&str> = text.lines().take(2).collect();
        std::fs::write(&v1, first.join("\n") + "\n").expect("write");
        assert_eq!(verify(&v1).expect("v1 entries").0.entries, 2);
        // An entry of an unknown version is refused by its line.
        let newer = text.replacen("\"v\":2", "\"v\":3", 1);
        std::fs::write(&v1, newer).expect("write");
        match verify_with(&v1, Some(&key), false) {
            Err(AuditError::Broken { line: 3, reason }) => {
                assert!(
                    reason.contains("unknown entry format version 3"),
                    "{reason}"
                )
            }
            other => panic!("expected line 3 refused, got {other:?}"),
        }
    }
}
