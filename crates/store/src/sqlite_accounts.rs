//! The SQLite implementation of [`AccountStore`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use livora_model::TenantId;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::access::Role;
use crate::accounts::{
    self, AccountStore, Credentials, LoginLock, Member, Membership, OneTimeToken, Refreshed,
    Session, TokenPurpose, User,
};
use crate::sqlite::{opt_time, tenant_id, time};
use crate::{Error, SqliteStore, keys};

fn user_from(row: &SqliteRow) -> Result<User, Error> {
    let hash: Option<String> = row.try_get("password_hash")?;
    Ok(User {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        created_at: time(row, "created_at")?,
        active: hash.is_some(),
    })
}

fn role(row: &SqliteRow, col: &str) -> Result<Role, Error> {
    let text: String = row.try_get(col)?;
    Role::parse(&text).ok_or_else(|| Error::Corrupt(format!("role {text:?}")))
}

/// The role of `user_id` in `tenant`, inside a transaction.
async fn role_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    tenant: TenantId,
    user_id: &str,
) -> Result<Option<Role>, Error> {
    sqlx::query("SELECT role FROM memberships WHERE user_id = ? AND tenant_id = ?")
        .bind(user_id)
        .bind(tenant.to_string())
        .fetch_optional(&mut **tx)
        .await?
        .as_ref()
        .map(|r| role(r, "role"))
        .transpose()
}

fn token_from(row: &SqliteRow, purpose: TokenPurpose) -> Result<OneTimeToken, Error> {
    let tenant: Option<String> = row.try_get("tenant_id")?;
    let grant = match tenant {
        None => None,
        Some(_) => Some(Membership {
            tenant_id: tenant_id(row, "tenant_id")?,
            role: role(row, "role")?,
        }),
    };
    Ok(OneTimeToken {
        user_id: row.try_get("user_id")?,
        purpose,
        grant,
    })
}

fn session_from(row: &SqliteRow) -> Result<Session, Error> {
    Ok(Session {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        tenant_id: tenant_id(row, "tenant_id")?,
        created_at: time(row, "created_at")?,
        expires_at: time(row, "expires_at")?,
        revoked_at: opt_time(row, "revoked_at")?,
    })
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339()
}

fn credentials_from(row: &SqliteRow) -> Result<Credentials, Error> {
    let failures: i64 = row.try_get("failed_logins")?;
    let origin: Option<String> = row.try_get("origin_tenant")?;
    Ok(Credentials {
        origin_tenant: match origin {
            Some(_) => Some(tenant_id(row, "origin_tenant")?),
            None => None,
        },
        user: user_from(row)?,
        password_hash: row.try_get("password_hash")?,
        lock: LoginLock {
            failures: failures.clamp(0, u32::MAX as i64) as u32,
            locked_until: opt_time(row, "locked_until")?,
        },
    })
}

/// A new user row made by `origin`'s invitation (or otherwise), unless the email already has an
/// account of that origin, or any account for `origin: None` (checked and inserted in one
/// statement).
async fn insert_user(
    store: &SqliteStore,
    email: &str,
    name: &str,
    origin: Option<TenantId>,
) -> Result<Option<User>, Error> {
    let email = accounts::normalize_email(email)?;
    let name = name.trim();
    if name.len() > 200 {
        return Err(Error::Invalid {
            field: "name",
            message: "a name has at most 200 characters".into(),
        });
    }
    let user = User {
        id: format!("usr_{}", uuid::Uuid::now_v7().simple()),
        email,
        name: name.to_owned(),
        created_at: Utc::now(),
        active: false,
    };
    let origin = origin.map(|t| t.to_string());
    let done = sqlx::query(
        "INSERT INTO users (id, email, name, created_at, origin_tenant)
         SELECT ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM users WHERE email = ?
             AND (? IS NULL OR origin_tenant = ?))",
    )
    .bind(&user.id)
    .bind(&user.email)
    .bind(&user.name)
    .bind(stamp(user.created_at))
    .bind(&origin)
    .bind(&user.email)
    .bind(&origin)
    .bind(&origin)
    .execute(&store.pool)
    .await?;
    Ok((done.rows_affected() > 0).then_some(user))
}

#[async_trait]
impl AccountStore for SqliteStore {
    async fn create_user(&self, email: &str, name: &str) -> Result<User, Error> {
        insert_user(self, email, name, None)
            .await?
            .ok_or_else(|| Error::Conflict(format!("a user with email {} exists", email.trim())))
    }

    async fn create_invited_user(
        &self,
        email: &str,
        name: &str,
        origin: TenantId,
    ) -> Result<User, Error> {
        if let Some(user) = insert_user(self, email, name, Some(origin)).await? {
            return Ok(user);
        }
        self.accounts(email)
            .await?
            .into_iter()
            .find(|c| c.origin_tenant == Some(origin))
            .map(|c| c.user)
            .ok_or_else(|| Error::Conflict(format!("the account of {} vanished", email.trim())))
    }

    async fn discard_unclaimed_user(&self, id: &str) -> Result<bool, Error> {
        let mut tx = self.begin_write().await?;
        let unclaimed: Option<String> = sqlx::query_scalar(
            "SELECT id FROM users WHERE id = ? AND password_hash IS NULL
             AND NOT EXISTS (SELECT 1 FROM memberships WHERE user_id = users.id)
             AND NOT EXISTS (SELECT 1 FROM sessions WHERE user_id = users.id)",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if unclaimed.is_none() {
            return Ok(false);
        }
        sqlx::query("DELETE FROM user_tokens WHERE user_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM users WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn accounts(&self, email: &str) -> Result<Vec<Credentials>, Error> {
        let Ok(email) = accounts::normalize_email(email) else {
            return Ok(Vec::new());
        };
        sqlx::query("SELECT * FROM users WHERE email = ? ORDER BY created_at, id")
            .bind(email)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(credentials_from)
            .collect()
    }

    async fn user(&self, id: &str) -> Result<Option<User>, Error> {
        sqlx::query("SELECT * FROM users WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(user_from)
            .transpose()
    }

    async fn credentials(&self, email: &str) -> Result<Option<Credentials>, Error> {
        let all = self.accounts(email).await?;
        let active = all.iter().position(|c| c.password_hash.is_some());
        Ok(all.into_iter().nth(active.unwrap_or(0)))
    }

    async fn set_password_hash(&self, user_id: &str, hash: &str) -> Result<(), Error> {
        let done = sqlx::query(
            "UPDATE users SET password_hash = ?, failed_logins = 0, locked_until = NULL WHERE id = ?",
        )
        .bind(hash)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound(format!("user {user_id}")));
        }
        Ok(())
    }

    async fn set_login_lock(&self, user_id: &str, lock: &LoginLock) -> Result<(), Error> {
        sqlx::query("UPDATE users SET failed_logins = ?, locked_until = ? WHERE id = ?")
            .bind(i64::from(lock.failures))
            .bind(lock.locked_until.map(stamp))
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn bump_login_failures(&self, user_id: &str) -> Result<u32, Error> {
        let n: Option<i64> = sqlx::query_scalar(
            "UPDATE users SET failed_logins = failed_logins + 1 WHERE id = ? RETURNING failed_logins",
        )
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(n.unwrap_or(0).clamp(0, u32::MAX as i64) as u32)
    }

    async fn add_member(&self, tenant: TenantId, user_id: &str, role: Role) -> Result<bool, Error> {
        let done = sqlx::query(
            "INSERT INTO memberships (user_id, tenant_id, role, created_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (user_id, tenant_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(tenant.to_string())
        .bind(role.as_str())
        .bind(stamp(Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn memberships(&self, user_id: &str) -> Result<Vec<Membership>, Error> {
        sqlx::query("SELECT * FROM memberships WHERE user_id = ? ORDER BY created_at, tenant_id")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                Ok(Membership {
                    tenant_id: tenant_id(row, "tenant_id")?,
                    role: role(row, "role")?,
                })
            })
            .collect()
    }

    async fn members(&self, tenant: TenantId) -> Result<Vec<Member>, Error> {
        sqlx::query(
            "SELECT u.*, m.role FROM memberships m JOIN users u ON u.id = m.user_id
             WHERE m.tenant_id = ? ORDER BY u.email",
        )
        .bind(tenant.to_string())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(Member {
                user: user_from(row)?,
                role: role(row, "role")?,
            })
        })
        .collect()
    }

    async fn set_role(
        &self,
        tenant: TenantId,
        user_id: &str,
        new: Role,
    ) -> Result<Option<Role>, Error> {
        let mut tx = self.begin_write().await?;
        let before = role_in(&mut tx, tenant, user_id).await?;
        sqlx::query(
            "INSERT INTO memberships (user_id, tenant_id, role, created_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (user_id, tenant_id) DO UPDATE SET role = excluded.role",
        )
        .bind(user_id)
        .bind(tenant.to_string())
        .bind(new.as_str())
        .bind(stamp(Utc::now()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(before)
    }

    async fn remove_member(&self, tenant: TenantId, user_id: &str) -> Result<Option<Role>, Error> {
        let mut tx = self.begin_write().await?;
        let before = role_in(&mut tx, tenant, user_id).await?;
        sqlx::query("DELETE FROM memberships WHERE user_id = ? AND tenant_id = ?")
            .bind(user_id)
            .bind(tenant.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM user_tokens WHERE purpose = 'invite' AND used_at IS NULL
             AND tenant_id = ? AND created_by = ?",
        )
        .bind(tenant.to_string())
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE sessions SET revoked_at = ? WHERE user_id = ? AND tenant_id = ? AND revoked_at IS NULL",
        )
        .bind(stamp(Utc::now()))
        .bind(user_id)
        .bind(tenant.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(before)
    }

    async fn create_token(
        &self,
        user_id: &str,
        purpose: TokenPurpose,
        grant: Option<Membership>,
        expires_at: DateTime<Utc>,
        created_by: Option<&str>,
    ) -> Result<String, Error> {
        let token = accounts::generate_token(accounts::token_tag(purpose));
        sqlx::query(
            "INSERT INTO user_tokens (hash, user_id, purpose, tenant_id, role, created_at, expires_at, created_by)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(keys::hash(&token))
        .bind(user_id)
        .bind(purpose.as_str())
        .bind(grant.as_ref().map(|g| g.tenant_id.to_string()))
        .bind(grant.as_ref().map(|g| g.role.as_str()))
        .bind(stamp(Utc::now()))
        .bind(stamp(expires_at))
        .bind(created_by)
        .execute(&self.pool)
        .await?;
        Ok(token)
    }

    async fn peek_token(
        &self,
        token: &str,
        purpose: TokenPurpose,
        now: DateTime<Utc>,
    ) -> Result<Option<OneTimeToken>, Error> {
        let row = sqlx::query(
            "SELECT * FROM user_tokens WHERE hash = ? AND purpose = ? AND used_at IS NULL",
        )
        .bind(keys::hash(token))
        .bind(purpose.as_str())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) if time(&row, "expires_at")? > now => token_from(&row, purpose).map(Some),
            _ => Ok(None),
        }
    }

    async fn take_token(
        &self,
        token: &str,
        purpose: TokenPurpose,
        now: DateTime<Utc>,
    ) -> Result<Option<OneTimeToken>, Error> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE user_tokens SET used_at = ? WHERE hash = ? AND purpose = ? AND used_at IS NULL
             RETURNING *",
        )
        .bind(stamp(now))
        .bind(keys::hash(token))
        .bind(purpose.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let Some(row) = row else { return Ok(None) };
        if time(&row, "expires_at")? <= now {
            return Ok(None);
        }
        token_from(&row, purpose).map(Some)
    }

    async fn create_session(
        &self,
        user_id: &str,
        tenant: TenantId,
        expires_at: DateTime<Utc>,
    ) -> Result<(Session, String), Error> {
        let session = Session {
            id: format!("ses_{}", uuid::Uuid::now_v7().simple()),
            user_id: user_id.to_owned(),
            tenant_id: tenant,
            created_at: Utc::now(),
            expires_at,
            revoked_at: None,
        };
        let token = accounts::generate_token(accounts::REFRESH_TAG);
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO sessions (id, user_id, tenant_id, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&session.id)
        .bind(user_id)
        .bind(tenant.to_string())
        .bind(stamp(session.created_at))
        .bind(stamp(expires_at))
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO refresh_tokens (hash, session_id, created_at) VALUES (?, ?, ?)")
            .bind(keys::hash(&token))
            .bind(&session.id)
            .bind(stamp(session.created_at))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((session, token))
    }

    async fn session(&self, id: &str) -> Result<Option<Session>, Error> {
        sqlx::query("SELECT * FROM sessions WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(session_from)
            .transpose()
    }

    async fn refresh(&self, token: &str, now: DateTime<Utc>) -> Result<Refreshed, Error> {
        let mut tx = self.begin_write().await?;
        // Claim the token first: of two concurrent uses only one sees `used_at IS NULL`.
        let claimed: Option<String> = sqlx::query_scalar(
            "UPDATE refresh_tokens SET used_at = ? WHERE hash = ? AND used_at IS NULL
             RETURNING session_id",
        )
        .bind(stamp(now))
        .bind(keys::hash(token))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(session_id) = claimed else {
            let reused: Option<String> =
                sqlx::query_scalar("SELECT session_id FROM refresh_tokens WHERE hash = ?")
                    .bind(keys::hash(token))
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(session_id) = reused else {
                return Ok(Refreshed::Invalid);
            };
            sqlx::query("UPDATE sessions SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(stamp(now))
                .bind(&session_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(Refreshed::Reused { session_id });
        };
        let session = sqlx::query("SELECT * FROM sessions WHERE id = ?")
            .bind(&session_id)
            .fetch_one(&mut *tx)
            .await?;
        let session = session_from(&session)?;
        if !session.is_live(now) {
            tx.commit().await?;
            return Ok(Refreshed::Invalid);
        }
        let next = accounts::generate_token(accounts::REFRESH_TAG);
        sqlx::query("INSERT INTO refresh_tokens (hash, session_id, created_at) VALUES (?, ?, ?)")
            .bind(keys::hash(&next))
            .bind(&session.id)
            .bind(stamp(now))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Refreshed::Rotated {
            session,
            token: next,
        })
    }

    async fn set_session_tenant(&self, session_id: &str, tenant: TenantId) -> Result<(), Error> {
        sqlx::query("UPDATE sessions SET tenant_id = ? WHERE id = ?")
            .bind(tenant.to_string())
            .bind(session_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn revoke_session(&self, id: &str) -> Result<bool, Error> {
        let done =
            sqlx::query("UPDATE sessions SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(stamp(Utc::now()))
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn revoke_user_sessions(&self, user_id: &str) -> Result<u64, Error> {
        let done = sqlx::query(
            "UPDATE sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
        )
        .bind(stamp(Utc::now()))
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MetadataStore, NewTenant};
    use chrono::Duration;
    use livora_model::Currency;

    async fn setup() -> (SqliteStore, TenantId) {
        let store = SqliteStore::in_memory().await.expect("store");
        let t = store
            .create_tenant(NewTenant {
                name: "Acme".into(),
                time_zone: "UTC".into(),
                currency: Currency::parse("USD").expect("usd"),
            })
            .await
            .expect("tenant");
        (store, t.id)
    }

    #[tokio::test]
    async fn users_memberships_and_one_time_tokens() {
        let (store, t) = setup().await;
        let u = store
            .create_user("Ann@Example.com", "Ann")
            .await
            .expect("user");
        assert!(!u.active);
        assert!(matches!(
            store.create_user("ann@example.com", "Again").await,
            Err(Error::Conflict(_))
        ));
        let grant = Membership {
            tenant_id: t,
            role: Role::Analyst,
        };
        let now = Utc::now();
        let token = store
            .create_token(
                &u.id,
                TokenPurpose::Invite,
                Some(grant.clone()),
                now + Duration::hours(1),
                None,
            )
            .await
            .expect("token");
        assert!(token.starts_with("lv_inv_"));
        assert_eq!(
            store
                .take_token(&token, TokenPurpose::Reset, now)
                .await
                .expect("take"),
            None,
            "wrong purpose"
        );
        let taken = store
            .take_token(&token, TokenPurpose::Invite, now)
            .await
            .expect("take")
            .expect("valid");
        assert_eq!(taken.grant, Some(grant));
        assert_eq!(
            store
                .take_token(&token, TokenPurpose::Invite, now)
                .await
                .expect("take"),
            None,
            "used once"
        );
        let late = store
            .create_token(
                &u.id,
                TokenPurpose::Reset,
                None,
                now + Duration::hours(1),
                None,
            )
            .await
            .expect("token");
        assert_eq!(
            store
                .take_token(&late, TokenPurpose::Reset, now + Duration::hours(2))
                .await
                .expect("take"),
            None,
            "expired"
        );
        assert_eq!(
            store.set_role(t, &u.id, Role::Analyst).await.expect("set"),
            None
        );
        assert_eq!(
            store.set_role(t, &u.id, Role::Admin).await.expect("set"),
            Some(Role::Analyst)
        );
        store
            .set_password_hash(&u.id, "$argon2id$x")
            .await
            .expect("pw");
        let creds = store
            .credentials("ANN@example.com")
            .await
            .expect("c")
            .expect("found");
        assert!(creds.user.active);
        assert_eq!(
            store.members(t).await.expect("members")[0].role,
            Role::Admin
        );
        assert_eq!(store.memberships(&u.id).await.expect("m").len(), 1);
        assert_eq!(
            store.remove_member(t, &u.id).await.expect("rm"),
            Some(Role::Admin)
        );
        assert!(store.members(t).await.expect("members").is_empty());
    }

    #[tokio::test]
    async fn an_address_has_an_account_per_inviting_tenant() {
        let (store, t) = setup().await;
        let u = store
            .create_tenant(NewTenant {
                name: "Other".into(),
                time_zone: "UTC".into(),
                currency: Currency::parse("EUR").expect("eur"),
            })
            .await
            .expect("tenant")
            .id;
        let first = store
            .create_invited_user("New@X.test", "New", t)
            .await
            .expect("first");
        let again = store
            .create_invited_user("new@x.test", "New", t)
            .await
            .expect("the same tenant's");
        assert_eq!(first.id, again.id, "one account per inviting tenant");
        let second = store
            .create_invited_user("new@x.test", "New", u)
            .await
            .expect("another tenant's invitation, another account");
        assert_ne!(first.id, second.id);
        assert!(matches!(
            store.create_user("new@x.test", "New").await,
            Err(Error::Conflict(_))
        ));
        store
            .set_password_hash(&second.id, "$argon2id$x")
            .await
            .expect("pw");
        let all = store.accounts("NEW@x.test").await.expect("accounts");
        assert_eq!(
            all.iter().map(|c| c.user.id.as_str()).collect::<Vec<_>>(),
            [first.id.as_str(), second.id.as_str()]
        );
        assert_eq!(
            all.iter().map(|c| c.origin_tenant).collect::<Vec<_>>(),
            [Some(t), Some(u)]
        );
        let signs_in = store
            .credentials("new@x.test")
            .await
            .expect("c")
            .expect("c");
        assert_eq!(signs_in.user.id, second.id, "the one with a password");
        // Tokens can be looked at without being used.
        let now = Utc::now();
        let token = store
            .create_token(
                &first.id,
                TokenPurpose::Invite,
                Some(Membership {
                    tenant_id: t,
                    role: Role::Viewer,
                }),
                now + Duration::hours(1),
                None,
            )
            .await
            .expect("token");
        for _ in 0..2 {
            let seen = store
                .peek_token(&token, TokenPurpose::Invite, now)
                .await
                .expect("peek")
                .expect("valid");
            assert_eq!(seen.user_id, first.id);
        }
        assert_eq!(
            store
                .peek_token(&token, TokenPurpose::Invite, now + Duration::hours(2))
                .await
                .expect("peek"),
            None,
            "expired"
        );
        // An account never claimed goes, with its tokens; one with a password stays.
        assert!(
            !store
                .discard_unclaimed_user(&second.id)
                .await
                .expect("keep")
        );
        assert!(
            store
                .discard_unclaimed_user(&first.id)
                .await
                .expect("discard")
        );
        assert_eq!(store.user(&first.id).await.expect("u"), None);
        assert_eq!(
            store
                .peek_token(&token, TokenPurpose::Invite, now)
                .await
                .expect("peek"),
            None
        );
        // Invited again, the tenant's account is made anew; the other tenant's stays.
        let anew = store
            .create_invited_user("new@x.test", "New", t)
            .await
            .expect("anew");
        assert_ne!(anew.id, first.id);
        assert_eq!(
            store
                .create_invited_user("new@x.test", "New", u)
                .await
                .expect("kept")
                .id,
            second.id
        );
        assert_eq!(store.accounts("new@x.test").await.expect("a").len(), 2);
    }

    #[tokio::test]
    async fn refresh_tokens_rotate_and_reuse_revokes_the_session() {
        let (store, t) = setup().await;
        let u = store
            .create_user("bob@example.com", "Bob")
            .await
            .expect("user");
        let now = Utc::now();
        let (s, first) = store
            .create_session(&u.id, t, now + Duration::days(1))
            .await
            .expect("session");
        let Refreshed::Rotated { token: second, .. } = store.refresh(&first, now).await.expect("r")
        else {
            panic!("first use rotates");
        };
        assert_ne!(first, second);
        assert_eq!(
            store.refresh(&first, now).await.expect("r"),
            Refreshed::Reused {
                session_id: s.id.clone()
            }
        );
        assert_eq!(
            store.refresh(&second, now).await.expect("r"),
            Refreshed::Invalid,
            "the session was revoked by the reuse"
        );
        assert_eq!(
            store.refresh("lv_rt_nope", now).await.expect("r"),
            Refreshed::Invalid
        );
        let (s2, t2) = store
            .create_session(&u.id, t, now + Duration::days(1))
            .await
            .expect("session");
        assert_eq!(
            store
                .refresh(&t2, now + Duration::days(2))
                .await
                .expect("r"),
            Refreshed::Invalid,
            "expired"
        );
        assert_eq!(store.revoke_user_sessions(&u.id).await.expect("revoke"), 1);
        assert!(
            !store
                .session(&s2.id)
                .await
                .expect("s")
                .expect("s")
                .is_live(now)
        );
    }
}
