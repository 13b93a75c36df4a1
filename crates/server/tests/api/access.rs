//! Access control over real HTTP: every route × every kind of caller gets the documented
//! answer; forged, expired and foreign tokens are refused; sessions rotate, end and lock.

use std::collections::HashMap;

use chrono::Utc;
use livora_model::{Currency, TenantId};
use livora_server::{AuthOptions, IngestOptions, LimitOptions, Need, ROUTES};
use livora_store::accounts::{self, TokenPurpose};
use livora_store::{MetadataStore, NewTenant, Permission, Role, Scope};
use serde_json::{Value, json};

use crate::helpers::{TEST_JWT_SECRET, TestApp, decode, spawn_app_full};

async fn spawn(dir: &std::path::Path, auth: AuthOptions, login_per_minute: u32) -> TestApp {
    spawn_app_full(
        dir,
        IngestOptions {
            key_cache_ttl_secs: 0,
            ..IngestOptions::default()
        },
        &LimitOptions {
            login_per_ip_per_minute: login_per_minute,
            ..LimitOptions::default()
        },
        auth,
    )
    .await
}

const PASSWORD: &str = "correct horse battery";

/// Another tenant beside the app's.
async fn second_tenant(store: &dyn MetadataStore, name: &str) -> TenantId {
    store
        .create_tenant(NewTenant {
            name: name.into(),
            time_zone: "UTC".into(),
            currency: Currency::parse("EUR").expect("eur"),
        })
        .await
        .expect("tenant")
        .id
}

/// A user with `role` in `tenant` and a password, made directly in the store.
async fn member(store: &dyn MetadataStore, tenant: TenantId, email: &str, role: Role) -> String {
    let user = match store.credentials(email).await.expect("lookup") {
        Some(c) => c.user,
        None => store.create_user(email, "Test").await.expect("user"),
    };
    let hash = accounts::hash_password(PASSWORD).expect("hash");
    store.set_password_hash(&user.id, &hash).await.expect("pw");
    store.set_role(tenant, &user.id, role).await.expect("role");
    user.id
}

async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{}{path}", app.url);
    let mut req = match method {
        "GET" => app.http.get(&url),
        "POST" => app.http.post(&url),
        "PATCH" => app.http.patch(&url),
        "PUT" => app.http.put(&url),
        "DELETE" => app.http.delete(&url),
        other => panic!("method {other}"),
    };
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    // A stream that does not end (the live feed): its status and type are the answer.
    if resp.status().is_success()
        && resp
            .headers()
            .get("content-type")
            .is_some_and(|t| t == "text/event-stream")
    {
        return (resp.status().as_u16(), Value::Null);
    }
    decode(resp).await
}

async fn login(
    app: &TestApp,
    email: &str,
    password: &str,
    tenant: Option<TenantId>,
) -> (u16, Value) {
    let mut body = json!({"email": email, "password": password});
    if let Some(t) = tenant {
        body["tenant_id"] = json!(t.to_string());
    }
    send(app, "POST", "/api/v1/auth/login", None, Some(body)).await
}

async fn token(app: &TestApp, email: &str, tenant: Option<TenantId>) -> String {
    let (status, body) = login(app, email, PASSWORD, tenant).await;
    assert_eq!(status, 200, "{email}: {body}");
    body["access_token"].as_str().expect("token").to_owned()
}

/// A request each route accepts from an allowed caller; `n` keeps created things distinct.
fn sample(method: &str, path: &str, n: usize, victims: &Victims) -> (String, Option<Value>) {
    // Without `pii.view` a profile is found only by its number (masked).
    if (method, path) == ("GET", "/api/v1/people/{id}") {
        return ("/api/v1/people/1?by=person".into(), None);
    }
    let p = path
        .replace("{user_id}", &victims.user_id)
        .replace("{key_id}", &victims.key_id)
        .replace("{id}", "ua")
        .replace("{channel}", "webhook")
        .replace("{kind}", "churn");
    let workflow = json!({
        "trigger": {"event": {"name": "Product Added"}},
        "steps": [{"id": "hello", "send": {"channel": "email", "template": {"subject": "Hi", "body": "Hello"}}}]
    });
    let body = match (method, path) {
        ("POST", "/api/v1/query") => Some(json!({
            "kind": "trends", "event": {"event": "Order Completed"}, "interval": "day", "metric": {"kind": "count"},
            "from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"
        })),
        ("POST", "/api/v1/members") => {
            Some(json!({"email": format!("new{n}@example.com"), "role": "viewer"}))
        }
        ("PATCH", "/api/v1/tenant") => Some(json!({"retention_days": null})),
        ("PATCH", "/api/v1/segments/{id}" | "/api/v1/tags/{id}") => {
            Some(json!({"name": "renamed"}))
        }
        ("PATCH", _) => Some(json!({"role": "viewer"})),
        ("POST", "/api/v1/people/{id}/unmerge") => Some(json!({"merge_id": 1})),
        ("POST", "/api/v1/models/train") => Some(json!({})),
        ("POST", "/api/v1/dashboards") => Some(json!({"name": "Board", "widgets": []})),
        ("PUT", "/api/v1/dashboards/{id}") => Some(json!({"name": "Board"})),
        ("POST", "/api/v1/models/{kind}/activate") => Some(json!({"version": 1})),
        ("PUT", "/api/v1/models/sentiment/examples") => Some(json!({"examples": (0..10)
            .map(|i| json!({"text": format!("text {i}"), "label": if i % 2 == 0 { "positive" } else { "negative" }}))
            .collect::<Vec<_>>()})),
        ("PUT", "/api/v1/identity/rules") => Some(json!({"limits": {"user_id": 1}})),
        ("POST", "/api/v1/segments" | "/api/v1/tags") => Some(json!({
            "name": format!("Audience {n}"),
            "condition": {"performed": {"event": "Order Completed"}}
        })),
        ("POST", "/api/v1/segments/preview") => Some(json!({
            "condition": {"trait": {"name": "plan", "op": "exists"}}
        })),
        ("POST", "/api/v1/keys") => Some(json!({"scopes": ["read"]})),
        ("POST", "/api/v1/workflows") => Some(json!({
            "id": format!("wf-{n}"), "name": format!("Flow {n}"), "definition": workflow
        })),
        ("PUT", "/api/v1/workflows/{id}") => Some(json!({"definition": workflow})),
        ("POST", "/api/v1/workflows/{id}/trigger") => Some(json!({
            "user_id": "ua", "idempotency_key": format!("k{n}")
        })),
        ("POST", "/api/v1/workflows/{id}/backtest") => Some(json!({
            "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"
        })),
        ("POST", "/api/v1/workflows/preview") => Some(json!({
            "template": {"subject": "Hi"}, "person": "ua"
        })),
        ("POST", "/api/v1/channels/{channel}/test") => Some(json!({
            "to": "http://127.0.0.1:9/closed", "template": {"body": "x"}, "person": "ua"
        })),
        ("PUT", "/api/v1/channels/{channel}") => Some(json!({
            "provider": "webhook", "settings": {"secret": "0123456789abcdef0123"}
        })),
        ("POST", "/api/v1/people/{id}/consents") => Some(json!({
            "purpose": "email_marketing", "granted": true, "source": "test"
        })),
        ("POST", p) if p.starts_with("/v1/") => Some(json!({
            "batch": [{"type": "track", "event": "x", "userId": "u"}],
            "event": "x", "userId": "u", "groupId": "g", "previousId": "p"
        })),
        _ => None,
    };
    (p, body)
}

/// A caller of the route table: name, bearer token, and its role or key scopes.
type Caller = (String, Option<String>, Option<Role>, Vec<Scope>);

struct Victims {
    user_id: String,
    key_id: String,
}

#[tokio::test]
async fn every_route_answers_every_caller_as_documented() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn(dir.path(), AuthOptions::default(), 10_000).await;
    let store = app.store.clone();
    let a = app.tenant_id;
    let b = second_tenant(store.as_ref(), "Other").await;
    // Something of tenant A's that no caller of tenant B may see.
    let marker = "tenant-a-marker-7f3e";
    let (status, _) = app
        .post(
            "/v1/track",
            json!({"event": marker, "userId": "ua"}).to_string(),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .post(
            "/v1/group",
            json!({"userId": "ua", "groupId": "ua", "traits": {"name": marker}}).to_string(),
        )
        .await;
    assert_eq!(status, 200);

    let mut callers: Vec<Caller> = Vec::new();
    for role in Role::ALL {
        let email = format!("{}@a.example.com", role.as_str());
        member(store.as_ref(), a, &email, role).await;
        callers.push((
            format!("role {role:?}"),
            Some(token(&app, &email, Some(a)).await),
            Some(role),
            vec![],
        ));
    }
    for scopes in [vec![Scope::Ingest], vec![Scope::Read], vec![Scope::Admin]] {
        let key = store.create_key_scoped(a, &scopes).await.expect("key");
        callers.push((format!("key {scopes:?}"), Some(key.secret), None, scopes));
    }
    // Tenant B's owner and admin key: authenticated, but for another tenant.
    member(store.as_ref(), b, "owner@b.example.com", Role::Owner).await;
    let b_owner = token(&app, "owner@b.example.com", Some(b)).await;
    let b_key = store
        .create_key_scoped(b, &[Scope::Read, Scope::Admin])
        .await
        .expect("key")
        .secret;

    let victims = Victims {
        user_id: member(store.as_ref(), a, "victim@a.example.com", Role::Viewer).await,
        key_id: store
            .create_key_scoped(a, &[Scope::Read])
            .await
            .expect("key")
            .key
            .id,
    };
    let mut n = 0;
    // Sign-out last: it ends the sessions the other requests use.
    let mut routes: Vec<_> = ROUTES.to_vec();
    routes.sort_by_key(|(_, p, _)| p.ends_with("/logout"));
    for (method, path, need) in routes {
        if matches!(need, Need::Public | Need::Login | Need::Signed) {
            continue;
        }
        // No credentials.
        n += 1;
        let (p, body) = sample(method, path, n, &victims);
        let (status, answer) = send(&app, method, &p, None, body).await;
        assert_eq!(status, 401, "{method} {path} without credentials: {answer}");
        // Every role and key scope of tenant A.
        for (who, bearer, role, scopes) in &callers {
            n += 1;
            let (p, body) = sample(method, path, n, &victims);
            let (status, answer) = send(&app, method, &p, bearer.as_deref(), body).await;
            let allowed = match need {
                Need::WriteKey => false, // a bearer token is not a write key
                // Write keys are public: they reach nothing but ingestion.
                Need::Authenticated => role.is_some() || scopes != &[Scope::Ingest],
                Need::Permission(perm) => match role {
                    Some(r) => r.allows(perm),
                    None => scopes.iter().any(|s| s.allows(perm)),
                },
                Need::Public | Need::Login | Need::Signed => unreachable!(),
            };
            let expected_denial = if need == Need::WriteKey { 401 } else { 403 };
            if allowed {
                let ok = (200..300).contains(&status)
                    // The victim was deleted by an earlier allowed caller.
                    || (status == 404 && path.contains('{'))
                    // Keys have no session to end.
                    || (status == 400 && path.ends_with("/logout") && role.is_none())
                    // The sample address refuses connections: the provider was called.
                    || (status == 502 && path.ends_with("/test"))
                    // Models not trained yet: the route answered.
                    || (status == 503 && answer.to_string().contains("not_ready"));
                assert!(ok, "{who} on {method} {path}: {status} {answer}");
            } else {
                assert_eq!(
                    status, expected_denial,
                    "{who} on {method} {path}: {answer}"
                );
                if status == 403 {
                    assert_eq!(answer["code"], "forbidden");
                    // A permission route names what was missing.
                    assert!(
                        answer["permission"].is_string() || need == Need::Authenticated,
                        "{answer}"
                    );
                }
            }
        }
        // Tenant B's callers never see or change tenant A's things.
        let b_callers = [
            (&b_owner, Some(Role::Owner), vec![]),
            (&b_key, None, vec![Scope::Read, Scope::Admin]),
        ];
        for (bearer, role, scopes) in b_callers {
            n += 1;
            let (p, body) = sample(method, path, n, &victims);
            let (status, answer) = send(&app, method, &p, Some(bearer), body).await;
            let text = answer.to_string();
            assert!(
                !text.contains(marker)
                    && !text.contains("@a.example.com")
                    && !text.contains(&a.to_string()),
                "tenant B saw tenant A's data on {method} {path}: {text}"
            );
            let allowed = match need {
                Need::Permission(perm) => match role {
                    Some(r) => r.allows(perm),
                    None => scopes.iter().any(|s: &Scope| s.allows(perm)),
                },
                _ => false,
            };
            let foreign_resource = path.contains("{user_id}") || path.contains("{key_id}");
            if foreign_resource && allowed {
                assert_eq!(status, 404, "{method} {path} across tenants: {answer}");
            }
        }
    }
    // The cross-tenant attempts left A's victims alone (only A's callers touched them).
    let members = store.members(b).await.expect("members");
    assert!(members.iter().all(|m| m.user.id != victims.user_id));
    app.stop().await;
}

fn forge(claims: &Value, secret: &[u8], alg: jsonwebtoken::Algorithm) -> String {
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret).expect("key"),
    )
    .expect("sign")
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn tampered_expired_and_foreign_tokens_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn(dir.path(), AuthOptions::default(), 10_000).await;
    let store = app.store.clone();
    let a = app.tenant_id;
    member(store.as_ref(), a, "viewer@example.com", Role::Viewer).await;
    let (_, session) = login(&app, "viewer@example.com", PASSWORD, None).await;
    let good = session["access_token"].as_str().expect("token").to_owned();
    let (status, me) = send(&app, "GET", "/api/v1/me", Some(&good), None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["principal"]["role"], "viewer");
    let parts: Vec<&str> = good.split('.').collect();
    let claims: Value = {
        use base64::Engine;
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(parts[1])
                .expect("b64"),
        )
        .expect("claims")
    };
    let now = Utc::now().timestamp();
    let other = second_tenant(store.as_ref(), "Elsewhere").await;
    let mut expired = claims.clone();
    expired["iat"] = json!(now - 7200);
    expired["exp"] = json!(now - 3600);
    let mut foreign = claims.clone();
    foreign["ten"] = json!(other.to_string());
    let mut stranger = claims.clone();
    stranger["sub"] = json!("usr_someone_else");
    let mut issuer = claims.clone();
    issuer["iss"] = json!("evil");
    let cases = [
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                parts[1]
            ),
        ),
        (
            "wrong key",
            forge(
                &claims,
                b"another-secret-another-secret-0123456",
                jsonwebtoken::Algorithm::HS256,
            ),
        ),
        (
            "other algorithm",
            forge(&claims, TEST_JWT_SECRET, jsonwebtoken::Algorithm::HS512),
        ),
        (
            "payload edited",
            format!("{}.{}.{}", parts[0], b64(&foreign), parts[2]),
        ),
        (
            "expired",
            forge(&expired, TEST_JWT_SECRET, jsonwebtoken::Algorithm::HS256),
        ),
        (
            "tenant not the user's",
            forge(&foreign, TEST_JWT_SECRET, jsonwebtoken::Algorithm::HS256),
        ),
        (
            "session not the user's",
            forge(&stranger, TEST_JWT_SECRET, jsonwebtoken::Algorithm::HS256),
        ),
        (
            "wrong issuer",
            forge(&issuer, TEST_JWT_SECRET, jsonwebtoken::Algorithm::HS256),
        ),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (what, token) in cases {
        let (status, body) = send(&app, "GET", "/api/v1/me", Some(&token), None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("invalid_token")),
            "{what}: {body}"
        );
    }
    // A role change takes effect on the next request, whatever the token says.
    let user_id = session["user"]["id"].as_str().expect("id").to_owned();
    store
        .set_role(a, &user_id, Role::Admin)
        .await
        .expect("role");
    let (_, me) = send(&app, "GET", "/api/v1/me", Some(&good), None).await;
    assert_eq!(me["principal"]["role"], "admin");
    // Removal from the tenant ends the token's use.
    store.remove_member(a, &user_id).await.expect("remove");
    let (status, body) = send(&app, "GET", "/api/v1/me", Some(&good), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_token")),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn sessions_rotate_refresh_tokens_end_on_logout_and_detect_reuse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn(dir.path(), AuthOptions::default(), 10_000).await;
    let store = app.store.clone();
    member(store.as_ref(), app.tenant_id, "ops@example.com", Role::Ops).await;
    let (_, first) = login(&app, "ops@example.com", PASSWORD, None).await;
    let r1 = first["refresh_token"].as_str().expect("r").to_owned();
    let refresh = |t: &str| json!({"refresh_token": t});
    let (status, second) = send(
        &app,
        "POST",
        "/api/v1/auth/refresh",
        None,
        Some(refresh(&r1)),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    let r2 = second["refresh_token"].as_str().expect("r").to_owned();
    assert_ne!(r1, r2);
    let access = second["access_token"].as_str().expect("a").to_owned();
    assert_eq!(
        send(&app, "GET", "/api/v1/me", Some(&access), None).await.0,
        200
    );
    // The first token again: it was copied, so the whole session ends.
    let (status, body) = send(
        &app,
        "POST",
        "/api/v1/auth/refresh",
        None,
        Some(refresh(&r1)),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_token")),
        "{body}"
    );
    let (status, _) = send(
        &app,
        "POST",
        "/api/v1/auth/refresh",
        None,
        Some(refresh(&r2)),
    )
    .await;
    assert_eq!(status, 401, "the session is revoked");
    let (status, _) = send(&app, "GET", "/api/v1/me", Some(&access), None).await;
    assert_eq!(status, 401, "its access tokens too");

    // Sign-out ends the session at once.
    let (_, s) = login(&app, "ops@example.com", PASSWORD, None).await;
    let access = s["access_token"].as_str().expect("a").to_owned();
    let (status, _) = send(&app, "POST", "/api/v1/auth/logout", Some(&access), None).await;
    assert_eq!(status, 204);
    assert_eq!(
        send(&app, "GET", "/api/v1/me", Some(&access), None).await.0,
        401
    );
    let (status, _) = send(
        &app,
        "POST",
        "/api/v1/auth/refresh",
        None,
        Some(refresh(s["refresh_token"].as_str().expect("r"))),
    )
    .await;
    assert_eq!(status, 401);
    let log = std::fs::read_to_string(app.data_dir.join("audit.jsonl")).expect("audit");
    for action in ["auth.login", "auth.refresh_reused", "auth.logout"] {
        assert!(
            log.contains(&format!("\"action\":\"{action}\"")),
            "{action} not audited"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn repeated_failures_lock_the_account_with_backoff() {
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = AuthOptions {
        lockout_after: 3,
        lockout_base_secs: 1,
        ..AuthOptions::default()
    };
    let app = spawn(dir.path(), auth, 10_000).await;
    member(
        app.store.as_ref(),
        app.tenant_id,
        "sales@example.com",
        Role::Sales,
    )
    .await;
    // An unknown account and a wrong password look the same.
    let (status, unknown) = login(&app, "nobody@example.com", PASSWORD, None).await;
    assert_eq!(status, 401);
    let (_, wrong) = login(&app, "sales@example.com", "wrong password!", None).await;
    assert_eq!(unknown, wrong);
    for _ in 0..2 {
        let (status, body) = login(&app, "sales@example.com", "wrong password!", None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("invalid_credentials"))
        );
    }
    // Locked: even the right password is refused, with Retry-After.
    let resp = app
        .http
        .post(format!("{}/api/v1/auth/login", app.url))
        .json(&json!({"email": "sales@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("request");
    assert!(resp.headers().contains_key("retry-after"));
    let (status, body) = decode(resp).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("account_locked")),
        "{body}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // One more failure after the lock doubles it.
    let (status, _) = login(&app, "sales@example.com", "wrong password!", None).await;
    assert_eq!(status, 401);
    let c = app
        .store
        .credentials("sales@example.com")
        .await
        .expect("c")
        .expect("user");
    let lock = (c.lock.locked_until.expect("locked") - Utc::now()).num_milliseconds();
    assert!((1000..=2100).contains(&lock), "second lock {lock} ms");
    app.stop().await;
}

#[tokio::test]
async fn login_attempts_are_rate_limited_per_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn(dir.path(), AuthOptions::default(), 3).await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        let (status, _) = login(
            &app,
            &format!("n{i}@example.com"),
            "whatever-password",
            None,
        )
        .await;
        statuses.push(status);
    }
    assert_eq!(statuses, [401, 401, 401, 429]);
    // Other APIs are not under the login limit.
    let (status, _) = app.get_events("limit=1").await;
    assert_eq!(status, 200);
    app.stop().await;
}

#[tokio::test]
async fn invitations_and_password_resets_work_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn(dir.path(), AuthOptions::default(), 10_000).await;
    let store = app.store.clone();
    member(
        store.as_ref(),
        app.tenant_id,
        "owner@example.com",
        Role::Owner,
    )
    .await;
    let owner = token(&app, "owner@example.com", None).await;
    member(
        store.as_ref(),
        app.tenant_id,
        "admin@example.com",
        Role::Admin,
    )
    .await;
    let admin = token(&app, "admin@example.com", None).await;
    // Admins cannot make owners; owners can.
    let invite =
        |role: &str| json!({"email": "New.Person@Example.com", "role": role, "name": "New"});
    let (status, _) = send(
        &app,
        "POST",
        "/api/v1/members",
        Some(&admin),
        Some(invite("owner")),
    )
    .await;
    assert_eq!(status, 403);
    let (status, inv) = send(
        &app,
        "POST",
        "/api/v1/members",
        Some(&admin),
        Some(invite("marketer")),
    )
    .await;
    assert_eq!(status, 201, "{inv}");
    let token_text = inv["invitation_token"].as_str().expect("token").to_owned();
    // Not yet a member, cannot sign in.
    assert_eq!(
        login(&app, "new.person@example.com", PASSWORD, None)
            .await
            .0,
        401
    );
    let accept = |pw: &str| json!({"token": token_text, "password": pw});
    let (status, body) = send(
        &app,
        "POST",
        "/api/v1/auth/accept-invitation",
        None,
        Some(accept("short")),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    let (status, joined) = send(
        &app,
        "POST",
        "/api/v1/auth/accept-invitation",
        None,
        Some(accept(PASSWORD)),
    )
    .await;
    assert_eq!(status, 200, "{joined}");
    assert_eq!(joined["role"], "marketer");
    let (status, _) = send(
        &app,
        "POST",
        "/api/v1/auth/accept-invitation",
        None,
        Some(accept(PASSWORD)),
    )
    .await;
    assert_eq!(status, 401, "an invitation works once");
    assert_eq!(
        login(&app, "new.person@example.com", PASSWORD, None)
            .await
            .0,
        200
    );

    // The last owner can be neither demoted nor removed.
    let (_, members) = send(&app, "GET", "/api/v1/members", Some(&owner), None).await;
    let ids: HashMap<String, String> = members["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["email"].as_str().expect("e").to_owned(),
                m["id"].as_str().expect("id").to_owned(),
            )
        })
        .collect();
    let owner_id = &ids["owner@example.com"];
    let (status, _) = send(
        &app,
        "PATCH",
        &format!("/api/v1/members/{owner_id}"),
        Some(&owner),
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(status, 409);
    let (status, _) = send(
        &app,
        "DELETE",
        &format!("/api/v1/members/{owner_id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 403, "admins cannot remove owners");

    // A reset token sets a new password once and ends the old sessions.
    let new_id = &ids["new.person@example.com"];
    let (_, s) = login(&app, "new.person@example.com", PASSWORD, None).await;
    let old_access = s["access_token"].as_str().expect("a").to_owned();
    let reset = store
        .create_token(
            new_id,
            TokenPurpose::Reset,
            None,
            Utc::now() + chrono::Duration::hours(1),
            None,
        )
        .await
        .expect("token");
    let body = json!({"token": reset, "password": "an even better password"});
    let (status, _) = send(
        &app,
        "POST",
        "/api/v1/auth/reset-password",
        None,
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        send(
            &app,
            "POST",
            "/api/v1/auth/reset-password",
            None,
            Some(body)
        )
        .await
        .0,
        401
    );
    assert_eq!(
        send(&app, "GET", "/api/v1/me", Some(&old_access), None)
            .await
            .0,
        401
    );
    assert_eq!(
        login(&app, "new.person@example.com", PASSWORD, None)
            .await
            .0,
        401
    );
    assert_eq!(
        login(
            &app,
            "new.person@example.com",
            "an even better password",
            None
        )
        .await
        .0,
        200
    );

    // Every administrative action is in the tenant's audit export, JSON and CSV.
    let (status, audit) = send(&app, "GET", "/api/v1/audit", Some(&owner), None).await;
    assert_eq!(status, 200, "{audit}");
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["action"].as_str().expect("action"))
        .collect();
    for a in ["member.invite", "member.join", "auth.login"] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    assert_eq!(audit["chain"]["verified"], true);
    let csv = app
        .http
        .get(format!("{}/api/v1/audit?format=csv", app.url))
        .bearer_auth(&owner)
        .send()
        .await
        .expect("csv");
    assert_eq!(csv.status(), 200);
    let text = csv.text().await.expect("text");
    assert!(text.starts_with("seq,at,actor,action,tenant,target,from,before,after,prev,hash"));
    assert!(text.contains("member.invite"));
    // Reading raw events is a recorded PII view.
    app.get_events("limit=1").await;
    let log = std::fs::read_to_string(app.data_dir.join("audit.jsonl")).expect("audit");
    assert!(log.contains("\"action\":\"pii.view\""));
    assert!(Permission::ALL.len() >= 13);
    app.stop().await;
}

/// An invitation token reaches the inviter, so it cannot take over an existing account: with
/// a password other than the account's it makes a separate account that holds the inviting
/// tenant only; it cannot change the role of a member; and the unused invitations of a
/// removed member die with the membership.
#[tokio::test]
async fn invitations_cannot_take_over_accounts_or_outlive_their_sender() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn(dir.path(), AuthOptions::default(), 10_000).await;
    let store = app.store.clone();
    let a = app.tenant_id;
    let b = second_tenant(store.as_ref(), "B").await;
    member(store.as_ref(), a, "bob@corp.example", Role::Viewer).await;
    member(store.as_ref(), b, "mallory@b.example", Role::Admin).await;
    let mallory = token(&app, "mallory@b.example", None).await;
    let invite = |email: &str| json!({"email": email, "role": "admin"});
    let (status, inv) = send(
        &app,
        "POST",
        "/api/v1/members",
        Some(&mallory),
        Some(invite("bob@corp.example")),
    )
    .await;
    assert_eq!(status, 201, "{inv}");
    let t = inv["invitation_token"].as_str().expect("token").to_owned();
    let accept = |pw: &str| json!({"token": t, "password": pw});
    let bob_id = store
        .credentials("bob@corp.example")
        .await
        .expect("c")
        .expect("u")
        .user
        .id;
    let (status, body) = send(
        &app,
        "POST",
        "/api/v1/auth/accept-invitation",
        None,
        Some(accept("mallory's own password")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(
        body["user"]["id"],
        bob_id.as_str(),
        "a separate account: {body}"
    );
    assert_eq!(body["tenants"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(body["tenant_id"], b.to_string());
    let (status, fake) = login(&app, "bob@corp.example", "mallory's own password", None).await;
    assert_eq!(status, 200, "{fake}");
    assert_ne!(fake["user"]["id"], bob_id.as_str());
    assert_eq!(
        login(&app, "bob@corp.example", "mallory's own password", Some(a))
            .await
            .0,
        403,
        "mallory's password reaches nothing of Bob's"
    );
    let (status, real) = login(&app, "bob@corp.example", PASSWORD, None).await;
    assert_eq!(status, 200, "Bob's password unchanged: {real}");
    assert_eq!(real["user"]["id"], bob_id.as_str());
    assert_eq!(real["tenants"].as_array().map(Vec::len), Some(1), "{real}");
    assert_eq!(
        real["tenant_id"],
        a.to_string(),
        "Bob did not join B: {real}"
    );

    // A member cannot be re-invited into a new role.
    member(store.as_ref(), b, "owner@b.example", Role::Owner).await;
    let owner = token(&app, "owner@b.example", None).await;
    let (_, inv) = send(
        &app,
        "POST",
        "/api/v1/members",
        Some(&owner),
        Some(invite("carol@b.example")),
    )
    .await;
    let carol_token = inv["invitation_token"].as_str().expect("token").to_owned();
    let (status, _) = send(
        &app,
        "POST",
        "/api/v1/auth/accept-invitation",
        None,
        Some(json!({"token": carol_token, "password": PASSWORD})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(
        &app,
        "POST",
        "/api/v1/members",
        Some(&owner),
        Some(invite("carol@b.example")),
    )
    .await;
    assert_eq!(status, 409, "already a member");

    // Mallory invites a second address of hers, is removed, then tries the invitation.
    let (_, inv) = send(
        &app,
        "POST",
        "/api/v1/members",
        Some(&mallory),
        Some(invite("m2@b.example")),
    )
    .await;
    let m2 = inv["invitation_token"].as_str().expect("token").to_owned();
    let mallory_id = store
        .credentials("mallory@b.example")
        .await
        .expect("c")
        .expect("u")
        .user
        .id;
    let (status, _) = send(
        &app,
        "DELETE",
        &format!("/api/v1/members/{mallory_id}"),
        Some(&owner),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = send(
        &app,
        "POST",
        "/api/v1/auth/accept-invitation",
        None,
        Some(json!({"token": m2, "password": PASSWORD})),
    )
    .await;
    assert_eq!(status, 401, "a removed member's invitations are void");
    app.stop().await;
}

/// Issue 22: tenant B invites an address; tenant A's owner invites the same address and
/// accepts with a password of their choosing. The real person still accepts B's invitation
/// with their own password, each password reaches only its own account, and nothing A's owner
/// does sets or resets the real person's password.
#[tokio::test]
async fn an_invitation_elsewhere_cannot_claim_the_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn(dir.path(), AuthOptions::default(), 10_000).await;
    let store = app.store.clone();
    let a = app.tenant_id;
    let b = second_tenant(store.as_ref(), "B").await;
    member(store.as_ref(), a, "owner@a.example", Role::Owner).await;
    member(store.as_ref(), b, "owner@b.example", Role::Owner).await;
    let owner_a = token(&app, "owner@a.example", None).await;
    let owner_b = token(&app, "owner@b.example", None).await;
    let invite = json!({"email": "newhire@x.test", "role": "analyst", "name": "New Hire"});
    let (status, inv_b) = send(
        &app,
        "POST",
        "/api/v1/members",
        Some(&owner_b),
        Some(invite.clone()),
    )
    .await;
    assert_eq!(status, 201, "{inv_b}");
    let (status, inv_a) = send(
        &app,
        "POST",
        "/api/v1/members",
        Some(&owner_a),
        Some(invite),
    )
    .await;
    assert_eq!(status, 201, "{inv_a}");
    // Inviting over and over makes no more accounts (one per inviting tenant), so it cannot
    // crowd the address out of other tenants' invitations.
    for _ in 0..10 {
        let (status, again) = send(
            &app,
            "POST",
            "/api/v1/members",
            Some(&owner_a),
            Some(json!({"email": "newhire@x.test", "role": "viewer"})),
        )
        .await;
        assert_eq!(
            (status, &again["user_id"]),
            (201, &inv_a["user_id"]),
            "{again}"
        );
    }
    let accept = |inv: &Value, pw: &str| json!({"token": inv["invitation_token"], "password": pw});
    const ATTACKER: &str = "attacker chosen passphrase 77";
    const REAL: &str = "real person's own passphrase";
    // A's owner accepts A's invitation themselves.
    let (status, squat) = send(
        &app,
        "POST",
        "/api/v1/auth/accept-invitation",
        None,
        Some(accept(&inv_a, ATTACKER)),
    )
    .await;
    assert_eq!(status, 200, "{squat}");
    // The real person accepts B's invitation with their own password.
    let (status, real) = send(
        &app,
        "POST",
        "/api/v1/auth/accept-invitation",
        None,
        Some(accept(&inv_b, REAL)),
    )
    .await;
    assert_eq!(status, 200, "the real person can still join B: {real}");
    assert_eq!(real["tenant_id"], b.to_string(), "{real}");
    assert_eq!(real["role"], "analyst");
    let real_id = real["user"]["id"].as_str().expect("id").to_owned();
    assert_ne!(real_id, squat["user"]["id"].as_str().expect("id"));
    // Each password reaches its own account only.
    let (status, s) = login(&app, "newhire@x.test", REAL, None).await;
    assert_eq!(
        (status, s["user"]["id"].as_str()),
        (200, Some(real_id.as_str()))
    );
    assert_eq!(s["tenants"].as_array().map(Vec::len), Some(1), "{s}");
    assert_eq!(login(&app, "newhire@x.test", REAL, Some(a)).await.0, 403);
    let (status, s) = login(&app, "newhire@x.test", ATTACKER, None).await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["tenant_id"], a.to_string(), "{s}");
    assert_eq!(
        login(&app, "newhire@x.test", ATTACKER, Some(b)).await.0,
        403,
        "A's owner reaches nothing in B"
    );
    // B's members list the real person; A's do not reach them.
    let (_, members) = send(&app, "GET", "/api/v1/members", Some(&owner_b), None).await;
    assert!(
        members["members"]
            .as_array()
            .expect("members")
            .iter()
            .any(|m| m["id"] == real_id.as_str()),
        "{members}"
    );
    // A's owner cannot use an invitation to change the real person's password: a new
    // invitation is refused (the address is a member of A already), and the used ones are void.
    let (status, again) = send(
        &app,
        "POST",
        "/api/v1/members",
        Some(&owner_a),
        Some(json!({"email": "newhire@x.test", "role": "admin"})),
    )
    .await;
    assert_eq!(status, 409, "{again}");
    let (status, _) = send(
        &app,
        "POST",
        "/api/v1/auth/accept-invitation",
        None,
        Some(accept(&inv_b, "yet another chosen passphrase 9")),
    )
    .await;
    assert_eq!(status, 401, "an invitation works once");
    assert_eq!(login(&app, "newhire@x.test", REAL, None).await.0, 200);
    // A third tenant's invitation: the real person joins it with their own password (one
    // account, two tenants); the invitation's own account is discarded.
    let c = second_tenant(store.as_ref(), "C").await;
    member(store.as_ref(), c, "owner@c.example", Role::Owner).await;
    let owner_c = token(&app, "owner@c.example", None).await;
    let (status, inv_c) = send(
        &app,
        "POST",
        "/api/v1/members",
        Some(&owner_c),
        Some(json!({"email": "newhire@x.test", "role": "viewer"})),
    )
    .await;
    assert_eq!(status, 201, "{inv_c}");
    let (status, joined) = send(
        &app,
        "POST",
        "/api/v1/auth/accept-invitation",
        None,
        Some(accept(&inv_c, REAL)),
    )
    .await;
    assert_eq!(
        (status, joined["joined"].as_str()),
        (200, Some(c.to_string().as_str())),
        "{joined}"
    );
    let (status, s) = login(&app, "newhire@x.test", REAL, Some(c)).await;
    assert_eq!(
        (status, s["user"]["id"].as_str()),
        (200, Some(real_id.as_str())),
        "{s}"
    );
    assert_eq!(s["tenants"].as_array().map(Vec::len), Some(2), "{s}");
    assert_eq!(
        store
            .accounts("newhire@x.test")
            .await
            .expect("accounts")
            .len(),
        2,
        "the squatter's and the real person's"
    );
    // A's owner removes their own account of the address from A and invites it again: the
    // invitation leads to that account, which has a password already, so accepting it is a
    // sign-in of the address's accounts, and wrong guesses of the real person's password
    // lock them as a sign-in would.
    let squat_id = squat["user"]["id"].as_str().expect("id");
    let path = format!("/api/v1/members/{squat_id}");
    let (status, removed) = send(&app, "DELETE", &path, Some(&owner_a), None).await;
    assert_eq!(status, 204, "{removed}");
    let (status, inv_a2) = send(
        &app,
        "POST",
        "/api/v1/members",
        Some(&owner_a),
        Some(json!({"email": "newhire@x.test", "role": "viewer"})),
    )
    .await;
    assert_eq!(status, 201, "{inv_a2}");
    let limit = AuthOptions::default().lockout_after;
    for i in 0..limit {
        let guess = format!("guessed passphrase number {i}");
        let (status, wrong) = send(
            &app,
            "POST",
            "/api/v1/auth/accept-invitation",
            None,
            Some(accept(&inv_a2, &guess)),
        )
        .await;
        assert_eq!(status, 401, "{wrong}");
    }
    let (status, locked) = send(
        &app,
        "POST",
        "/api/v1/auth/accept-invitation",
        None,
        Some(accept(&inv_a2, REAL)),
    )
    .await;
    assert_eq!(
        (status, locked["code"].as_str()),
        (429, Some("account_locked")),
        "guessing through an invitation locks the accounts: {locked}"
    );
    assert_eq!(login(&app, "newhire@x.test", REAL, None).await.0, 429);
    app.stop().await;
}

/// Issue 22: a common or breached password is refused with `weak_password` (the invitation
/// stays usable), as on a password reset.
#[tokio::test]
async fn weak_passwords_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn(dir.path(), AuthOptions::default(), 10_000).await;
    let store = app.store.clone();
    member(
        store.as_ref(),
        app.tenant_id,
        "owner@a.example",
        Role::Owner,
    )
    .await;
    let owner = token(&app, "owner@a.example", None).await;
    let (status, inv) = send(
        &app,
        "POST",
        "/api/v1/members",
        Some(&owner),
        Some(
            json!({"email": "dana.kowalski@shop.test", "role": "viewer", "name": "Dana Kowalski"}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{inv}");
    for weak in [
        "password12",
        "qwertyuiop1",
        "dana.kowalski@shop.test",
        "Password2024!",
    ] {
        let (status, body) = send(
            &app,
            "POST",
            "/api/v1/auth/accept-invitation",
            None,
            Some(json!({"token": inv["invitation_token"], "password": weak})),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str(), body["field"].as_str()),
            (400, Some("weak_password"), Some("password")),
            "{weak}: {body}"
        );
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("this password is too easy to guess")),
            "{body}"
        );
    }
    let (status, s) = send(
        &app,
        "POST",
        "/api/v1/auth/accept-invitation",
        None,
        Some(json!({"token": inv["invitation_token"], "password": "tangerine submarine oboe"})),
    )
    .await;
    assert_eq!(status, 200, "{s}");
    let user_id = s["user"]["id"].as_str().expect("id").to_owned();
    let reset = store
        .create_token(
            &user_id,
            TokenPurpose::Reset,
            None,
            Utc::now() + chrono::Duration::hours(1),
            None,
        )
        .await
        .expect("token");
    let (status, body) = send(
        &app,
        "POST",
        "/api/v1/auth/reset-password",
        None,
        Some(json!({"token": reset, "password": "password12"})),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("weak_password")),
        "{body}"
    );
    let (status, _) = send(
        &app,
        "POST",
        "/api/v1/auth/reset-password",
        None,
        Some(json!({"token": reset, "password": "lantern oboe tangerine"})),
    )
    .await;
    assert_eq!(status, 204, "the reset token survived the weak try");
    app.stop().await;
}
