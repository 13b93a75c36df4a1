//! The writer thread: group commit with `fdatasync`, dedupe, segment rolling.
//!
//! One thread owns the active segment file. It blocks for the first waiting request, then takes
//! every request already queued (up to `max_group_bytes`), encodes them into one buffer, writes
//! it with one call, syncs once, and answers them all. Under load a sync covers many requests;
//! idle, a lone request is synced at once.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::dedupe::{self, DedupeIndex};
use crate::format;
use crate::segments::Recovered;
use crate::{AppendOutcome, Error, NewRecord, Shared};

type Reply = oneshot::Sender<Result<AppendOutcome, Error>>;

enum Msg {
    Append(Vec<NewRecord>, Reply),
    Close,
}

#[derive(Clone)]
pub(crate) struct Handle {
    tx: mpsc::UnboundedSender<Msg>,
    join: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Handle {
    /// Queues `records` now (the writer takes requests in the order they are queued) and
    /// returns the writer's answer to wait for.
    pub fn submit(
        &self,
        records: Vec<NewRecord>,
    ) -> Result<oneshot::Receiver<Result<AppendOutcome, Error>>, Error> {
        for r in &records {
            let len = format::encoded_len(&r.id, &r.payload);
            if r.id.len() > u16::MAX as usize || len - format::FRAME_LEN > format::MAX_BODY {
                return Err(Error::RecordTooLarge(len));
            }
        }
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Append(records, tx))
            .map_err(|_| Error::Closed)?;
        Ok(rx)
    }

    /// Asks the writer to stop after what is queued, and waits for it.
    pub fn close(&self) {
        let _ = self.tx.send(Msg::Close);
        let handle = self.join.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

pub(crate) fn spawn(
    shared: Arc<Shared>,
    recovered: Recovered,
    index: DedupeIndex,
) -> Result<Handle, Error> {
    let (tx, rx) = mpsc::unbounded_channel();
    let path = shared
        .segments
        .dir()
        .join(format::segment_name(recovered.active_base));
    let mut writer = Writer {
        file: recovered.active,
        path,
        len: recovered.active_len,
        next: recovered.next_offset,
        index,
        buf: Vec::with_capacity(1 << 20),
        shared,
    };
    let join = std::thread::Builder::new()
        .name("livora-log-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(Error::io("livora-log-writer thread"))?;
    Ok(Handle {
        tx,
        join: Arc::new(Mutex::new(Some(join))),
    })
}

struct Writer {
    shared: Arc<Shared>,
    file: File,
    path: PathBuf,
    /// Bytes in the active segment (header included), excluding `buf`.
    len: u64,
    /// Offset of the next record.
    next: u64,
    index: DedupeIndex,
    buf: Vec<u8>,
}

impl Writer {
    fn run(&mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let max_group = self.shared.opts.max_group_bytes;
        let mut group: Vec<(Vec<NewRecord>, Reply)> = Vec::new();
        loop {
            let mut closing = false;
            match rx.blocking_recv() {
                None | Some(Msg::Close) => closing = true,
                Some(Msg::Append(recs, reply)) => group.push((recs, reply)),
            }
            let mut bytes: usize = group.iter().map(|(r, _)| size(r)).sum();
            while !closing && bytes < max_group {
                match rx.try_recv() {
                    Ok(Msg::Append(recs, reply)) => {
                        bytes += size(&recs);
                        group.push((recs, reply));
                    }
                    Ok(Msg::Close) => closing = true,
                    Err(_) => break,
                }
            }
            if !group.is_empty() {
                self.commit(&mut group);
            }
            if closing {
                break;
            }
        }
        tracing::info!(next_offset = self.next, "log writer stopped");
    }

    fn commit(&mut self, group: &mut Vec<(Vec<NewRecord>, Reply)>) {
        // After a failed write or sync the file's tail is unknown: never write again (a later
        // success would acknowledge records that recovery will cut off). Restart recovers.
        if self.shared.failed.load(Ordering::Acquire) {
            for (_, reply) in group.drain(..) {
                let _ = reply.send(Err(Error::Failed));
            }
            return;
        }
        let now = dedupe::now_us();
        let minute = dedupe::minute_of_us(now);
        self.index.tick(minute);
        let started = Instant::now();
        let mut outcomes = Vec::with_capacity(group.len());
        let mut result: Result<(), std::io::Error> = Ok(());
        let mut written = 0u64;
        let mut duplicates = 0u64;
        'group: for (records, _) in group.iter() {
            let mut offsets = Vec::with_capacity(records.len());
            for r in records {
                let key = dedupe::key(&r.tenant, r.id.as_bytes());
                if self.index.contains(key, minute) {
                    offsets.push(None);
                    duplicates += 1;
                    continue;
                }
                let size = format::encoded_len(&r.id, &r.payload) as u64;
                let used = self.len + self.buf.len() as u64;
                if used + size > self.shared.opts.segment_bytes
                    && used > format::HEADER_LEN as u64
                    && let Err(e) = self.roll()
                {
                    result = Err(e);
                    break 'group;
                }
                format::encode(&mut self.buf, self.next, now, &r.tenant, &r.id, &r.payload);
                self.index.insert(key, minute);
                offsets.push(Some(self.next));
                self.next += 1;
                written += 1;
            }
            outcomes.push(AppendOutcome { offsets });
        }
        if result.is_ok() {
            result = self.flush(true);
        }
        match result {
            Ok(()) => {
                self.shared.durable_end.store(self.next, Ordering::Release);
                self.shared.notify.send_replace(self.next);
                metrics::histogram!("livora_log_commit_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::counter!("livora_log_records_written_total").increment(written);
                metrics::counter!("livora_log_duplicates_total").increment(duplicates);
                metrics::histogram!("livora_log_group_requests").record(group.len() as f64);
                for ((_, reply), outcome) in group.drain(..).zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                // What reached the file is unknown: refuse everything until a restart recovers
                // the tail. Nothing in this group was acknowledged.
                self.shared.failed.store(true, Ordering::Release);
                tracing::error!(error = %e, segment = %self.path.display(), "log write failed");
                for (_, reply) in group.drain(..) {
                    let _ = reply.send(Err(Error::Io {
                        path: self.path.clone(),
                        source: std::io::Error::new(e.kind(), e.to_string()),
                    }));
                }
            }
        }
    }

    /// Writes the buffer and, when `sync`, makes it durable.
    fn flush(&mut self, sync: bool) -> Result<(), std::io::Error> {
        if !self.buf.is_empty() {
            let written = self.file.write_all(&self.buf);
            let n = self.buf.len() as u64;
            self.buf.clear();
            written?;
            self.len += n;
            metrics::counter!("livora_log_written_bytes_total").increment(n);
        }
        if sync && self.shared.opts.fsync {
            let t = Instant::now();
            self.file.sync_data()?;
            metrics::histogram!("livora_log_fsync_seconds").record(t.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// Makes the active segment durable and starts a new one at the next offset.
    fn roll(&mut self) -> Result<(), std::io::Error> {
        self.flush(true)?;
        let (file, len) = self
            .shared
            .segments
            .create(self.next)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.file = file;
        self.len = len;
        self.path = self
            .shared
            .segments
            .dir()
            .join(format::segment_name(self.next));
        Ok(())
    }
}

fn size(records: &[NewRecord]) -> usize {
    records
        .iter()
        .map(|r| format::encoded_len(&r.id, &r.payload))
        .sum()
}
