//! Workflows over HTTP: create, read, edit (each edit is a new version; running journeys
//! finish on theirs), enable and pause, delete, trigger through the API; a person's
//! journeys; the outbox and its dead letters.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use livora_automation::runtime::Version;
use livora_automation::service::AutomationService;
use livora_model::PersonKey;
use livora_model::segment::DefinitionError;
use livora_model::workflow::Workflow;
use livora_store::automation::{OutboxRow, OutboxStatus, WorkflowRecord};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::access::Principal;
use crate::error::{ApiError, Code};
use crate::segments::valid_id;
use crate::staff::entry;

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(Code::InvalidRequest, message)
}

fn invalid(e: DefinitionError) -> ApiError {
    let path = if e.path.is_empty() {
        "definition".to_owned()
    } else {
        format!("definition.{}", e.path)
    };
    ApiError::new(Code::InvalidDefinition, e.message).with("path", path)
}

pub(crate) fn service(state: &AppState) -> Result<&Arc<AutomationService>, ApiError> {
    state.automation.as_ref().ok_or_else(|| {
        ApiError::new(
            Code::AnalyticsDisabled,
            "automation is off on this node (it needs profiles: [analytics] enabled = true)",
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowBody {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    definition: Option<Value>,
}

type Body<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

fn body<T>(b: Body<T>) -> Result<T, ApiError> {
    b.map(|Json(b)| b)
        .map_err(|e| ApiError::new(Code::InvalidJson, e.body_text()))
}

/// A workflow definition, checked; a caller without `pii.view` may not compare personal
/// data in it ([`crate::privacy::guard_values`]).
fn parse(
    state: &AppState,
    p: &Principal,
    definition: Option<&Value>,
) -> Result<Workflow, ApiError> {
    let d = definition.ok_or_else(|| bad("definition is required").with("path", "definition"))?;
    let w = Workflow::parse(d).map_err(invalid)?;
    livora_automation::template::check_workflow(&w).map_err(invalid)?;
    crate::privacy::guard_values(state, p, "definition", |f| w.visit_values(f))?;
    Ok(w)
}

fn view(w: &WorkflowRecord, definition: Option<Value>) -> Value {
    json!({
        "id": w.id,
        "name": w.name,
        "description": w.description,
        "status": if w.enabled_version.is_some() { "enabled" } else { "paused" },
        "enabled_version": w.enabled_version,
        "latest_version": w.latest_version,
        "definition": definition,
        "created_by": w.created_by,
        "created_at": w.created_at,
        "updated_at": w.updated_at,
    })
}

async fn record(state: &AppState, p: &Principal, id: &str) -> Result<WorkflowRecord, ApiError> {
    state
        .store
        .workflow(p.tenant, id)
        .await?
        .ok_or_else(|| ApiError::new(Code::NotFound, format!("no workflow {id:?}")))
}

async fn latest_definition(
    state: &AppState,
    p: &Principal,
    id: &str,
) -> Result<Option<Value>, ApiError> {
    let versions = state.store.workflow_versions(p.tenant, id).await?;
    Ok(versions
        .last()
        .and_then(|v| serde_json::from_str(&v.definition).ok()))
}

/// `GET /api/v1/workflows`.
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    let items: Vec<Value> = state
        .store
        .workflows(p.tenant)
        .await?
        .iter()
        .map(|w| view(w, None))
        .collect();
    Ok(Json(json!({ "workflows": items })))
}

/// `POST /api/v1/workflows`: version 1, paused.
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    b: Body<WorkflowBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let svc = service(&state)?;
    let b = body(b)?;
    let name = b
        .name
        .clone()
        .filter(|n| !n.trim().is_empty() && n.len() <= 200)
        .ok_or_else(|| bad("name: 1-200 characters").with("path", "name"))?;
    let id =
        b.id.clone()
            .unwrap_or_else(|| format!("wf-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]));
    if !valid_id(&id) {
        return Err(bad("id: 1-64 letters, digits, - or _").with("path", "id"));
    }
    let definition = parse(&state, &p, b.definition.as_ref())?;
    if state.store.workflow(p.tenant, &id).await?.is_some() {
        return Err(ApiError::new(Code::Conflict, format!("{id:?} exists")).with("path", "id"));
    }
    crate::segments::keep_branch_segments(&state, &p, &id, &definition).await?;
    let text = serde_json::to_string(&definition).map_err(|e| ApiError::internal(&e))?;
    let w = state
        .store
        .add_workflow_version(
            p.tenant,
            &id,
            &name,
            &b.description.unwrap_or_default(),
            &text,
            &p.label(),
        )
        .await?;
    svc.install(
        Version {
            tenant: p.tenant,
            workflow: id.clone(),
            version: w.latest_version,
            definition: definition.clone(),
        },
        None,
    );
    let mut e = entry(&p, "workflow.create", Some(id));
    e.after = Some(json!({"name": w.name, "version": w.latest_version}));
    state.audit(e).await?;
    Ok((StatusCode::CREATED, Json(view(&w, Some(json!(definition))))))
}

/// `GET /api/v1/workflows/{id}`: with its newest definition.
pub async fn get(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let w = record(&state, &p, &id).await?;
    let d = latest_definition(&state, &p, &id).await?;
    Ok(Json(view(&w, d)))
}

/// `PUT /api/v1/workflows/{id}`: a new version; an enabled workflow starts new journeys on
/// it, running journeys finish on theirs.
pub async fn update(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    b: Body<WorkflowBody>,
) -> Result<Json<Value>, ApiError> {
    let svc = service(&state)?;
    let b = body(b)?;
    if b.id.as_ref().is_some_and(|i| *i != id) {
        return Err(bad("id cannot change").with("path", "id"));
    }
    let before = record(&state, &p, &id).await?;
    let definition = parse(&state, &p, b.definition.as_ref())?;
    crate::segments::keep_branch_segments(&state, &p, &id, &definition).await?;
    let name = match b.name {
        Some(n) if n.trim().is_empty() || n.len() > 200 => {
            return Err(bad("name: 1-200 characters").with("path", "name"));
        }
        Some(n) => n,
        None => before.name.clone(),
    };
    let text = serde_json::to_string(&definition).map_err(|e| ApiError::internal(&e))?;
    let mut w = state
        .store
        .add_workflow_version(
            p.tenant,
            &id,
            &name,
            &b.description.unwrap_or(before.description.clone()),
            &text,
            &p.label(),
        )
        .await?;
    let live = before.enabled_version.map(|_| Some(w.latest_version));
    if let Some(Some(v)) = live {
        state
            .store
            .set_enabled_version(p.tenant, &id, Some(v))
            .await?;
        w.enabled_version = Some(v);
    }
    svc.install(
        Version {
            tenant: p.tenant,
            workflow: id.clone(),
            version: w.latest_version,
            definition: definition.clone(),
        },
        live,
    );
    let mut e = entry(&p, "workflow.update", Some(id));
    e.before = Some(json!({"version": before.latest_version}));
    e.after = Some(json!({"version": w.latest_version}));
    state.audit(e).await?;
    Ok(Json(view(&w, Some(json!(definition)))))
}

/// `GET /api/v1/workflows/{id}/versions`.
pub async fn versions(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    record(&state, &p, &id).await?;
    let items: Vec<Value> = state
        .store
        .workflow_versions(p.tenant, &id)
        .await?
        .into_iter()
        .map(|v| {
            json!({
                "version": v.version,
                "definition": serde_json::from_str::<Value>(&v.definition).unwrap_or(Value::Null),
                "created_by": v.created_by,
                "created_at": v.created_at,
            })
        })
        .collect();
    Ok(Json(json!({ "versions": items })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EnableBody {
    /// Default: the newest version.
    #[serde(default)]
    version: Option<u32>,
}

/// `POST /api/v1/workflows/{id}/enable`.
pub async fn enable(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    b: Option<Json<EnableBody>>,
) -> Result<Json<Value>, ApiError> {
    let svc = service(&state)?;
    let w = record(&state, &p, &id).await?;
    let version = b.and_then(|Json(b)| b.version).unwrap_or(w.latest_version);
    if version == 0 || version > w.latest_version {
        return Err(bad(format!("version: 1-{}", w.latest_version)).with("path", "version"));
    }
    state
        .store
        .set_enabled_version(p.tenant, &id, Some(version))
        .await?;
    svc.set_live(p.tenant, &id, Some(version));
    let mut e = entry(&p, "workflow.enable", Some(id.clone()));
    e.after = Some(json!({"version": version}));
    state.audit(e).await?;
    let w = record(&state, &p, &id).await?;
    Ok(Json(view(&w, None)))
}

/// `POST /api/v1/workflows/{id}/pause`: no new journeys; running ones go on.
pub async fn pause(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let svc = service(&state)?;
    record(&state, &p, &id).await?;
    state.store.set_enabled_version(p.tenant, &id, None).await?;
    svc.set_live(p.tenant, &id, None);
    state
        .audit(entry(&p, "workflow.pause", Some(id.clone())))
        .await?;
    let w = record(&state, &p, &id).await?;
    Ok(Json(view(&w, None)))
}

/// `DELETE /api/v1/workflows/{id}`: only a paused workflow with no running journeys.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let svc = service(&state)?;
    let w = record(&state, &p, &id).await?;
    if w.enabled_version.is_some() {
        return Err(ApiError::new(
            Code::Conflict,
            "pause the workflow before deleting it",
        ));
    }
    let running = svc.with_runtime(|rt| {
        rt.active()
            .filter(|j| j.tenant == p.tenant && *j.workflow == *id)
            .count()
    });
    if running > 0 {
        return Err(ApiError::new(
            Code::Conflict,
            format!("{running} journeys of this workflow are still running"),
        ));
    }
    let definitions: Vec<Workflow> = state
        .store
        .workflow_versions(p.tenant, &id)
        .await?
        .iter()
        .filter_map(|v| serde_json::from_str::<Value>(&v.definition).ok())
        .filter_map(|d| Workflow::parse(&d).ok())
        .collect();
    state.store.delete_workflow(p.tenant, &id).await?;
    crate::segments::drop_branch_segments(&state, &p, &id, &definitions).await?;
    state.audit(entry(&p, "workflow.delete", Some(id))).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerBody {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    anonymous_id: Option<String>,
    /// Available to templates as `event.properties`.
    #[serde(default)]
    data: Option<Value>,
    /// Retrying a call with the same key starts nothing twice.
    idempotency_key: String,
}

/// `POST /api/v1/workflows/{id}/trigger`: starts a journey for one person (the workflow's
/// trigger must be `api`).
pub async fn trigger(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    b: Body<TriggerBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let svc = service(&state)?;
    let b = body(b)?;
    let w = record(&state, &p, &id).await?;
    if w.enabled_version.is_none() {
        return Err(ApiError::new(Code::Conflict, "the workflow is paused"));
    }
    let key = match (&b.user_id, &b.anonymous_id) {
        (Some(u), _) if !u.is_empty() => PersonKey::user(u).into_string(),
        (_, Some(a)) if !a.is_empty() => PersonKey::anonymous(a).into_string(),
        _ => return Err(bad("give user_id or anonymous_id").with("path", "user_id")),
    };
    if b.idempotency_key.is_empty() || b.idempotency_key.len() > 200 {
        return Err(bad("idempotency_key: 1-200 characters").with("path", "idempotency_key"));
    }
    let data = b.data.unwrap_or_else(|| json!({}));
    if !data.is_object() {
        return Err(bad("data must be an object").with("path", "data"));
    }
    let seed = format!("api|{}|{}", id, b.idempotency_key);
    let started = svc
        .trigger(p.tenant, &id, &key, data, &seed)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    match started {
        Some(j) => Ok((
            StatusCode::ACCEPTED,
            Json(journey_view(svc, p.tenant, json!(j))),
        )),
        None => Err(ApiError::new(
            Code::NotFound,
            "no journey started: the person is unknown, or the re-entry rule or the idempotency key kept them out",
        )),
    }
}

#[derive(Deserialize)]
pub struct JourneysQuery {
    #[serde(default)]
    by: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

/// `GET /api/v1/people/{id}/journeys`: newest first.
pub async fn person_journeys(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<JourneysQuery>,
) -> Result<Json<Value>, ApiError> {
    let svc = service(&state)?;
    let anonymous = matches!(q.by.as_deref(), Some("anonymous_id" | "anonymousId"));
    let keys = crate::people::subject_keys(&state, p.tenant, &id, anonymous)
        .map(|(_, k)| k)
        .unwrap_or_else(|| vec![format!("{}:{id}", if anonymous { "a" } else { "u" })]);
    let rows = state
        .store
        .journeys_of(p.tenant, &keys, q.limit.unwrap_or(100).min(1000))
        .await?;
    let items: Vec<Value> = rows
        .iter()
        .filter_map(|r| serde_json::from_str::<Value>(&r.state).ok())
        .map(|j| journey_view(svc, p.tenant, j))
        .collect();
    Ok(Json(json!({ "journeys": items })))
}

/// A stored journey as the API shows it: steps by their ids.
fn journey_view(svc: &AutomationService, tenant: livora_model::TenantId, mut j: Value) -> Value {
    let workflow = j["workflow"].as_str().unwrap_or_default().to_owned();
    let version = j["version"].as_u64().unwrap_or(0) as u32;
    let Some(def) = svc.with_runtime(|rt| rt.definition(tenant, &workflow, version)) else {
        return j;
    };
    let id_of = |v: &Value| {
        v.as_u64()
            .and_then(|i| def.steps.get(i as usize))
            .map_or(Value::Null, |s| json!(s.id))
    };
    if let Some(path) = j["path"].as_array() {
        j["path"] = Value::Array(path.iter().map(id_of).collect());
    }
    j["step"] = id_of(&j["step"]);
    j
}

#[derive(Deserialize)]
pub struct MessagesQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    workflow: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
    /// The `next_cursor` of the page before.
    #[serde(default)]
    cursor: Option<String>,
}

/// A page's cursor: the last message's creation time (µs) and key, opaque to clients.
fn message_cursor(r: &OutboxRow) -> String {
    use base64::Engine;
    let raw = format!("{}|{}", r.created_at.timestamp_micros(), r.key);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn parse_message_cursor(c: &str) -> Option<(chrono::DateTime<chrono::Utc>, String)> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (at, key) = text.split_once('|')?;
    let at = chrono::DateTime::from_timestamp_micros(at.parse().ok()?)?;
    Some((at, key.to_owned()))
}

fn message_view(r: &OutboxRow) -> Value {
    let m: Value = serde_json::from_str(&r.message).unwrap_or(Value::Null);
    json!({
        "key": r.key,
        "workflow": r.workflow,
        "person": r.person,
        "channel": r.channel,
        "category": r.category,
        "status": r.status,
        "attempts": r.attempts,
        "due_at": r.due_at,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "reason": r.reason,
        "provider": r.provider,
        "provider_id": r.provider_id,
        "errors": r.errors,
        "to": m.get("to"),
        "content": m.get("content"),
    })
}

/// `GET /api/v1/messages?status=pending|sent|blocked|dead&workflow=…&limit=…&cursor=…`:
/// the outbox, newest first, a page at a time (`next_cursor` while there is more);
/// `status=dead` is the dead-letter list, each with its reason and every attempt's error.
pub async fn messages(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Query(q): Query<MessagesQuery>,
) -> Result<Json<Value>, ApiError> {
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(OutboxStatus::parse(s).ok_or_else(|| {
            bad("status: one of pending, sent, blocked, dead").with("path", "status")
        })?),
    };
    let after = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(parse_message_cursor(c).ok_or_else(|| {
            bad("cursor: the next_cursor of an earlier page").with("path", "cursor")
        })?),
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let query = livora_store::automation::MessageQuery {
        status,
        workflow: q.workflow.filter(|w| !w.is_empty()),
        after,
    };
    // One more than asked: whether there is a next page.
    let mut rows = state
        .store
        .list_messages(p.tenant, &query, limit + 1)
        .await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next = if more {
        rows.last().map(message_cursor)
    } else {
        None
    };
    Ok(Json(json!({
        "messages": rows.iter().map(message_view).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

/// Appends events written by workflows (traits they set) to the log, with personal fields
/// encrypted as ingestion does.
pub struct LogSink {
    log: livora_log::EventLog,
    protection: Option<crate::privacy::Protection>,
}

impl LogSink {
    pub(crate) fn new(
        log: livora_log::EventLog,
        protection: Option<&crate::privacy::Protection>,
    ) -> Self {
        Self {
            log,
            protection: protection.map(|p| crate::privacy::Protection {
                keyring: p.keyring.clone(),
                fields: p.fields.clone(),
            }),
        }
    }
}

#[async_trait::async_trait]
impl livora_automation::service::EventSink for LogSink {
    async fn append(
        &self,
        tenant: livora_model::TenantId,
        mut events: Vec<livora_model::Event>,
    ) -> Result<(), String> {
        for e in &mut events {
            e.message_id = livora_model::internal_id(&e.message_id);
        }
        if let Some(p) = &self.protection {
            crate::privacy::protect(p, tenant, &mut events)
                .await
                .map_err(|e| e.message)?;
        }
        let records = events
            .iter()
            .map(|e| crate::ingest::record(tenant, e).map_err(|e| e.message))
            .collect::<Result<Vec<_>, String>>()?;
        self.log
            .append(records)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

fn channels(state: &AppState) -> Result<&Arc<livora_channels::config::Directory>, ApiError> {
    service(state)?;
    state
        .channels
        .as_ref()
        .ok_or_else(|| ApiError::new(Code::AnalyticsDisabled, "automation is off on this node"))
}

fn valid_channel(channel: &str) -> Result<(), ApiError> {
    if livora_model::workflow::CHANNELS.contains(&channel) {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::NotFound,
            format!(
                "no channel {channel:?}; one of {}",
                livora_model::workflow::CHANNELS.join(", ")
            ),
        ))
    }
}

/// `GET /api/v1/channels`: the tenant's channels, credentials never shown.
pub async fn list_channels(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    let dir = channels(&state)?;
    let items: serde_json::Map<String, Value> = dir.list(p.tenant).into_iter().collect();
    Ok(Json(json!({ "channels": items })))
}

/// `PUT /api/v1/channels/{channel}`: providers and credentials (stored sealed).
pub async fn put_channel(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(channel): Path<String>,
    b: Body<livora_channels::config::ChannelConfig>,
) -> Result<Json<Value>, ApiError> {
    let dir = channels(&state)?;
    valid_channel(&channel)?;
    let config = body(b)?;
    let shown = livora_channels::config::redact(&config);
    dir.put(p.tenant, &channel, config, &p.label())
        .await
        .map_err(|e| match e {
            livora_channels::config::DirectoryError::Config(c) => {
                ApiError::new(Code::InvalidRequest, c.to_string()).with("path", "settings")
            }
            other => ApiError::internal(&other),
        })?;
    let mut e = entry(&p, "channel.configure", Some(channel.clone()));
    e.after = Some(shown.clone());
    state.audit(e).await?;
    Ok(Json(json!({ "channel": channel, "config": shown })))
}

/// `DELETE /api/v1/channels/{channel}`.
pub async fn delete_channel(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(channel): Path<String>,
) -> Result<StatusCode, ApiError> {
    let dir = channels(&state)?;
    valid_channel(&channel)?;
    if !dir
        .delete(p.tenant, &channel)
        .await
        .map_err(|e| ApiError::internal(&e))?
    {
        return Err(ApiError::new(
            Code::NotFound,
            format!("{channel} is not configured"),
        ));
    }
    state
        .audit(entry(&p, "channel.delete", Some(channel)))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/workflows/{id}/metrics`: journeys entered, running, completed and converted
/// (the goal reached), per step entered, waiting and messages by outcome, and the uplift of
/// the conversion rate against the holdout group.
pub async fn metrics(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let svc = service(&state)?;
    record(&state, &p, &id).await?;
    let c = state.store.workflow_counts(p.tenant, &id).await?;
    // Totals, for the treated persons and the holdout group apart.
    let mut groups = [[0u64; 4]; 2]; // [entered, running, completed, converted]
    for (active, outcome, holdout, n) in &c.journeys {
        let g = &mut groups[usize::from(*holdout)];
        g[0] += n;
        match (active, outcome.as_deref()) {
            (true, _) => g[1] += n,
            (false, Some("goal" | "converted")) => g[3] += n,
            _ => g[2] += n,
        }
    }
    let rate = |g: &[u64; 4]| (g[0] > 0).then(|| g[3] as f64 / g[0] as f64);
    let uplift = match (rate(&groups[0]), rate(&groups[1])) {
        (Some(t), Some(h)) => json!(t - h),
        _ => Value::Null,
    };
    let group = |g: &[u64; 4]| {
        json!({"entered": g[0], "running": g[1], "completed": g[2], "converted": g[3],
            "conversion_rate": rate(g)})
    };
    // Per step, by id (positions are per version).
    let mut steps: std::collections::BTreeMap<String, serde_json::Map<String, Value>> =
        std::collections::BTreeMap::new();
    let step_id = |version: u32, pos: u32| {
        svc.with_runtime(|rt| rt.definition(p.tenant, &id, version))
            .and_then(|d| d.steps.get(pos as usize).map(|s| s.id.clone()))
    };
    let mut add = |step: String, key: &str, n: u64| {
        let e = steps.entry(step).or_default();
        let now = e.get(key).and_then(Value::as_u64).unwrap_or(0);
        e.insert(key.to_owned(), json!(now + n));
    };
    for (v, pos, n) in &c.entered {
        if let Some(s) = step_id(*v, *pos) {
            add(s, "entered", *n);
        }
    }
    for (v, pos, n) in &c.converted {
        if let Some(s) = step_id(*v, *pos) {
            add(s, "converted", *n);
        }
    }
    for (v, pos, n) in &c.waiting {
        if let Some(s) = step_id(*v, *pos) {
            add(s, "waiting", *n);
        }
    }
    for (s, status, n) in &c.messages {
        let key = match status.as_str() {
            "sent" => "sent",
            "dead" => "failed",
            "blocked" => "blocked",
            _ => "pending",
        };
        add(s.clone(), key, *n);
    }
    // Delivered, undelivered, opened, clicked, unsubscribed: messages, each once.
    let mut engagement = serde_json::Map::new();
    for (s, kind, n) in &c.engagement {
        add(s.clone(), kind, *n);
        let total = engagement.get(kind).and_then(Value::as_u64).unwrap_or(0);
        engagement.insert(kind.clone(), json!(total + n));
    }
    Ok(Json(json!({
        "engagement": engagement,
        "workflow": id,
        "journeys": group(&groups[0]),
        "holdout": group(&groups[1]),
        "uplift": uplift,
        "steps": steps,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BacktestBody {
    from: String,
    to: String,
    /// A saved version (default: the newest).
    #[serde(default)]
    version: Option<u32>,
    /// A draft to try instead of a saved version.
    #[serde(default)]
    definition: Option<Value>,
    /// Messages listed (all are counted); default 100, at most 1,000.
    #[serde(default)]
    limit: Option<usize>,
}

fn instant(text: &str, path: &str) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| bad(format!("{path}: an RFC 3339 time ({e})")).with("path", path))
}

/// The longest range a backtest reads.
const BACKTEST_DAYS: i64 = 366;

/// `POST /api/v1/workflows/{id}/backtest`: what a version (or a draft) would have sent
/// over a past range of events; nothing is sent.
pub async fn backtest(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    b: Body<BacktestBody>,
) -> Result<Json<Value>, ApiError> {
    let svc = service(&state)?;
    let b = body(b)?;
    record(&state, &p, &id).await?;
    let (from, to) = (instant(&b.from, "from")?, instant(&b.to, "to")?);
    if to <= from {
        return Err(bad("to must be after from").with("path", "to"));
    }
    if to - from > chrono::Duration::days(BACKTEST_DAYS) {
        return Err(
            bad(format!("a backtest covers at most {BACKTEST_DAYS} days")).with("path", "to"),
        );
    }
    let limit = b.limit.unwrap_or(100);
    if limit > 1000 {
        return Err(bad("limit: at most 1000").with("path", "limit"));
    }
    let (version, workflow) = match (&b.definition, b.version) {
        (Some(_), Some(_)) => {
            return Err(bad("give a version or a definition, not both").with("path", "definition"));
        }
        (Some(d), None) => (Value::Null, parse(&state, &p, Some(d))?),
        (None, v) => {
            let versions = state.store.workflow_versions(p.tenant, &id).await?;
            let found = match v {
                Some(n) => versions.iter().find(|x| x.version == n),
                None => versions.last(),
            }
            .ok_or_else(|| {
                ApiError::new(Code::NotFound, "no such version").with("path", "version")
            })?;
            let d: Value =
                serde_json::from_str(&found.definition).map_err(|e| ApiError::internal(&e))?;
            (json!(found.version), parse(&state, &p, Some(&d))?)
        }
    };
    // The tenant's own policy, else the node's.
    let policy = match state
        .store
        .tenant(p.tenant)
        .await?
        .and_then(|t| t.delivery_policy)
    {
        Some(own) => livora_automation::policy::Policy::from(&own),
        None => state
            .sender
            .as_ref()
            .map(|s| s.policy().clone())
            .unwrap_or_default(),
    };
    let report = svc
        .backtest(&state.log, p.tenant, workflow, (from, to), &policy, limit)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let mut out = serde_json::to_value(&report).map_err(|e| ApiError::internal(&e))?;
    out["workflow"] = json!(id);
    out["version"] = version;
    out["from"] = json!(from);
    out["to"] = json!(to);
    Ok(Json(out))
}

/// A person as templates see them (with the models' recommendations), by user id or key
/// (`u:…` / `a:…`).
fn person_for(
    state: &AppState,
    p: &Principal,
    id: &str,
) -> Result<livora_automation::Person, ApiError> {
    use livora_automation::People;
    // A real person's data, for templates to render.
    p.require(livora_store::Permission::ViewPii)?;
    let profiles = state
        .profiles
        .as_ref()
        .ok_or_else(|| ApiError::new(Code::AnalyticsDisabled, "profiles are off on this node"))?;
    // A bare id is a user id.
    let key = PersonKey::parse(id).unwrap_or_else(|| PersonKey::user(id));
    let people = crate::intel::WithModels {
        profiles: profiles.clone(),
        intel: state.intel.clone(),
    };
    people.by_key(p.tenant, key.as_str()).ok_or_else(|| {
        ApiError::new(Code::NotFound, format!("no person {id:?}")).with("path", "person")
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewBody {
    /// The parts to render (`subject`, `body`, `html` …) …
    #[serde(default)]
    template: Option<serde_json::Map<String, Value>>,
    /// … or a saved workflow's send step (its newest version).
    #[serde(default)]
    workflow: Option<String>,
    #[serde(default)]
    step: Option<String>,
    /// Whose data: a user id, or a key `u:…` / `a:…`.
    person: String,
    /// The triggering event templates see as `event` (`event`, `properties`).
    #[serde(default)]
    event: Option<Value>,
}

async fn template_of(
    state: &AppState,
    p: &Principal,
    b: &PreviewBody,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    use livora_model::workflow::Action;
    match (&b.template, &b.workflow, &b.step) {
        (Some(t), None, None) => {
            for (k, v) in t {
                if let Some(text) = v.as_str() {
                    livora_automation::template::check_sized(text).map_err(|e| {
                        let code = match e {
                            livora_automation::template::RenderError::TooLarge(_) => {
                                Code::TemplateTooLarge
                            }
                            livora_automation::template::RenderError::Invalid(_) => {
                                Code::InvalidDefinition
                            }
                        };
                        ApiError::new(code, e.to_string()).with("path", format!("template.{k}"))
                    })?;
                }
            }
            Ok(t.clone())
        }
        (None, Some(w), Some(step)) => {
            let d = latest_definition(state, p, w)
                .await?
                .ok_or_else(|| ApiError::new(Code::NotFound, format!("no workflow {w:?}")))?;
            let def = Workflow::parse(&d).map_err(invalid)?;
            def.steps
                .iter()
                .find(|s| &s.id == step)
                .and_then(|s| match &s.action {
                    Action::Send(send) => Some(send.template.clone()),
                    _ => None,
                })
                .ok_or_else(|| {
                    ApiError::new(Code::NotFound, format!("no send step {step:?} in {w:?}"))
                        .with("path", "step")
                })
        }
        _ => Err(bad("give template, or workflow and step").with("path", "template")),
    }
}

/// The template rendered for `person`, on a blocking thread: a render may take its whole fuel
/// and size budget, which must not hold up the runtime's workers.
async fn rendered(
    template: serde_json::Map<String, Value>,
    person: livora_automation::Person,
    event: Option<Value>,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    tokio::task::spawn_blocking(move || render_now(&template, &person, event.as_ref()))
        .await
        .map_err(|e| ApiError::internal(&e))?
}

fn render_now(
    template: &serde_json::Map<String, Value>,
    person: &livora_automation::Person,
    event: Option<&Value>,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    let mut trigger = event.cloned().unwrap_or_else(|| json!({}));
    if let Value::Object(m) = &mut trigger {
        m.entry("properties").or_insert_with(|| json!({}));
    }
    let ctx = livora_automation::template::context(person, &trigger);
    livora_automation::template::render_parts_checked(template, &ctx).map_err(|(part, e)| {
        let code = match e {
            livora_automation::template::RenderError::TooLarge(_) => Code::TemplateTooLarge,
            livora_automation::template::RenderError::Invalid(_) => Code::InvalidDefinition,
        };
        ApiError::new(code, format!("{part}: {e}")).with("path", format!("template.{part}"))
    })
}

/// `POST /api/v1/workflows/preview`: a template rendered with a real person's data.
pub async fn preview(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    b: Body<PreviewBody>,
) -> Result<Json<Value>, ApiError> {
    let b = body(b)?;
    let template = template_of(&state, &p, &b).await?;
    let person = person_for(&state, &p, &b.person)?;
    let key = person.key().to_owned();
    let content = rendered(template, person, b.event).await?;
    Ok(Json(json!({"person": key, "content": content})))
}

#[derive(Deserialize)]
pub struct TestSendBody {
    /// The address to send to (an email, a phone number, a push token, a URL).
    to: String,
    #[serde(flatten)]
    preview: PreviewBody,
}

/// `POST /api/v1/channels/{channel}/test`: renders a template with a person's data and
/// sends it once to `to` through the channel's primary provider (no outbox, no policy:
/// a check of the provider and the template).
pub async fn test_send(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(channel): Path<String>,
    b: Body<TestSendBody>,
) -> Result<Json<Value>, ApiError> {
    use livora_automation::outbox::Routes;
    valid_channel(&channel)?;
    let dir = channels(&state)?;
    let b = body(b)?;
    if b.to.trim().is_empty() {
        return Err(bad("to: the address to send to").with("path", "to"));
    }
    let template = template_of(&state, &p, &b.preview).await?;
    let person = person_for(&state, &p, &b.preview.person)?;
    let mut content = rendered(template, person.clone(), b.preview.event.clone()).await?;
    // No tracking: a test is not a message of a workflow.
    for v in content.values_mut() {
        if let Value::String(s) = v {
            *s = s.replace(livora_automation::tracking::UNSUBSCRIBE_MARKER, "");
        }
    }
    let route = dir
        .route(p.tenant, &channel)
        .ok_or_else(|| ApiError::new(Code::NotFound, format!("{channel} is not configured")))?;
    let key = format!("test-{}", uuid::Uuid::new_v4().simple());
    let out = livora_automation::outbox::Outgoing {
        key: key.clone(),
        tenant: p.tenant,
        person: person.key().to_owned(),
        to: b.to.trim().to_owned(),
        content,
    };
    let provider = route.primary.provider().to_owned();
    let id = route.primary.send(&out).await.map_err(|e| {
        ApiError::new(Code::ProviderFailed, format!("{provider}: {e}"))
            .with("provider", provider.clone())
    })?;
    state
        .audit(entry(&p, "channel.test_send", Some(channel.clone())))
        .await?;
    Ok(Json(
        json!({"key": key, "provider": provider, "provider_id": id}),
    ))
}
