//! Training jobs: a training asked for is queued and runs in the background, one at a time
//! per tenant (others wait in order; tenants do not wait for each other), and its state —
//! queued, running, succeeded (with its result) or failed (with why) — is kept for
//! [`Jobs::get`].
//!
//! Jobs live in memory: a restart forgets them (the models they trained are in the
//! registry). Each tenant keeps its last [`KEEP`] finished jobs and at most [`MAX_QUEUED`]
//! waiting ones.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::Error;

/// Finished jobs kept per tenant.
pub const KEEP: usize = 100;
/// Jobs waiting per tenant (beyond the running one).
pub const MAX_QUEUED: usize = 10;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl JobState {
    pub fn finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// One training, as its caller sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: String,
    pub state: JobState,
    /// The event log's end when it was asked for: it trains on every event below.
    pub as_of_offset: u64,
    /// What it was asked with (window and horizon).
    pub options: crate::train::Options,
    /// Who asked (a staff label, an API key, or `schedule`).
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// What a succeeded job trained (versions, metrics, what it skipped).
    pub result: Option<Value>,
    /// Why a failed job failed.
    pub error: Option<String>,
}

/// What a job runs: its result, or why it failed.
pub type Work = Pin<Box<dyn Future<Output = Result<Value, String>> + Send>>;

struct Tenant {
    waiting: VecDeque<(String, Work)>,
    running: bool,
    finished: VecDeque<String>,
}

struct Inner<K> {
    jobs: HashMap<String, (K, Job)>,
    tenants: HashMap<K, Tenant>,
}

/// Every tenant's training jobs.
pub struct Jobs<K> {
    inner: Mutex<Inner<K>>,
    changed: tokio::sync::Notify,
}

impl<K> Default for Jobs<K> {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                jobs: HashMap::new(),
                tenants: HashMap::new(),
            }),
            changed: tokio::sync::Notify::new(),
        }
    }
}

impl<K: Eq + Hash + Clone + Send + Sync + 'static> Jobs<K> {
    fn lock(&self) -> MutexGuard<'_, Inner<K>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `work` for `tenant`; it starts when the tenant's earlier jobs are done. Must
    /// be called within a tokio runtime.
    pub fn submit(
        self: &Arc<Self>,
        tenant: K,
        as_of_offset: u64,
        options: crate::train::Options,
        requested_by: String,
        work: Work,
    ) -> Result<Job, Error> {
        let job = Job {
            id: uuid::Uuid::now_v7().to_string(),
            state: JobState::Queued,
            as_of_offset,
            options,
            requested_by,
            requested_at: Utc::now(),
            started_at: None,
            finished_at: None,
            result: None,
            error: None,
        };
        let start = {
            let mut inner = self.lock();
            let t = inner.tenants.entry(tenant.clone()).or_insert(Tenant {
                waiting: VecDeque::new(),
                running: false,
                finished: VecDeque::new(),
            });
            if t.waiting.len() >= MAX_QUEUED {
                return Err(Error::QueueFull(t.waiting.len()));
            }
            t.waiting.push_back((job.id.clone(), work));
            let start = !t.running;
            t.running = true;
            inner
                .jobs
                .insert(job.id.clone(), (tenant.clone(), job.clone()));
            start
        };
        if start {
            tokio::spawn(self.clone().drain(tenant));
        }
        self.changed.notify_waiters();
        Ok(job)
    }

    /// A job of `tenant` (another tenant's is not found).
    pub fn get(&self, tenant: &K, id: &str) -> Option<Job> {
        self.lock()
            .jobs
            .get(id)
            .filter(|(k, _)| k == tenant)
            .map(|(_, j)| j.clone())
    }

    /// Waits until the job has finished; `None` when it is unknown.
    pub async fn wait(&self, tenant: &K, id: &str) -> Option<Job> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let job = self.get(tenant, id)?;
            if job.state.finished() {
                return Some(job);
            }
            changed.await;
        }
    }

    /// Runs the tenant's jobs in order until none is waiting.
    async fn drain(self: Arc<Self>, tenant: K) {
        loop {
            let (id, work) = {
                let mut inner = self.lock();
                let Some(t) = inner.tenants.get_mut(&tenant) else {
                    return;
                };
                let Some(next) = t.waiting.pop_front() else {
                    t.running = false;
                    return;
                };
                if let Some((_, job)) = inner.jobs.get_mut(&next.0) {
                    job.state = JobState::Running;
                    job.started_at = Some(Utc::now());
                }
                next
            };
            self.changed.notify_waiters();
            // Its own task, so that a panic fails the job and not the queue.
            let outcome = match tokio::spawn(work).await {
                Ok(outcome) => outcome,
                Err(e) => Err(format!("the training stopped: {e}")),
            };
            {
                let mut inner = self.lock();
                if let Some((_, job)) = inner.jobs.get_mut(&id) {
                    job.finished_at = Some(Utc::now());
                    match outcome {
                        Ok(result) => {
                            job.state = JobState::Succeeded;
                            job.result = Some(result);
                        }
                        Err(why) => {
                            job.state = JobState::Failed;
                            job.error = Some(why);
                        }
                    }
                }
                let mut gone = Vec::new();
                if let Some(t) = inner.tenants.get_mut(&tenant) {
                    t.finished.push_back(id);
                    while t.finished.len() > KEEP {
                        gone.extend(t.finished.pop_front());
                    }
                }
                for id in gone {
                    inner.jobs.remove(&id);
                }
            }
            self.changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::train::Options;

    /// Work that waits for `gate`, then records that it ran and returns `n`.
    fn work(
        gate: Arc<tokio::sync::Semaphore>,
        log: Arc<Mutex<Vec<u32>>>,
        n: u32,
        fail: bool,
    ) -> Work {
        Box::pin(async move {
            let _permit = gate.acquire().await.map_err(|e| e.to_string())?;
            log.lock().expect("lock").push(n);
            if fail {
                Err(format!("job {n} failed"))
            } else {
                Ok(serde_json::json!({ "n": n }))
            }
        })
    }

    #[tokio::test]
    async fn one_runs_per_tenant_the_others_wait_in_order() {
        let jobs: Arc<Jobs<u8>> = Arc::default();
        let gate_a = Arc::new(tokio::sync::Semaphore::new(0));
        let gate_b = Arc::new(tokio::sync::Semaphore::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let submit = |t: u8, gate: &Arc<tokio::sync::Semaphore>, n: u32, fail: bool| {
            jobs.submit(
                t,
                7,
                Options::default(),
                "test".into(),
                work(gate.clone(), log.clone(), n, fail),
            )
            .expect("queued")
        };
        let a1 = submit(1, &gate_a, 1, false);
        let a2 = submit(1, &gate_a, 2, true);
        let b1 = submit(2, &gate_b, 3, false);
        assert_eq!(a1.state, JobState::Queued);
        assert_eq!(a1.as_of_offset, 7);
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The tenant's first runs, its second waits; the other tenant's runs beside it.
        let state = |t: u8, j: &Job| jobs.get(&t, &j.id).expect("known").state;
        assert_eq!(state(1, &a1), JobState::Running);
        assert_eq!(state(1, &a2), JobState::Queued);
        assert_eq!(state(2, &b1), JobState::Running);
        // Another tenant's job is not found.
        assert!(jobs.get(&2, &a1.id).is_none());
        // Tenant 2 finishes while tenant 1 still waits.
        gate_b.add_permits(1);
        let done = jobs.wait(&2, &b1.id).await.expect("known");
        assert_eq!(done.state, JobState::Succeeded);
        assert_eq!(done.result, Some(serde_json::json!({"n": 3})));
        assert_eq!(state(1, &a1), JobState::Running);
        gate_a.add_permits(2);
        let first = jobs.wait(&1, &a1.id).await.expect("known");
        let second = jobs.wait(&1, &a2.id).await.expect("known");
        assert_eq!(first.state, JobState::Succeeded);
        assert_eq!(
            (second.state, second.error.as_deref()),
            (JobState::Failed, Some("job 2 failed"))
        );
        assert!(second.started_at >= first.finished_at);
        assert_eq!(*log.lock().expect("lock"), [3, 1, 2]);
    }

    #[tokio::test]
    async fn a_panic_fails_the_job_and_the_queue_goes_on() {
        let jobs: Arc<Jobs<u8>> = Arc::default();
        let bad = jobs
            .submit(
                1,
                0,
                Options::default(),
                "test".into(),
                Box::pin(async { panic!("boom") }),
            )
            .expect("queued");
        let good = jobs
            .submit(
                1,
                0,
                Options::default(),
                "test".into(),
                Box::pin(async { Ok(Value::Null) }),
            )
            .expect("queued");
        let bad = jobs.wait(&1, &bad.id).await.expect("known");
        assert_eq!(bad.state, JobState::Failed);
        assert!(bad.error.is_some_and(|e| e.contains("stopped")));
        let good = jobs.wait(&1, &good.id).await.expect("known");
        assert_eq!(good.state, JobState::Succeeded);
    }

    #[tokio::test]
    async fn a_full_queue_is_refused() {
        let jobs: Arc<Jobs<u8>> = Arc::default();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut refused = None;
        for n in 0..(MAX_QUEUED as u32 + 5) {
            let r = jobs.submit(
                1,
                0,
                Options::default(),
                "test".into(),
                work(gate.clone(), log.clone(), n, false),
            );
            if let Err(e) = r {
                refused = Some(e);
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(matches!(refused, Some(Error::QueueFull(_))), "{refused:?}");
        gate.close();
    }
}
