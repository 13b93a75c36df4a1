//! Personal data: encryption of personal fields at ingestion, their decryption for callers
//! allowed to see them, and the GDPR endpoints (`/api/v1/people/{id}/…`): export everything
//! held about a person, erase a person (crypto-shredding), and consent records.
//!
//! A person is named by a `userId` (`/api/v1/people/u42`) or, with `?anonymous=true`, an
//! `anonymousId`; every identity merged with it (identify, alias) is included.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::HeaderMap;
use chrono::Utc;
use livora_model::segment::ValueRef;
use livora_model::{Event, PersonKey, TenantId};
use livora_store::Consent;
use livora_store::crypto::{Keyring, PiiFields};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::AppState;
use crate::access::Principal;
use crate::error::{ApiError, Code};
use crate::staff::entry;

/// Encryption at rest, when on.
pub struct Protection {
    pub keyring: Arc<Keyring>,
    pub fields: PiiFields,
}

/// Encrypts the personal fields of `events` (all of one tenant) under their subjects' keys.
pub async fn protect(
    p: &Protection,
    tenant: TenantId,
    events: &mut [Event],
) -> Result<(), ApiError> {
    // The key subject of an event: its `userId`, else its `anonymousId`.
    let of_event: Vec<Option<String>> = events
        .iter()
        .map(|e| PersonKey::subject(e).map(String::from))
        .collect();
    let mut subjects: Vec<String> = of_event.iter().flatten().cloned().collect();
    subjects.sort_unstable();
    subjects.dedup();
    let keys = p.keyring.subject_keys(tenant, &subjects).await?;
    for (e, s) in events.iter_mut().zip(&of_event) {
        let Some(key) = s.as_ref().and_then(|s| keys.get(s)) else {
            continue;
        };
        if let Some(t) = &e.traits
            && let Some(text) = p.fields.encrypt_raw(t.get(), false, key)
        {
            e.traits = Some(RawValue::from_string(text).map_err(|e| ApiError::internal(&e))?);
        }
        if let Some(t) = &e.properties
            && let Some(text) = p.fields.encrypt_raw(t.get(), true, key)
        {
            e.properties = Some(RawValue::from_string(text).map_err(|e| ApiError::internal(&e))?);
        }
        p.fields.encrypt_context(&mut e.context, key);
    }
    Ok(())
}

/// The personal fields of this node: the configured ones with encryption on, else the
/// built-in ones.
pub(crate) fn personal_fields(state: &AppState) -> std::borrow::Cow<'_, PiiFields> {
    match &state.protection {
        Some(p) => std::borrow::Cow::Borrowed(&p.fields),
        None => std::borrow::Cow::Owned(PiiFields::default()),
    }
}

/// Refuses, unless `p` holds `pii.view`, a definition that compares personal data: the
/// traits and event properties `[privacy]` protects. Counts over `email contains "a"`,
/// `"ab"`, … would otherwise rebuild the values one character at a time, in a preview, a
/// saved segment's size or a workflow's branch. `visit` walks the definition as
/// [`Condition::visit_values`](livora_model::segment::Condition::visit_values) does; `root`
/// prefixes the paths it gives (`condition`, `definition`).
pub(crate) fn guard_values(
    state: &AppState,
    p: &Principal,
    root: &str,
    visit: impl FnOnce(&mut dyn FnMut(&str, ValueRef<'_>)),
) -> Result<(), ApiError> {
    if p.allows(livora_store::Permission::ViewPii) {
        return Ok(());
    }
    check_values(&personal_fields(state), root, visit)
}

/// [`guard_values`] for a caller without `pii.view`: the first personal value compared,
/// as a `pii_condition` error.
fn check_values(
    fields: &PiiFields,
    root: &str,
    visit: impl FnOnce(&mut dyn FnMut(&str, ValueRef<'_>)),
) -> Result<(), ApiError> {
    let mut first: Option<(String, String, &'static str)> = None;
    visit(&mut |path, v| {
        let (name, names, kind) = match v {
            ValueRef::Trait(n) => (n, &fields.traits, "trait"),
            ValueRef::Property(n) => (n, &fields.properties, "event property"),
        };
        if first.is_none() && names.iter().any(|x| x.eq_ignore_ascii_case(name)) {
            first = Some((path.to_owned(), name.to_owned(), kind));
        }
    });
    match first {
        None => Ok(()),
        Some((path, name, kind)) => {
            let path = if path.is_empty() {
                root.to_owned()
            } else if path.starts_with(root) {
                path
            } else {
                format!("{root}.{path}")
            };
            Err(ApiError::new(
                Code::PiiCondition,
                format!(
                    "{path}: comparing the personal {kind} {name:?} needs the pii.view permission (exists and not_exists need none)"
                ),
            )
            .with("path", path)
            .with("field", name)
            .with("permission", "pii.view"))
        }
    }
}

/// Decrypts the personal fields of stored event texts (erased ones become `null`).
pub async fn reveal(
    state: &AppState,
    tenant: TenantId,
    texts: Vec<Box<RawValue>>,
) -> Result<Vec<Box<RawValue>>, ApiError> {
    let Some(p) = &state.protection else {
        return Ok(texts);
    };
    let mut out = Vec::with_capacity(texts.len());
    for t in texts {
        if !t.get().contains(livora_store::crypto::PREFIX) {
            out.push(t);
            continue;
        }
        let (text, _) = p.keyring.decrypt_text(tenant, t.get()).await?;
        out.push(RawValue::from_string(text).map_err(|e| ApiError::internal(&e))?);
    }
    Ok(out)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PersonQuery {
    /// The id is an `anonymousId`, not a `userId`.
    #[serde(default)]
    anonymous: bool,
}

/// Every identity of the person named by `id`.
/// The key subject a person's path id names (`u:<userId>`, or `a:<anonymousId>`).
fn subject_of(id: &str, anonymous: bool) -> String {
    format!("{}:{id}", if anonymous { "a" } else { "u" })
}

fn identities(state: &AppState, tenant: TenantId, id: &str, anonymous: bool) -> Vec<String> {
    let key = format!("{}:{id}", if anonymous { "a" } else { "u" });
    let merged = state
        .columns
        .as_ref()
        .and_then(|c| c.table(tenant))
        .map(|t| {
            livora_columnar::ColumnStore::read(&t)
                .persons
                .identities(&key)
        })
        .unwrap_or_default();
    if merged.is_empty() { vec![key] } else { merged }
}

fn query(
    q: Result<Query<PersonQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<PersonQuery, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::new(Code::InvalidRequest, e.body_text()))
}

/// The stored events of `ids` (scanning the whole log of the tenant), oldest first.
pub(crate) async fn events_of(
    state: &AppState,
    tenant: TenantId,
    ids: &[String],
) -> Result<Vec<Box<RawValue>>, ApiError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Who {
        #[serde(default)]
        user_id: Option<String>,
        #[serde(default)]
        anonymous_id: Option<String>,
        #[serde(default)]
        previous_id: Option<String>,
        timestamp: chrono::DateTime<Utc>,
    }
    let wanted: HashSet<String> = ids.iter().cloned().collect();
    let cutoff = crate::retention_cutoff(state, tenant).await?;
    let log = state.log.clone();
    let found = tokio::task::spawn_blocking(move || {
        let mut found = Vec::new();
        log.scan_backwards(None, |r| {
            if r.tenant != tenant.0 {
                return true;
            }
            let Ok(text) = std::str::from_utf8(&r.payload) else {
                return true;
            };
            if let Ok(w) = serde_json::from_str::<Who>(text)
                && cutoff.is_none_or(|c| w.timestamp >= c)
            {
                let has = |k: PersonKey| wanted.contains(k.as_str());
                let hit = w.user_id.is_some_and(|u| has(PersonKey::user(&u)))
                    || w.anonymous_id
                        .is_some_and(|a| has(PersonKey::anonymous(&a)))
                    || w.previous_id
                        .is_some_and(|p| has(PersonKey::user(&p)) || has(PersonKey::anonymous(&p)));
                if hit && let Ok(raw) = RawValue::from_string(text.to_owned()) {
                    found.push(raw);
                }
            }
            true
        })
        .map(|()| found)
    })
    .await
    .map_err(|e| ApiError::internal(&e))?
    .map_err(|e| ApiError::internal(&e))?;
    let mut found = found;
    found.reverse();
    Ok(found)
}

/// `GET /api/v1/people/{id}/export`: everything held about a person, as JSON.
pub async fn export(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    q: Result<Query<PersonQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let ids = identities(&state, p.tenant, &id, q.anonymous);
    let events = events_of(&state, p.tenant, &ids).await?;
    let events = reveal(&state, p.tenant, events).await?;
    let consents = state.store.consents(p.tenant, &ids).await?;
    let target =
        crate::staff::person_target(&state, p.tenant, &subject_of(&id, q.anonymous)).await?;
    let mut e = entry(&p, "person.export", Some(target));
    e.after =
        Some(json!({"identities": ids.len(), "events": events.len(), "consents": consents.len()}));
    state.audit(e).await?;
    Ok(Json(json!({
        "person": {"id": id, "identities": ids},
        "events": events,
        "consents": consents,
        "exported_at": Utc::now(),
        "encryption_at_rest": state.protection.is_some(),
    })))
}

/// `DELETE /api/v1/people/{id}`: erases a person. Their subject keys are destroyed, so the
/// personal fields of their events (in the log and in Parquet segments) can never be read
/// again; their consent records are deleted; their journeys stop and their messages lose
/// content and address (pending ones are cancelled).
pub async fn erase(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    q: Result<Query<PersonQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let mut ids = identities(&state, p.tenant, &id, q.anonymous);
    // The profiles' identity graph also links ids through emails and phones.
    let linked = crate::people::subject_keys(&state, p.tenant, &id, q.anonymous);
    let person = linked.as_ref().map(|(person, _)| *person);
    ids.extend(linked.into_iter().flat_map(|(_, keys)| keys));
    ids.sort_unstable();
    ids.dedup();
    // Sealed before the keys go: the entry of the erasure itself is unreadable after it.
    let target =
        crate::staff::person_target(&state, p.tenant, &subject_of(&id, q.anonymous)).await?;
    let keys = match &state.protection {
        Some(pr) => pr.keyring.shred(p.tenant, &ids).await?,
        None => 0,
    };
    let consents = state.store.delete_consents(p.tenant, &ids).await?;
    // Journeys stop; messages keep neither content nor address, and pending ones are
    // cancelled: nothing is sent to an erased person.
    let (journeys, messages) = match &state.automation {
        Some(a) => a
            .erase(p.tenant, &ids)
            .await
            .map_err(|e| ApiError::internal(&e))?,
        None => (0, 0),
    };
    // Profiles hold decrypted traits in memory (and in their snapshots): rebuilt from the
    // log, which no longer reveals the erased fields, or forgotten in place once the log
    // no longer holds all of the tenant's events.
    if let Some(svc) = &state.profiles {
        svc.erase(&state.log, p.tenant, person)
            .await
            .map_err(|e| ApiError::internal(&e))?;
    }
    let mut e = entry(&p, "person.erase", Some(target));
    e.after = Some(json!({"identities": ids.len(), "keys_destroyed": keys,
        "consents_deleted": consents, "journeys_erased": journeys, "messages_erased": messages}));
    state.audit(e).await?;
    let mut answer = json!({
        "erased": id,
        "identities": ids,
        "keys_destroyed": keys,
        "consents_deleted": consents,
        "journeys_erased": journeys,
        "messages_erased": messages,
    });
    if state.protection.is_none() {
        answer["warning"] = json!(
            "encryption at rest is off ([privacy] encryption = false): the person's events in the log keep their personal fields"
        );
    } else if state.columns.is_none() {
        answer["warning"] = json!(
            "this node does not keep identity merges ([analytics] enabled = false): only the identity named was erased; erase the person's other ids too, or erase on a node with analytics"
        );
    }
    Ok(Json(answer))
}

/// `GET /api/v1/people/{id}/consents`: the person's consent records, oldest first, and the
/// current answer per purpose.
pub async fn consents(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    q: Result<Query<PersonQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let ids = identities(&state, p.tenant, &id, q.anonymous);
    let records = state.store.consents(p.tenant, &ids).await?;
    let mut current: HashMap<&str, bool> = HashMap::new();
    for c in &records {
        current.insert(&c.purpose, c.granted);
    }
    Ok(Json(json!({"records": records, "current": current})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentBody {
    purpose: String,
    granted: bool,
    source: String,
}

/// `POST /api/v1/people/{id}/consents`: records a consent answer (never overwrites: the
/// history is the proof).
pub async fn record_consent(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    q: Result<Query<PersonQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    let q = query(q)?;
    let b: ConsentBody = crate::staff::json_body(&headers, body).await?;
    let valid = |s: &str| !s.is_empty() && s.len() <= 100;
    if !valid(&b.purpose) || !valid(&b.source) {
        return Err(ApiError::new(
            Code::InvalidRequest,
            "`purpose` and `source` have 1 to 100 characters",
        ));
    }
    let c = Consent {
        subject: format!("{}:{id}", if q.anonymous { "a" } else { "u" }),
        purpose: b.purpose,
        granted: b.granted,
        source: b.source,
        recorded_at: Utc::now(),
        recorded_by: p.label(),
    };
    state.store.add_consent(p.tenant, &c).await?;
    let target = crate::staff::person_target(&state, p.tenant, &c.subject).await?;
    let mut e = entry(&p, "consent.record", Some(target));
    e.after = Some(json!({"purpose": c.purpose, "granted": c.granted, "source": c.source}));
    state.audit(e).await?;
    Ok((axum::http::StatusCode::CREATED, Json(json!(c))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Workflows compare personal data in branches and filters too: found, with the path,
    /// wherever it is; `exists` and non-personal traits pass.
    #[test]
    fn personal_values_in_workflow_branches_and_filters_are_refused() {
        let fields = PiiFields::default();
        let check = |v: Value| {
            let w = livora_model::workflow::Workflow::parse(&v).expect("valid");
            check_values(&fields, "definition", |f| w.visit_values(f))
        };
        let send = json!({"id": "s", "send": {"channel": "email",
            "template": {"subject": "Hi", "body": "Hi"}}});
        let branch = |cond: Value| {
            json!({"trigger": {"event": {"name": "Signed Up"}}, "steps": [
                {"id": "b", "branch": {"if": {"not": {"or": [{"tag": "vip"}, cond]}}}},
                send.clone(),
            ]})
        };
        let e = check(branch(
            json!({"trait": {"name": "Email", "op": "contains", "value": "a"}}),
        ))
        .expect_err("refused");
        assert_eq!(e.code, Code::PiiCondition);
        assert_eq!(
            e.details["path"],
            "definition.steps[0].branch.if.not.or[1].trait.name"
        );
        assert_eq!(e.details["field"], "Email");
        assert!(e.message.contains("\"Email\""), "{}", e.message);
        check(branch(json!({"trait": {"name": "email", "op": "exists"}}))).expect("exists");
        check(branch(
            json!({"trait": {"name": "plan", "op": "equals", "value": "pro"}}),
        ))
        .expect("not personal");
        let e = check(json!({"trigger": {"event": {"name": "Signed Up",
            "where": [{"property": "phone", "op": "contains", "value": "+33"}]}},
            "steps": [send]}))
        .expect_err("refused");
        assert_eq!(
            e.details["path"],
            "definition.trigger.event.where[0].property"
        );
    }
}
