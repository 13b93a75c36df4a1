//! The audit log: an append-only file of JSON lines, one per administrative action, hash
//! chained so that an edited, inserted, reordered or deleted entry is detected.
//!
//! Each entry holds `seq` (1, 2, …), `at`, `actor`, `action`, `tenant`, `target`, `from` (the
//! client address, or `cli`), `before`/`after` where they apply, `prev` (the previous entry's
//! hash; 64 zeros for the first) and `hash` = SHA-256 of `prev` and the entry's JSON without
//! `hash`. [`verify`] recomputes every hash and checks `seq` and `prev`. Removing entries
//! from the end leaves a valid shorter chain: compare the head hash [`verify`] reports with
//! a copy kept elsewhere to detect that.
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
    pub prev: String,
    pub hash: String,
}

/// The hash of an entry: SHA-256 over `prev`, a newline and the entry's JSON without `hash`.
fn hash_of(seq: u64, at: &str, what: &NewEntry, prev: &str) -> String {
    #[derive(Serialize)]
    struct Unhashed<'a> {
        seq: u64,
        at: &'a str,
        #[serde(flatten)]
        what: &'a NewEntry,
        prev: &'a str,
    }
    let body = serde_json::to_string(&Unhashed {
        seq,
        at,
        what,
        prev,
    })
    .unwrap_or_default();
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(body.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The log's state after reading a file: how many entries, and the last hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub entries: u64,
    pub hash: String,
}

/// Reads and checks every entry of the log at `path` (a missing file is an empty log).
pub fn verify(path: &Path) -> Result<(Head, Vec<Entry>), AuditError> {
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
        if hash_of(e.seq, &e.at, &e.what, &e.prev) != e.hash {
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

/// Writes entries as CSV (one header row; `before`/`after` as JSON text), for auditors.
pub fn write_csv(out: impl Write, entries: &[Entry]) -> Result<(), csv::Error> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record([
        "seq", "at", "actor", "action", "tenant", "target", "from", "before", "after", "prev",
        "hash",
    ])?;
    let text =
        |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string()).unwrap_or_default();
    for e in entries {
        w.write_record([
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
        ])?;
    }
    w.flush()?;
    Ok(())
}

/// An open audit log, appending to its file.
pub struct AuditLog {
    path: PathBuf,
    /// The file, the head as last seen, and the file length it was seen at.
    state: Mutex<(File, Head, u64)>,
}

impl AuditLog {
    /// Opens (or creates) the log at `path`; refuses a broken chain.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let (head, _) = verify(path)?;
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
        Ok(Self {
            path: path.to_owned(),
            state: Mutex::new((file, head, len)),
        })
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
        let result = verify(&self.path);
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
        let hash = hash_of(seq, &at, &what, &head.hash);
        let entry = Entry {
            seq,
            at,
            what,
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
        forged.hash = hash_of(forged.seq, &forged.at, &forged.what, &forged.prev);
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
}
