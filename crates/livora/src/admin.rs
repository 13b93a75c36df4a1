//! `livora admin`: tenants, keys and log checks, run against the data directory.

use anyhow::{Context, bail};
use clap::Subcommand;
use livora_log::EventLog;
use livora_model::{Currency, TenantId};
use livora_store::audit::{self, AuditLog, NewEntry};
use livora_store::{KeyKind, NewTenant};
use serde_json::json;

use crate::config::Config;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Tenants (workspaces).
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// API keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// The event log (the server must be stopped).
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
    /// The audit log of administrative actions (`<data_dir>/audit.jsonl`, hash chained).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain; prints the entry count and the head hash (keep a copy elsewhere
    /// to detect entries removed from the end).
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// Print every entry, as JSON lines or (`--csv`) as CSV for auditors.
    Export {
        #[arg(long)]
        csv: bool,
    },
}

#[derive(Subcommand)]
pub enum TenantCommand {
    /// Create a tenant with a write key and a secret key.
    Create {
        #[arg(long)]
        name: String,
        /// IANA time zone for calendar periods.
        #[arg(long, default_value = "UTC")]
        time_zone: String,
        /// ISO 4217 currency code.
        #[arg(long, default_value = "USD")]
        currency: String,
        #[arg(long)]
        json: bool,
    },
    /// List tenants.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Create a key; its secret is printed once.
    Create {
        #[arg(long)]
        tenant: String,
        /// `write` (ingest only) or `secret` (read APIs).
        #[arg(long)]
        kind: String,
        #[arg(long)]
        json: bool,
    },
    /// List a tenant's keys (never their secrets).
    List {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its id.
    Revoke { key_id: String },
}

#[derive(Subcommand)]
pub enum LogCommand {
    /// Read every record, checking checksums and offsets.
    Verify {
        #[arg(long)]
        json: bool,
    },
}

fn tenant_id(s: &str) -> anyhow::Result<TenantId> {
    TenantId::parse(s).with_context(|| format!("{s:?} is not a tenant id"))
}

fn print(json: bool, value: serde_json::Value, text: impl FnOnce() -> String) {
    if json {
        println!("{value:#}");
    } else {
        println!("{}", text());
    }
}

pub async fn run(config: &Config, command: AdminCommand) -> anyhow::Result<()> {
    if let AdminCommand::Log {
        command: LogCommand::Verify { json },
    } = command
    {
        let opts = config.log_options();
        let log = tokio::task::spawn_blocking(move || EventLog::open(opts)).await??;
        let report = log.verify().context("the log is damaged")?;
        log.close();
        let value = json!({
            "segments": report.segments,
            "records": report.records,
            "bytes": report.bytes,
            "first_offset": report.first_offset,
            "end_offset": report.end_offset,
        });
        print(json, value, || {
            format!(
                "log ok: {} records in {} segments ({} bytes), offsets {}..{}",
                report.records,
                report.segments,
                report.bytes,
                report.first_offset,
                report.end_offset
            )
        });
        return Ok(());
    }
    let audit_path = config.audit_path();
    if let AdminCommand::Audit { command } = command {
        let (head, entries) = audit::verify(&audit_path).context("the audit log is broken")?;
        match command {
            AuditCommand::Verify { json } => print(
                json,
                json!({"entries": head.entries, "head": head.hash}),
                || format!("audit log ok: {} entries, head {}", head.entries, head.hash),
            ),
            AuditCommand::Export { csv: false } => {
                for e in &entries {
                    println!("{}", serde_json::to_string(e)?);
                }
            }
            AuditCommand::Export { csv: true } => {
                audit::write_csv(std::io::stdout(), &entries)?;
            }
        }
        return Ok(());
    }
    let store = crate::open_store(config).await?;
    let audit = AuditLog::open(&audit_path).context("the audit log is broken")?;
    let actor = format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    );
    let record = |action: &str, tenant: Option<String>, target: Option<String>, after| {
        audit.record(NewEntry {
            actor: actor.clone(),
            action: action.into(),
            tenant,
            target,
            from: Some("cli".into()),
            before: None,
            after,
        })
    };
    match command {
        AdminCommand::Tenant {
            command:
                TenantCommand::Create {
                    name,
                    time_zone,
                    currency,
                    json,
                },
        } => {
            let currency = Currency::parse(&currency).map_err(anyhow::Error::msg)?;
            let tenant = store
                .create_tenant(NewTenant {
                    name,
                    time_zone,
                    currency,
                })
                .await?;
            let write = store.create_key(tenant.id, KeyKind::Write).await?;
            let secret = store.create_key(tenant.id, KeyKind::Secret).await?;
            let id = tenant.id.to_string();
            record(
                "tenant.create",
                Some(id.clone()),
                Some(id.clone()),
                Some(
                    json!({"name": tenant.name, "time_zone": tenant.time_zone, "currency": tenant.currency}),
                ),
            )?;
            for key in [&write, &secret] {
                record(
                    "key.create",
                    Some(id.clone()),
                    Some(key.key.id.clone()),
                    Some(json!({"kind": key.key.kind.as_str()})),
                )?;
            }
            print(
                json,
                json!({ "tenant": tenant, "write_key": write, "secret_key": secret }),
                || {
                    format!(
                        "tenant_id:  {}\nwrite_key:  {}\nsecret_key: {}\n(keys are shown only now; store them safely)",
                        tenant.id, write.secret, secret.secret
                    )
                },
            );
        }
        AdminCommand::Tenant {
            command: TenantCommand::List { json },
        } => {
            let tenants = store.tenants().await?;
            print(json, json!(tenants), || {
                tenants
                    .iter()
                    .map(|t| {
                        format!(
                            "{}  {}  {}  {}",
                            t.id,
                            t.name,
                            t.time_zone,
                            t.currency.as_str()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        AdminCommand::Key {
            command: KeyCommand::Create { tenant, kind, json },
        } => {
            let kind = KeyKind::parse(&kind)
                .with_context(|| format!("{kind:?} is not a key kind: use write or secret"))?;
            let key = store.create_key(tenant_id(&tenant)?, kind).await?;
            record(
                "key.create",
                Some(tenant.clone()),
                Some(key.key.id.clone()),
                Some(json!({"kind": key.key.kind.as_str()})),
            )?;
            print(json, json!(key), || {
                format!("key_id: {}\nsecret: {}", key.key.id, key.secret)
            });
        }
        AdminCommand::Key {
            command: KeyCommand::List { tenant, json },
        } => {
            let keys = store.keys(tenant_id(&tenant)?).await?;
            print(json, json!(keys), || {
                keys.iter()
                    .map(|k| {
                        format!(
                            "{}  {:6}  {}…  {}",
                            k.id,
                            k.kind.as_str(),
                            k.prefix,
                            k.revoked_at
                                .map_or("active".to_owned(), |t| format!("revoked {t}"))
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        AdminCommand::Key {
            command: KeyCommand::Revoke { key_id },
        } => {
            if !store.revoke_key(None, &key_id).await? {
                bail!("no key with id {key_id}");
            }
            record(
                "key.revoke",
                None,
                Some(key_id.clone()),
                Some(json!({"revoked": true})),
            )?;
            println!("revoked {key_id}");
        }
        AdminCommand::Log { .. } | AdminCommand::Audit { .. } => unreachable!("handled above"),
    }
    Ok(())
}
