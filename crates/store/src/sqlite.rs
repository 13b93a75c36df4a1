//! The SQLite implementation of [`MetadataStore`] (WAL mode, synchronous=FULL).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use livora_model::{Currency, TenantId};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};

use crate::access::{Scope, parse_scopes};
use crate::keys::{self, KeyKind, NewKey};
use crate::{ApiKey, DeliveryPolicy, Error, MetadataStore, NewTenant, Tenant};

/// Schema changes, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    time_zone   TEXT NOT NULL,
    currency    TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    kind        TEXT NOT NULL CHECK (kind IN ('write', 'secret')),
    hash        TEXT NOT NULL UNIQUE,
    prefix      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
CREATE INDEX api_keys_tenant ON api_keys(tenant_id);
"#,
    r#"
ALTER TABLE api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT '';
UPDATE api_keys SET scopes = CASE kind WHEN 'write' THEN 'ingest' ELSE 'read' END;
CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE,
    name           TEXT NOT NULL,
    password_hash  TEXT,
    created_at     TEXT NOT NULL,
    failed_logins  INTEGER NOT NULL DEFAULT 0,
    locked_until   TEXT
);
CREATE TABLE memberships (
    user_id     TEXT NOT NULL REFERENCES users(id),
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    role        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (user_id, tenant_id)
);
CREATE INDEX memberships_tenant ON memberships(tenant_id);
CREATE TABLE user_tokens (
    hash        TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id),
    purpose     TEXT NOT NULL CHECK (purpose IN ('invite', 'reset')),
    tenant_id   TEXT REFERENCES tenants(id),
    role        TEXT,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    used_at     TEXT
);
CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id),
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    revoked_at  TEXT
);
CREATE INDEX sessions_user ON sessions(user_id);
CREATE TABLE refresh_tokens (
    hash        TEXT PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES sessions(id),
    created_at  TEXT NOT NULL,
    used_at     TEXT
);
"#,
    r#"
CREATE TABLE tenant_keys (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    version     INTEGER NOT NULL,
    wrapped     BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, version)
);
CREATE TABLE subject_keys (
    tenant_id   TEXT NOT NULL,
    kid         TEXT NOT NULL,
    version     INTEGER NOT NULL,
    wrapped     BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, kid)
);
CREATE TABLE consents (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    subject      TEXT NOT NULL,
    purpose      TEXT NOT NULL,
    granted      INTEGER NOT NULL,
    source       TEXT NOT NULL,
    recorded_at  TEXT NOT NULL,
    recorded_by  TEXT NOT NULL
);
CREATE INDEX consents_subject ON consents(tenant_id, subject);
"#,
    r#"
ALTER TABLE user_tokens ADD COLUMN created_by TEXT;
"#,
    r#"
ALTER TABLE tenants ADD COLUMN retention_days INTEGER;
"#,
    r#"
CREATE TABLE segments (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    id          TEXT NOT NULL,
    tag         INTEGER NOT NULL,
    name        TEXT NOT NULL,
    description TEXT NOT NULL,
    rule        TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, tag, id)
);
CREATE TABLE unmerges (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    merge_id    INTEGER NOT NULL,
    log_offset  INTEGER NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, merge_id)
);
"#,
    r#"
CREATE TABLE merge_rules (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    log_offset  INTEGER NOT NULL,
    rules       TEXT NOT NULL,
    changed_by  TEXT NOT NULL,
    changed_at  TEXT NOT NULL
);
CREATE INDEX merge_rules_tenant ON merge_rules(tenant_id, log_offset);
"#,
    r#"
CREATE TABLE workflows (
    tenant_id       TEXT NOT NULL REFERENCES tenants(id),
    id              TEXT NOT NULL,
    name            TEXT NOT NULL,
    description     TEXT NOT NULL,
    enabled_version INTEGER,
    latest_version  INTEGER NOT NULL,
    created_by      TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE workflow_versions (
    tenant_id   TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    version     INTEGER NOT NULL,
    definition  TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, workflow_id, version)
);
CREATE TABLE journeys (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    person      TEXT NOT NULL,
    active      INTEGER NOT NULL,
    entered_at  INTEGER NOT NULL,
    state       TEXT NOT NULL
);
CREATE INDEX journeys_active ON journeys(active);
CREATE INDEX journeys_person ON journeys(tenant_id, person, entered_at);
CREATE INDEX journeys_workflow ON journeys(tenant_id, workflow_id, person, entered_at);
CREATE TABLE outbox (
    key         TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    person      TEXT NOT NULL,
    channel     TEXT NOT NULL,
    category    TEXT NOT NULL,
    status      TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    due_at      INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    reason      TEXT,
    provider    TEXT,
    provider_id TEXT,
    message     TEXT NOT NULL
);
CREATE INDEX outbox_due ON outbox(status, due_at);
CREATE INDEX outbox_tenant ON outbox(tenant_id, status, created_at);
CREATE INDEX outbox_person ON outbox(tenant_id, person, updated_at);
CREATE TABLE automation_offsets (
    name        TEXT PRIMARY KEY,
    log_offset  INTEGER NOT NULL
);
"#,
    r#"
CREATE TABLE channels (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    channel     TEXT NOT NULL,
    config      BLOB NOT NULL,
    sealed      INTEGER NOT NULL,
    updated_by  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, channel)
);
"#,
    r#"
CREATE TABLE message_engagement (
    key         TEXT NOT NULL,
    tenant_id   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    first_at    INTEGER NOT NULL,
    last_at     INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    detail      TEXT,
    PRIMARY KEY (key, kind)
);
CREATE INDEX outbox_provider_id ON outbox(provider_id);
CREATE TABLE inbound_contacts (
    tenant_id   TEXT NOT NULL,
    channel     TEXT NOT NULL,
    address     TEXT NOT NULL,
    last_at     INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, channel, address)
);
"#,
    r#"
CREATE TABLE models (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    kind        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    trained_at  TEXT NOT NULL,
    window_from TEXT NOT NULL,
    window_to   TEXT NOT NULL,
    metrics     TEXT NOT NULL,
    features    TEXT NOT NULL,
    params      TEXT NOT NULL,
    active      INTEGER NOT NULL,
    note        TEXT NOT NULL,
    PRIMARY KEY (tenant_id, kind, version)
);
"#,
    r#"
CREATE TABLE dashboards (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    id          TEXT NOT NULL,
    name        TEXT NOT NULL,
    owner       TEXT NOT NULL,
    shared      INTEGER NOT NULL,
    widgets     TEXT NOT NULL,
    layout      TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
"#,
    r#"
ALTER TABLE tenants ADD COLUMN delivery_policy TEXT;
"#,
    // Several accounts may share an email (an invitation's own account, one per inviting
    // tenant, `origin_tenant`: see `accounts`), so `email` loses its UNIQUE constraint. SQLite
    // cannot drop a constraint: the table is rebuilt (foreign keys are off during migrations).
    r#"
CREATE TABLE users_v2 (
    id             TEXT PRIMARY KEY,
    email          TEXT NOT NULL,
    name           TEXT NOT NULL,
    password_hash  TEXT,
    created_at     TEXT NOT NULL,
    failed_logins  INTEGER NOT NULL DEFAULT 0,
    locked_until   TEXT,
    origin_tenant  TEXT
);
INSERT INTO users_v2 (id, email, name, password_hash, created_at, failed_logins, locked_until)
    SELECT id, email, name, password_hash, created_at, failed_logins, locked_until FROM users;
DROP TABLE users;
ALTER TABLE users_v2 RENAME TO users;
CREATE INDEX users_email ON users(email);
"#,
    // Every failed attempt of a message (JSON list), not only the last one's reason.
    r#"
ALTER TABLE outbox ADD COLUMN errors TEXT NOT NULL DEFAULT '[]';
CREATE INDEX outbox_workflow ON outbox(tenant_id, workflow_id, created_at);
"#,
];

#[derive(Clone)]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<Self, Error> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // Deleted rows are overwritten, so an erased person's keys leave no trace.
            .pragma("secure_delete", "ON")
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        Self::migrate(pool).await
    }

    /// A private in-memory database, for tests.
    pub async fn in_memory() -> Result<Self, Error> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        Self::migrate(pool).await
    }

    /// An in-memory database with one tenant (`Shop`, UTC, EUR), for tests.
    #[cfg(test)]
    pub(crate) async fn with_tenant() -> (Self, TenantId) {
        let store = Self::in_memory().await.expect("store");
        let t = store
            .create_tenant(NewTenant {
                name: "Shop".into(),
                time_zone: "UTC".into(),
                currency: Currency::parse("EUR").expect("currency"),
            })
            .await
            .expect("tenant");
        (store, t.id)
    }

    /// A transaction that takes the write lock at once (`BEGIN IMMEDIATE`). A deferred one
    /// that reads and then writes cannot wait for another writer: SQLite answers `database
    /// is locked` at the first write instead of honouring the busy timeout.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, Error> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Moves the WAL's pages into the database and truncates the WAL, so deleted rows (zeroed
    /// by `secure_delete`) leave no copy in the WAL file.
    pub(crate) async fn scrub(&self) -> Result<(), Error> {
        // A checkpoint reports `busy` (first column 1) while a reader holds old pages: retry.
        for _ in 0..50 {
            let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(&self.pool)
                .await?;
            let busy: i64 = row.try_get(0)?;
            if busy == 0 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(Error::Corrupt(
            "the WAL could not be checkpointed: deleted keys may still be in it".into(),
        ))
    }

    /// Runs the migrations not run yet, in one transaction, with foreign keys off (so a
    /// migration can rebuild a table others refer to, as SQLite's `ALTER TABLE` guide does);
    /// `PRAGMA foreign_key_check` must find nothing before the commit.
    async fn migrate(pool: SqlitePool) -> Result<Self, Error> {
        use sqlx::Connection;
        let mut conn = pool.acquire().await?;
        sqlx::raw_sql("PRAGMA foreign_keys = OFF")
            .execute(&mut *conn)
            .await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut *tx)
            .await?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::raw_sql(&format!("PRAGMA user_version = {}", i + 1))
                .execute(&mut *tx)
                .await?;
        }
        let broken = sqlx::query("PRAGMA foreign_key_check")
            .fetch_all(&mut *tx)
            .await?;
        if !broken.is_empty() {
            return Err(Error::Corrupt(format!(
                "{} rows break a foreign key after the migrations",
                broken.len()
            )));
        }
        tx.commit().await?;
        sqlx::raw_sql("PRAGMA foreign_keys = ON")
            .execute(&mut *conn)
            .await?;
        drop(conn);
        Ok(Self { pool })
    }
}

pub(crate) fn time(row: &SqliteRow, col: &str) -> Result<DateTime<Utc>, Error> {
    let text: String = row.try_get(col)?;
    DateTime::parse_from_rfc3339(&text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Error::Corrupt(format!("{col} {text:?}: {e}")))
}

pub(crate) fn opt_time(row: &SqliteRow, col: &str) -> Result<Option<DateTime<Utc>>, Error> {
    let text: Option<String> = row.try_get(col)?;
    text.map(|_| time(row, col)).transpose()
}

pub(crate) fn tenant_id(row: &SqliteRow, col: &str) -> Result<TenantId, Error> {
    let text: String = row.try_get(col)?;
    TenantId::parse(&text).map_err(|e| Error::Corrupt(format!("{col} {text:?}: {e}")))
}

fn tenant_from(row: &SqliteRow) -> Result<Tenant, Error> {
    let currency: String = row.try_get("currency")?;
    Ok(Tenant {
        id: tenant_id(row, "id")?,
        name: row.try_get("name")?,
        time_zone: row.try_get("time_zone")?,
        currency: Currency::parse(&currency).map_err(Error::Corrupt)?,
        created_at: time(row, "created_at")?,
        retention_days: row
            .try_get::<Option<i64>, _>("retention_days")?
            .map(|d| d.clamp(1, u32::MAX as i64) as u32),
        delivery_policy: row
            .try_get::<Option<String>, _>("delivery_policy")?
            .map(|j| {
                serde_json::from_str(&j)
                    .map_err(|e| Error::Corrupt(format!("delivery_policy {j:?}: {e}")))
            })
            .transpose()?,
    })
}

fn key_from(row: &SqliteRow) -> Result<ApiKey, Error> {
    let kind: String = row.try_get("kind")?;
    let scopes: String = row.try_get("scopes")?;
    Ok(ApiKey {
        id: row.try_get("id")?,
        tenant_id: tenant_id(row, "tenant_id")?,
        kind: KeyKind::parse(&kind).ok_or_else(|| Error::Corrupt(format!("key kind {kind:?}")))?,
        scopes: parse_scopes(&scopes).map_err(Error::Corrupt)?,
        prefix: row.try_get("prefix")?,
        created_at: time(row, "created_at")?,
        revoked_at: opt_time(row, "revoked_at")?,
    })
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn validate_time_zone(tz: &str) -> Result<(), Error> {
    tz.parse::<chrono_tz::Tz>()
        .map(|_| ())
        .map_err(|_| Error::Invalid {
            field: "time_zone",
            message: format!("{tz:?} is not an IANA time zone name such as Europe/Paris"),
        })
}

#[async_trait]
impl MetadataStore for SqliteStore {
    async fn create_tenant(&self, new: NewTenant) -> Result<Tenant, Error> {
        let name = new.name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(Error::Invalid {
                field: "name",
                message: "a tenant name must have 1 to 200 characters".into(),
            });
        }
        validate_time_zone(&new.time_zone)?;
        let tenant = Tenant {
            id: TenantId::generate(),
            name: name.to_owned(),
            time_zone: new.time_zone,
            currency: new.currency,
            created_at: now(),
            retention_days: None,
            delivery_policy: None,
        };
        sqlx::query(
            "INSERT INTO tenants (id, name, time_zone, currency, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(tenant.id.to_string())
        .bind(&tenant.name)
        .bind(&tenant.time_zone)
        .bind(tenant.currency.as_str())
        .bind(tenant.created_at.to_rfc3339())
        .execute(&self.pool)
        .await?;
        Ok(tenant)
    }

    async fn tenant(&self, id: TenantId) -> Result<Option<Tenant>, Error> {
        sqlx::query("SELECT * FROM tenants WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(tenant_from)
            .transpose()
    }

    async fn set_retention_days(
        &self,
        tenant: TenantId,
        days: Option<u32>,
    ) -> Result<Option<u32>, Error> {
        if days == Some(0) {
            return Err(Error::Invalid {
                field: "retention_days",
                message: "retention is at least 1 day (or null: keep for ever)".into(),
            });
        }
        let before = self
            .tenant(tenant)
            .await?
            .ok_or_else(|| Error::NotFound(format!("tenant {tenant}")))?
            .retention_days;
        sqlx::query("UPDATE tenants SET retention_days = ? WHERE id = ?")
            .bind(days.map(i64::from))
            .bind(tenant.to_string())
            .execute(&self.pool)
            .await?;
        Ok(before)
    }

    async fn set_delivery_policy(
        &self,
        tenant: TenantId,
        policy: Option<DeliveryPolicy>,
    ) -> Result<Option<DeliveryPolicy>, Error> {
        let before = self
            .tenant(tenant)
            .await?
            .ok_or_else(|| Error::NotFound(format!("tenant {tenant}")))?
            .delivery_policy;
        let json = policy
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| Error::Corrupt(format!("delivery_policy: {e}")))?;
        sqlx::query("UPDATE tenants SET delivery_policy = ? WHERE id = ?")
            .bind(json)
            .bind(tenant.to_string())
            .execute(&self.pool)
            .await?;
        Ok(before)
    }

    async fn tenants(&self) -> Result<Vec<Tenant>, Error> {
        sqlx::query("SELECT * FROM tenants ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(tenant_from)
            .collect()
    }

    async fn create_key_scoped(&self, tenant: TenantId, scopes: &[Scope]) -> Result<NewKey, Error> {
        let mut scopes = scopes.to_vec();
        scopes.sort();
        scopes.dedup();
        let kind = match scopes.as_slice() {
            [Scope::Ingest] => KeyKind::Write,
            s if !s.is_empty() && !s.contains(&Scope::Ingest) => KeyKind::Secret,
            _ => {
                return Err(Error::Invalid {
                    field: "scopes",
                    message: "a key has either the ingest scope alone (a write key) or read and/or admin (a secret key)".into(),
                });
            }
        };
        if self.tenant(tenant).await?.is_none() {
            return Err(Error::NotFound(format!("tenant {tenant}")));
        }
        let secret = keys::generate(kind);
        let key = ApiKey {
            id: format!("key_{}", uuid::Uuid::now_v7().simple()),
            tenant_id: tenant,
            kind,
            scopes: scopes.clone(),
            prefix: keys::prefix(&secret),
            created_at: now(),
            revoked_at: None,
        };
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, kind, scopes, hash, prefix, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&key.id)
        .bind(tenant.to_string())
        .bind(kind.as_str())
        .bind(scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(","))
        .bind(keys::hash(&secret))
        .bind(&key.prefix)
        .bind(key.created_at.to_rfc3339())
        .execute(&self.pool)
        .await?;
        Ok(NewKey { key, secret })
    }

    async fn keys(&self, tenant: TenantId) -> Result<Vec<ApiKey>, Error> {
        sqlx::query("SELECT * FROM api_keys WHERE tenant_id = ? ORDER BY created_at, id")
            .bind(tenant.to_string())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(key_from)
            .collect()
    }

    async fn revoke_key(&self, tenant: Option<TenantId>, key_id: &str) -> Result<bool, Error> {
        let tenant = tenant.map(|t| t.to_string());
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL
             AND (? IS NULL OR tenant_id = ?)",
        )
        .bind(now().to_rfc3339())
        .bind(key_id)
        .bind(&tenant)
        .bind(&tenant)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() > 0 {
            return Ok(true);
        }
        let exists: Option<String> = sqlx::query_scalar(
            "SELECT id FROM api_keys WHERE id = ? AND (? IS NULL OR tenant_id = ?)",
        )
        .bind(key_id)
        .bind(&tenant)
        .bind(&tenant)
        .fetch_optional(&self.pool)
        .await?;
        Ok(exists.is_some())
    }

    async fn find_key(&self, secret: &str) -> Result<Option<ApiKey>, Error> {
        sqlx::query("SELECT * FROM api_keys WHERE hash = ? AND revoked_at IS NULL")
            .bind(keys::hash(secret))
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(key_from)
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_tenant(name: &str) -> NewTenant {
        NewTenant {
            name: name.into(),
            time_zone: "Europe/Paris".into(),
            currency: Currency::parse("EUR").expect("currency"),
        }
    }

    /// The migration that lets an email have several accounts rebuilds `users` under the
    /// tables that refer to it: their rows stay, and foreign keys are on again afterwards.
    #[tokio::test]
    async fn rebuilding_users_keeps_memberships_and_sessions() {
        use crate::AccountStore;
        let opts = SqliteConnectOptions::from_str("sqlite::memory:")
            .expect("url")
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .expect("pool");
        let rebuild = MIGRATIONS
            .iter()
            .position(|m| m.contains("users_v2"))
            .expect("the migration");
        for sql in &MIGRATIONS[..rebuild] {
            sqlx::raw_sql(sql).execute(&pool).await.expect("old schema");
        }
        sqlx::raw_sql(&format!(
            "PRAGMA user_version = {rebuild};
             INSERT INTO tenants (id, name, time_zone, currency, created_at)
                 VALUES ('00000000-0000-0000-0000-000000000001', 'T', 'UTC', 'EUR', '2026-01-01T00:00:00Z');
             INSERT INTO users (id, email, name, password_hash, created_at)
                 VALUES ('usr_1', 'ann@example.com', 'Ann', 'h', '2026-01-01T00:00:00Z');
             INSERT INTO memberships (user_id, tenant_id, role, created_at)
                 VALUES ('usr_1', '00000000-0000-0000-0000-000000000001', 'owner', '2026-01-01T00:00:00Z');"
        ))
        .execute(&pool)
        .await
        .expect("old rows");
        let store = SqliteStore::migrate(pool).await.expect("migrates");
        let ann = store
            .credentials("ann@example.com")
            .await
            .expect("c")
            .expect("kept");
        assert_eq!(ann.password_hash.as_deref(), Some("h"));
        assert_eq!(store.memberships("usr_1").await.expect("m").len(), 1);
        store
            .create_invited_user(
                "ann@example.com",
                "Ann",
                TenantId::parse("00000000-0000-0000-0000-000000000001").expect("id"),
            )
            .await
            .expect("a second account of the address");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&store.pool)
            .await
            .expect("pragma");
        assert_eq!(fk, 1, "foreign keys are on again");
        assert!(
            sqlx::raw_sql(
                "INSERT INTO memberships (user_id, tenant_id, role, created_at)
                 VALUES ('usr_nobody', '00000000-0000-0000-0000-000000000001', 'owner', 'x')"
            )
            .execute(&store.pool)
            .await
            .is_err(),
            "and enforced"
        );
    }

    #[tokio::test]
    async fn tenants_and_keys_round_trip_and_revoke() {
        let store = SqliteStore::in_memory().await.expect("store");
        let a = store
            .create_tenant(new_tenant("Acme"))
            .await
            .expect("tenant");
        let b = store
            .create_tenant(new_tenant("Globex"))
            .await
            .expect("tenant");
        assert_eq!(store.tenants().await.expect("list").len(), 2);
        assert_eq!(store.tenant(a.id).await.expect("get"), Some(a.clone()));

        let w = store.create_key(a.id, KeyKind::Write).await.expect("key");
        let s = store.create_key(b.id, KeyKind::Secret).await.expect("key");
        let found = store
            .find_key(&w.secret)
            .await
            .expect("find")
            .expect("found");
        assert_eq!(found.tenant_id, a.id);
        assert_eq!(found.kind, KeyKind::Write);
        assert_eq!(
            store.keys(a.id).await.expect("keys").len(),
            1,
            "scoped to the tenant"
        );
        assert!(store.find_key("lv_w_nope").await.expect("find").is_none());

        assert!(store.revoke_key(None, &w.key.id).await.expect("revoke"));
        assert!(store.find_key(&w.secret).await.expect("find").is_none());
        assert!(
            store.revoke_key(None, &w.key.id).await.expect("again"),
            "idempotent"
        );
        assert!(
            !store
                .revoke_key(None, "key_missing")
                .await
                .expect("missing")
        );
        assert!(store.find_key(&s.secret).await.expect("find").is_some());
    }

    #[tokio::test]
    async fn bad_tenant_input_is_refused() {
        let store = SqliteStore::in_memory().await.expect("store");
        let mut t = new_tenant("  ");
        assert!(matches!(
            store.create_tenant(t.clone()).await,
            Err(Error::Invalid { .. })
        ));
        t.name = "ok".into();
        t.time_zone = "Europe/Pariss".into();
        assert!(matches!(
            store.create_tenant(t).await,
            Err(Error::Invalid { .. })
        ));
        let missing = TenantId::generate();
        assert!(matches!(
            store.create_key(missing, KeyKind::Write).await,
            Err(Error::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn file_store_persists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("meta.db");
        let id = {
            let store = SqliteStore::open(&path).await.expect("open");
            store
                .create_tenant(new_tenant("Acme"))
                .await
                .expect("tenant")
                .id
        };
        let store = SqliteStore::open(&path).await.expect("reopen");
        assert_eq!(
            store.tenant(id).await.expect("get").map(|t| t.name),
            Some("Acme".into())
        );
    }
}
