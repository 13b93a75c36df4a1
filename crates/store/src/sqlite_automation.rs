//! The SQLite implementation of [`AutomationStore`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use livora_model::TenantId;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::automation::{
    AttemptError, AutomationCommit, AutomationStore, ChannelRecord, Engagement, EngagementRow,
    JourneyRow, MessageQuery, OutboxRow, OutboxStatus, WorkflowCounts, WorkflowRecord,
    WorkflowVersion,
};
use crate::sqlite::{tenant_id, time};
use crate::{Error, SqliteStore};

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(row: &SqliteRow, col: &str) -> Result<DateTime<Utc>, Error> {
    let v: i64 = row.try_get(col)?;
    DateTime::from_timestamp_micros(v).ok_or_else(|| Error::Corrupt(format!("{col} {v}")))
}

fn workflow(r: &SqliteRow) -> Result<WorkflowRecord, Error> {
    let enabled: Option<i64> = r.try_get("enabled_version")?;
    let latest: i64 = r.try_get("latest_version")?;
    Ok(WorkflowRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        enabled_version: enabled.map(|v| v as u32),
        latest_version: latest as u32,
        created_by: r.try_get("created_by")?,
        created_at: time(r, "created_at")?,
        updated_at: time(r, "updated_at")?,
    })
}

fn journey(r: &SqliteRow) -> Result<JourneyRow, Error> {
    let active: i64 = r.try_get("active")?;
    Ok(JourneyRow {
        id: r.try_get("id")?,
        tenant: tenant_id(r, "tenant_id")?,
        workflow: r.try_get("workflow_id")?,
        person: r.try_get("person")?,
        active: active != 0,
        entered_at: from_micros(r, "entered_at")?,
        state: r.try_get("state")?,
    })
}

fn channel(r: &SqliteRow) -> Result<ChannelRecord, Error> {
    let sealed: i64 = r.try_get("sealed")?;
    Ok(ChannelRecord {
        channel: r.try_get("channel")?,
        config: r.try_get("config")?,
        sealed: sealed != 0,
        updated_by: r.try_get("updated_by")?,
        updated_at: time(r, "updated_at")?,
    })
}

fn outbox(r: &SqliteRow) -> Result<OutboxRow, Error> {
    let status: String = r.try_get("status")?;
    let attempts: i64 = r.try_get("attempts")?;
    Ok(OutboxRow {
        key: r.try_get("key")?,
        tenant: tenant_id(r, "tenant_id")?,
        workflow: r.try_get("workflow_id")?,
        person: r.try_get("person")?,
        channel: r.try_get("channel")?,
        category: r.try_get("category")?,
        status: OutboxStatus::parse(&status)
            .ok_or_else(|| Error::Corrupt(format!("outbox status {status:?}")))?,
        attempts: attempts as u32,
        due_at: from_micros(r, "due_at")?,
        created_at: from_micros(r, "created_at")?,
        updated_at: from_micros(r, "updated_at")?,
        reason: r.try_get("reason")?,
        provider: r.try_get("provider")?,
        provider_id: r.try_get("provider_id")?,
        message: r.try_get("message")?,
        errors: errors_of(r)?,
    })
}

/// A message's attempt errors (a JSON list).
fn errors_of(r: &SqliteRow) -> Result<Vec<AttemptError>, Error> {
    let text: String = r.try_get("errors")?;
    serde_json::from_str(&text).map_err(|e| Error::Corrupt(format!("outbox errors: {e}")))
}

fn errors_json(errors: &[AttemptError]) -> String {
    serde_json::to_string(errors).unwrap_or_else(|_| "[]".into())
}

#[async_trait]
impl AutomationStore for SqliteStore {
    async fn add_workflow_version(
        &self,
        tenant: TenantId,
        id: &str,
        name: &str,
        description: &str,
        definition: &str,
        by: &str,
    ) -> Result<WorkflowRecord, Error> {
        let now = Utc::now().to_rfc3339();
        let mut tx = self.begin_write().await?;
        let latest: Option<i64> = sqlx::query_scalar(
            "SELECT latest_version FROM workflows WHERE tenant_id = ? AND id = ?",
        )
        .bind(tenant.to_string())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let version = latest.unwrap_or(0) + 1;
        sqlx::query(
            "INSERT INTO workflows (tenant_id, id, name, description, enabled_version, latest_version, created_by, created_at, updated_at)
             VALUES (?, ?, ?, ?, NULL, ?, ?, ?, ?)
             ON CONFLICT (tenant_id, id) DO UPDATE SET name = excluded.name,
                description = excluded.description, latest_version = excluded.latest_version,
                updated_at = excluded.updated_at",
        )
        .bind(tenant.to_string())
        .bind(id)
        .bind(name)
        .bind(description)
        .bind(version)
        .bind(by)
        .bind(&now)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO workflow_versions (tenant_id, workflow_id, version, definition, created_by, created_at)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(tenant.to_string())
        .bind(id)
        .bind(version)
        .bind(definition)
        .bind(by)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query("SELECT * FROM workflows WHERE tenant_id = ? AND id = ?")
            .bind(tenant.to_string())
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        workflow(&row)
    }

    async fn workflow(&self, tenant: TenantId, id: &str) -> Result<Option<WorkflowRecord>, Error> {
        sqlx::query("SELECT * FROM workflows WHERE tenant_id = ? AND id = ?")
            .bind(tenant.to_string())
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(workflow)
            .transpose()
    }

    async fn workflows(&self, tenant: TenantId) -> Result<Vec<WorkflowRecord>, Error> {
        sqlx::query("SELECT * FROM workflows WHERE tenant_id = ? ORDER BY id")
            .bind(tenant.to_string())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(workflow)
            .collect()
    }

    async fn all_workflows(&self) -> Result<Vec<(TenantId, WorkflowRecord)>, Error> {
        sqlx::query("SELECT * FROM workflows ORDER BY tenant_id, id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok((tenant_id(r, "tenant_id")?, workflow(r)?)))
            .collect()
    }

    async fn workflow_versions(
        &self,
        tenant: TenantId,
        id: &str,
    ) -> Result<Vec<WorkflowVersion>, Error> {
        sqlx::query(
            "SELECT * FROM workflow_versions WHERE tenant_id = ? AND workflow_id = ? ORDER BY version",
        )
        .bind(tenant.to_string())
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            let v: i64 = r.try_get("version")?;
            Ok(WorkflowVersion {
                version: v as u32,
                definition: r.try_get("definition")?,
                created_by: r.try_get("created_by")?,
                created_at: time(r, "created_at")?,
            })
        })
        .collect()
    }

    async fn set_enabled_version(
        &self,
        tenant: TenantId,
        id: &str,
        version: Option<u32>,
    ) -> Result<bool, Error> {
        let done = sqlx::query(
            "UPDATE workflows SET enabled_version = ?, updated_at = ? WHERE tenant_id = ? AND id = ?",
        )
        .bind(version.map(i64::from))
        .bind(Utc::now().to_rfc3339())
        .bind(tenant.to_string())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_workflow(&self, tenant: TenantId, id: &str) -> Result<bool, Error> {
        let mut tx = self.begin_write().await?;
        for table in ["journeys", "workflow_versions"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE tenant_id = ? AND workflow_id = ?"
            ))
            .bind(tenant.to_string())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        let done = sqlx::query("DELETE FROM workflows WHERE tenant_id = ? AND id = ?")
            .bind(tenant.to_string())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn put_channel(&self, tenant: TenantId, r: &ChannelRecord) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO channels (tenant_id, channel, config, sealed, updated_by, updated_at)
             VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (tenant_id, channel) DO UPDATE SET config = excluded.config,
                sealed = excluded.sealed, updated_by = excluded.updated_by,
                updated_at = excluded.updated_at",
        )
        .bind(tenant.to_string())
        .bind(&r.channel)
        .bind(&r.config)
        .bind(i64::from(r.sealed))
        .bind(&r.updated_by)
        .bind(r.updated_at.to_rfc3339())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn channels(&self, tenant: TenantId) -> Result<Vec<ChannelRecord>, Error> {
        sqlx::query("SELECT * FROM channels WHERE tenant_id = ? ORDER BY channel")
            .bind(tenant.to_string())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(channel)
            .collect()
    }

    async fn all_channels(&self) -> Result<Vec<(TenantId, ChannelRecord)>, Error> {
        sqlx::query("SELECT * FROM channels ORDER BY tenant_id, channel")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok((tenant_id(r, "tenant_id")?, channel(r)?)))
            .collect()
    }

    async fn delete_channel(&self, tenant: TenantId, name: &str) -> Result<bool, Error> {
        let done = sqlx::query("DELETE FROM channels WHERE tenant_id = ? AND channel = ?")
            .bind(tenant.to_string())
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn commit(&self, c: AutomationCommit) -> Result<(), Error> {
        let mut tx = self.begin_write().await?;
        // Many rows a statement: each statement costs a round trip to SQLite's thread.
        for chunk in c.journeys.chunks(1000) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO journeys (id, tenant_id, workflow_id, person, active, entered_at, state) ",
            );
            q.push_values(chunk, |mut b, j| {
                b.push_bind(&j.id)
                    .push_bind(j.tenant.to_string())
                    .push_bind(&j.workflow)
                    .push_bind(&j.person)
                    .push_bind(i64::from(j.active))
                    .push_bind(micros(j.entered_at))
                    .push_bind(&j.state);
            });
            q.push(
                " ON CONFLICT (id) DO UPDATE SET active = excluded.active, state = excluded.state",
            );
            q.build().execute(&mut *tx).await?;
        }
        for chunk in c.messages.chunks(1000) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO outbox (key, tenant_id, workflow_id, person, channel, category, status, attempts,
                    due_at, created_at, updated_at, reason, provider, provider_id, message, errors) ",
            );
            q.push_values(chunk, |mut b, m| {
                b.push_bind(&m.key)
                    .push_bind(m.tenant.to_string())
                    .push_bind(&m.workflow)
                    .push_bind(&m.person)
                    .push_bind(&m.channel)
                    .push_bind(&m.category)
                    .push_bind(m.status.as_str())
                    .push_bind(i64::from(m.attempts))
                    .push_bind(micros(m.due_at))
                    .push_bind(micros(m.created_at))
                    .push_bind(micros(m.updated_at))
                    .push_bind(&m.reason)
                    .push_bind(&m.provider)
                    .push_bind(&m.provider_id)
                    .push_bind(&m.message)
                    .push_bind(errors_json(&m.errors));
            });
            q.push(" ON CONFLICT (key) DO NOTHING");
            q.build().execute(&mut *tx).await?;
        }
        if let Some((name, offset)) = &c.offset {
            sqlx::query(
                "INSERT INTO automation_offsets (name, log_offset) VALUES (?, ?)
                 ON CONFLICT (name) DO UPDATE SET log_offset = excluded.log_offset",
            )
            .bind(name)
            .bind(*offset as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn automation_offset(&self, name: &str) -> Result<Option<u64>, Error> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT log_offset FROM automation_offsets WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(v.map(|v| v as u64))
    }

    async fn journey(&self, id: &str) -> Result<Option<JourneyRow>, Error> {
        sqlx::query("SELECT * FROM journeys WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(journey)
            .transpose()
    }

    async fn workflow_counts(
        &self,
        tenant: TenantId,
        workflow: &str,
    ) -> Result<WorkflowCounts, Error> {
        let t = tenant.to_string();
        let mut out = WorkflowCounts::default();
        for r in sqlx::query(
            "SELECT active, json_extract(state, '$.outcome') AS outcome,
                    json_extract(state, '$.holdout') AS holdout, COUNT(*) AS n
             FROM journeys WHERE tenant_id = ? AND workflow_id = ? GROUP BY 1, 2, 3",
        )
        .bind(&t)
        .bind(workflow)
        .fetch_all(&self.pool)
        .await?
        {
            let (active, holdout, n): (i64, Option<i64>, i64) =
                (r.try_get("active")?, r.try_get("holdout")?, r.try_get("n")?);
            out.journeys.push((
                active != 0,
                r.try_get("outcome")?,
                holdout == Some(1),
                n as u64,
            ));
        }
        let positions = |sql: &'static str| {
            let t = t.clone();
            async move {
                let mut v = Vec::new();
                for r in sqlx::query(sql)
                    .bind(&t)
                    .bind(workflow)
                    .fetch_all(&self.pool)
                    .await?
                {
                    let (version, step, n): (i64, Option<i64>, i64) =
                        (r.try_get("version")?, r.try_get("step")?, r.try_get("n")?);
                    if let Some(step) = step {
                        v.push((version as u32, step as u32, n as u64));
                    }
                }
                Ok::<_, Error>(v)
            }
        };
        // Per step of the paths, in one scan: journeys that ran it, and of them those that
        // converted (ended on the goal, or reached it later within its days).
        for r in sqlx::query(
            "SELECT json_extract(j.state, '$.version') AS version, p.value AS step, COUNT(*) AS n,
                    COUNT(CASE WHEN json_extract(j.state, '$.outcome') IN ('goal', 'converted') THEN 1 END)
                        AS converted
             FROM journeys j, json_each(json_extract(j.state, '$.path')) p
             WHERE j.tenant_id = ? AND j.workflow_id = ? GROUP BY 1, 2",
        )
        .bind(&t)
        .bind(workflow)
        .fetch_all(&self.pool)
        .await?
        {
            let (version, step, n, converted): (i64, Option<i64>, i64, i64) = (
                r.try_get("version")?,
                r.try_get("step")?,
                r.try_get("n")?,
                r.try_get("converted")?,
            );
            if let Some(step) = step {
                out.entered.push((version as u32, step as u32, n as u64));
                if converted > 0 {
                    out.converted
                        .push((version as u32, step as u32, converted as u64));
                }
            }
        }
        out.waiting = positions(
            "SELECT json_extract(state, '$.version') AS version, json_extract(state, '$.step') AS step,
                    COUNT(*) AS n
             FROM journeys WHERE tenant_id = ? AND workflow_id = ? AND active = 1 GROUP BY 1, 2",
        )
        .await?;
        // (step id, label, messages): by outbox status, and by engagement kind.
        let per_step = |sql: &'static str| {
            let t = t.clone();
            async move {
                let mut v = Vec::new();
                for r in sqlx::query(sql)
                    .bind(&t)
                    .bind(workflow)
                    .fetch_all(&self.pool)
                    .await?
                {
                    let (step, label, n): (Option<String>, String, i64) =
                        (r.try_get("step")?, r.try_get("label")?, r.try_get("n")?);
                    v.push((step.unwrap_or_default(), label, n as u64));
                }
                Ok::<_, Error>(v)
            }
        };
        out.messages = per_step(
            "SELECT json_extract(message, '$.step') AS step, status AS label, COUNT(*) AS n
             FROM outbox WHERE tenant_id = ? AND workflow_id = ? GROUP BY 1, 2",
        )
        .await?;
        out.engagement = per_step(
            "SELECT json_extract(o.message, '$.step') AS step, e.kind AS label, COUNT(*) AS n
             FROM message_engagement e JOIN outbox o ON o.key = e.key
             WHERE o.tenant_id = ? AND o.workflow_id = ? GROUP BY 1, 2",
        )
        .await?;
        Ok(out)
    }

    async fn journeys_to_restore(&self) -> Result<Vec<JourneyRow>, Error> {
        sqlx::query(
            "SELECT * FROM journeys WHERE active = 1
             UNION ALL
             SELECT j.* FROM journeys j JOIN (
                SELECT tenant_id, workflow_id, person, MAX(entered_at) AS at FROM journeys
                WHERE active = 0 GROUP BY tenant_id, workflow_id, person) n
             ON j.tenant_id = n.tenant_id AND j.workflow_id = n.workflow_id
                AND j.person = n.person AND j.entered_at = n.at AND j.active = 0",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(journey)
        .collect()
    }

    async fn journeys_of(
        &self,
        tenant: TenantId,
        persons: &[String],
        limit: u32,
    ) -> Result<Vec<JourneyRow>, Error> {
        if persons.is_empty() {
            return Ok(Vec::new());
        }
        let marks = vec!["?"; persons.len()].join(", ");
        let sql = format!(
            "SELECT * FROM journeys WHERE tenant_id = ? AND person IN ({marks})
             ORDER BY entered_at DESC LIMIT ?"
        );
        let mut q = sqlx::query(&sql).bind(tenant.to_string());
        for p in persons {
            q = q.bind(p);
        }
        q.bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(journey)
            .collect()
    }

    async fn due_messages(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<OutboxRow>, Error> {
        sqlx::query(
            "SELECT * FROM outbox WHERE status = 'pending' AND due_at <= ? ORDER BY due_at LIMIT ?",
        )
        .bind(micros(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(outbox)
        .collect()
    }

    async fn update_messages(&self, rows: &[OutboxRow]) -> Result<(), Error> {
        let mut tx = self.begin_write().await?;
        for chunk in rows.chunks(1000) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "WITH v(key, status, attempts, due_at, updated_at, reason, provider, provider_id, errors) AS (",
            );
            q.push_values(chunk, |mut b, m| {
                b.push_bind(&m.key)
                    .push_bind(m.status.as_str())
                    .push_bind(i64::from(m.attempts))
                    .push_bind(micros(m.due_at))
                    .push_bind(micros(m.updated_at))
                    .push_bind(&m.reason)
                    .push_bind(&m.provider)
                    .push_bind(&m.provider_id)
                    .push_bind(errors_json(&m.errors));
            });
            q.push(
                ") UPDATE outbox SET status = v.status, attempts = v.attempts, due_at = v.due_at,
                    updated_at = v.updated_at, reason = v.reason, provider = v.provider,
                    provider_id = v.provider_id, errors = v.errors
                 FROM v WHERE outbox.key = v.key AND outbox.person <> 'erased'",
            );
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn message(&self, tenant: TenantId, key: &str) -> Result<Option<OutboxRow>, Error> {
        sqlx::query("SELECT * FROM outbox WHERE tenant_id = ? AND key = ?")
            .bind(tenant.to_string())
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(outbox)
            .transpose()
    }

    async fn messages(
        &self,
        tenant: TenantId,
        status: Option<OutboxStatus>,
        limit: u32,
    ) -> Result<Vec<OutboxRow>, Error> {
        sqlx::query(
            "SELECT * FROM outbox WHERE tenant_id = ? AND (? IS NULL OR status = ?)
             ORDER BY created_at DESC LIMIT ?",
        )
        .bind(tenant.to_string())
        .bind(status.map(OutboxStatus::as_str))
        .bind(status.map(OutboxStatus::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(outbox)
        .collect()
    }

    async fn list_messages(
        &self,
        tenant: TenantId,
        q: &MessageQuery,
        limit: u32,
    ) -> Result<Vec<OutboxRow>, Error> {
        let status = q.status.map(OutboxStatus::as_str);
        let (after_at, after_key) = match &q.after {
            Some((at, key)) => (Some(micros(*at)), Some(key.as_str())),
            None => (None, None),
        };
        sqlx::query(
            "SELECT * FROM outbox WHERE tenant_id = ? AND (? IS NULL OR status = ?)
                AND (? IS NULL OR workflow_id = ?)
                AND (? IS NULL OR created_at < ? OR (created_at = ? AND key < ?))
             ORDER BY created_at DESC, key DESC LIMIT ?",
        )
        .bind(tenant.to_string())
        .bind(status)
        .bind(status)
        .bind(q.workflow.as_deref())
        .bind(q.workflow.as_deref())
        .bind(after_at)
        .bind(after_at)
        .bind(after_at)
        .bind(after_key)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(outbox)
        .collect()
    }

    async fn outbox_counts(&self) -> Result<Vec<(OutboxStatus, u64)>, Error> {
        let mut out = Vec::new();
        for r in sqlx::query("SELECT status, COUNT(*) AS n FROM outbox GROUP BY status")
            .fetch_all(&self.pool)
            .await?
        {
            let status: String = r.try_get("status")?;
            let n: i64 = r.try_get("n")?;
            let status = OutboxStatus::parse(&status)
                .ok_or_else(|| Error::Corrupt(format!("outbox status {status:?}")))?;
            out.push((status, n.max(0) as u64));
        }
        Ok(out)
    }

    async fn record_engagement(
        &self,
        tenant: TenantId,
        key: &str,
        kind: Engagement,
        at: DateTime<Utc>,
        detail: Option<&str>,
    ) -> Result<bool, Error> {
        let mut tx = self.begin_write().await?;
        let first: Option<i64> = sqlx::query_scalar(
            "INSERT INTO message_engagement (key, tenant_id, kind, first_at, last_at, count, detail)
             VALUES (?, ?, ?, ?, ?, 1, ?)
             ON CONFLICT (key, kind) DO UPDATE SET count = count + 1,
                last_at = MAX(last_at, excluded.last_at),
                first_at = MIN(first_at, excluded.first_at),
                detail = COALESCE(excluded.detail, detail)
             RETURNING count",
        )
        .bind(key)
        .bind(tenant.to_string())
        .bind(kind.as_str())
        .bind(micros(at))
        .bind(micros(at))
        .bind(detail)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(first == Some(1))
    }

    async fn engagement(&self, tenant: TenantId, key: &str) -> Result<Vec<EngagementRow>, Error> {
        let mut out = Vec::new();
        for r in sqlx::query(
            "SELECT kind, first_at, last_at, count, detail FROM message_engagement
             WHERE tenant_id = ? AND key = ? ORDER BY first_at",
        )
        .bind(tenant.to_string())
        .bind(key)
        .fetch_all(&self.pool)
        .await?
        {
            let kind: String = r.try_get("kind")?;
            let count: i64 = r.try_get("count")?;
            out.push(EngagementRow {
                kind: Engagement::parse(&kind)
                    .ok_or_else(|| Error::Corrupt(format!("engagement kind {kind:?}")))?,
                first_at: from_micros(&r, "first_at")?,
                last_at: from_micros(&r, "last_at")?,
                count: count as u32,
                detail: r.try_get("detail")?,
            });
        }
        Ok(out)
    }

    async fn message_by_provider_id(
        &self,
        tenant: TenantId,
        provider_id: &str,
    ) -> Result<Option<OutboxRow>, Error> {
        sqlx::query("SELECT * FROM outbox WHERE provider_id = ? AND tenant_id = ? LIMIT 1")
            .bind(provider_id)
            .bind(tenant.to_string())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(outbox)
            .transpose()
    }

    async fn record_inbound(
        &self,
        tenant: TenantId,
        channel: &str,
        address: &str,
        at: DateTime<Utc>,
    ) -> Result<(), Error> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO inbound_contacts (tenant_id, channel, address, last_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (tenant_id, channel, address)
             DO UPDATE SET last_at = MAX(last_at, excluded.last_at)",
        )
        .bind(tenant.to_string())
        .bind(channel)
        .bind(address)
        .bind(micros(at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn last_inbound(
        &self,
        tenant: TenantId,
        channel: &str,
        addresses: &[String],
    ) -> Result<Vec<(String, DateTime<Utc>)>, Error> {
        let mut out = Vec::new();
        for chunk in addresses.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = format!(
                "SELECT address, last_at FROM inbound_contacts
                 WHERE tenant_id = ? AND channel = ? AND address IN ({marks})"
            );
            let mut q = sqlx::query(&sql).bind(tenant.to_string()).bind(channel);
            for a in chunk {
                q = q.bind(a);
            }
            for r in q.fetch_all(&self.pool).await? {
                out.push((r.try_get("address")?, from_micros(&r, "last_at")?));
            }
        }
        Ok(out)
    }

    async fn erase_automation(
        &self,
        tenant: TenantId,
        persons: &[String],
    ) -> Result<(u64, u64), Error> {
        let t = tenant.to_string();
        let (mut journeys, mut messages) = (0, 0);
        let mut tx = self.begin_write().await?;
        for chunk in persons.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = format!(
                "UPDATE message_engagement SET detail = NULL WHERE tenant_id = ?
                 AND key IN (SELECT key FROM outbox WHERE tenant_id = ? AND person IN ({marks}))"
            );
            let mut q = sqlx::query(&sql).bind(&t).bind(&t);
            for p in chunk {
                q = q.bind(p);
            }
            q.execute(&mut *tx).await?;
            let sql = format!(
                "UPDATE outbox SET person = 'erased',
                    status = CASE status WHEN 'pending' THEN 'blocked' ELSE status END,
                    reason = CASE WHEN status = 'pending' OR reason IS NOT NULL
                        THEN 'the person was erased' END,
                    errors = '[]',
                    message = json_set(message, '$.person', 'erased', '$.to', NULL,
                        '$.content', json('{{}}'), '$.time_zone', NULL)
                 WHERE tenant_id = ? AND person IN ({marks})"
            );
            let mut q = sqlx::query(&sql).bind(&t);
            for p in chunk {
                q = q.bind(p);
            }
            messages += q.execute(&mut *tx).await?.rows_affected();
            let sql = format!(
                "UPDATE journeys SET person = 'erased', active = 0,
                    state = json_set(json_remove(state, '$.keys'), '$.person', 'erased',
                        '$.properties', json('{{}}'), '$.step', NULL, '$.wake_at', NULL,
                        '$.ended_at', COALESCE(json_extract(state, '$.ended_at'),
                            json_extract(state, '$.entered_at')),
                        '$.outcome', COALESCE(json_extract(state, '$.outcome'), 'completed'))
                 WHERE tenant_id = ? AND person IN ({marks})"
            );
            let mut q = sqlx::query(&sql).bind(&t);
            for p in chunk {
                q = q.bind(p);
            }
            journeys += q.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok((journeys, messages))
    }

    async fn sent_counts(
        &self,
        tenant: TenantId,
        persons: &[String],
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, String, u32)>, Error> {
        let mut out = Vec::new();
        for chunk in persons.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = format!(
                "SELECT person, channel, COUNT(*) AS n FROM outbox
                 WHERE tenant_id = ? AND person IN ({marks}) AND updated_at >= ?
                    AND (status = 'sent' OR (status = 'pending' AND attempts > 0))
                    AND category = 'marketing'
                 GROUP BY person, channel"
            );
            let mut q = sqlx::query(&sql).bind(tenant.to_string());
            for p in chunk {
                q = q.bind(p);
            }
            for r in q.bind(micros(since)).fetch_all(&self.pool).await? {
                let n: i64 = r.try_get("n")?;
                out.push((r.try_get("person")?, r.try_get("channel")?, n as u32));
            }
        }
        Ok(out)
    }

    async fn sent_since(
        &self,
        tenant: TenantId,
        person: &str,
        channel: &str,
        since: DateTime<Utc>,
    ) -> Result<u32, Error> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox WHERE tenant_id = ? AND person = ? AND status = 'sent'
                AND category = 'marketing' AND (? = '' OR channel = ?) AND updated_at >= ?",
        )
        .bind(tenant.to_string())
        .bind(person)
        .bind(channel)
        .bind(channel)
        .bind(micros(since))
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(tenant: TenantId, key: &str, now: DateTime<Utc>) -> OutboxRow {
        OutboxRow {
            key: key.into(),
            tenant,
            workflow: "wf".into(),
            person: "u:ada".into(),
            channel: "email".into(),
            category: "marketing".into(),
            status: OutboxStatus::Pending,
            attempts: 0,
            due_at: now,
            created_at: now,
            updated_at: now,
            reason: None,
            provider: None,
            provider_id: None,
            message: "{}".into(),
            errors: Vec::new(),
        }
    }

    #[tokio::test]
    async fn messages_page_by_cursor_filter_by_workflow_and_keep_every_error() {
        let (store, t) = SqliteStore::with_tenant().await;
        let now = Utc::now();
        let mut rows = Vec::new();
        for i in 0..5 {
            let mut m = message(t, &format!("k{i}"), now + chrono::Duration::seconds(i));
            m.workflow = if i % 2 == 0 { "even" } else { "odd" }.into();
            rows.push(m);
        }
        // Two with the same creation time: the key breaks the tie.
        let mut twin = message(t, "k5", now + chrono::Duration::seconds(4));
        twin.workflow = "even".into();
        rows.push(twin);
        store
            .commit(AutomationCommit {
                messages: rows.clone(),
                ..AutomationCommit::default()
            })
            .await
            .expect("commit");
        // Pages of two, newest first, each after the last of the page before.
        let mut seen = Vec::new();
        let mut q = MessageQuery::default();
        loop {
            let page = store.list_messages(t, &q, 2).await.expect("page");
            if page.is_empty() {
                break;
            }
            let last = page.last().expect("last");
            q.after = Some((last.created_at, last.key.clone()));
            seen.extend(page.into_iter().map(|r| r.key));
        }
        assert_eq!(seen, ["k5", "k4", "k3", "k2", "k1", "k0"]);
        let even = store
            .list_messages(
                t,
                &MessageQuery {
                    workflow: Some("even".into()),
                    ..MessageQuery::default()
                },
                10,
            )
            .await
            .expect("even");
        let keys: Vec<_> = even.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["k5", "k4", "k2", "k0"]);

        // A dead letter keeps the error of each attempt.
        let mut dead = rows[0].clone();
        dead.status = OutboxStatus::Dead;
        dead.attempts = 2;
        dead.errors = (1..=2)
            .map(|n| AttemptError {
                attempt: n,
                at: now,
                provider: "webhook".into(),
                secondary: false,
                permanent: false,
                error: format!("HTTP 50{n}"),
            })
            .collect();
        store
            .update_messages(&[dead.clone()])
            .await
            .expect("update");
        let back = store.message(t, "k0").await.expect("read").expect("row");
        assert_eq!(back.errors, dead.errors);
        let counts: std::collections::HashMap<_, _> = store
            .outbox_counts()
            .await
            .expect("counts")
            .into_iter()
            .collect();
        assert_eq!(counts.get(&OutboxStatus::Dead), Some(&1));
        assert_eq!(counts.get(&OutboxStatus::Pending), Some(&5));
    }

    /// Erasure leaves no provider text that may quote the person (an SMTP 550 names the
    /// address), and a send still in flight when the person was erased does not write the
    /// row back.
    #[tokio::test]
    async fn erasure_clears_attempt_errors_and_outlives_sends_in_flight() {
        let (store, t) = SqliteStore::with_tenant().await;
        let now = Utc::now();
        let mut dead = message(t, "dead", now);
        dead.status = OutboxStatus::Dead;
        dead.attempts = 1;
        dead.reason = Some("550 no such user ada@example.com".into());
        dead.errors = vec![AttemptError {
            attempt: 1,
            at: now,
            provider: "smtp".into(),
            secondary: false,
            permanent: true,
            error: "550 no such user ada@example.com".into(),
        }];
        let flying = message(t, "flying", now);
        store
            .commit(AutomationCommit {
                messages: vec![dead, flying.clone()],
                ..AutomationCommit::default()
            })
            .await
            .expect("commit");
        store
            .erase_automation(t, &["u:ada".to_owned()])
            .await
            .expect("erase");
        let back = store.message(t, "dead").await.expect("read").expect("row");
        assert!(back.errors.is_empty(), "{:?}", back.errors);
        assert_eq!(back.reason.as_deref(), Some("the person was erased"));
        // The send that was in flight returns and marks its row: the erasure stands.
        let mut sent = flying;
        sent.status = OutboxStatus::Sent;
        sent.attempts = 1;
        sent.reason = Some("to ada@example.com".into());
        store.update_messages(&[sent]).await.expect("update");
        let back = store
            .message(t, "flying")
            .await
            .expect("read")
            .expect("row");
        assert_eq!(
            (back.status, back.person.as_str()),
            (OutboxStatus::Blocked, "erased")
        );
        assert_eq!(back.reason.as_deref(), Some("the person was erased"));
    }

    #[tokio::test]
    async fn versions_journeys_outbox_and_offset() {
        let (store, t) = SqliteStore::with_tenant().await;
        let w = store
            .add_workflow_version(t, "cart", "Cart", "", "{\"v\":1}", "ada")
            .await
            .expect("v1");
        assert_eq!((w.latest_version, w.enabled_version), (1, None));
        store
            .add_workflow_version(t, "cart", "Cart", "", "{\"v\":2}", "ada")
            .await
            .expect("v2");
        assert!(
            store
                .set_enabled_version(t, "cart", Some(2))
                .await
                .expect("enable")
        );
        let w = store
            .workflow(t, "cart")
            .await
            .expect("read")
            .expect("found");
        assert_eq!((w.latest_version, w.enabled_version), (2, Some(2)));
        assert_eq!(
            store
                .workflow_versions(t, "cart")
                .await
                .expect("versions")
                .len(),
            2
        );

        let now = Utc::now();
        let row = |id: &str, active: bool, at: i64| JourneyRow {
            id: id.into(),
            tenant: t,
            workflow: "cart".into(),
            person: "u:ada".into(),
            active,
            entered_at: now + chrono::Duration::seconds(at),
            state: format!("{{\"id\":\"{id}\"}}"),
        };
        store
            .commit(AutomationCommit {
                journeys: vec![
                    row("j1", false, 0),
                    row("j2", false, 10),
                    row("j3", true, 20),
                ],
                messages: vec![message(t, "j1/send", now)],
                offset: Some(("automation".into(), 42)),
            })
            .await
            .expect("commit");
        // The same key again changes nothing.
        let mut again = message(t, "j1/send", now);
        again.channel = "sms".into();
        store
            .commit(AutomationCommit {
                messages: vec![again],
                offset: Some(("automation".into(), 43)),
                ..AutomationCommit::default()
            })
            .await
            .expect("commit");
        assert_eq!(
            store.automation_offset("automation").await.expect("offset"),
            Some(43)
        );
        let kept = store
            .message(t, "j1/send")
            .await
            .expect("read")
            .expect("found");
        assert_eq!(kept.channel, "email");
        let mut restore: Vec<String> = store
            .journeys_to_restore()
            .await
            .expect("restore")
            .into_iter()
            .map(|j| j.id)
            .collect();
        restore.sort();
        assert_eq!(restore, ["j2", "j3"]);
        assert_eq!(
            store
                .journeys_of(t, &["u:ada".into()], 10)
                .await
                .expect("of")
                .len(),
            3
        );

        let due = store.due_messages(now, 10).await.expect("due");
        assert_eq!(due.len(), 1);
        let mut sent = due[0].clone();
        sent.status = OutboxStatus::Sent;
        sent.attempts = 1;
        sent.provider = Some("smtp".into());
        store.update_messages(&[sent]).await.expect("update");
        assert!(store.due_messages(now, 10).await.expect("due").is_empty());
        let hour_ago = now - chrono::Duration::hours(1);
        assert_eq!(
            store
                .sent_since(t, "u:ada", "email", hour_ago)
                .await
                .expect("n"),
            1
        );
        assert_eq!(
            store.sent_since(t, "u:ada", "", hour_ago).await.expect("n"),
            1
        );
        assert_eq!(
            store
                .sent_since(t, "u:ada", "sms", hour_ago)
                .await
                .expect("n"),
            0
        );
        assert_eq!(
            store
                .sent_counts(t, &["u:ada".into(), "u:bob".into()], hour_ago)
                .await
                .expect("n"),
            vec![("u:ada".to_owned(), "email".to_owned(), 1)]
        );
        assert_eq!(
            store
                .messages(t, Some(OutboxStatus::Sent), 10)
                .await
                .expect("list")
                .len(),
            1
        );
        assert!(store.delete_workflow(t, "cart").await.expect("delete"));
        assert!(
            store
                .journeys_of(t, &["u:ada".into()], 10)
                .await
                .expect("of")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn steps_count_the_journeys_that_ran_them_and_converted() {
        let (store, t) = SqliteStore::with_tenant().await;
        let now = Utc::now();
        let row = |id: &str, path: &str, outcome: &str| JourneyRow {
            id: id.into(),
            tenant: t,
            workflow: "cart".into(),
            person: format!("u:{id}"),
            active: false,
            entered_at: now,
            state: format!(r#"{{"id":"{id}","version":1,"path":{path},"outcome":"{outcome}"}}"#),
        };
        store
            .commit(AutomationCommit {
                journeys: vec![
                    row("a", "[0, 1]", "goal"),
                    row("b", "[0, 1, 2]", "completed"),
                    row("c", "[0]", "converted"),
                    row("d", "[0, 2]", "exited"),
                ],
                ..AutomationCommit::default()
            })
            .await
            .expect("commit");
        let counts = store.workflow_counts(t, "cart").await.expect("counts");
        let sorted = |mut v: Vec<(u32, u32, u64)>| {
            v.sort();
            v
        };
        assert_eq!(
            sorted(counts.entered),
            vec![(1, 0, 4), (1, 1, 2), (1, 2, 2)]
        );
        assert_eq!(
            sorted(counts.converted),
            vec![(1, 0, 2), (1, 1, 1)],
            "a and c converted (on the goal, and later)"
        );
    }

    #[tokio::test]
    async fn engagement_receipts_and_inbound_contacts() {
        let (store, t) = SqliteStore::with_tenant().await;
        let now = Utc::now();
        let mut m = message(t, "j1/send", now);
        m.message = r#"{"step":"send"}"#.into();
        store
            .commit(AutomationCommit {
                messages: vec![m.clone()],
                ..AutomationCommit::default()
            })
            .await
            .expect("commit");
        m.status = OutboxStatus::Sent;
        m.provider_id = Some("SM123".into());
        store.update_messages(&[m]).await.expect("update");
        let found = store
            .message_by_provider_id(t, "SM123")
            .await
            .expect("by id")
            .expect("found");
        assert_eq!(found.key, "j1/send");
        assert!(
            store
                .message_by_provider_id(t, "SM999")
                .await
                .expect("by id")
                .is_none()
        );
        let later = now + chrono::Duration::minutes(5);
        assert!(
            store
                .record_engagement(t, "j1/send", Engagement::Opened, later, None)
                .await
                .expect("open")
        );
        assert!(
            !store
                .record_engagement(t, "j1/send", Engagement::Opened, now, None)
                .await
                .expect("open again")
        );
        assert!(
            store
                .record_engagement(
                    t,
                    "j1/send",
                    Engagement::Clicked,
                    later,
                    Some("https://a.example/")
                )
                .await
                .expect("click")
        );
        let e = store.engagement(t, "j1/send").await.expect("engagement");
        assert_eq!(e.len(), 2);
        let opened = e
            .iter()
            .find(|x| x.kind == Engagement::Opened)
            .expect("opened");
        assert_eq!(
            (opened.count, opened.first_at.timestamp_micros()),
            (2, now.timestamp_micros())
        );
        let clicked = e
            .iter()
            .find(|x| x.kind == Engagement::Clicked)
            .expect("clicked");
        assert_eq!(clicked.detail.as_deref(), Some("https://a.example/"));
        let counts = store.workflow_counts(t, "wf").await.expect("counts");
        let mut engagement = counts.engagement.clone();
        engagement.sort();
        assert_eq!(
            engagement,
            vec![
                ("send".to_owned(), "clicked".to_owned(), 1),
                ("send".to_owned(), "opened".to_owned(), 1)
            ]
        );

        store
            .record_inbound(t, "whatsapp", "p:abc", now)
            .await
            .expect("inbound");
        store
            .record_inbound(t, "whatsapp", "p:abc", now - chrono::Duration::hours(1))
            .await
            .expect("older inbound");
        let last = store
            .last_inbound(t, "whatsapp", &["p:abc".into(), "p:def".into()])
            .await
            .expect("last");
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].1.timestamp_micros(), now.timestamp_micros());
        assert!(
            store
                .last_inbound(t, "sms", &["p:abc".into()])
                .await
                .expect("last")
                .is_empty()
        );
    }
}
