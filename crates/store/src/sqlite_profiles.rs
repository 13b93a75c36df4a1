//! The SQLite implementation of [`ProfileStore`].

use async_trait::async_trait;
use livora_model::TenantId;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::profiles::{ProfileStore, RulesChange, SegmentRecord, Unmerge};
use crate::sqlite::time;
use crate::{Error, SqliteStore};

fn segment(r: &SqliteRow) -> Result<SegmentRecord, Error> {
    let tag: i64 = r.try_get("tag")?;
    Ok(SegmentRecord {
        id: r.try_get("id")?,
        tag: tag != 0,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        rule: r.try_get("rule")?,
        created_by: r.try_get("created_by")?,
        created_at: time(r, "created_at")?,
        updated_at: time(r, "updated_at")?,
    })
}

fn tenant_of(r: &SqliteRow) -> Result<TenantId, Error> {
    crate::sqlite::tenant_id(r, "tenant_id")
}

#[async_trait]
impl ProfileStore for SqliteStore {
    async fn save_segment(&self, tenant: TenantId, s: &SegmentRecord) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO segments (tenant_id, id, tag, name, description, rule, created_by, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (tenant_id, tag, id) DO UPDATE SET
                name = excluded.name, description = excluded.description,
                rule = excluded.rule, updated_at = excluded.updated_at",
        )
        .bind(tenant.to_string())
        .bind(&s.id)
        .bind(i64::from(s.tag))
        .bind(&s.name)
        .bind(&s.description)
        .bind(&s.rule)
        .bind(&s.created_by)
        .bind(s.created_at.to_rfc3339())
        .bind(s.updated_at.to_rfc3339())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn segments(&self, tenant: TenantId) -> Result<Vec<SegmentRecord>, Error> {
        sqlx::query("SELECT * FROM segments WHERE tenant_id = ? ORDER BY tag, id")
            .bind(tenant.to_string())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(segment)
            .collect()
    }

    async fn all_segments(&self) -> Result<Vec<(TenantId, SegmentRecord)>, Error> {
        sqlx::query("SELECT * FROM segments ORDER BY tenant_id, tag, id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok((tenant_of(r)?, segment(r)?)))
            .collect()
    }

    async fn delete_segment(&self, tenant: TenantId, id: &str, tag: bool) -> Result<bool, Error> {
        let done = sqlx::query("DELETE FROM segments WHERE tenant_id = ? AND id = ? AND tag = ?")
            .bind(tenant.to_string())
            .bind(id)
            .bind(i64::from(tag))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn add_unmerge(&self, u: &Unmerge, created_by: &str) -> Result<(), Error> {
        sqlx::query(
            "INSERT OR IGNORE INTO unmerges (tenant_id, merge_id, log_offset, created_by, created_at)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(u.tenant.to_string())
        .bind(i64::try_from(u.merge_id).unwrap_or(i64::MAX))
        .bind(i64::try_from(u.log_offset).unwrap_or(i64::MAX))
        .bind(created_by)
        .bind(chrono::Utc::now().to_rfc3339())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn unmerges(&self) -> Result<Vec<Unmerge>, Error> {
        sqlx::query("SELECT * FROM unmerges ORDER BY log_offset, rowid")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                let m: i64 = r.try_get("merge_id")?;
                let o: i64 = r.try_get("log_offset")?;
                Ok(Unmerge {
                    tenant: tenant_of(r)?,
                    merge_id: m.max(0) as u64,
                    log_offset: o.max(0) as u64,
                })
            })
            .collect()
    }

    async fn add_rules_change(&self, c: &RulesChange) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO merge_rules (tenant_id, log_offset, rules, changed_by, changed_at)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(c.tenant.to_string())
        .bind(i64::try_from(c.log_offset).unwrap_or(i64::MAX))
        .bind(&c.rules)
        .bind(&c.changed_by)
        .bind(c.changed_at.to_rfc3339())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn rules_changes(&self) -> Result<Vec<RulesChange>, Error> {
        sqlx::query("SELECT * FROM merge_rules ORDER BY log_offset, rowid")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                let o: i64 = r.try_get("log_offset")?;
                Ok(RulesChange {
                    tenant: tenant_of(r)?,
                    log_offset: o.max(0) as u64,
                    rules: r.try_get("rules")?,
                    changed_by: r.try_get("changed_by")?,
                    changed_at: time(r, "changed_at")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MetadataStore, NewTenant};

    #[tokio::test]
    async fn segments_and_unmerges_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("m.db"))
            .await
            .expect("open");
        let t = store
            .create_tenant(NewTenant {
                name: "Shop".into(),
                time_zone: "UTC".into(),
                currency: livora_model::Currency::parse("USD").expect("currency"),
            })
            .await
            .expect("tenant")
            .id;
        let now = chrono::Utc::now();
        let mut s = SegmentRecord {
            id: "vip".into(),
            tag: true,
            name: "VIP".into(),
            description: String::new(),
            rule: r#"{"condition":{"tag":"x"}}"#.into(),
            created_by: "user:1".into(),
            created_at: now,
            updated_at: now,
        };
        store.save_segment(t, &s).await.expect("save");
        s.name = "Very important".into();
        s.created_by = "user:2".into();
        store.save_segment(t, &s).await.expect("replace");
        let all = store.segments(t).await.expect("list");
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].name, "Very important");
        assert_eq!(all[0].created_by, "user:1", "the creator stays");
        assert_eq!(store.all_segments().await.expect("all")[0].0, t);
        assert!(!store.delete_segment(t, "vip", false).await.expect("delete"));
        assert!(store.delete_segment(t, "vip", true).await.expect("delete"));
        let u = Unmerge {
            tenant: t,
            merge_id: 3,
            log_offset: 42,
        };
        store.add_unmerge(&u, "user:1").await.expect("unmerge");
        store.add_unmerge(&u, "user:1").await.expect("again");
        assert_eq!(store.unmerges().await.expect("list"), vec![u]);
        let c = RulesChange {
            tenant: t,
            log_offset: 7,
            rules: r#"{"limits":{"user_id":2}}"#.into(),
            changed_by: "user:1".into(),
            changed_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("time"),
        };
        store.add_rules_change(&c).await.expect("rules");
        assert_eq!(store.rules_changes().await.expect("list"), vec![c]);
    }
}
