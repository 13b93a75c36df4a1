//! Segments and smart tags over HTTP: create (from a condition, or a CSV of identifiers),
//! read with size and size over time, change, delete, preview, and members (JSON pages or
//! CSV). A tag is a segment flagged as a tag and named by its name.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use livora_model::segment::{Definition, DefinitionError};
use livora_profiles::identity::{Identifier, PersonId};
use livora_profiles::segments::{Rule, SegmentError, Spec};
use livora_profiles::service::ServiceError;
use livora_store::profiles::SegmentRecord;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::access::Principal;
use crate::error::{ApiError, Code};
use crate::people::{identifiers_json, lock, service};
use crate::staff::entry;

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(Code::InvalidRequest, message)
}

fn invalid(e: DefinitionError) -> ApiError {
    ApiError::new(Code::InvalidDefinition, e.message).with("path", e.path)
}

fn segment_error(e: SegmentError) -> ApiError {
    match e {
        SegmentError::UnknownSegment { path, id } => {
            ApiError::new(Code::InvalidDefinition, format!("no segment {id:?}")).with("path", path)
        }
        SegmentError::UnknownTag { path, name } => {
            ApiError::new(Code::InvalidDefinition, format!("no tag {name:?}")).with("path", path)
        }
        SegmentError::Cycle { path, id } => ApiError::new(
            Code::InvalidDefinition,
            format!("{id:?} would depend on itself"),
        )
        .with("path", path),
        SegmentError::InUse(id, by) => {
            ApiError::new(Code::Conflict, format!("{id:?} is used by {by:?}"))
        }
        SegmentError::NotFound(id) => ApiError::new(Code::NotFound, format!("no segment {id:?}")),
    }
}

fn service_error(e: ServiceError) -> ApiError {
    match e {
        ServiceError::Segment(s) => segment_error(s),
        other => ApiError::internal(&other),
    }
}

/// Ids: 1-64 letters, digits, `-` or `_`.
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.trim().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
        if out.len() >= 48 {
            break;
        }
    }
    out.trim_end_matches('-').to_owned()
}

/// A body that creates or changes a segment or a tag.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentBody {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    condition: Option<Value>,
    /// A manual segment: CSV text whose header names identifier kinds (`user_id`, `email`,
    /// `anonymous_id`, `phone`, or custom); every non-empty cell is a member's identifier.
    #[serde(default)]
    manual_csv: Option<String>,
}

fn parse_csv(
    text: &str,
    rules: &livora_profiles::MergeRules,
) -> Result<BTreeSet<Identifier>, ApiError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| bad(format!("manual_csv: {e}")).with("path", "manual_csv"))?
        .clone();
    if headers.is_empty() {
        return Err(bad("manual_csv: the header names identifier kinds").with("path", "manual_csv"));
    }
    let kinds: Vec<String> = headers
        .iter()
        .map(|h| match h {
            "userId" => "user_id".to_owned(),
            "anonymousId" => "anonymous_id".to_owned(),
            other => other.to_owned(),
        })
        .collect();
    for (i, k) in kinds.iter().enumerate() {
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(bad(format!(
                "manual_csv: column {} ({k:?}) is not an identifier kind",
                i + 1
            ))
            .with("path", "manual_csv"));
        }
    }
    let mut out = BTreeSet::new();
    for (line, row) in reader.records().enumerate() {
        let row = row.map_err(|e| {
            bad(format!("manual_csv: row {}: {e}", line + 2)).with("path", "manual_csv")
        })?;
        for (kind, cell) in kinds.iter().zip(row.iter()) {
            if let Some(i) = Identifier::new(kind, cell, rules) {
                out.insert(i);
            }
        }
        if out.len() > 1_000_000 {
            return Err(
                bad("manual_csv: more than 1,000,000 identifiers").with("path", "manual_csv")
            );
        }
    }
    if out.is_empty() {
        return Err(bad("manual_csv: no identifier").with("path", "manual_csv"));
    }
    Ok(out)
}

/// The rule of a segment body. A caller without `pii.view` may not compare personal data
/// ([`crate::privacy::guard_values`]) nor list people by their identifiers.
fn rule_of(
    state: &AppState,
    p: &Principal,
    body: &SegmentBody,
    rules: &livora_profiles::MergeRules,
) -> Result<Rule, ApiError> {
    match (&body.condition, &body.manual_csv) {
        (Some(c), None) => {
            let def = Definition::parse(&json!({"condition": c})).map_err(invalid)?;
            crate::privacy::guard_values(state, p, "condition", |f| {
                def.condition.visit_values("condition", f)
            })?;
            Ok(Rule::Condition(def))
        }
        (None, Some(_)) if !p.allows(livora_store::Permission::ViewPii) => Err(ApiError::new(
            Code::PiiCondition,
            "manual_csv: a list of identifiers (emails, phones, ids) needs the pii.view permission",
        )
        .with("path", "manual_csv")
        .with("field", "identifiers")
        .with("permission", "pii.view")),
        (None, Some(text)) => Ok(Rule::Manual(parse_csv(text, rules)?)),
        _ => Err(bad("give either condition or manual_csv").with("path", "condition")),
    }
}

fn view(record: &SegmentRecord, spec: Option<&Spec>, members: Option<usize>) -> Value {
    let (definition, text) = match spec.map(|s| &s.rule) {
        Some(Rule::Condition(d)) => (json!(d.condition), json!(d.condition.to_text())),
        Some(Rule::Manual(ids)) => (
            json!({"manual": {"identifiers": ids.len()}}),
            json!(format!("listed ({} identifiers)", ids.len())),
        ),
        None => (Value::Null, Value::Null),
    };
    json!({
        "id": record.id,
        "name": record.name,
        "description": record.description,
        "kind": if record.tag { "tag" } else { "segment" },
        "condition": definition,
        "text": text,
        "size": members,
        "created_by": record.created_by,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    })
}

async fn record_of(
    state: &AppState,
    tenant: livora_model::TenantId,
    id: &str,
    tag: bool,
) -> Result<SegmentRecord, ApiError> {
    state
        .store
        .segments(tenant)
        .await?
        .into_iter()
        .find(|s| s.id == id && s.tag == tag)
        .ok_or_else(|| {
            ApiError::new(
                Code::NotFound,
                format!("no {} {id:?}", if tag { "tag" } else { "segment" }),
            )
        })
}

async fn list(
    state: Arc<AppState>,
    principal: Principal,
    tag: bool,
) -> Result<Json<Value>, ApiError> {
    let svc = service(&state)?;
    let records = state.store.segments(principal.tenant).await?;
    let t = svc.tenant(principal.tenant);
    let st = lock(&t);
    let items: Vec<Value> = records
        .iter()
        .filter(|r| r.tag == tag)
        .map(|r| {
            view(
                r,
                st.engine.spec(&r.id, tag),
                st.engine.members(&r.id, tag).map(|m| m.len()),
            )
        })
        .collect();
    let key = if tag { "tags" } else { "segments" };
    Ok(Json(json!({ key: items })))
}

async fn create(
    state: Arc<AppState>,
    principal: Principal,
    body: SegmentBody,
    tag: bool,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let svc = service(&state)?;
    let name = body
        .name
        .clone()
        .filter(|n| !n.trim().is_empty() && n.len() <= 200)
        .ok_or_else(|| bad("name: 1-200 characters").with("path", "name"))?;
    let id = match &body.id {
        Some(id) => id.clone(),
        None if tag => slug(&name),
        None => format!(
            "{}-{}",
            slug(&name),
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        ),
    };
    if !valid_id(&id) {
        return Err(bad("id: 1-64 letters, digits, - or _").with("path", "id"));
    }
    let t = svc.tenant(principal.tenant);
    let rules = lock(&t).engine.profiles().graph().rules().clone();
    let rule = rule_of(&state, &principal, &body, &rules)?;
    if lock(&t).engine.spec(&id, tag).is_some() {
        return Err(ApiError::new(Code::Conflict, format!("{id:?} exists")).with("path", "id"));
    }
    let now = Utc::now();
    let record = SegmentRecord {
        id: id.clone(),
        tag,
        name,
        description: body.description.clone().unwrap_or_default(),
        rule: svc
            .stored_rule(principal.tenant, &id, tag, &rule)
            .await
            .map_err(service_error)?,
        created_by: principal.label(),
        created_at: now,
        updated_at: now,
    };
    let spec = Spec {
        id: id.clone(),
        tag,
        rule,
    };
    svc.save(&state.log, principal.tenant, record.clone(), spec)
        .await
        .map_err(service_error)?;
    let mut e = entry(
        &principal,
        if tag { "tag.create" } else { "segment.create" },
        Some(id.clone()),
    );
    e.after = Some(json!({"name": record.name}));
    state.audit(e).await?;
    let st = lock(&t);
    let v = view(
        &record,
        st.engine.spec(&id, tag),
        st.engine.members(&id, tag).map(|m| m.len()),
    );
    Ok((StatusCode::CREATED, Json(v)))
}

async fn update(
    state: Arc<AppState>,
    principal: Principal,
    id: String,
    body: SegmentBody,
    tag: bool,
) -> Result<Json<Value>, ApiError> {
    let svc = service(&state)?;
    if body.id.as_ref().is_some_and(|i| *i != id) {
        return Err(bad("id cannot change").with("path", "id"));
    }
    let mut record = record_of(&state, principal.tenant, &id, tag).await?;
    let t = svc.tenant(principal.tenant);
    let rules = lock(&t).engine.profiles().graph().rules().clone();
    let spec = if body.condition.is_some() || body.manual_csv.is_some() {
        let rule = rule_of(&state, &principal, &body, &rules)?;
        record.rule = svc
            .stored_rule(principal.tenant, &id, tag, &rule)
            .await
            .map_err(service_error)?;
        Spec {
            id: id.clone(),
            tag,
            rule,
        }
    } else {
        lock(&t)
            .engine
            .spec(&id, tag)
            .cloned()
            .ok_or_else(|| ApiError::new(Code::NotFound, format!("no segment {id:?}")))?
    };
    if let Some(n) = &body.name {
        if n.trim().is_empty() || n.len() > 200 {
            return Err(bad("name: 1-200 characters").with("path", "name"));
        }
        record.name = n.clone();
    }
    if let Some(d) = &body.description {
        record.description = d.clone();
    }
    record.updated_at = Utc::now();
    svc.save(&state.log, principal.tenant, record.clone(), spec)
        .await
        .map_err(service_error)?;
    state
        .audit(entry(
            &principal,
            if tag { "tag.update" } else { "segment.update" },
            Some(id.clone()),
        ))
        .await?;
    let st = lock(&t);
    Ok(Json(view(
        &record,
        st.engine.spec(&id, tag),
        st.engine.members(&id, tag).map(|m| m.len()),
    )))
}

async fn remove(
    state: Arc<AppState>,
    principal: Principal,
    id: String,
    tag: bool,
) -> Result<StatusCode, ApiError> {
    let svc = service(&state)?;
    if !svc
        .delete(&state.log, principal.tenant, &id, tag)
        .await
        .map_err(service_error)?
    {
        return Err(ApiError::new(
            Code::NotFound,
            format!("no {} {id:?}", if tag { "tag" } else { "segment" }),
        ));
    }
    state
        .audit(entry(
            &principal,
            if tag { "tag.delete" } else { "segment.delete" },
            Some(id),
        ))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

type Body = Result<Json<SegmentBody>, axum::extract::rejection::JsonRejection>;

fn body(b: Body) -> Result<SegmentBody, ApiError> {
    b.map(|Json(b)| b)
        .map_err(|e| ApiError::new(Code::InvalidJson, e.body_text()))
}

/// `GET /api/v1/segments`.
pub async fn list_segments(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    list(s, p, false).await
}

/// `GET /api/v1/tags`.
pub async fn list_tags(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    list(s, p, true).await
}

/// `POST /api/v1/segments`.
pub async fn create_segment(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    b: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    create(s, p, body(b)?, false).await
}

/// `POST /api/v1/tags`.
pub async fn create_tag(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    b: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    create(s, p, body(b)?, true).await
}

/// `PATCH /api/v1/segments/{id}`.
pub async fn update_segment(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    b: Body,
) -> Result<Json<Value>, ApiError> {
    update(s, p, id, body(b)?, false).await
}

/// `PATCH /api/v1/tags/{id}`.
pub async fn update_tag(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    b: Body,
) -> Result<Json<Value>, ApiError> {
    update(s, p, id, body(b)?, true).await
}

/// `DELETE /api/v1/segments/{id}`.
pub async fn delete_segment(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    remove(s, p, id, false).await
}

/// `DELETE /api/v1/tags/{id}`.
pub async fn delete_tag(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    remove(s, p, id, true).await
}

/// `GET /api/v1/segments/{id}`: the segment, its size, and its size per day.
pub async fn get_segment(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let svc = service(&state)?;
    let record = record_of(&state, p.tenant, &id, false).await?;
    let t = svc.tenant(p.tenant);
    let st = lock(&t);
    let mut v = view(
        &record,
        st.engine.spec(&id, false),
        st.engine.members(&id, false).map(|m| m.len()),
    );
    v["sizes"] = json!(
        st.engine
            .sizes(&id, false)
            .into_iter()
            .map(|(day, n)| json!({"day": day, "size": n}))
            .collect::<Vec<_>>()
    );
    Ok(Json(v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewBody {
    condition: Value,
    #[serde(default)]
    sample: Option<usize>,
}

/// `POST /api/v1/segments/preview`: how many people a condition holds now, and a sample of
/// their profile ids, without saving it.
pub async fn preview(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    b: Result<Json<PreviewBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(b) = b.map_err(|e| ApiError::new(Code::InvalidJson, e.body_text()))?;
    let def = Definition::parse(&json!({"condition": b.condition})).map_err(invalid)?;
    crate::privacy::guard_values(&state, &p, "condition", |f| {
        def.condition.visit_values("condition", f)
    })?;
    let sample = b.sample.unwrap_or(10).min(100);
    let svc = service(&state)?;
    let t = svc.tenant(p.tenant);
    let upto = lock(&t).applied;
    let events = svc
        .tenant_events(&state.log, p.tenant, upto)
        .await
        .map_err(service_error)?;
    let text = def.condition.to_text();
    let spec = Spec {
        id: "$preview".into(),
        tag: false,
        rule: Rule::Condition(def),
    };
    let (count, ids) = lock(&t)
        .engine
        .preview(spec, &events, svc.now(), sample)
        .map_err(segment_error)?;
    Ok(Json(json!({"count": count, "sample": ids, "text": text})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembersQuery {
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    offset: Option<usize>,
}

fn member_ids(
    state: &AppState,
    tenant: livora_model::TenantId,
    id: &str,
) -> Result<
    (
        Arc<std::sync::Mutex<livora_profiles::service::TenantState>>,
        Vec<PersonId>,
    ),
    ApiError,
> {
    let svc = service(state)?;
    let t = svc.tenant(tenant);
    let mut ids: Vec<PersonId> = lock(&t)
        .engine
        .members(id, false)
        .ok_or_else(|| ApiError::new(Code::NotFound, format!("no segment {id:?}")))?
        .iter()
        .collect();
    ids.sort_unstable();
    Ok((t, ids))
}

/// `GET /api/v1/segments/{id}/members`: members, by profile id, with their identifiers.
pub async fn members(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    q: Result<Query<MembersQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(bad("limit must be 1-1000").with("field", "limit"));
    }
    let offset = q.offset.unwrap_or(0);
    let (t, ids) = member_ids(&state, p.tenant, &id)?;
    let page: Vec<Value> = {
        let st = lock(&t);
        ids.iter()
            .skip(offset)
            .take(limit)
            .map(|m| json!({"id": m, "identifiers": identifiers_json(&st.engine, *m)}))
            .collect()
    };
    let next = (offset + page.len() < ids.len()).then_some(offset + page.len());
    state.audit(entry(&p, "segment.members", Some(id))).await?;
    Ok(Json(
        json!({"members": page, "total": ids.len(), "next_offset": next}),
    ))
}

/// `GET /api/v1/segments/{id}/members.csv`: every member, one row per person: profile id,
/// then the user ids, anonymous ids, emails and phones (several joined with `|`). A cell a
/// spreadsheet would read as a formula starts with `'` (CSV injection).
pub async fn members_csv(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (t, ids) = member_ids(&state, p.tenant, &id)?;
    let mut w = csv::Writer::from_writer(Vec::new());
    let kinds = ["user_id", "anonymous_id", "email", "phone"];
    let _ = w.write_record(["person_id", "user_id", "anonymous_id", "email", "phone"]);
    {
        let st = lock(&t);
        for m in &ids {
            let all = st.engine.profiles().graph().identifiers(*m);
            let mut row = vec![m.to_string()];
            for k in kinds {
                let vals: Vec<&str> = all
                    .map(|s| {
                        s.iter()
                            .filter(|i| i.kind() == k)
                            .map(|i| i.value())
                            .collect()
                    })
                    .unwrap_or_default();
                row.push(livora_store::csv_cell::neutralise(&vals.join("|")).into_owned());
            }
            let _ = w.write_record(&row);
        }
    }
    let bytes = w.into_inner().map_err(|e| ApiError::internal(&e))?;
    let mut e = entry(&p, "segment.export", Some(id.clone()));
    e.after = Some(json!({"rows": ids.len()}));
    state.audit(e).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}.csv\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// Keeps the segments of a workflow's behavioural branches
/// ([`livora_model::workflow::branch_segment`]): made, or changed when the condition did,
/// before the workflow version that needs them is saved.
pub(crate) async fn keep_branch_segments(
    state: &AppState,
    principal: &Principal,
    workflow: &str,
    definition: &livora_model::workflow::Workflow,
) -> Result<(), ApiError> {
    let branches = definition.behavioural_branches();
    if branches.is_empty() {
        return Ok(());
    }
    let svc = service(state)?;
    let t = svc.tenant(principal.tenant);
    for (step, condition) in branches {
        let id = livora_model::workflow::branch_segment(workflow, step);
        let def = Definition::parse(&json!({ "condition": condition })).map_err(|e| {
            ApiError::new(Code::InvalidDefinition, e.message)
                .with("path", format!("definition.steps.{step}.branch.if"))
        })?;
        let rule = Rule::Condition(def);
        let same = lock(&t)
            .engine
            .spec(&id, false)
            .is_some_and(|s| s.rule == rule);
        if same {
            continue;
        }
        let now = Utc::now();
        let created_at = record_of(state, principal.tenant, &id, false)
            .await
            .map_or(now, |r| r.created_at);
        let record = SegmentRecord {
            id: id.clone(),
            tag: false,
            name: format!("Workflow {workflow}: branch {step}"),
            description: format!(
                "Kept by workflow {workflow} for its branch {step}; deleted with the workflow."
            ),
            rule: svc
                .stored_rule(principal.tenant, &id, false, &rule)
                .await
                .map_err(service_error)?,
            created_by: principal.label(),
            created_at,
            updated_at: now,
        };
        let spec = Spec {
            id: id.clone(),
            tag: false,
            rule,
        };
        svc.save(&state.log, principal.tenant, record, spec)
            .await
            .map_err(service_error)?;
        state
            .audit(entry(principal, "segment.update", Some(id)))
            .await?;
    }
    Ok(())
}

/// Deletes the branch segments of every version of a workflow (it is being deleted).
pub(crate) async fn drop_branch_segments(
    state: &AppState,
    principal: &Principal,
    workflow: &str,
    definitions: &[livora_model::workflow::Workflow],
) -> Result<(), ApiError> {
    let mut ids = BTreeSet::new();
    for d in definitions {
        for (step, _) in d.behavioural_branches() {
            ids.insert(livora_model::workflow::branch_segment(workflow, step));
        }
    }
    if ids.is_empty() {
        return Ok(());
    }
    let svc = service(state)?;
    for id in ids {
        if svc
            .delete(&state.log, principal.tenant, &id, false)
            .await
            .map_err(service_error)?
        {
            state
                .audit(entry(principal, "segment.delete", Some(id)))
                .await?;
        }
    }
    Ok(())
}
