//! [`IntelStore`] on SQLite.

use async_trait::async_trait;
use livora_model::TenantId;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::intel::{IntelStore, ModelRecord};
use crate::sqlite::time;
use crate::{Error, SqliteStore};

fn model(r: &SqliteRow) -> Result<ModelRecord, Error> {
    let version: i64 = r.try_get("version")?;
    let active: i64 = r.try_get("active")?;
    Ok(ModelRecord {
        kind: r.try_get("kind")?,
        version: u32::try_from(version).unwrap_or(0),
        trained_at: time(r, "trained_at")?,
        window_from: time(r, "window_from")?,
        window_to: time(r, "window_to")?,
        metrics: r.try_get("metrics")?,
        features: r.try_get("features")?,
        params: r.try_get("params")?,
        active: active != 0,
        note: r.try_get("note")?,
    })
}

#[async_trait]
impl IntelStore for SqliteStore {
    async fn add_model(&self, tenant: TenantId, m: &ModelRecord) -> Result<u32, Error> {
        let mut tx = self.begin_write().await?;
        let next: i64 = sqlx::query(
            "SELECT COALESCE(MAX(version), 0) + 1 AS next FROM models WHERE tenant_id = ? AND kind = ?",
        )
        .bind(tenant.to_string())
        .bind(&m.kind)
        .fetch_one(&mut *tx)
        .await?
        .try_get("next")?;
        if m.active {
            sqlx::query("UPDATE models SET active = 0 WHERE tenant_id = ? AND kind = ?")
                .bind(tenant.to_string())
                .bind(&m.kind)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO models (tenant_id, kind, version, trained_at, window_from, window_to,
                metrics, features, params, active, note)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(tenant.to_string())
        .bind(&m.kind)
        .bind(next)
        .bind(m.trained_at.to_rfc3339())
        .bind(m.window_from.to_rfc3339())
        .bind(m.window_to.to_rfc3339())
        .bind(&m.metrics)
        .bind(&m.features)
        .bind(&m.params)
        .bind(i64::from(m.active))
        .bind(&m.note)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(u32::try_from(next).unwrap_or(u32::MAX))
    }

    async fn models(
        &self,
        tenant: TenantId,
        kind: Option<&str>,
    ) -> Result<Vec<ModelRecord>, Error> {
        sqlx::query(
            "SELECT * FROM models WHERE tenant_id = ? AND (? IS NULL OR kind = ?)
             ORDER BY kind, version DESC",
        )
        .bind(tenant.to_string())
        .bind(kind)
        .bind(kind)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(model)
        .collect()
    }

    async fn activate_model(
        &self,
        tenant: TenantId,
        kind: &str,
        version: u32,
        note: &str,
    ) -> Result<bool, Error> {
        let mut tx = self.begin_write().await?;
        let exists =
            sqlx::query("SELECT 1 FROM models WHERE tenant_id = ? AND kind = ? AND version = ?")
                .bind(tenant.to_string())
                .bind(kind)
                .bind(i64::from(version))
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
        if !exists {
            return Ok(false);
        }
        sqlx::query("UPDATE models SET active = 0 WHERE tenant_id = ? AND kind = ?")
            .bind(tenant.to_string())
            .bind(kind)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE models SET active = 1, note = ? WHERE tenant_id = ? AND kind = ? AND version = ?",
        )
        .bind(note)
        .bind(tenant.to_string())
        .bind(kind)
        .bind(i64::from(version))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[tokio::test]
    async fn versions_one_in_use_and_rollback() {
        let (store, t) = SqliteStore::with_tenant().await;
        let now = Utc::now();
        let m = |active| ModelRecord {
            kind: "churn".into(),
            version: 0,
            trained_at: now,
            window_from: now,
            window_to: now,
            metrics: r#"{"auc":0.8}"#.into(),
            features: "[]".into(),
            params: "{}".into(),
            active,
            note: "first".into(),
        };
        assert_eq!(store.add_model(t, &m(true)).await.expect("adds"), 1);
        assert_eq!(store.add_model(t, &m(true)).await.expect("adds"), 2);
        assert_eq!(store.add_model(t, &m(false)).await.expect("adds"), 3);
        let all = store.models(t, Some("churn")).await.expect("lists");
        let active: Vec<u32> = all.iter().filter(|m| m.active).map(|m| m.version).collect();
        assert_eq!(active, [2]);
        assert_eq!(all[0].version, 3);
        assert!(
            store
                .activate_model(t, "churn", 1, "rolled back")
                .await
                .expect("ok")
        );
        assert!(!store.activate_model(t, "churn", 9, "x").await.expect("ok"));
        let all = store.models(t, None).await.expect("lists");
        let active: Vec<(u32, &str)> = all
            .iter()
            .filter(|m| m.active)
            .map(|m| (m.version, m.note.as_str()))
            .collect();
        assert_eq!(active, [(1, "rolled back")]);
    }
}
