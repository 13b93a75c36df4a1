//! Who is calling, and may they: the [`Principal`] behind a request, resolved from an API key
//! or a staff member's JWT access token, and the [`authorize`] middleware every route has.
//!
//! - `Authorization: Bearer lv_…` is an API key: its tenant and scopes.
//! - Any other bearer token is a JWT access token (HS256 only; `iss` = `livora`; `exp`
//!   checked with no leeway). Its signature is not enough: the session it names (`sid`) must
//!   be live, and the user must still be a member of the token's tenant (`ten`); the role
//!   comes from the membership as stored now, not from the token. These lookups are cached
//!   for `ingest.key_cache_ttl_secs` (logout on this node takes effect at once).
//!
//! The tenant of every request comes from the principal, never from the request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use livora_model::TenantId;
use livora_store::accounts::Membership;
use livora_store::{MetadataStore, Permission, Role, Scope};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::{ApiError, Code};

/// What a route requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing (health, metrics, the OpenAPI document).
    Public,
    /// Nothing but what signs the request, checked by the handler: tracking links and the
    /// providers' callbacks.
    Signed,
    /// Nothing, under the login rate limit (sign-in and token flows).
    Login,
    /// A write key, sent as HTTP Basic or in the body (ingestion checks it itself).
    WriteKey,
    /// Any staff member or secret key of a tenant (not a write key: those are public).
    Authenticated,
    /// A principal holding this permission.
    Permission(Permission),
}

/// Staff authentication settings (`[auth]` in `livora.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthOptions {
    /// Lifetime of a JWT access token.
    pub access_token_ttl_secs: u64,
    /// Lifetime of a login session (its refresh tokens).
    pub session_ttl_days: u64,
    /// Failed logins in a row before the account locks.
    pub lockout_after: u32,
    /// The first lock's length; each further failure doubles it.
    pub lockout_base_secs: u64,
    /// The longest lock.
    pub lockout_max_secs: u64,
    /// How long an invitation can be accepted.
    pub invitation_ttl_hours: u64,
    /// How long a password reset token works.
    pub reset_ttl_hours: u64,
}

impl Default for AuthOptions {
    fn default() -> Self {
        Self {
            access_token_ttl_secs: 900,
            session_ttl_days: 30,
            lockout_after: 5,
            lockout_base_secs: 30,
            lockout_max_secs: 3600,
            invitation_ttl_hours: 72,
            reset_ttl_hours: 2,
        }
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The user id.
    pub sub: String,
    /// The session id.
    pub sid: String,
    /// The tenant id.
    pub ten: String,
    pub iat: i64,
    pub exp: i64,
}

/// Signs and checks access tokens.
pub struct Jwt {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

/// A signing secret shorter than this is refused.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
#[error("the JWT signing secret must have at least {MIN_JWT_SECRET_BYTES} bytes")]
pub struct WeakSecret;

impl Jwt {
    pub fn new(secret: &[u8]) -> Result<Self, WeakSecret> {
        if secret.len() < MIN_JWT_SECRET_BYTES {
            return Err(WeakSecret);
        }
        // One backend is compiled in; installing it explicitly avoids any inference.
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = 0;
        validation.set_issuer(&["livora"]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        Ok(Self {
            encoding: EncodingKey::from_secret(secret).map_err(|_| WeakSecret)?,
            decoding: DecodingKey::from_secret(secret).map_err(|_| WeakSecret)?,
            validation,
        })
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, ApiError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| ApiError::internal(&e))
    }

    pub fn check(&self, token: &str) -> Result<Claims, ApiError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| {
                let why = match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => "the token has expired",
                    _ => "the token is not valid",
                };
                ApiError::new(Code::InvalidToken, why)
            })
    }
}

/// Who a request acts as.
#[derive(Debug, Clone)]
pub enum Actor {
    Key {
        id: String,
        scopes: Vec<Scope>,
    },
    User {
        id: String,
        email: String,
        role: Role,
        session: String,
    },
}

/// The authenticated caller of a request: a tenant and an actor in it.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: TenantId,
    pub actor: Actor,
    /// The client address, for the audit log.
    pub from: String,
}

impl Principal {
    pub fn allows(&self, p: Permission) -> bool {
        match &self.actor {
            Actor::Key { scopes, .. } => scopes.iter().any(|s| s.allows(p)),
            Actor::User { role, .. } => role.allows(p),
        }
    }

    /// Refuses with 403 unless the principal holds `p`.
    pub fn require(&self, p: Permission) -> Result<(), ApiError> {
        if self.allows(p) {
            Ok(())
        } else {
            Err(forbidden(p))
        }
    }

    /// How the audit log names the actor.
    pub fn label(&self) -> String {
        match &self.actor {
            Actor::Key { id, .. } => format!("key:{id}"),
            Actor::User { id, email, .. } => format!("user:{id} ({email})"),
        }
    }

    pub fn role(&self) -> Option<Role> {
        match &self.actor {
            Actor::User { role, .. } => Some(*role),
            Actor::Key { .. } => None,
        }
    }
}

pub fn forbidden(p: Permission) -> ApiError {
    ApiError::new(
        Code::Forbidden,
        format!("this needs the `{}` permission", p.as_str()),
    )
    .with("permission", p.as_str())
}

/// What a session lookup found: the user and their memberships, if the session is live.
#[derive(Clone)]
struct SessionInfo {
    user_id: String,
    email: String,
    memberships: Vec<Membership>,
}

/// Cached session lookups (see the module doc).
pub struct SessionCache {
    ttl: Duration,
    entries: RwLock<HashMap<String, (Option<SessionInfo>, Instant)>>,
}

impl SessionCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// Forgets a session, so that its revocation is seen at once on this node.
    pub fn forget(&self, session: &str) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(session);
    }

    /// Forgets every session (after a membership change).
    pub fn clear(&self) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    async fn lookup(
        &self,
        store: &dyn MetadataStore,
        sid: &str,
    ) -> Result<Option<SessionInfo>, ApiError> {
        if let Some((info, at)) = self
            .entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(sid)
            && at.elapsed() < self.ttl
        {
            return Ok(info.clone());
        }
        let info = match store.session(sid).await? {
            Some(s) if s.is_live(Utc::now()) => match store.user(&s.user_id).await? {
                Some(u) => Some(SessionInfo {
                    memberships: store.memberships(&u.id).await?,
                    user_id: u.id,
                    email: u.email,
                }),
                None => None,
            },
            _ => None,
        };
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= 10_000 {
            entries.clear();
        }
        entries.insert(sid.to_owned(), (info.clone(), Instant::now()));
        Ok(info)
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// Resolves the caller of a request from its `Authorization` header.
pub async fn principal(
    state: &AppState,
    headers: &HeaderMap,
    from: String,
) -> Result<Principal, ApiError> {
    let Some(token) = bearer(headers).filter(|t| !t.is_empty()) else {
        return Err(ApiError::new(
            Code::Unauthorized,
            "send an API key or an access token as `Authorization: Bearer <token>`",
        ));
    };
    if token.starts_with("lv_") {
        let Some(key) = state.keys.any_key(token).await? else {
            return Err(ApiError::new(
                Code::Unauthorized,
                "unknown or revoked API key",
            ));
        };
        return Ok(Principal {
            tenant: key.tenant_id,
            actor: Actor::Key {
                id: key.id,
                scopes: key.scopes,
            },
            from,
        });
    }
    let claims = state.jwt.check(token)?;
    let tenant = TenantId::parse(&claims.ten)
        .map_err(|_| ApiError::new(Code::InvalidToken, "the token is not valid"))?;
    let Some(info) = state
        .sessions
        .lookup(state.store.as_ref(), &claims.sid)
        .await?
        .filter(|i| i.user_id == claims.sub)
    else {
        return Err(ApiError::new(
            Code::InvalidToken,
            "the session has ended; sign in again",
        ));
    };
    let Some(m) = info.memberships.iter().find(|m| m.tenant_id == tenant) else {
        return Err(ApiError::new(
            Code::InvalidToken,
            "you are no longer a member of this tenant",
        ));
    };
    Ok(Principal {
        tenant,
        actor: Actor::User {
            id: info.user_id,
            email: info.email,
            role: m.role,
            session: claims.sid,
        },
        from,
    })
}

/// The client address of a request (the peer, or the first forwarded hop when trusted).
pub fn client_addr(state: &AppState, req: &Request) -> String {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([127, 0, 0, 1], 0)), |c| c.0);
    crate::ingest::client_ip(state, req.headers(), peer)
}

/// The middleware on every route: resolves the principal when the route needs one, checks
/// the permission, and hands the principal to the handler as a request extension.
pub async fn authorize(
    State((state, need)): State<(Arc<AppState>, Need)>,
    mut req: Request,
    next: Next,
) -> Response {
    let permission = match need {
        Need::Public | Need::Signed | Need::WriteKey => return next.run(req).await,
        Need::Login => {
            let from = client_addr(&state, &req);
            req.extensions_mut().insert(crate::staff::ClientAddr(from));
            return next.run(req).await;
        }
        Need::Authenticated => None,
        Need::Permission(p) => Some(p),
    };
    let from = client_addr(&state, &req);
    let principal = match principal(&state, req.headers(), from).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Some(p) = permission
        && let Err(e) = principal.require(p)
    {
        return e.into_response();
    }
    // A write key is public (it ships in web pages): it names no one and reads nothing.
    if let Actor::Key { scopes, .. } = &principal.actor
        && scopes.iter().all(|s| *s == Scope::Ingest)
    {
        return ApiError::new(
            Code::Forbidden,
            "a write key only sends events; use a secret key or sign in",
        )
        .into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}
