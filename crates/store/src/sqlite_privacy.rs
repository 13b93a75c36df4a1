//! The SQLite implementation of [`PrivacyStore`].

use async_trait::async_trait;
use livora_model::TenantId;
use sqlx::{QueryBuilder, Row, Sqlite};

use crate::crypto::NewSubjectKey;
use crate::privacy::{Consent, PrivacyStore};
use crate::sqlite::time;
use crate::{Error, SqliteStore};

#[async_trait]
impl PrivacyStore for SqliteStore {
    async fn tenant_keys(&self, tenant: TenantId) -> Result<Vec<(u32, Vec<u8>)>, Error> {
        sqlx::query("SELECT version, wrapped FROM tenant_keys WHERE tenant_id = ? ORDER BY version")
            .bind(tenant.to_string())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                let v: i64 = r.try_get("version")?;
                Ok((v.clamp(0, u32::MAX as i64) as u32, r.try_get("wrapped")?))
            })
            .collect()
    }

    async fn add_tenant_key(
        &self,
        tenant: TenantId,
        version: u32,
        wrapped: &[u8],
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT OR IGNORE INTO tenant_keys (tenant_id, version, wrapped, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(tenant.to_string())
        .bind(i64::from(version))
        .bind(wrapped)
        .bind(chrono::Utc::now().to_rfc3339())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn replace_tenant_key(
        &self,
        tenant: TenantId,
        version: u32,
        wrapped: &[u8],
    ) -> Result<(), Error> {
        sqlx::query("UPDATE tenant_keys SET wrapped = ? WHERE tenant_id = ? AND version = ?")
            .bind(wrapped)
            .bind(tenant.to_string())
            .bind(i64::from(version))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn subject_keys(
        &self,
        tenant: TenantId,
        kids: &[String],
    ) -> Result<Vec<(String, u32, Vec<u8>)>, Error> {
        let mut out = Vec::new();
        for chunk in kids.chunks(500) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "SELECT kid, version, wrapped FROM subject_keys WHERE tenant_id = ",
            );
            q.push_bind(tenant.to_string()).push(" AND kid IN (");
            let mut sep = q.separated(", ");
            for k in chunk {
                sep.push_bind(k);
            }
            sep.push_unseparated(")");
            for r in q.build().fetch_all(&self.pool).await? {
                let v: i64 = r.try_get("version")?;
                out.push((
                    r.try_get("kid")?,
                    v.clamp(0, u32::MAX as i64) as u32,
                    r.try_get("wrapped")?,
                ));
            }
        }
        Ok(out)
    }

    async fn insert_subject_keys(&self, keys: &[NewSubjectKey]) -> Result<Vec<usize>, Error> {
        let mut tx = self.begin_write().await?;
        let now = chrono::Utc::now().to_rfc3339();
        let mut conflicts = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let done = sqlx::query(
                "INSERT OR IGNORE INTO subject_keys (tenant_id, kid, version, wrapped, created_at) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(k.tenant.to_string())
            .bind(&k.kid)
            .bind(i64::from(k.version))
            .bind(&k.wrapped)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                conflicts.push(i);
            }
        }
        tx.commit().await?;
        Ok(conflicts)
    }

    async fn delete_subject_keys(&self, tenant: TenantId, kids: &[String]) -> Result<u64, Error> {
        let mut n = 0;
        let mut tx = self.begin_write().await?;
        for k in kids {
            n += sqlx::query("DELETE FROM subject_keys WHERE tenant_id = ? AND kid = ?")
                .bind(tenant.to_string())
                .bind(k)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        self.scrub().await?;
        Ok(n)
    }

    async fn add_consent(&self, tenant: TenantId, c: &Consent) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO consents (tenant_id, subject, purpose, granted, source, recorded_at, recorded_by)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(tenant.to_string())
        .bind(&c.subject)
        .bind(&c.purpose)
        .bind(c.granted)
        .bind(&c.source)
        .bind(c.recorded_at.to_rfc3339())
        .bind(&c.recorded_by)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn consents(&self, tenant: TenantId, subjects: &[String]) -> Result<Vec<Consent>, Error> {
        let mut out = Vec::new();
        // Many subjects at once (the outbox asks for a whole batch's), a few hundred a query.
        for chunk in subjects.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = format!(
                "SELECT * FROM consents WHERE tenant_id = ? AND subject IN ({marks}) ORDER BY recorded_at, rowid"
            );
            let mut q = sqlx::query(&sql).bind(tenant.to_string());
            for s in chunk {
                q = q.bind(s);
            }
            for r in q.fetch_all(&self.pool).await? {
                out.push(Consent {
                    subject: r.try_get("subject")?,
                    purpose: r.try_get("purpose")?,
                    granted: r.try_get("granted")?,
                    source: r.try_get("source")?,
                    recorded_at: time(&r, "recorded_at")?,
                    recorded_by: r.try_get("recorded_by")?,
                });
            }
        }
        out.sort_by_key(|c| c.recorded_at);
        Ok(out)
    }

    async fn delete_consents(&self, tenant: TenantId, subjects: &[String]) -> Result<u64, Error> {
        let mut n = 0;
        for s in subjects {
            n += sqlx::query("DELETE FROM consents WHERE tenant_id = ? AND subject = ?")
                .bind(tenant.to_string())
                .bind(s)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        self.scrub().await?;
        Ok(n)
    }
}
