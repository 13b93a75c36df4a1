//! Models over HTTP, and their training schedule: each tenant's lifetime value, churn risk,
//! forecasts, recommendations and best send times ([`livora_intel::train`]), trained from
//! the column store on a schedule (`[intel] retrain_hours`) and on demand, every version
//! recorded in the model registry, a new one put in use only when its holdout metric is not
//! worse, and an older one put back on request.
//!
//! Scores live in memory per tenant, keyed by the persons' identities (`u:<userId>`,
//! `a:<anonymousId>`), and are written to the profiles as predictions (`clv_12m`,
//! `churn_risk`, `p_alive`, `expected_purchases_90d`, `best_hour`, `sentiment_30d`), which
//! segments test like computed attributes, workflows read and profile snapshots keep. After
//! a restart the in-memory scores, recommendations and forecasts are rebuilt with the
//! versions in use once the column store has caught up (no training, no new version); the
//! first training runs `[intel] first_after_secs` after the start.
//!
//! A training asked for (`POST /api/v1/models/train`) or due on the schedule is a job
//! ([`livora_intel::jobs`]): queued per tenant, one running per tenant, tenants independent.
//! It trains as of the log's end when it was asked for: it first waits for the column store
//! to reach that offset, so what a client ingested just before is in it.
//!
//! A tenant may upload labelled texts (`PUT /api/v1/models/sentiment/examples`); the naive
//! Bayes classifier trained from them, when cross-validation finds it not worse than the
//! rules, scores the persons' texts and labels texts as they arrive.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use chrono::{DateTime, Utc};
use livora_automation::people::{People, Person, Suggest, Suggestions};
use livora_intel::churn::Logistic;
use livora_intel::history::{self, Histories};
use livora_intel::jobs::{Job, Jobs};
use livora_intel::recommend::{Action, Recommender, Weights};
use livora_intel::sentiment::{self, Classifier};
use livora_intel::train::{self, ClvParams, InUse, Outcome, Scores, SeriesForecast};
use livora_model::TenantId;
use livora_store::intel::ModelRecord;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::access::Principal;
use crate::error::{ApiError, Code};
use crate::people::{find, lock, service};
use crate::staff::entry;

/// How long a training waits for the column store to reach its offset.
const AS_OF_WAIT: Duration = Duration::from_secs(600);

/// What one tenant's last training left in use.
pub struct TenantModels {
    /// Per identity, the person's index in `scores` and `products`.
    by_key: HashMap<String, usize>,
    scores: Vec<Scores>,
    products: Vec<Vec<(String, Action)>>,
    /// What scoring again with another version (a rollback) leaves as it was.
    built: Arc<Built>,
}

/// The part of a training that does not depend on the versions scoring persons.
struct Built {
    trained_at: DateTime<Utc>,
    /// The window and horizon it was trained with.
    options: train::Options,
    recommender: Recommender,
    forecasts: Vec<SeriesForecast>,
    skipped: Vec<(String, String)>,
}

/// The models of every tenant, and when they are trained.
pub struct IntelState {
    tenants: RwLock<HashMap<TenantId, Arc<TenantModels>>>,
    /// Per tenant, one training, rollback or restore at a time (versions are numbered in
    /// order); tenants do not wait for each other.
    training: std::sync::Mutex<HashMap<TenantId, Arc<tokio::sync::Mutex<()>>>>,
    /// Trainings asked for and due, queued per tenant.
    jobs: Arc<Jobs<TenantId>>,
    schedule: RwLock<Schedule>,
    /// Per tenant, its own sentiment classifier when one is in use (ingestion and inbound
    /// messages label texts with it).
    classifiers: RwLock<HashMap<TenantId, Arc<Classifier>>>,
}

/// `[intel]`: when models are trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Between trainings of every tenant; `None`: only on demand.
    pub every: Option<Duration>,
    /// From the start to the first training.
    pub first_after: Duration,
    /// The window and horizon of trainings that do not name theirs (`[intel] window_days`,
    /// `horizon_days`).
    pub options: train::Options,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            every: Some(Duration::from_secs(24 * 3600)),
            first_after: Duration::from_secs(120),
            options: train::Options::default(),
        }
    }
}

impl Default for IntelState {
    fn default() -> Self {
        Self {
            tenants: RwLock::new(HashMap::new()),
            training: std::sync::Mutex::new(HashMap::new()),
            jobs: Arc::default(),
            schedule: RwLock::new(Schedule::default()),
            classifiers: RwLock::new(HashMap::new()),
        }
    }
}

impl IntelState {
    pub fn set_schedule(&self, s: Schedule) {
        *self.schedule.write().unwrap_or_else(|e| e.into_inner()) = s;
    }

    fn schedule(&self) -> Schedule {
        *self.schedule.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The tenant's training lock.
    async fn lock_tenant(&self, tenant: TenantId) -> tokio::sync::OwnedMutexGuard<()> {
        let m = self
            .training
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(tenant)
            .or_default()
            .clone();
        m.lock_owned().await
    }

    /// A training job of the tenant.
    pub fn job(&self, tenant: TenantId, id: &str) -> Option<Job> {
        self.jobs.get(&tenant, id)
    }

    fn get(&self, tenant: TenantId) -> Option<Arc<TenantModels>> {
        self.tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&tenant)
            .cloned()
    }

    /// The tenant's sentiment classifier, when it has one in use.
    pub fn classifier(&self, tenant: TenantId) -> Option<Arc<Classifier>> {
        self.classifiers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&tenant)
            .cloned()
    }

    /// A text's polarity and label, by the tenant's classifier or else by the rules.
    pub fn judge(&self, tenant: TenantId, text: &str) -> (f64, &'static str) {
        sentiment::judge(text, self.classifier(tenant).as_deref())
    }

    /// Scores an event's `text` property as it arrives (a support ticket, a review, a
    /// chat message), so that a workflow can start on a negative one: `sentiment` in
    /// [−1, 1] and `sentiment_label` are added to its properties unless it has its own.
    pub fn label_text(&self, tenant: TenantId, event: &mut livora_model::Event) {
        let Some(raw) = event.properties.as_deref() else {
            return;
        };
        if !raw.get().contains("\"text\"") {
            return;
        }
        let Ok(mut props) = serde_json::from_str::<serde_json::Map<String, Value>>(raw.get())
        else {
            return;
        };
        let Some(text) = props.get("text").and_then(Value::as_str) else {
            return;
        };
        if props.contains_key("sentiment") || props.contains_key("sentiment_label") {
            return;
        }
        let (polarity, label) = self.judge(tenant, text);
        props.insert("sentiment".into(), json!(polarity));
        props.insert("sentiment_label".into(), json!(label));
        if let Ok(v) = serde_json::value::to_raw_value(&props) {
            event.properties = Some(v);
        }
    }

    fn set_classifier(&self, tenant: TenantId, c: Option<Classifier>) {
        let mut all = self.classifiers.write().unwrap_or_else(|e| e.into_inner());
        match c {
            Some(c) => all.insert(tenant, Arc::new(c)),
            None => all.remove(&tenant),
        };
    }

    fn put(&self, tenant: TenantId, m: TenantModels) {
        self.tenants
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tenant, Arc::new(m));
    }
}

/// The persons of the profiles, with what the models recommend them: workflows' messages
/// render `recommendations` from it (cross-selling).
pub struct WithModels {
    pub profiles: Arc<livora_profiles::service::ProfileService>,
    pub intel: Arc<IntelState>,
}

/// One person's recommendations, computed when a message asks for them.
struct Shelf {
    models: Arc<TenantModels>,
    at: Option<usize>,
}

impl Suggest for Shelf {
    fn recommendations(&self, limit: usize) -> Vec<Value> {
        let history: Vec<(&str, Action)> = self
            .at
            .and_then(|i| self.models.products.get(i))
            .map(|v| v.iter().map(|(i, a)| (i.as_str(), *a)).collect())
            .unwrap_or_default();
        self.models
            .built
            .recommender
            .recommend(&history, Weights::default(), limit)
            .into_iter()
            .map(|r| json!(r))
            .collect()
    }
}

impl WithModels {
    fn with_shelf(&self, tenant: TenantId, mut p: Person) -> Person {
        if let Some(models) = self.intel.get(tenant) {
            let at = p.keys.iter().find_map(|k| models.by_key.get(k).copied());
            p.suggestions = Suggestions::new(Arc::new(Shelf { models, at }));
        }
        p
    }
}

impl People for WithModels {
    fn of_event(&self, tenant: TenantId, event: &livora_model::Event) -> Option<Person> {
        let p = self.profiles.of_event(tenant, event)?;
        Some(self.with_shelf(tenant, p))
    }

    fn by_key(&self, tenant: TenantId, key: &str) -> Option<Person> {
        let p = self.profiles.by_key(tenant, key)?;
        Some(self.with_shelf(tenant, p))
    }

    fn audience(&self, tenant: TenantId, segment: Option<&str>) -> Vec<Person> {
        let people = self.profiles.audience(tenant, segment);
        people
            .into_iter()
            .map(|p| self.with_shelf(tenant, p))
            .collect()
    }

    fn ready(&self, offset: u64) -> bool {
        self.profiles.ready(offset)
    }
}

/// Trains every tenant on the schedule.
pub async fn schedule_loop(state: Arc<AppState>) {
    restore_all(&state).await;
    let s = state.intel.schedule();
    let Some(every) = s.every else {
        return;
    };
    tokio::time::sleep(s.first_after).await;
    loop {
        match state.store.tenants().await {
            Ok(tenants) => {
                let jobs: Vec<(TenantId, Result<Job, ApiError>)> = tenants
                    .iter()
                    .map(|t| (t.id, submit_training(&state, t.id, None, "schedule".into())))
                    .collect();
                for (tenant, job) in jobs {
                    let done = match job {
                        Ok(job) => state.intel.jobs.wait(&tenant, &job.id).await,
                        Err(e) => {
                            tracing::warn!(tenant = %tenant, error = %e.message, "model training not queued");
                            continue;
                        }
                    };
                    if let Some(Job {
                        error: Some(why), ..
                    }) = done
                    {
                        tracing::warn!(tenant = %tenant, error = %why, "model training failed");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "model training: cannot list tenants"),
        }
        tokio::time::sleep(every).await;
    }
}

/// After a start: each trained tenant's scores, recommendations and forecasts rebuilt with
/// the versions in use, once the column store has read the log as it was at the start.
/// Nothing is trained and no version is recorded.
async fn restore_all(state: &AppState) {
    let Some(columns) = &state.columns else {
        return;
    };
    let end = state.log.end_offset();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while columns.applied() < end && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let tenants = match state.store.tenants().await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "models: cannot list tenants to restore");
            return;
        }
    };
    for t in tenants {
        match restore_tenant(state, t.id).await {
            Ok(true) => tracing::info!(tenant = %t.id, "models restored"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(tenant = %t.id, error = %e.message, "models could not be restored");
            }
        }
    }
}

/// One tenant's [`restore_all`]; `false` when it has never been trained.
async fn restore_tenant(state: &AppState, tenant: TenantId) -> Result<bool, ApiError> {
    let _one = state.intel.lock_tenant(tenant).await;
    let options = state.intel.schedule().options;
    let (u, all) = in_use(state, tenant).await?;
    let Some(last) = all.iter().map(|m| m.trained_at).max() else {
        return Ok(false);
    };
    if state.intel.get(tenant).is_some() {
        // Trained since the start.
        return Ok(false);
    }
    let forecasts: Vec<SeriesForecast> = all
        .iter()
        .find(|m| m.kind == "forecast" && m.active)
        .and_then(|m| serde_json::from_str(&m.params).ok())
        .unwrap_or_default();
    let (h, today) = histories(state, tenant, options.window_days).await?;
    if h.persons.is_empty() {
        return Ok(false);
    }
    let h = Arc::new(h);
    let (scores, recommender) = {
        let h = h.clone();
        tokio::task::spawn_blocking(move || {
            let scores = train::score(
                &h,
                today,
                u.clv.as_ref(),
                u.churn.as_ref(),
                u.sentiment.as_ref(),
                options.horizon_days,
            );
            (scores, train::recommender(&h, Weights::default()))
        })
        .await
        .map_err(|e| ApiError::internal(&e))?
    };
    let built = Arc::new(Built {
        trained_at: last,
        options,
        recommender,
        forecasts,
        skipped: Vec::new(),
    });
    state.intel.put(tenant, models_of(&h, scores, built));
    Ok(true)
}

fn day_to_time(day: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(day * 86_400, 0).unwrap_or_default()
}

/// The tenant's histories over the last `window_days`, and today's local day.
async fn histories(
    state: &AppState,
    tenant: TenantId,
    window_days: u32,
) -> Result<(Histories, i64), ApiError> {
    let Some(columns) = &state.columns else {
        return Err(ApiError::new(
            Code::AnalyticsDisabled,
            "models need the column store ([analytics] enabled = false on this node)",
        ));
    };
    let t = state
        .store
        .tenant(tenant)
        .await?
        .ok_or_else(|| ApiError::new(Code::NotFound, "no such tenant"))?;
    let tz: chrono_tz::Tz = t.time_zone.parse().unwrap_or(chrono_tz::UTC);
    let now = Utc::now();
    let today = history::local_day(now, tz);
    let from = (now - chrono::Duration::days(i64::from(window_days))).timestamp_micros();
    let to = now.timestamp_micros() + 1;
    let table = columns.table(tenant);
    let h = tokio::task::spawn_blocking(move || match table {
        Some(t) => history::read(&livora_columnar::ColumnStore::read(&t), from, to, tz),
        None => Histories::default(),
    })
    .await
    .map_err(|e| ApiError::internal(&e))?;
    Ok((h, today))
}

/// The versions in use, as the registry holds them.
async fn in_use(state: &AppState, tenant: TenantId) -> Result<(InUse, Vec<ModelRecord>), ApiError> {
    let all = state.store.models(tenant, None).await?;
    let mut u = InUse::default();
    for m in all.iter().filter(|m| m.active) {
        let metric = |k: &str| {
            serde_json::from_str::<Value>(&m.metrics)
                .ok()
                .and_then(|v| v[k].as_f64())
        };
        match m.kind.as_str() {
            "clv" => u.clv = serde_json::from_str::<ClvParams>(&m.params).ok(),
            "churn" => u.churn = serde_json::from_str::<Logistic>(&m.params).ok(),
            "forecast" => u.forecast_mape = metric("score"),
            "recommendations" => u.recommendations_hit_rate = metric("score"),
            "sentiment" => u.sentiment = serde_json::from_str::<Classifier>(&m.params).ok(),
            _ => {}
        }
    }
    state.intel.set_classifier(tenant, u.sentiment.clone());
    Ok((u, all))
}

/// The registry record of one outcome.
fn record<P>(
    kind: &str,
    o: &Outcome<P>,
    params: String,
    features: Value,
    window: (i64, i64),
    keep_anyway: bool,
) -> ModelRecord {
    let kept = o.better_or_equal() || keep_anyway;
    let note = match (o.score, o.previous_score) {
        (Some(new), Some(old)) if o.better_or_equal() => {
            format!("in use: holdout {new:.4} is not worse than {old:.4} (the version in use)")
        }
        (Some(new), Some(old)) if keep_anyway => format!(
            "in use (rebuilt from the data at every training): holdout {new:.4}, the previous version {old:.4}"
        ),
        (Some(new), Some(old)) => {
            format!("not in use: holdout {new:.4} is worse than {old:.4} (the version in use)")
        }
        (Some(new), None) => format!("in use: holdout {new:.4}, no version to compare with"),
        (None, _) => "in use: no holdout to judge it on yet".to_owned(),
    };
    let mut metrics = o.metrics.clone();
    metrics["score"] = json!(o.score);
    metrics["lower_is_better"] = json!(o.lower_is_better);
    metrics["previous_score"] = json!(o.previous_score);
    ModelRecord {
        kind: kind.to_owned(),
        version: 0,
        trained_at: Utc::now(),
        window_from: day_to_time(window.0),
        window_to: day_to_time(window.1),
        metrics: metrics.to_string(),
        features: features.to_string(),
        params,
        active: kept,
        note,
    }
}

fn model_json(m: &ModelRecord) -> Value {
    json!({
        "kind": m.kind,
        "version": m.version,
        "active": m.active,
        "trained_at": m.trained_at,
        "window": {"from": m.window_from, "to": m.window_to},
        "metrics": serde_json::from_str::<Value>(&m.metrics).unwrap_or(Value::Null),
        "features": serde_json::from_str::<Value>(&m.features).unwrap_or(Value::Null),
        "note": m.note,
    })
}

fn models_of(h: &Histories, scores: Vec<Scores>, built: Arc<Built>) -> TenantModels {
    let mut by_key = HashMap::new();
    for (i, p) in h.persons.iter().enumerate() {
        for k in &p.keys {
            by_key.insert(k.clone(), i);
        }
    }
    TenantModels {
        by_key,
        scores,
        products: h
            .persons
            .iter()
            .map(|p| p.products.iter().map(|(i, a, _)| (i.clone(), *a)).collect())
            .collect(),
        built,
    }
}

/// A model's parameters as JSON text.
fn json_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// The scores as profile predictions ([`livora_model::segment::PREDICTIONS`]), per person's
/// identities.
fn predictions_of(h: &Histories, scores: &[Scores]) -> Vec<(Vec<String>, BTreeMap<String, f64>)> {
    h.persons
        .iter()
        .zip(scores)
        .map(|(p, s)| {
            let values = [
                ("clv_12m", s.clv_12m),
                ("churn_risk", s.churn_risk),
                ("p_alive", s.p_alive),
                ("expected_purchases_90d", s.expected_purchases_90d),
                ("best_hour", s.best_time.map(|b| f64::from(b.hour))),
                ("sentiment_30d", s.sentiment_30d),
            ]
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_owned(), v.filter(|v| v.is_finite())?)))
            .collect();
            (p.keys.clone(), values)
        })
        .collect()
}

/// Writes the scores to the profiles, where segments, workflows and the people API read
/// them.
async fn write_predictions(state: &AppState, tenant: TenantId, h: &Histories, scores: &[Scores]) {
    if let Some(svc) = &state.profiles {
        let found = svc
            .set_predictions(&state.log, tenant, predictions_of(h, scores))
            .await;
        tracing::info!(tenant = %tenant, persons = found, "predictions written to the profiles");
    }
}

/// Queues a training of `tenant` as of the log's end now, with `options` (else the
/// configured ones); the job trains once the tenant's earlier ones are done.
pub fn submit_training(
    state: &Arc<AppState>,
    tenant: TenantId,
    options: Option<train::Options>,
    requested_by: String,
) -> Result<Job, ApiError> {
    let options = options.unwrap_or(state.intel.schedule().options);
    let as_of = state.log.end_offset();
    let work = {
        let state = state.clone();
        Box::pin(async move {
            train_tenant(&state, tenant, options, as_of)
                .await
                .map_err(|e| e.message)
        })
    };
    state
        .intel
        .jobs
        .submit(tenant, as_of, options, requested_by, work)
        .map_err(|e| match e {
            livora_intel::Error::QueueFull(_) => ApiError::new(Code::RateLimited, e.to_string()),
            other => ApiError::new(Code::InvalidRequest, other.to_string()),
        })
}

/// Trains every model of `tenant` on the events below log offset `as_of` and after (once
/// the column store has reached it); records the versions; puts in use those not worse.
pub async fn train_tenant(
    state: &AppState,
    tenant: TenantId,
    options: train::Options,
    as_of: u64,
) -> Result<Value, ApiError> {
    if let Some(columns) = &state.columns {
        let deadline = tokio::time::Instant::now() + AS_OF_WAIT;
        while columns.applied() < as_of {
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::new(
                    Code::Timeout,
                    format!(
                        "the column store has not reached log offset {as_of} in {} s (it is at {})",
                        AS_OF_WAIT.as_secs(),
                        columns.applied()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let _one = state.intel.lock_tenant(tenant).await;
    let (use_now, _) = in_use(state, tenant).await?;
    let (h, today) = histories(state, tenant, options.window_days).await?;
    if h.persons.is_empty() {
        // Nothing to learn from: no version is recorded.
        return Ok(json!({
            "trained_at": Utc::now(),
            "as_of_offset": as_of,
            "window_days": options.window_days,
            "horizon_days": options.horizon_days,
            "persons": 0,
            "models": [],
            "skipped": [{"kind": "all", "reason": format!("no events in the last {} days", options.window_days)}],
        }));
    }
    let h = Arc::new(h);
    let trained = {
        let (h, u) = (h.clone(), use_now.clone());
        tokio::task::spawn_blocking(move || train::train(&h, today, &u, &options))
            .await
            .map_err(|e| ApiError::internal(&e))?
    };
    let window = (trained.first_day, today);
    let mut records = Vec::new();
    if let Some(o) = &trained.clv {
        records.push(record(
            "clv",
            o,
            json_text(&o.params),
            json!(["frequency", "recency", "age", "monetary"]),
            window,
            false,
        ));
    }
    if let Some(o) = &trained.churn {
        records.push(record(
            "churn",
            o,
            json_text(&o.params),
            json!(train::CHURN_FEATURES),
            window,
            false,
        ));
    }
    let f = &trained.forecasts;
    records.push(record(
        "forecast",
        f,
        json_text(&f.params),
        json!(["revenue", "orders", "active_persons"]),
        window,
        true,
    ));
    let r = &trained.recommender;
    records.push(record(
        "recommendations",
        r,
        json!({"weights": Weights::default(), "note": "the similarity tables are rebuilt from the data at every training"}).to_string(),
        json!(["views", "carts", "purchases"]),
        window,
        true,
    ));
    let s = &trained.send_time;
    records.push(record(
        "send_time",
        s,
        json_text(&s.params),
        json!(["engagement_hours"]),
        window,
        true,
    ));
    let mut out = Vec::new();
    for mut m in records {
        m.version = state.store.add_model(tenant, &m).await?;
        out.push(model_json(&m));
    }
    write_predictions(state, tenant, &h, &trained.scores).await;
    let built = Arc::new(Built {
        trained_at: Utc::now(),
        options,
        recommender: trained.recommender.params.clone(),
        forecasts: trained.forecasts.params.clone(),
        skipped: trained.skipped.clone(),
    });
    let models = models_of(&h, trained.scores.clone(), built);
    state.intel.put(tenant, models);
    Ok(json!({
        "trained_at": Utc::now(),
        "as_of_offset": as_of,
        "window_days": options.window_days,
        "horizon_days": options.horizon_days,
        "persons": h.persons.len(),
        "models": out,
        "skipped": trained.skipped.iter().map(|(k, why)| json!({"kind": k, "reason": why})).collect::<Vec<_>>(),
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainRequest {
    /// Days of events read (default `[intel] window_days`).
    #[serde(default)]
    window_days: Option<u32>,
    /// Days ahead purchases are predicted (default `[intel] horizon_days`).
    #[serde(default)]
    horizon_days: Option<u32>,
}

/// `POST /api/v1/models/train`: queues a training of the tenant's models as of now;
/// answers 202 with the job (`GET /api/v1/models/train/{job_id}` follows it).
pub async fn train_now(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    body: axum::body::Bytes,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    // No body, or `{}`: the configured window and horizon.
    let req: TrainRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TrainRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(Code::InvalidRequest, format!("invalid body: {e}")))?
    };
    let defaults = state.intel.schedule().options;
    let options = train::Options::new(
        req.window_days.unwrap_or(defaults.window_days),
        req.horizon_days.unwrap_or(defaults.horizon_days),
    )
    .map_err(|e| {
        let field = match e {
            livora_intel::Error::WindowDays(_) => "window_days",
            _ => "horizon_days",
        };
        ApiError::new(Code::InvalidRequest, e.to_string()).with("field", field)
    })?;
    let job = submit_training(&state, principal.tenant, Some(options), principal.label())?;
    let mut e = entry(&principal, "models.train", Some(job.id.clone()));
    e.after = Some(
        json!({"as_of_offset": job.as_of_offset, "window_days": options.window_days, "horizon_days": options.horizon_days}),
    );
    state.audit(e).await?;
    let location = format!("/api/v1/models/train/{}", job.id);
    Ok((
        axum::http::StatusCode::ACCEPTED,
        [(axum::http::header::LOCATION, location)],
        Json(json!(job)),
    ))
}

/// `GET /api/v1/models/train/{job_id}`: a training job of the tenant.
pub async fn train_job(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .intel
        .job(principal.tenant, &id)
        .map(|j| Json(json!(j)))
        .ok_or_else(|| ApiError::new(Code::NotFound, format!("no training job {id:?}")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindQuery {
    #[serde(default)]
    kind: Option<String>,
}

const KINDS: [&str; 6] = [
    "clv",
    "churn",
    "forecast",
    "recommendations",
    "send_time",
    "sentiment",
];

/// `GET /api/v1/models`: every version, newest first, and what the last training skipped.
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    q: Result<Query<KindQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(Code::InvalidRequest, e.body_text()))?;
    if let Some(k) = q.kind.as_deref()
        && !KINDS.contains(&k)
    {
        return Err(ApiError::new(
            Code::InvalidRequest,
            format!("unknown model kind {k:?}: one of {}", KINDS.join(", ")),
        )
        .with("field", "kind"));
    }
    let all = state
        .store
        .models(principal.tenant, q.kind.as_deref())
        .await?;
    let last = state.intel.get(principal.tenant);
    Ok(Json(json!({
        "models": all.iter().map(model_json).collect::<Vec<_>>(),
        "last_training": last.map(|m| json!({
            "at": m.built.trained_at,
            "skipped": m.built.skipped.iter().map(|(k, why)| json!({"kind": k, "reason": why})).collect::<Vec<_>>(),
        })),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Activate {
    version: u32,
}

/// `POST /api/v1/models/{kind}/activate`: puts a recorded version of the lifetime-value or
/// churn model back in use (a rollback), and scores everyone with it.
pub async fn activate(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(kind): Path<String>,
    body: Result<Json<Activate>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::new(Code::InvalidRequest, e.body_text()))?;
    if !matches!(kind.as_str(), "clv" | "churn" | "sentiment") {
        return Err(ApiError::new(
            Code::InvalidRequest,
            format!(
                "only clv, churn and sentiment versions can be put back in use ({kind:?}: forecasts, recommendations and send times are rebuilt from the data at every training)"
            ),
        )
        .with("field", "kind"));
    }
    let tenant = principal.tenant;
    let _one = state.intel.lock_tenant(tenant).await;
    let note = format!("put back in use by {}", principal.label());
    if !state
        .store
        .activate_model(tenant, &kind, body.version, &note)
        .await?
    {
        return Err(ApiError::new(
            Code::NotFound,
            format!("no {kind} model version {}", body.version),
        ));
    }
    let (u, all) = in_use(&state, tenant).await?;
    rescore(&state, tenant, u).await?;
    let mut e = entry(&principal, "models.activate", Some(kind.clone()));
    e.after = Some(json!({"version": body.version}));
    state.audit(e).await?;
    let now: Vec<Value> = all
        .iter()
        .filter(|m| m.kind == kind)
        .map(model_json)
        .collect();
    Ok(Json(
        json!({"kind": kind, "active": body.version, "versions": now}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    text: String,
    label: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Examples {
    examples: Vec<Example>,
}

/// Fewest and most examples a classifier is trained from, and the longest text.
const EXAMPLES: (usize, usize) = (10, 10_000);
const EXAMPLE_CHARS: usize = 1_000;
/// The largest body of `PUT /api/v1/models/sentiment/examples`: the most examples, each of
/// the longest text in 4-byte UTF-8 characters, with 64 bytes of JSON around each.
pub const EXAMPLES_BODY_BYTES: usize = EXAMPLES.1 * (EXAMPLE_CHARS * 4 + 64) + 1024;
/// Folds of the cross-validation that judges a classifier.
const FOLDS: usize = 5;

/// `PUT /api/v1/models/sentiment/examples`: the tenant's own labelled texts. A classifier
/// is trained from them and judged by cross-validation beside the rules on the same texts;
/// it is put in use (scores, and the labels of texts that arrive) only if it is not worse.
pub async fn sentiment_examples(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    body: Result<Json<Examples>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                Code::BodyTooLarge,
                format!(
                    "the body is over {EXAMPLES_BODY_BYTES} bytes: give at most {} examples of at most {EXAMPLE_CHARS} characters",
                    EXAMPLES.1
                ),
            )
        } else {
            ApiError::new(Code::InvalidRequest, e.body_text())
        }
    })?;
    let n = body.examples.len();
    if !(EXAMPLES.0..=EXAMPLES.1).contains(&n) {
        return Err(ApiError::new(
            Code::InvalidRequest,
            format!(
                "{n} examples: give between {} and {}",
                EXAMPLES.0, EXAMPLES.1
            ),
        )
        .with("field", "examples"));
    }
    let mut examples = Vec::with_capacity(n);
    for (i, e) in body.examples.into_iter().enumerate() {
        if !sentiment::LABELS.contains(&e.label.as_str()) {
            return Err(ApiError::new(
                Code::InvalidRequest,
                format!(
                    "examples[{i}].label {:?}: one of {}",
                    e.label,
                    sentiment::LABELS.join(", ")
                ),
            )
            .with("field", format!("examples[{i}].label")));
        }
        let chars = e.text.chars().count();
        if e.text.trim().is_empty() || chars > EXAMPLE_CHARS {
            return Err(ApiError::new(
                Code::InvalidRequest,
                format!("examples[{i}].text: give 1 to {EXAMPLE_CHARS} characters ({chars})"),
            )
            .with("field", format!("examples[{i}].text")));
        }
        examples.push((e.text, e.label));
    }
    let tenant = principal.tenant;
    let _one = state.intel.lock_tenant(tenant).await;
    let (judged, classifier) = tokio::task::spawn_blocking(move || {
        let judged = sentiment::cross_validate(&examples, FOLDS);
        let c = Classifier::train(examples.iter().map(|(t, l)| (t.as_str(), l.as_str())));
        (judged, c)
    })
    .await
    .map_err(|e| ApiError::internal(&e))?;
    let (Some(judged), Some(classifier)) = (judged, classifier) else {
        return Err(ApiError::new(
            Code::InvalidRequest,
            "the examples need at least two labels",
        )
        .with("field", "examples"));
    };
    let kept = judged.accuracy >= judged.rules_accuracy;
    let note = if kept {
        format!(
            "in use: cross-validated accuracy {:.4} is not worse than the rules' {:.4} on the same examples",
            judged.accuracy, judged.rules_accuracy
        )
    } else {
        format!(
            "not in use: cross-validated accuracy {:.4} is worse than the rules' {:.4} on the same examples",
            judged.accuracy, judged.rules_accuracy
        )
    };
    let now = Utc::now();
    let mut m = ModelRecord {
        kind: "sentiment".into(),
        version: 0,
        trained_at: now,
        window_from: now,
        window_to: now,
        metrics: json!({
            "score": judged.accuracy,
            "lower_is_better": false,
            "previous_score": judged.rules_accuracy,
            "accuracy": judged.accuracy,
            "rules_accuracy": judged.rules_accuracy,
            "examples": judged.examples,
            "folds": judged.folds,
        })
        .to_string(),
        features: json!(["words"]).to_string(),
        params: json_text(&classifier),
        active: kept,
        note,
    };
    m.version = state.store.add_model(tenant, &m).await?;
    if kept {
        let (u, _) = in_use(&state, tenant).await?;
        rescore(&state, tenant, u).await?;
    }
    let mut e = entry(&principal, "models.sentiment_examples", None);
    e.after = Some(json!({"version": m.version, "examples": n, "active": kept}));
    state.audit(e).await?;
    Ok(Json(model_json(&m)))
}

/// Everyone scored again with the versions now in use (after a rollback, or a new
/// sentiment classifier), where the tenant has been trained.
async fn rescore(state: &AppState, tenant: TenantId, u: InUse) -> Result<(), ApiError> {
    let Some(current) = state.intel.get(tenant) else {
        return Ok(());
    };
    let options = current.built.options;
    let (h, today) = histories(state, tenant, options.window_days).await?;
    let h = Arc::new(h);
    let scores = {
        let h = h.clone();
        tokio::task::spawn_blocking(move || {
            train::score(
                &h,
                today,
                u.clv.as_ref(),
                u.churn.as_ref(),
                u.sentiment.as_ref(),
                options.horizon_days,
            )
        })
        .await
        .map_err(|e| ApiError::internal(&e))?
    };
    write_predictions(state, tenant, &h, &scores).await;
    state
        .intel
        .put(tenant, models_of(&h, scores, current.built.clone()));
    Ok(())
}

fn not_trained() -> ApiError {
    ApiError::new(
        Code::NotReady,
        "the models are not trained yet: POST /api/v1/models/train, or wait for the schedule",
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonQuery {
    #[serde(default)]
    by: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// The person named in the path, their identities, and the tenant's models.
fn person_models(
    state: &AppState,
    principal: &Principal,
    id: &str,
    by: Option<&str>,
) -> Result<(Arc<TenantModels>, Option<usize>, u64), ApiError> {
    let svc = service(state)?;
    let t = svc.tenant(principal.tenant);
    let st = lock(&t);
    let person = find(&st.engine, id, by)?;
    let keys = st.engine.profiles().graph().keys(person);
    drop(st);
    let models = state.intel.get(principal.tenant).ok_or_else(not_trained)?;
    let at = keys.iter().find_map(|k| models.by_key.get(k).copied());
    Ok((models, at, person))
}

/// `GET /api/v1/people/{id}/predictions`.
pub async fn predictions(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    q: Result<Query<PersonQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(Code::InvalidRequest, e.body_text()))?;
    let (models, at, person) = person_models(&state, &principal, &id, q.by.as_deref())?;
    let scores = at
        .and_then(|i| models.scores.get(i))
        .cloned()
        .unwrap_or_default();
    let mut e = entry(&principal, "pii.view", Some(person.to_string()));
    e.after = Some(json!({"route": "GET /api/v1/people/{id}/predictions"}));
    state.audit(e).await?;
    Ok(Json(json!({
        "person": person,
        "trained_at": models.built.trained_at,
        "clv_12m": scores.clv_12m,
        "p_alive": scores.p_alive,
        "expected_purchases_90d": scores.expected_purchases_90d,
        "expected_purchases": scores.expected_purchases,
        "horizon_days": models.built.options.horizon_days,
        "churn_risk": scores.churn_risk,
        "churn_reasons": scores.churn_reasons,
        "best_send_time": scores.best_time,
        "sentiment": {"last_30d": scores.sentiment_30d, "previous_30d": scores.sentiment_previous_30d, "texts": scores.texts},
    })))
}

/// `GET /api/v1/people/{id}/recommendations`.
pub async fn recommendations(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    q: Result<Query<PersonQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(Code::InvalidRequest, e.body_text()))?;
    let limit = q.limit.unwrap_or(10).clamp(1, 100);
    let (models, at, person) = person_models(&state, &principal, &id, q.by.as_deref())?;
    let history: Vec<(&str, Action)> = at
        .and_then(|i| models.products.get(i))
        .map(|v| v.iter().map(|(i, a)| (i.as_str(), *a)).collect())
        .unwrap_or_default();
    let recs = models
        .built
        .recommender
        .recommend(&history, Weights::default(), limit);
    Ok(Json(json!({"person": person, "items": recs})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitQuery {
    #[serde(default)]
    limit: Option<usize>,
}

/// `GET /api/v1/items/{id}/similar`: items like it, and items bought with it.
pub async fn similar(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    q: Result<Query<LimitQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(Code::InvalidRequest, e.body_text()))?;
    let limit = q.limit.unwrap_or(10).clamp(1, 50);
    let models = state.intel.get(principal.tenant).ok_or_else(not_trained)?;
    let similar: Vec<Value> = models
        .built
        .recommender
        .similar(&id, limit)
        .iter()
        .map(|(item, s)| json!({"item": item, "similarity": s}))
        .collect();
    let together: Vec<Value> = models
        .built
        .recommender
        .bought_together(&id, limit)
        .iter()
        .map(|(item, n)| json!({"item": item, "orders": n}))
        .collect();
    Ok(Json(
        json!({"item": id, "similar": similar, "bought_together": together}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForecastQuery {
    #[serde(default)]
    metric: Option<String>,
    /// A product category (without: the whole tenant).
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    interval: Option<String>,
}

/// `GET /api/v1/forecasts`: revenue, orders and active persons ahead, with intervals.
pub async fn forecasts(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    q: Result<Query<ForecastQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(Code::InvalidRequest, e.body_text()))?;
    for (field, v, allowed) in [
        (
            "metric",
            &q.metric,
            &["revenue", "orders", "active_persons"][..],
        ),
        ("interval", &q.interval, &["day", "week"][..]),
    ] {
        if let Some(v) = v
            && !allowed.contains(&v.as_str())
        {
            return Err(ApiError::new(
                Code::InvalidRequest,
                format!("{field} {v:?} is not one of {}", allowed.join(", ")),
            )
            .with("field", field));
        }
    }
    let models = state.intel.get(principal.tenant).ok_or_else(not_trained)?;
    let series: Vec<Value> = models
        .built
        .forecasts
        .iter()
        .filter(|f| f.category == q.category)
        .filter(|f| q.metric.as_ref().is_none_or(|m| &f.metric == m))
        .filter(|f| q.interval.as_ref().is_none_or(|i| &f.interval == i))
        .map(|f| {
            json!({
                "metric": f.metric,
                "category": f.category,
                "interval": f.interval,
                "model": f.model,
                "holdout_mape": f.mape,
                "seasonal_naive_mape": f.naive_mape,
                "level": f.forecast.level,
                "points": f.start.iter().enumerate().map(|(i, d)| json!({
                    "start": day_to_time(*d).date_naive(),
                    "value": f.forecast.point[i],
                    "lower": f.forecast.lower[i],
                    "upper": f.forecast.upper[i],
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(
        json!({"trained_at": models.built.trained_at, "series": series}),
    ))
}

/// `GET /api/v1/models/features`: every person's churn features as of today and their
/// latest scores, as Parquet (for outside tools). Recorded in the audit log.
pub async fn features(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
) -> Result<axum::response::Response, ApiError> {
    use axum::http::header;
    use axum::response::IntoResponse;
    let tenant = principal.tenant;
    let (u, _) = in_use(&state, tenant).await?;
    let window = state
        .intel
        .get(tenant)
        .map_or(state.intel.schedule().options, |m| m.built.options)
        .window_days;
    let (h, today) = histories(&state, tenant, window).await?;
    // The latest scores, found by identity (persons may have come since the training).
    let scores: Vec<Scores> = match state.intel.get(tenant) {
        Some(m) => h
            .persons
            .iter()
            .map(|p| {
                p.keys
                    .iter()
                    .find_map(|k| m.by_key.get(k))
                    .and_then(|&i| m.scores.get(i).cloned())
                    .unwrap_or_default()
            })
            .collect(),
        None => Vec::new(),
    };
    let persons = h.persons.len();
    let bytes = tokio::task::spawn_blocking(move || {
        livora_intel::export::features_parquet(&h, today, u.clv.as_ref(), &scores)
    })
    .await
    .map_err(|e| ApiError::internal(&e))?
    .map_err(|e| ApiError::internal(&e))?;
    let mut e = entry(&principal, "data.export", None);
    e.after = Some(json!({"route": "GET /api/v1/models/features", "persons": persons}));
    state.audit(e).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/vnd.apache.parquet"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"features.parquet\"",
            ),
        ],
        bytes,
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryQuery {
    #[serde(default = "half")]
    threshold: f64,
}

fn half() -> f64 {
    0.5
}

/// `GET /api/v1/predictions/summary`: how churn risk spreads over the tenant's persons, how
/// many are at risk and the 12-month value they hold, from the last training. Aggregates
/// only, so `analytics.read` is enough.
pub async fn summary(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    q: Result<Query<SummaryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(Code::InvalidRequest, e.body_text()))?;
    if !(q.threshold > 0.0 && q.threshold <= 1.0) {
        return Err(ApiError::new(
            Code::InvalidRequest,
            format!("threshold {} is not in (0, 1]", q.threshold),
        )
        .with("field", "threshold"));
    }
    let models = state.intel.get(principal.tenant).ok_or_else(not_trained)?;
    let churn = livora_intel::train::risk_summary(&models.scores, q.threshold);
    Ok(Json(
        json!({"trained_at": models.built.trained_at, "churn": churn}),
    ))
}
