//! [`DashboardStore`] on SQLite.

use async_trait::async_trait;
use livora_model::TenantId;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::dashboards::{Dashboard, DashboardStore};
use crate::sqlite::time;
use crate::{Error, SqliteStore};

fn dashboard(r: &SqliteRow) -> Result<Dashboard, Error> {
    let shared: i64 = r.try_get("shared")?;
    Ok(Dashboard {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        owner: r.try_get("owner")?,
        shared: shared != 0,
        widgets: r.try_get("widgets")?,
        layout: r.try_get("layout")?,
        updated_at: time(r, "updated_at")?,
    })
}

#[async_trait]
impl DashboardStore for SqliteStore {
    async fn put_dashboard(&self, tenant: TenantId, d: &Dashboard) -> Result<(), Error> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO dashboards (tenant_id, id, name, owner, shared, widgets, layout, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (tenant_id, id) DO UPDATE SET name = excluded.name,
                shared = excluded.shared, widgets = excluded.widgets, layout = excluded.layout,
                updated_at = excluded.updated_at",
        )
        .bind(tenant.to_string())
        .bind(&d.id)
        .bind(&d.name)
        .bind(&d.owner)
        .bind(i64::from(d.shared))
        .bind(&d.widgets)
        .bind(&d.layout)
        .bind(d.updated_at.to_rfc3339())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn dashboard(&self, tenant: TenantId, id: &str) -> Result<Option<Dashboard>, Error> {
        let row = sqlx::query("SELECT * FROM dashboards WHERE tenant_id = ? AND id = ?")
            .bind(tenant.to_string())
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(dashboard).transpose()
    }

    async fn dashboards(&self, tenant: TenantId, owner: &str) -> Result<Vec<Dashboard>, Error> {
        let rows = sqlx::query(
            "SELECT * FROM dashboards WHERE tenant_id = ? AND (owner = ? OR shared = 1)
             ORDER BY updated_at DESC, id",
        )
        .bind(tenant.to_string())
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(dashboard).collect()
    }

    async fn delete_dashboard(&self, tenant: TenantId, id: &str) -> Result<bool, Error> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("DELETE FROM dashboards WHERE tenant_id = ? AND id = ?")
            .bind(tenant.to_string())
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dashboards_are_kept_per_tenant_owner_and_sharing() {
        let (store, t) = SqliteStore::with_tenant().await;
        let other = crate::MetadataStore::create_tenant(
            &store,
            crate::NewTenant {
                name: "Other".into(),
                time_zone: "UTC".into(),
                currency: livora_model::Currency::parse("EUR").expect("currency"),
            },
        )
        .await
        .expect("tenant")
        .id;
        let d = |id: &str, owner: &str, shared: bool| Dashboard {
            id: id.into(),
            name: format!("{id} board"),
            owner: owner.into(),
            shared,
            widgets: "[]".into(),
            layout: "[]".into(),
            updated_at: chrono::Utc::now(),
        };
        store
            .put_dashboard(t, &d("mine", "ann", false))
            .await
            .expect("put");
        store
            .put_dashboard(t, &d("team", "bob", true))
            .await
            .expect("put");
        store
            .put_dashboard(t, &d("bobs", "bob", false))
            .await
            .expect("put");
        store
            .put_dashboard(other, &d("elsewhere", "ann", true))
            .await
            .expect("put");
        let ids = |v: Vec<Dashboard>| v.into_iter().map(|d| d.id).collect::<Vec<_>>();
        let mut ann = ids(store.dashboards(t, "ann").await.expect("list"));
        ann.sort();
        assert_eq!(ann, ["mine", "team"]);
        // Replaced in place.
        let mut moved = d("mine", "ann", false);
        moved.layout = r#"[{"i":"a","x":6,"y":0,"w":6,"h":4}]"#.into();
        store.put_dashboard(t, &moved).await.expect("put");
        assert_eq!(
            store
                .dashboard(t, "mine")
                .await
                .expect("get")
                .map(|d| d.layout),
            Some(moved.layout.clone())
        );
        assert_eq!(store.dashboard(other, "mine").await.expect("get"), None);
        assert!(store.delete_dashboard(t, "mine").await.expect("delete"));
        assert!(!store.delete_dashboard(t, "mine").await.expect("delete"));
    }
}
