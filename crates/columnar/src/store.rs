//! The column store as a consumer of the event log.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use livora_log::{EventLog, Record};
use livora_model::TenantId;

use crate::table::Table;

/// Every tenant's table, fed from the log.
#[derive(Default)]
pub struct ColumnStore {
    tables: RwLock<HashMap<TenantId, Arc<RwLock<Table>>>>,
    /// One past the last log offset applied.
    applied: std::sync::atomic::AtomicU64,
}

impl ColumnStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Applies records read from the log (in offset order), taking each tenant's lock once
    /// per run of its records.
    pub fn apply(&self, records: &[Record]) {
        for run in records.chunk_by(|a, b| a.tenant == b.tenant) {
            let tenant = TenantId(run[0].tenant);
            let table = self.table(tenant).unwrap_or_else(|| {
                self.tables
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(tenant)
                    .or_default()
                    .clone()
            });
            let mut t = table.write().unwrap_or_else(|e| e.into_inner());
            for r in run {
                if let Err(e) = t.push_json(&r.payload) {
                    tracing::error!(offset = r.offset, error = %e, "undecodable event in the log");
                }
            }
            drop(t);
            if let Some(last) = run.last() {
                self.applied
                    .store(last.offset + 1, std::sync::atomic::Ordering::Release);
            }
        }
    }

    /// One past the last log offset applied: a query sees every event below it.
    pub fn applied(&self) -> u64 {
        self.applied.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The tenant's table, if it has events.
    pub fn table(&self, tenant: TenantId) -> Option<Arc<RwLock<Table>>> {
        self.tables
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&tenant)
            .cloned()
    }

    /// Reads the log from the start into the store, then follows it until the task is
    /// dropped. The in-memory store is rebuilt on every start, so it reads from offset 0 with
    /// a plain reader and does not hold log retention back.
    pub async fn follow(self: Arc<Self>, log: EventLog) {
        let mut reader = match log.reader(0) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "column store cannot read the log");
                return;
            }
        };
        let mut changes = log.subscribe();
        loop {
            match reader.next_batch(10_000) {
                Ok(batch) if batch.is_empty() => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), changes.changed()).await;
                }
                Ok(batch) => {
                    let store = self.clone();
                    let _ = tokio::task::spawn_blocking(move || store.apply(&batch)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "column store read failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Read access to a tenant's table (for tests and kernels).
    pub fn read(table: &RwLock<Table>) -> RwLockReadGuard<'_, Table> {
        table.read().unwrap_or_else(|e| e.into_inner())
    }
}
