//! Customer profiles over HTTP: search and list people, one person's profile (identities,
//! traits, computed attributes, segments, tags, merge history), their timeline grouped into
//! sessions, and un-merge. The data comes from the profiles service
//! ([`livora_profiles::service`]), which follows the log. Staff who may read analytics but
//! not personal data get the list and profiles with identifiers and personal traits masked
//! ([`crate::mask`]), find a profile only by its number, and cannot search.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use chrono::{DateTime, Utc};
use livora_model::{PersonKey, TenantId};
use livora_profiles::MergeRules;
use livora_profiles::identity::{ANONYMOUS_ID, EMAIL, Identifier, PHONE, PersonId, USER_ID};
use livora_profiles::profile::Profile;
use livora_profiles::segments::Engine;
use livora_profiles::service::{ProfileService, TenantState};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::access::Principal;
use crate::error::{ApiError, Code};
use crate::staff::entry;

pub(crate) fn service(state: &AppState) -> Result<&Arc<ProfileService>, ApiError> {
    state.profiles.as_ref().ok_or_else(|| {
        ApiError::new(
            Code::AnalyticsDisabled,
            "profiles are off on this node ([analytics] enabled = false)",
        )
    })
}

pub(crate) fn lock(t: &std::sync::Mutex<TenantState>) -> std::sync::MutexGuard<'_, TenantState> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(Code::InvalidRequest, message)
}

/// The identifiers of a person, grouped by kind.
pub(crate) fn identifiers_json(engine: &Engine, person: PersonId) -> Value {
    let mut by_kind: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    if let Some(ids) = engine.profiles().graph().identifiers(person) {
        for i in ids {
            by_kind.entry(i.kind()).or_default().push(i.value());
        }
    }
    json!(by_kind)
}

/// The personal trait keys to mask for `principal`, or `None` when it may see them.
fn masking(state: &AppState, principal: &Principal) -> Option<Vec<String>> {
    if principal.allows(livora_store::Permission::ViewPii) {
        return None;
    }
    Some(
        state
            .protection
            .as_ref()
            .map(|p| p.fields.traits.clone())
            .unwrap_or_else(|| livora_store::crypto::PiiFields::default().traits),
    )
}

fn summary(
    engine: &Engine,
    person: PersonId,
    p: &Profile,
    now: DateTime<Utc>,
    mask: Option<&[String]>,
) -> Value {
    let (segments, tags) = engine.memberships(person);
    let (identifiers, traits) = match mask {
        None => (identifiers_json(engine, person), p.traits.to_json()),
        Some(personal) => (
            crate::mask::identifiers(identifiers_json(engine, person)),
            crate::mask::traits(p.traits.to_json(), personal),
        ),
    };
    json!({
        "id": person,
        "masked": mask.is_some(),
        "identifiers": identifiers,
        "traits": traits,
        "computed": p.computed.to_json(now),
        "predictions": p.predictions,
        "segments": segments,
        "tags": tags,
    })
}

/// Sort keys of the people list.
const SORTS: [&str; 10] = [
    "id",
    "first_seen",
    "last_seen",
    "events",
    "sessions",
    "orders",
    "revenue",
    "average_order_value",
    "engagement",
    "purchase_frequency",
];

fn sort_key(p: &Profile, key: &str, now: DateTime<Utc>) -> f64 {
    let c = &p.computed;
    let t = |d: Option<DateTime<Utc>>| d.map_or(f64::NEG_INFINITY, |d| d.timestamp() as f64);
    match key {
        "first_seen" => t(c.first_seen),
        "last_seen" => t(c.last_seen),
        "events" => c.events as f64,
        "sessions" => c.sessions() as f64,
        "orders" => c.orders as f64,
        "revenue" => c.revenue - c.refunds,
        "average_order_value" => c.average_order_value().unwrap_or(f64::NEG_INFINITY),
        "engagement" => c.engagement(now),
        "purchase_frequency" => c.purchase_frequency(now).unwrap_or(f64::NEG_INFINITY),
        _ => 0.0,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// An identifier value (exact, case-insensitive for emails), or text found in a trait.
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    sort: Option<String>,
    #[serde(default)]
    order: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    offset: Option<usize>,
}

fn matches_search(engine: &Engine, person: PersonId, p: &Profile, q: &str) -> bool {
    let lower = q.to_lowercase();
    if person.to_string() == q {
        return true;
    }
    let by_id = engine
        .profiles()
        .graph()
        .identifiers(person)
        .is_some_and(|ids| ids.iter().any(|i| i.value() == q || i.value() == lower));
    by_id
        || p.traits.iter().any(|(_, v)| match v {
            Value::String(s) => s.to_lowercase().contains(&lower),
            Value::Number(n) => n.to_string() == q,
            _ => false,
        })
}

/// `GET /api/v1/people`: search and list people, sorted by a computed attribute.
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    let sort = q.sort.as_deref().unwrap_or("last_seen");
    if !SORTS.contains(&sort) {
        return Err(bad(format!("sort must be one of {}", SORTS.join(", "))).with("field", "sort"));
    }
    let descending = match q.order.as_deref().unwrap_or("desc") {
        "desc" => true,
        "asc" => false,
        _ => return Err(bad("order must be asc or desc").with("field", "order")),
    };
    let (limit, offset) = page_bounds(q.limit, q.offset)?;
    let mask = masking(&state, &principal);
    if mask.is_some() && q.q.is_some() {
        // A search by email or name would tell who is a customer.
        return Err(ApiError::new(
            Code::Forbidden,
            "searching people needs the pii.view permission: without it the list is masked",
        )
        .with("field", "q"));
    }
    let svc = service(&state)?;
    let now = svc.now();
    let t = svc.tenant(principal.tenant);
    let page = {
        let st = lock(&t);
        let engine = &st.engine;
        // Keys and ids only: a cold profile is decoded for its key, and again for the page.
        let mut rows: Vec<(f64, PersonId)> = engine
            .profiles()
            .people()
            .filter(|(id, p)| {
                q.q.as_deref()
                    .is_none_or(|s| matches_search(engine, *id, p, s.trim()))
            })
            .map(|(id, p)| (sort_key(&p, sort, now), id))
            .collect();
        let order = |a: &(f64, PersonId), b: &(f64, PersonId)| {
            let o = if sort == "id" {
                a.1.cmp(&b.1)
            } else {
                a.0.total_cmp(&b.0).then(a.1.cmp(&b.1))
            };
            if descending { o.reverse() } else { o }
        };
        let total = rows.len();
        // Only the rows up to the page's end are put in order (under the tenant's lock).
        let end = offset.saturating_add(limit);
        if end < rows.len() {
            rows.select_nth_unstable_by(end, order);
            rows.truncate(end);
        }
        rows.sort_by(order);
        let people: Vec<Value> = rows
            .iter()
            .skip(offset)
            .take(limit)
            .filter_map(|(_, id)| {
                let (_, p) = engine.profiles().get(*id)?;
                Some(summary(engine, *id, &p, now, mask.as_deref()))
            })
            .collect();
        let next = (offset + people.len() < total).then_some(offset + people.len());
        json!({"people": people, "total": total, "next_offset": next})
    };
    let mut e = entry(&principal, "people.list", None);
    e.after = Some(
        json!({"q": q.q.is_some(), "returned": page["people"].as_array().map_or(0, Vec::len), "masked": mask.is_some()}),
    );
    state.audit(e).await?;
    Ok(Json(page))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PersonQuery {
    /// What `{id}` is: `user_id` (default), `anonymous_id`, `email`, `phone`, another
    /// identifier kind, or `person` (the profile's numeric id).
    #[serde(default)]
    by: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// The person named by `id` in the current graph.
pub(crate) fn find(engine: &Engine, id: &str, by: Option<&str>) -> Result<PersonId, ApiError> {
    let not_found = || ApiError::new(Code::NotFound, format!("no person {id:?}"));
    let by = by.unwrap_or(USER_ID);
    if by == "person" {
        let n: PersonId = id
            .parse()
            .map_err(|_| bad("a person id is a number").with("field", "id"))?;
        return engine
            .profiles()
            .get(n)
            .map(|(p, _)| p)
            .ok_or_else(not_found);
    }
    let rules = engine.profiles().graph().rules();
    let kind = match by {
        "user_id" | "userId" => USER_ID,
        "anonymous_id" | "anonymousId" => ANONYMOUS_ID,
        "email" => EMAIL,
        "phone" => PHONE,
        other => other,
    };
    let ident = Identifier::new(kind, id, rules).ok_or_else(not_found)?;
    engine
        .profiles()
        .graph()
        .person_of(&ident)
        .ok_or_else(not_found)
}

/// The person holding the user id (or anonymous id) `id` in the profiles' identity graph,
/// and its key subjects (`u:<userId>`, `a:<anonymousId>`) as the graph knows them.
pub(crate) fn subject_keys(
    state: &AppState,
    tenant: TenantId,
    id: &str,
    anonymous: bool,
) -> Option<(PersonId, Vec<String>)> {
    let svc = state.profiles.as_ref()?;
    let t = svc.tenant(tenant);
    let st = lock(&t);
    let by = if anonymous { ANONYMOUS_ID } else { USER_ID };
    let person = find(&st.engine, id, Some(by)).ok()?;
    Some((person, st.engine.profiles().graph().keys(person)))
}

fn person_json(
    engine: &Engine,
    person: PersonId,
    now: DateTime<Utc>,
    mask: Option<&[String]>,
) -> Option<Value> {
    let (_, p) = engine.profiles().get(person)?;
    let mut v = summary(engine, person, &p, now, mask);
    let groups: Map<String, Value> = p
        .groups
        .iter()
        .map(|g| {
            let traits = engine
                .profiles()
                .group(g)
                .map(|g| {
                    let t = g.traits.to_json();
                    Value::Object(match mask {
                        Some(personal) => crate::mask::traits(t, personal),
                        None => t,
                    })
                })
                .unwrap_or_default();
            (g.clone(), json!({"traits": traits}))
        })
        .collect();
    v["groups"] = Value::Object(groups);
    v["rfm"] = engine.profiles().rfm_of(person).map_or(Value::Null, |r| {
        json!({"recency": r.recency, "frequency": r.frequency, "monetary": r.monetary, "code": r.code()})
    });
    // Merges name the identifiers they joined.
    v["merge_history"] = match mask {
        None => json!(engine.profiles().graph().history_of(person)),
        Some(_) => json!([]),
    };
    Some(v)
}

/// `GET /api/v1/people/{id}`: one person's whole profile.
pub async fn get_person(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    q: Result<Query<PersonQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    let mask = masking(&state, &principal);
    if mask.is_some() && q.by.as_deref() != Some("person") {
        // Looking a person up by an email or a user id would tell who is a customer.
        return Err(ApiError::new(
            Code::Forbidden,
            "without the pii.view permission a person is found by the profile's number (by=person)",
        )
        .with("field", "by"));
    }
    let svc = service(&state)?;
    let t = svc.tenant(principal.tenant);
    let v = {
        let st = lock(&t);
        let person = find(&st.engine, &id, q.by.as_deref())?;
        person_json(&st.engine, person, svc.now(), mask.as_deref())
            .ok_or_else(|| ApiError::new(Code::NotFound, format!("no person {id:?}")))?
    };
    let mut e = entry(&principal, "person.view", Some(v["id"].to_string()));
    e.after = Some(json!({"masked": mask.is_some()}));
    state.audit(e).await?;
    Ok(Json(v))
}

/// `GET /api/v1/people/{id}/timeline`: the person's latest events (of every identifier),
/// newest session first, events in a session oldest first.
pub async fn timeline(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    q: Result<Query<PersonQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    let limit = q.limit.unwrap_or(200);
    if !(1..=2000).contains(&limit) {
        return Err(bad("limit must be 1-2000").with("field", "limit"));
    }
    let svc = service(&state)?;
    let t = svc.tenant(principal.tenant);
    let (person, keys) = {
        let st = lock(&t);
        let person = find(&st.engine, &id, q.by.as_deref())?;
        (person, st.engine.profiles().graph().keys(person))
    };
    // An anonymous id shared with someone else (a device two users signed in on) stays with
    // one person: the other's events on it are theirs, by their user id.
    let is_key = |k: PersonKey| keys.iter().any(|x| x == k.as_str());
    let mine = |e: &Value| match e["userId"].as_str() {
        Some(u) => is_key(PersonKey::user(u.trim())),
        None => e["anonymousId"]
            .as_str()
            .is_some_and(|a| is_key(PersonKey::anonymous(a.trim()))),
    };
    let texts = crate::privacy::events_of(&state, principal.tenant, &keys).await?;
    let skip = texts.len().saturating_sub(limit);
    let texts = crate::privacy::reveal(
        &state,
        principal.tenant,
        texts.into_iter().skip(skip).collect(),
    )
    .await?;
    let events: Vec<Value> = texts
        .iter()
        .filter_map(|t| serde_json::from_str(t.get()).ok())
        .filter(|e| mine(e))
        .collect();
    let sessions = sessions(events);
    state
        .audit(entry(
            &principal,
            "person.timeline",
            Some(person.to_string()),
        ))
        .await?;
    Ok(Json(json!({"person": person, "sessions": sessions})))
}

/// Events (oldest first) grouped into sessions (30 minutes without an event end one),
/// newest session first.
fn sessions(mut events: Vec<Value>) -> Vec<Value> {
    let time = |e: &Value| {
        e["timestamp"]
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.timestamp())
            .unwrap_or(0)
    };
    events.sort_by_key(|e| time(e));
    let mut out: Vec<(i64, i64, Vec<Value>)> = Vec::new();
    for e in events {
        let t = time(&e);
        match out.last_mut() {
            Some((_, end, list)) if t - *end <= livora_profiles::computed::SESSION_GAP_SECS => {
                *end = t;
                list.push(e);
            }
            _ => out.push((t, t, vec![e])),
        }
    }
    out.into_iter()
        .rev()
        .map(|(start, end, events)| {
            json!({
                "start": DateTime::from_timestamp(start, 0),
                "end": DateTime::from_timestamp(end, 0),
                "events": events,
            })
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnmergeBody {
    merge_id: u64,
}

/// `POST /api/v1/people/{id}/unmerge`: undoes one of the person's merges.
pub async fn unmerge(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    q: Result<Query<PersonQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<Json<UnmergeBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    let Json(body) = body.map_err(|e| ApiError::new(Code::InvalidJson, e.body_text()))?;
    let svc = service(&state)?;
    let tenant: TenantId = principal.tenant;
    let t = svc.tenant(tenant);
    let person = {
        let st = lock(&t);
        let person = find(&st.engine, &id, q.by.as_deref())?;
        let ours = st
            .engine
            .profiles()
            .graph()
            .history_of(person)
            .iter()
            .any(|r| matches!(r, livora_profiles::identity::MergeRecord::Merged { id, .. } if *id == body.merge_id));
        if !ours {
            return Err(ApiError::new(
                Code::NotFound,
                format!("person {id:?} has no merge {}", body.merge_id),
            )
            .with("field", "merge_id"));
        }
        person
    };
    svc.unmerge(&state.log, tenant, body.merge_id, &principal.label())
        .await
        .map_err(|e| match e {
            livora_profiles::service::ServiceError::Unmerge(u) => {
                ApiError::new(Code::Conflict, u.to_string())
            }
            e @ livora_profiles::service::ServiceError::HistoryGone(_) => {
                ApiError::new(Code::HistoryUnavailable, e.to_string())
            }
            e @ livora_profiles::service::ServiceError::NotReady => {
                ApiError::new(Code::NotReady, e.to_string())
            }
            other => ApiError::internal(&other),
        })?;
    // The profile's number, as `person.view` records it: not the identifier looked up by.
    let mut e = entry(&principal, "person.unmerge", Some(person.to_string()));
    e.after = Some(json!({"merge_id": body.merge_id}));
    state.audit(e).await?;
    // The people on both sides, as they are now.
    let st = lock(&t);
    let mut sides: Vec<Value> = Vec::new();
    for r in st.engine.profiles().graph().undone() {
        if let livora_profiles::identity::MergeRecord::Merged {
            id, kept, moved, ..
        } = r
            && *id == body.merge_id
        {
            for side in [kept, moved] {
                if let Some(p) = side
                    .first()
                    .and_then(|i| st.engine.profiles().graph().person_of(i))
                    && let Some(v) = person_json(&st.engine, p, svc.now(), None)
                {
                    sides.push(v);
                }
            }
        }
    }
    Ok(Json(json!({"people": sides})))
}

/// `GET /api/v1/identity/rules`: the tenant's merge rules, and every change of them.
pub async fn merge_rules(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    let svc = service(&state)?;
    let rules = lock(&svc.tenant(principal.tenant))
        .engine
        .profiles()
        .graph()
        .rules()
        .clone();
    let changes: Vec<Value> = state
        .store
        .rules_changes()
        .await?
        .into_iter()
        .filter(|c| c.tenant == principal.tenant)
        .map(|c| {
            json!({
                "log_offset": c.log_offset,
                "rules": serde_json::from_str::<Value>(&c.rules).unwrap_or(Value::Null),
                "changed_by": c.changed_by,
                "changed_at": c.changed_at,
            })
        })
        .collect();
    Ok(Json(json!({"rules": rules, "changes": changes})))
}

/// `PUT /api/v1/identity/rules`: replaces the tenant's merge rules. They apply to the
/// events that come next; persons already formed stay as they are.
pub async fn set_merge_rules(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::new(Code::InvalidJson, e.body_text()))?;
    let rules: MergeRules = serde_path_to_error::deserialize(&body).map_err(|e| {
        ApiError::new(Code::InvalidRequest, e.inner().to_string())
            .with("path", e.path().to_string())
    })?;
    if let Err(e) = rules.validate() {
        let message = e.to_string();
        let path = message
            .split_once(':')
            .map(|(p, _)| p.trim_start_matches("merge_rules.").to_owned())
            .unwrap_or_default();
        return Err(ApiError::new(Code::InvalidRequest, message).with("path", path));
    }
    let svc = service(&state)?;
    let before = lock(&svc.tenant(principal.tenant))
        .engine
        .profiles()
        .graph()
        .rules()
        .clone();
    svc.set_rules(principal.tenant, rules.clone(), &principal.label())
        .await
        .map_err(|e| match e {
            e @ livora_profiles::service::ServiceError::NotReady => {
                ApiError::new(Code::NotReady, e.to_string())
            }
            other => ApiError::internal(&other),
        })?;
    let mut e = entry(&principal, "identity.rules", None);
    e.before = Some(json!(before));
    e.after = Some(json!(rules));
    state.audit(e).await?;
    Ok(Json(json!({"rules": rules})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupsQuery {
    /// Text found in the group id or a trait value.
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    offset: Option<usize>,
}

fn page_bounds(limit: Option<usize>, offset: Option<usize>) -> Result<(usize, usize), ApiError> {
    let limit = limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(bad("limit must be 1-500").with("field", "limit"));
    }
    Ok((limit, offset.unwrap_or(0)))
}

/// `GET /api/v1/groups`: the tenant's groups (B2B accounts from `group` calls), by id, with
/// their traits and member counts.
pub async fn groups(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    q: Result<Query<GroupsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    let (limit, offset) = page_bounds(q.limit, q.offset)?;
    let svc = service(&state)?;
    let t = svc.tenant(principal.tenant);
    let st = lock(&t);
    let needle = q.q.as_deref().map(|s| s.trim().to_lowercase());
    let mut rows: Vec<(&str, &livora_profiles::profile::Group)> = st
        .engine
        .profiles()
        .groups()
        .filter(|(id, g)| {
            needle.as_deref().is_none_or(|n| {
                id.to_lowercase().contains(n)
                    || g.traits.iter().any(|(_, v)| match v {
                        Value::String(s) => s.to_lowercase().contains(n),
                        other => other.to_string().contains(n),
                    })
            })
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(b.0));
    let total = rows.len();
    let list: Vec<Value> = rows
        .iter()
        .skip(offset)
        .take(limit)
        .map(|(id, g)| {
            json!({"id": id, "traits": Value::Object(g.traits.to_json()), "members": g.members.len()})
        })
        .collect();
    let next = (offset + list.len() < total).then_some(offset + list.len());
    Ok(Json(
        json!({"groups": list, "total": total, "next_offset": next}),
    ))
}

/// `GET /api/v1/groups/{id}`: one group's traits and members (a page of them).
pub async fn group(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    q: Result<Query<GroupsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    if q.q.is_some() {
        return Err(bad("q is for the list of groups").with("field", "q"));
    }
    let (limit, offset) = page_bounds(q.limit, q.offset)?;
    let svc = service(&state)?;
    let now = svc.now();
    let t = svc.tenant(principal.tenant);
    let answer = {
        let st = lock(&t);
        let engine = &st.engine;
        let g = engine
            .profiles()
            .group(&id)
            .ok_or_else(|| ApiError::new(Code::NotFound, format!("no group {id:?}")))?;
        let page: Vec<PersonId> = g.members.iter().skip(offset).take(limit).copied().collect();
        let members: Vec<Value> = page
            .iter()
            .filter_map(|&p| {
                let (_, profile) = engine.profiles().get(p)?;
                Some(summary(engine, p, &profile, now, None))
            })
            .collect();
        let total = g.members.len();
        let next = (offset + page.len() < total).then_some(offset + page.len());
        json!({
            "id": id,
            "traits": Value::Object(g.traits.to_json()),
            "members": members,
            "member_count": total,
            "next_offset": next,
        })
    };
    let mut e = entry(&principal, "group.view", Some(id));
    e.after = Some(json!({"returned": answer["members"].as_array().map_or(0, Vec::len)}));
    state.audit(e).await?;
    Ok(Json(answer))
}
