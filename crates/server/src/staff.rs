//! Staff accounts over HTTP: sign-in, token refresh, sign-out, invitations, password resets
//! (`/api/v1/auth/*`), and the tenant administration that goes with them: members and roles,
//! API keys, and the audit log (`/api/v1/members`, `/api/v1/keys`, `/api/v1/audit`).
//!
//! Failed sign-ins lock the account after `auth.lockout_after` failures in a row, for
//! `lockout_base_secs` doubling with each further failure up to `lockout_max_secs`; a locked
//! account is answered 429 `account_locked` without checking the password. An unknown email
//! and a wrong password get the same answer, after the same work (a dummy hash is checked).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use livora_model::TenantId;
use livora_store::accounts::{self, LoginLock, Membership, Refreshed, Session, TokenPurpose, User};
use livora_store::audit::NewEntry;
use livora_store::{DeliveryPolicy, Permission, Role, Scope};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::AppState;
use crate::access::{Actor, Claims, Principal, forbidden};
use crate::error::{ApiError, Code};

/// Largest body of an account or administration request.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The client address the middleware found, for routes without a principal.
#[derive(Debug, Clone)]
pub struct ClientAddr(pub String);

pub(crate) async fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    crate::body::check_content_type(headers)?;
    let bytes = crate::body::read(headers, body, MAX_BODY_BYTES).await?;
    if bytes.is_empty() {
        return Err(ApiError::new(Code::EmptyBody, "the request body is empty"));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        let code = if e.is_data() {
            Code::InvalidRequest
        } else {
            Code::InvalidJson
        };
        ApiError::new(code, format!("invalid request body: {e}"))
    })
}

impl AppState {
    /// Appends to the audit log (synced before it returns); failing closed: an action that
    /// cannot be recorded is refused.
    pub async fn audit(&self, entry: NewEntry) -> Result<(), ApiError> {
        let log = self.audit.clone();
        tokio::task::spawn_blocking(move || log.record(entry))
            .await
            .map_err(|e| ApiError::internal(&e))?
            .map_err(|e| ApiError::internal(&e))?;
        Ok(())
    }
}

/// An audit entry by `p` in its tenant.
pub fn entry(p: &Principal, action: &str, target: Option<String>) -> NewEntry {
    NewEntry {
        actor: p.label(),
        action: action.into(),
        tenant: Some(p.tenant.to_string()),
        target,
        from: Some(p.from.clone()),
        before: None,
        after: None,
    }
}

/// How the audit log names a person (`subject`: `u:<userId>` or `a:<anonymousId>`): sealed
/// under the person's own key (a `$lv1:` envelope), so that erasing the person leaves nothing
/// readable in the log; `GET /api/v1/audit` opens it for callers with `pii.view` until then.
/// With encryption at rest off, a keyed hash of tenant and subject
/// ([`livora_store::crypto::SubjectTagger`]): a guessed id cannot be confirmed from the log.
pub(crate) async fn person_target(
    state: &AppState,
    tenant: TenantId,
    subject: &str,
) -> Result<String, ApiError> {
    match &state.protection {
        Some(p) => Ok(p.keyring.seal_for_subject(tenant, subject, subject).await?),
        None => Ok(state.subject_tags.tag(tenant, subject)),
    }
}

// ---------------------------------------------------------------------------------------------
// Sign-in and tokens

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    email: String,
    password: String,
    tenant_id: Option<String>,
}

fn parse_tenant(text: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(text)
        .map_err(|_| ApiError::new(Code::InvalidRequest, format!("{text:?} is not a tenant id")))
}

/// The tenant a session starts in: the one asked for (if a member), else the first.
fn pick_tenant(memberships: &[Membership], asked: Option<&str>) -> Result<Membership, ApiError> {
    let found = match asked {
        Some(t) => {
            let t = parse_tenant(t)?;
            memberships.iter().find(|m| m.tenant_id == t)
        }
        None => memberships.first(),
    };
    found.cloned().ok_or_else(|| {
        ApiError::new(
            Code::Forbidden,
            "you are not a member of that tenant (or of any)",
        )
    })
}

/// The answer of a sign-in or refresh: an access token and the next refresh token.
async fn tokens(
    state: &AppState,
    user: &User,
    session: &Session,
    refresh_token: String,
    memberships: &[Membership],
    current: &Membership,
) -> Result<Json<Value>, ApiError> {
    let now = Utc::now();
    let ttl = state.auth.access_token_ttl_secs.clamp(1, 86_400) as i64;
    let access = state.jwt.sign(&Claims {
        iss: "livora".into(),
        sub: user.id.clone(),
        sid: session.id.clone(),
        ten: current.tenant_id.to_string(),
        iat: now.timestamp(),
        exp: now.timestamp() + ttl,
    })?;
    let mut tenants = Vec::new();
    for m in memberships {
        let name = state.store.tenant(m.tenant_id).await?.map(|t| t.name);
        tenants.push(json!({"tenant_id": m.tenant_id, "name": name, "role": m.role}));
    }
    Ok(Json(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ttl,
        "refresh_token": refresh_token,
        "refresh_expires_at": session.expires_at,
        "session_id": session.id,
        "user": user,
        "tenant_id": current.tenant_id,
        "role": current.role,
        "tenants": tenants,
    })))
}

/// The lock after `failures` failed sign-ins in a row.
/// Counts a failed sign-in against each of `accounts`, locking those past the limit.
async fn count_failed_sign_in(
    state: &AppState,
    accounts: &[(User, String)],
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    for (u, _) in accounts {
        let failures = state.store.bump_login_failures(&u.id).await?;
        let lock = next_lock(state, failures, now);
        state.store.set_login_lock(&u.id, &lock).await?;
    }
    Ok(())
}

fn next_lock(state: &AppState, failures: u32, now: DateTime<Utc>) -> LoginLock {
    let o = &state.auth;
    let locked_until = (failures >= o.lockout_after.max(1)).then(|| {
        let doublings = (failures - o.lockout_after.max(1)).min(20);
        let secs = o
            .lockout_base_secs
            .saturating_mul(1 << doublings)
            .min(o.lockout_max_secs)
            .max(1);
        now + Duration::seconds(secs.min(i64::MAX as u64) as i64)
    });
    LoginLock {
        failures,
        locked_until,
    }
}

fn locked(until: DateTime<Utc>, now: DateTime<Utc>) -> Response {
    let secs = (until - now).num_seconds().max(1) as u64;
    let mut r = ApiError::new(
        Code::AccountLocked,
        format!("too many failed sign-ins; this account is locked for {secs} s"),
    )
    .with("retry_after_seconds", secs)
    .into_response();
    r.headers_mut()
        .insert("retry-after", HeaderValue::from(secs));
    r
}

fn bad_credentials() -> ApiError {
    ApiError::new(Code::InvalidCredentials, "wrong email or password")
}

pub async fn login(
    State(state): State<Arc<AppState>>,
    Extension(ClientAddr(from)): Extension<ClientAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let b: LoginBody = json_body(&headers, body).await?;
    let now = Utc::now();
    // An address may have several accounts (see `livora_store::accounts::AccountStore`): the
    // password says which. Locked accounts are not tried.
    let (open, locked_ones): (Vec<_>, Vec<_>) = state
        .store
        .accounts(&b.email)
        .await?
        .into_iter()
        .filter(|c| c.password_hash.is_some())
        .partition(|c| c.lock.locked_until.is_none_or(|until| until <= now));
    let hashes: Vec<String> = open
        .iter()
        .filter_map(|c| c.password_hash.clone())
        .collect();
    let password = b.password;
    let matched = tokio::task::spawn_blocking(move || {
        if hashes.is_empty() {
            // The same work as a wrong password.
            accounts::verify_password(None, &password);
            return None;
        }
        hashes
            .iter()
            .position(|h| accounts::verify_password(Some(h), &password))
    })
    .await
    .map_err(|e| ApiError::internal(&e))?;
    let creds = match matched.and_then(|i| open.get(i)) {
        Some(c) => c.clone(),
        None => {
            // Each failure counts atomically, so concurrent guesses all count.
            for c in &open {
                let failures = state.store.bump_login_failures(&c.user.id).await?;
                let lock = next_lock(&state, failures, now);
                state.store.set_login_lock(&c.user.id, &lock).await?;
                state
                    .audit(NewEntry {
                        actor: format!("user:{} ({})", c.user.id, c.user.email),
                        action: "auth.login_failed".into(),
                        target: Some(c.user.id.clone()),
                        from: Some(from.clone()),
                        after: Some(
                            json!({"failures": lock.failures, "locked_until": lock.locked_until}),
                        ),
                        ..NewEntry::default()
                    })
                    .await?;
            }
            if let Some(until) = locked_ones.iter().filter_map(|c| c.lock.locked_until).min() {
                return Ok(locked(until, now));
            }
            return Err(bad_credentials());
        }
    };
    state
        .store
        .set_login_lock(&creds.user.id, &LoginLock::default())
        .await?;
    let memberships = state.store.memberships(&creds.user.id).await?;
    let current = pick_tenant(&memberships, b.tenant_id.as_deref())?;
    let ttl = Duration::days(state.auth.session_ttl_days.clamp(1, 3650) as i64);
    let (session, refresh) = state
        .store
        .create_session(&creds.user.id, current.tenant_id, now + ttl)
        .await?;
    state
        .audit(NewEntry {
            actor: format!("user:{} ({})", creds.user.id, creds.user.email),
            action: "auth.login".into(),
            tenant: Some(current.tenant_id.to_string()),
            target: Some(session.id.clone()),
            from: Some(from),
            ..NewEntry::default()
        })
        .await?;
    Ok(tokens(
        &state,
        &creds.user,
        &session,
        refresh,
        &memberships,
        &current,
    )
    .await?
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    refresh_token: String,
    tenant_id: Option<String>,
}

pub async fn refresh(
    State(state): State<Arc<AppState>>,
    Extension(ClientAddr(from)): Extension<ClientAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let b: RefreshBody = json_body(&headers, body).await?;
    let now = Utc::now();
    let (session, next) = match state.store.refresh(&b.refresh_token, now).await? {
        Refreshed::Rotated { session, token } => (session, token),
        Refreshed::Reused { session_id } => {
            state.sessions.forget(&session_id);
            let s = state.store.session(&session_id).await?;
            state
                .audit(NewEntry {
                    actor: s
                        .as_ref()
                        .map_or("unknown".into(), |s| format!("user:{}", s.user_id)),
                    action: "auth.refresh_reused".into(),
                    tenant: s.map(|s| s.tenant_id.to_string()),
                    target: Some(session_id),
                    from: Some(from),
                    ..NewEntry::default()
                })
                .await?;
            return Err(ApiError::new(
                Code::InvalidToken,
                "this refresh token was already used; the session is revoked, sign in again",
            ));
        }
        Refreshed::Invalid => {
            return Err(ApiError::new(
                Code::InvalidToken,
                "unknown, expired or revoked refresh token",
            ));
        }
    };
    let Some(user) = state.store.user(&session.user_id).await? else {
        return Err(ApiError::new(
            Code::InvalidToken,
            "the user no longer exists",
        ));
    };
    let memberships = state.store.memberships(&user.id).await?;
    let asked = b.tenant_id.unwrap_or_else(|| session.tenant_id.to_string());
    let current = pick_tenant(&memberships, Some(&asked))?;
    if current.tenant_id != session.tenant_id {
        state
            .store
            .set_session_tenant(&session.id, current.tenant_id)
            .await?;
    }
    tokens(&state, &user, &session, next, &memberships, &current).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LogoutBody {
    /// End every session of the user, not only this one.
    #[serde(default)]
    all: bool,
}

pub async fn logout(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let Actor::User { id, session, .. } = &p.actor else {
        return Err(ApiError::new(
            Code::InvalidRequest,
            "API keys have no session; revoke the key instead",
        ));
    };
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                Code::BodyTooLarge,
                format!("a sign-out body is at most {MAX_BODY_BYTES} bytes"),
            )
        })?;
    let b: LogoutBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        LogoutBody::default()
    } else {
        serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(Code::InvalidRequest, format!("invalid request body: {e}"))
        })?
    };
    if b.all {
        state.store.revoke_user_sessions(id).await?;
        state.sessions.clear();
    } else {
        state.store.revoke_session(session).await?;
        state.sessions.forget(session);
    }
    let mut e = entry(&p, "auth.logout", Some(session.clone()));
    e.after = Some(json!({"all_sessions": b.all}));
    state.audit(e).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptBody {
    token: String,
    password: Option<String>,
    name: Option<String>,
}

/// Accepts an invitation. The token is shown to whoever invited (it is passed on until email
/// delivers it), so it proves nothing about the address and never opens an account by
/// itself: with the password of an existing account of the invited address, that account
/// joins the tenant; with any other password, the invitation's own new account gets it as its
/// first password (so a second account of that address, holding this membership only) and is
/// signed in. No password is ever changed here.
pub async fn accept_invitation(
    State(state): State<Arc<AppState>>,
    Extension(ClientAddr(from)): Extension<ClientAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let b: AcceptBody = json_body(&headers, body).await?;
    let now = Utc::now();
    let void = || ApiError::new(Code::InvalidToken, "unknown, used or expired invitation");
    // Checks come before the token is used up, so that a weak password can be retried.
    let Some(t) = state
        .store
        .peek_token(&b.token, TokenPurpose::Invite, now)
        .await?
    else {
        return Err(void());
    };
    let (Some(grant), Some(invited)) = (t.grant, state.store.user(&t.user_id).await?) else {
        return Err(ApiError::new(Code::InvalidToken, "the invitation is void"));
    };
    let Some(pw) = b.password else {
        return Err(ApiError::new(
            Code::InvalidRequest,
            "send the `password`: an existing account's own to join with it, a new one otherwise",
        ));
    };
    let existing: Vec<_> = state
        .store
        .accounts(&invited.email)
        .await?
        .into_iter()
        .filter(|c| c.password_hash.is_some())
        .collect();
    // Trying a password here is trying it against those accounts: locks apply.
    if let Some(until) = existing
        .iter()
        .filter_map(|c| c.lock.locked_until)
        .filter(|until| *until > now)
        .min()
    {
        return Ok(locked(until, now));
    }
    let existing: Vec<(User, String)> = existing
        .into_iter()
        .filter_map(|c| c.password_hash.map(|h| (c.user, h)))
        .collect();
    let hashes: Vec<String> = existing.iter().map(|(_, h)| h.clone()).collect();
    let given = pw.clone();
    let matched = tokio::task::spawn_blocking(move || {
        hashes
            .iter()
            .position(|h| accounts::verify_password(Some(h), &given))
    })
    .await
    .map_err(|e| ApiError::internal(&e))?;
    let user = match matched.and_then(|i| existing.get(i)) {
        Some((user, _)) => user.clone(),
        // The inviting tenant's account of the address has its password already (a second
        // invitation from the same tenant): only that password joins it.
        // A wrong password here is a failed sign-in of each account of the address: the
        // token stays usable, so without it guesses would be free (a tenant that removed and
        // re-invited an address it had accepted for itself could try the real owner's).
        None if invited.active => {
            count_failed_sign_in(&state, &existing, now).await?;
            return Err(bad_credentials());
        }
        None => {
            if let Err(weak) =
                accounts::check_password_policy(&pw, &[&invited.email, &invited.name])
            {
                count_failed_sign_in(&state, &existing, now).await?;
                return Err(weak.into());
            }
            invited.clone()
        }
    };
    let new_user = user.id == invited.id && !invited.active;
    if state
        .store
        .take_token(&b.token, TokenPurpose::Invite, now)
        .await?
        .is_none()
    {
        return Err(void());
    }
    if new_user {
        let hash = tokio::task::spawn_blocking(move || accounts::hash_password(&pw))
            .await
            .map_err(|e| ApiError::internal(&e))??;
        state.store.set_password_hash(&user.id, &hash).await?;
        let _ = b.name; // the name was given with the invitation; kept as is
    } else if user.id != invited.id {
        // The invitation's own account was not needed.
        state.store.discard_unclaimed_user(&invited.id).await?;
    }
    if !state
        .store
        .add_member(grant.tenant_id, &user.id, grant.role)
        .await?
    {
        return Err(ApiError::new(
            Code::Conflict,
            "you are already a member of this tenant; the invitation cannot change your role",
        ));
    }
    state.sessions.clear();
    state
        .audit(NewEntry {
            actor: format!("user:{} ({})", user.id, user.email),
            action: "member.join".into(),
            tenant: Some(grant.tenant_id.to_string()),
            target: Some(user.id.clone()),
            from: Some(from),
            before: None,
            after: Some(json!({"role": grant.role})),
        })
        .await?;
    if !new_user {
        // An existing account signs in with its own password.
        return Ok(Json(json!({"joined": grant.tenant_id, "role": grant.role})).into_response());
    }
    let user = state.store.user(&user.id).await?.unwrap_or(user);
    let memberships = state.store.memberships(&user.id).await?;
    let ttl = Duration::days(state.auth.session_ttl_days.clamp(1, 3650) as i64);
    let (session, refresh) = state
        .store
        .create_session(&user.id, grant.tenant_id, now + ttl)
        .await?;
    Ok(
        tokens(&state, &user, &session, refresh, &memberships, &grant)
            .await?
            .into_response(),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetBody {
    token: String,
    password: String,
}

/// Sets a new password from a reset token; every session of the user ends.
pub async fn reset_password(
    State(state): State<Arc<AppState>>,
    Extension(ClientAddr(from)): Extension<ClientAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let b: ResetBody = json_body(&headers, body).await?;
    let void = || ApiError::new(Code::InvalidToken, "unknown, used or expired reset token");
    let now = Utc::now();
    // The policy is checked before the token is used up, so a weak password can be retried.
    let Some(t) = state
        .store
        .peek_token(&b.token, TokenPurpose::Reset, now)
        .await?
    else {
        return Err(void());
    };
    let user = state.store.user(&t.user_id).await?.ok_or_else(void)?;
    accounts::check_password_policy(&b.password, &[&user.email, &user.name])?;
    let Some(t) = state
        .store
        .take_token(&b.token, TokenPurpose::Reset, now)
        .await?
    else {
        return Err(void());
    };
    let pw = b.password;
    let hash = tokio::task::spawn_blocking(move || accounts::hash_password(&pw))
        .await
        .map_err(|e| ApiError::internal(&e))??;
    state.store.set_password_hash(&t.user_id, &hash).await?;
    state.store.revoke_user_sessions(&t.user_id).await?;
    state.sessions.clear();
    state
        .audit(NewEntry {
            actor: format!("user:{}", t.user_id),
            action: "auth.password_reset".into(),
            target: Some(t.user_id),
            from: Some(from),
            ..NewEntry::default()
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/me`: who the credentials are, in which tenant, with which permissions.
pub async fn me(Extension(p): Extension<Principal>) -> Json<Value> {
    let permissions: Vec<&str> = Permission::ALL
        .into_iter()
        .filter(|x| p.allows(*x))
        .map(Permission::as_str)
        .collect();
    let who = match &p.actor {
        Actor::Key { id, scopes } => json!({"type": "key", "key_id": id, "scopes": scopes}),
        Actor::User {
            id, email, role, ..
        } => json!({"type": "user", "user_id": id, "email": email, "role": role}),
    };
    Json(json!({"tenant_id": p.tenant, "principal": who, "permissions": permissions}))
}

// ---------------------------------------------------------------------------------------------
// Members

pub async fn members(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({"members": state.store.members(p.tenant).await?}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InviteBody {
    email: String,
    role: Role,
    #[serde(default)]
    name: String,
}

/// Granting or taking away ownership is for owners.
fn check_owner_change(p: &Principal, from: Option<Role>, to: Option<Role>) -> Result<(), ApiError> {
    if (from == Some(Role::Owner) || to == Some(Role::Owner)) && !p.allows(Permission::ManageTenant)
    {
        return Err(forbidden(Permission::ManageTenant));
    }
    Ok(())
}

/// Refuses to leave a tenant without an owner.
async fn keep_an_owner(state: &AppState, tenant: TenantId, user_id: &str) -> Result<(), ApiError> {
    let owners: Vec<_> = state
        .store
        .members(tenant)
        .await?
        .into_iter()
        .filter(|m| m.role == Role::Owner)
        .collect();
    if owners.len() == 1 && owners[0].user.id == user_id {
        return Err(ApiError::new(
            Code::Conflict,
            "this is the tenant's last owner; make someone else owner first",
        ));
    }
    Ok(())
}

/// `POST /api/v1/members`: invites a person. The answer holds the invitation token, to pass on
/// to the person until the email channel delivers it, and the id of the invitation's own
/// account (which the person's existing account replaces if they join with it).
pub async fn invite(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let b: InviteBody = json_body(&headers, body).await?;
    check_owner_change(&p, None, Some(b.role))?;
    let email = accounts::normalize_email(&b.email)?;
    if state
        .store
        .members(p.tenant)
        .await?
        .iter()
        .any(|m| m.user.email == email)
    {
        return Err(ApiError::new(
            Code::Conflict,
            format!("{email} is already a member; change their role instead"),
        ));
    }
    // The tenant's own account of the address (made without a password if it has none), given
    // a password only if the invitation is not accepted by another account of the address
    // (see `accept_invitation`).
    let user = state
        .store
        .create_invited_user(&email, &b.name, p.tenant)
        .await?;
    let expires_at =
        Utc::now() + Duration::hours(state.auth.invitation_ttl_hours.clamp(1, 24 * 365) as i64);
    let token = state
        .store
        .create_token(
            &user.id,
            TokenPurpose::Invite,
            Some(Membership {
                tenant_id: p.tenant,
                role: b.role,
            }),
            expires_at,
            match &p.actor {
                Actor::User { id, .. } => Some(id.as_str()),
                Actor::Key { .. } => None,
            },
        )
        .await?;
    let mut e = entry(&p, "member.invite", Some(user.id.clone()));
    e.after = Some(json!({"email": email, "role": b.role}));
    state.audit(e).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "user_id": user.id,
            "email": email,
            "role": b.role,
            "invitation_token": token,
            "expires_at": expires_at,
        })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    role: Role,
}

async fn current_role(state: &AppState, tenant: TenantId, user_id: &str) -> Result<Role, ApiError> {
    state
        .store
        .members(tenant)
        .await?
        .into_iter()
        .find(|m| m.user.id == user_id)
        .map(|m| m.role)
        .ok_or_else(|| ApiError::new(Code::NotFound, "no such member in this tenant"))
}

pub async fn set_role(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(user_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let b: RoleBody = json_body(&headers, body).await?;
    let before = current_role(&state, p.tenant, &user_id).await?;
    check_owner_change(&p, Some(before), Some(b.role))?;
    if before == Role::Owner && b.role != Role::Owner {
        keep_an_owner(&state, p.tenant, &user_id).await?;
    }
    state.store.set_role(p.tenant, &user_id, b.role).await?;
    state.sessions.clear();
    let mut e = entry(&p, "member.role", Some(user_id.clone()));
    e.before = Some(json!({"role": before}));
    e.after = Some(json!({"role": b.role}));
    state.audit(e).await?;
    Ok(Json(json!({"user_id": user_id, "role": b.role})))
}

pub async fn remove_member(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(user_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let before = current_role(&state, p.tenant, &user_id).await?;
    check_owner_change(&p, Some(before), None)?;
    if before == Role::Owner {
        keep_an_owner(&state, p.tenant, &user_id).await?;
    }
    state.store.remove_member(p.tenant, &user_id).await?;
    state.sessions.clear();
    let mut e = entry(&p, "member.remove", Some(user_id));
    e.before = Some(json!({"role": before}));
    state.audit(e).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// API keys

pub async fn keys(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"keys": state.store.keys(p.tenant).await?})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKeyBody {
    scopes: Vec<Scope>,
}

pub async fn create_key(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let b: NewKeyBody = json_body(&headers, body).await?;
    let key = state.store.create_key_scoped(p.tenant, &b.scopes).await?;
    let mut e = entry(&p, "key.create", Some(key.key.id.clone()));
    e.after = Some(json!({"kind": key.key.kind.as_str(), "scopes": key.key.scopes}));
    state.audit(e).await?;
    Ok((StatusCode::CREATED, Json(json!(key))).into_response())
}

pub async fn revoke_key(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(key_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !state.store.revoke_key(Some(p.tenant), &key_id).await? {
        return Err(ApiError::new(Code::NotFound, "no such key in this tenant"));
    }
    state.keys.clear();
    let mut e = entry(&p, "key.revoke", Some(key_id));
    e.after = Some(json!({"revoked": true}));
    state.audit(e).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// Audit log

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// `json` (default) or `csv`.
    format: Option<String>,
    /// Only entries after this sequence number.
    after_seq: Option<u64>,
    /// At most this many entries (default 1000, at most 10,000).
    limit: Option<usize>,
}

/// `GET /api/v1/audit`: the tenant's entries of the audit log, after checking the whole chain.
pub async fn audit_log(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::new(Code::InvalidRequest, e.body_text()))?;
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::new(
                Code::InvalidRequest,
                format!("format {other:?}: use json or csv"),
            ));
        }
    };
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let log = state.audit.clone();
    let tenant = p.tenant.to_string();
    let after = q.after_seq.unwrap_or(0);
    let (head, entries) = tokio::task::spawn_blocking(move || {
        log.read_verified().map(|(head, all)| {
            let mine: Vec<_> = all
                .into_iter()
                .filter(|e| e.seq > after && e.what.tenant.as_deref() == Some(tenant.as_str()))
                .take(limit)
                .collect();
            (head, mine)
        })
    })
    .await
    .map_err(|e| ApiError::internal(&e))?
    .map_err(|e| {
        tracing::error!(error = %e, "the audit log is broken");
        ApiError::new(
            Code::AuditBroken,
            "the audit log's hash chain is broken; run `livora admin audit verify`",
        )
    })?;
    // Persons named in entries are sealed under their own keys: shown to `pii.view` while
    // the person is not erased.
    let mut entries = entries;
    if let Some(pr) = &state.protection
        && p.allows(Permission::ViewPii)
    {
        for e in &mut entries {
            if let Some(target) = &e.what.target
                && target.starts_with(livora_store::crypto::PREFIX)
                && let Some(plain) = pr.keyring.open_for_subject(p.tenant, target).await?
            {
                e.what.target = Some(plain);
            }
        }
    }
    let mut e = entry(&p, "audit.export", None);
    e.after = Some(json!({"entries": entries.len(), "format": if csv { "csv" } else { "json" }}));
    state.audit(e).await?;
    if csv {
        let mut out = Vec::new();
        livora_store::audit::write_csv(&mut out, &entries).map_err(|e| ApiError::internal(&e))?;
        return Ok((
            [(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            out,
        )
            .into_response());
    }
    let next = entries.last().map(|e| e.seq);
    Ok(Json(json!({
        "entries": entries,
        "chain": {"verified": true, "entries": head.entries, "head": head.hash},
        "next_after_seq": next,
    }))
    .into_response())
}

// ---------------------------------------------------------------------------------------------
// Tenant settings

/// `GET /api/v1/tenant`: the caller's tenant and its settings, with the node's delivery
/// policy (what a tenant without its own has).
pub async fn tenant(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    let t = state
        .store
        .tenant(p.tenant)
        .await?
        .ok_or_else(|| ApiError::new(Code::NotFound, "the tenant no longer exists"))?;
    let mut out = json!(t);
    out["node_delivery_policy"] = json!(state.sender.as_ref().map(|s| s.policy().as_delivery()));
    Ok(Json(out))
}

/// `Some(value)` when the field is present, `null` included (`Some(None)`): tells "leave as
/// it is" (absent) from "clear it" (null).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantBody {
    /// Days events are kept; `null` keeps them for ever.
    #[serde(default, deserialize_with = "present")]
    retention_days: Option<Option<u32>>,
    /// The tenant's delivery policy; `null`: the node's.
    #[serde(default, deserialize_with = "present")]
    delivery_policy: Option<Option<DeliveryPolicy>>,
}

/// Channels a tenant may ask an opt-in for (WhatsApp always needs one; webhooks never).
const OPT_IN_CHANNELS: [&str; 3] = ["email", "sms", "push"];

fn check_policy(p: &DeliveryPolicy) -> Result<(), ApiError> {
    if let Some(cap) = p.frequency_cap
        && !(1..=1000).contains(&cap)
    {
        return Err(ApiError::new(
            Code::InvalidRequest,
            "frequency_cap: 1 to 1000 a day, or null (no cap)",
        )
        .with("field", "delivery_policy.frequency_cap"));
    }
    if let Some(q) = p.quiet_hours
        && (q.start > 23 || q.end > 23 || q.start == q.end)
    {
        return Err(ApiError::new(
            Code::InvalidRequest,
            "quiet_hours: start and end are different hours 0-23, or null (none)",
        )
        .with("field", "delivery_policy.quiet_hours"));
    }
    if let Some(c) = p
        .opt_in
        .iter()
        .find(|c| !OPT_IN_CHANNELS.contains(&c.as_str()))
    {
        return Err(ApiError::new(
            Code::InvalidRequest,
            format!("opt_in: {c:?} is not one of email, sms, push"),
        )
        .with("field", "delivery_policy.opt_in"));
    }
    Ok(())
}

/// `PATCH /api/v1/tenant`: changes the tenant's data retention and/or its delivery policy
/// (owners only); a field left out stays as it is.
pub async fn update_tenant(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let b: TenantBody = json_body(&headers, body).await?;
    if b.retention_days.is_none() && b.delivery_policy.is_none() {
        return Err(ApiError::new(
            Code::InvalidRequest,
            "nothing to change: send retention_days and/or delivery_policy",
        ));
    }
    if let Some(Some(policy)) = &b.delivery_policy {
        check_policy(policy)?;
    }
    if let Some(days) = b.retention_days {
        let before = state.store.set_retention_days(p.tenant, days).await?;
        if let Some(c) = &state.columns {
            c.set_retention(p.tenant, days);
        }
        let mut e = entry(&p, "tenant.retention", Some(p.tenant.to_string()));
        e.before = Some(json!({"retention_days": before}));
        e.after = Some(json!({"retention_days": days}));
        state.audit(e).await?;
    }
    if let Some(policy) = b.delivery_policy {
        let before = state
            .store
            .set_delivery_policy(p.tenant, policy.clone())
            .await?;
        let mut e = entry(&p, "tenant.delivery_policy", Some(p.tenant.to_string()));
        e.before = Some(json!({"delivery_policy": before}));
        e.after = Some(json!({"delivery_policy": policy}));
        state.audit(e).await?;
    }
    tenant(State(state), Extension(p)).await
}
