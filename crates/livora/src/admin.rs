//! `livora admin`: tenants, keys and log checks, run against the data directory.

use anyhow::{Context, bail};
use chrono::{Duration, Utc};
use clap::Subcommand;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use livora_log::EventLog;
use livora_model::{Currency, TenantId};
use livora_store::access::Scope;
use livora_store::accounts::{Membership, TokenPurpose};
use livora_store::audit::{self, AuditLog, NewEntry};
use livora_store::{KeyKind, MetadataStore, NewTenant, Role};
use serde_json::json;

use crate::config::Config;

/// `--kind`: the key kinds, listed by `--help` and checked by clap.
fn key_kind() -> impl TypedValueParser<Value = KeyKind> {
    PossibleValuesParser::new([KeyKind::Write.as_str(), KeyKind::Secret.as_str()])
        .try_map(|s| KeyKind::parse(&s).ok_or("not a key kind"))
}

/// `--role`: every staff role.
fn role() -> impl TypedValueParser<Value = Role> {
    PossibleValuesParser::new(Role::ALL.map(Role::as_str))
        .try_map(|s| Role::parse(&s).ok_or("not a role"))
}

/// `--scopes`: every key scope.
fn scope() -> impl TypedValueParser<Value = Scope> {
    PossibleValuesParser::new(Scope::ALL.map(Scope::as_str))
        .try_map(|s| Scope::parse(&s).ok_or("not a scope"))
}

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
    /// Staff users: invitations, password resets, sessions.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Encryption keys of personal data.
    Encryption {
        #[command(subcommand)]
        command: EncryptionCommand,
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
    /// Check the hash chain (keyed entries under the audit key, which needs the master key
    /// or KMS the server has); prints the head as `<seq>:<hash>`: keep a copy elsewhere and
    /// give it back with `--head` to detect entries removed from the end.
    Verify {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// A head printed by an earlier `verify` (`<seq>:<hash>`): the log must still hold
        /// that entry with that hash.
        #[arg(long, value_name = "SEQ:HASH", value_parser = parse_head)]
        head: Option<audit::Head>,
    },
    /// Key an existing unkeyed log once (a log from before keying, or encryption at rest
    /// turned on for an existing data directory): makes `<data_dir>/audit.key` under the
    /// master key or KMS and appends an `audit.keyed` entry. The server keys an empty log by
    /// itself, but never a non-empty one: a deleted key must not pass for an upgrade.
    Key {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print every entry, as JSON lines or (`--csv`) as CSV for auditors.
    Export {
        /// CSV for auditors instead of JSON lines.
        #[arg(long)]
        csv: bool,
    },
}

#[derive(Subcommand)]
pub enum TenantCommand {
    /// Create a tenant with a write key and a secret key.
    Create {
        /// The tenant's display name.
        #[arg(long)]
        name: String,
        /// IANA time zone for calendar periods.
        #[arg(long, default_value = "UTC")]
        time_zone: String,
        /// ISO 4217 currency code.
        #[arg(long, default_value = "USD")]
        currency: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List tenants.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Keep a tenant's events for this many days (older ones are removed), or for ever.
    Retention {
        /// The tenant's id.
        #[arg(long)]
        tenant: String,
        /// Days to keep events (older ones are removed).
        #[arg(long, conflicts_with = "forever")]
        days: Option<u32>,
        /// Keep events for ever.
        #[arg(long)]
        forever: bool,
    },
}

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Create a key; its secret is printed once.
    Create {
        /// The tenant's id.
        #[arg(long)]
        tenant: String,
        /// `write` (scope ingest) or `secret` (scope read unless `--scopes` says otherwise).
        #[arg(long, value_parser = key_kind())]
        kind: KeyKind,
        /// Scopes of a secret key, comma-separated, e.g. `read,admin`.
        #[arg(long, value_delimiter = ',', value_parser = scope())]
        scopes: Option<Vec<Scope>>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List a tenant's keys (never their secrets).
    List {
        /// The tenant's id.
        #[arg(long)]
        tenant: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its id.
    Revoke {
        /// The key's id (`livora admin key list`), not its secret.
        key_id: String,
    },
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Invite a person into a tenant with a role (creating the account if needed); prints
    /// the invitation token, accepted with `POST /api/v1/auth/accept-invitation`.
    Invite {
        /// The staff member's email address.
        #[arg(long)]
        email: String,
        /// The tenant's id.
        #[arg(long)]
        tenant: String,
        /// The member's role in the tenant.
        #[arg(long, value_parser = role())]
        role: Role,
        /// The person's name, used when the account is new.
        #[arg(long, default_value = "")]
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a password reset token, used with `POST /api/v1/auth/reset-password`.
    Reset {
        /// The staff member's email address.
        #[arg(long)]
        email: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List users with their roles (of one tenant with `--tenant`).
    List {
        /// Only the members of this tenant (its id).
        #[arg(long)]
        tenant: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// End every session of a user.
    RevokeSessions {
        /// The staff member's email address.
        #[arg(long)]
        email: String,
    },
}

#[derive(Subcommand)]
pub enum EncryptionCommand {
    /// Rewrap every tenant key under the current master key. Run it after pointing
    /// `LIVORA_MASTER_KEY` (or `privacy.master_key_file`) at the new key while the old one is
    /// still listed as previous; then the old one can be removed. Servers keep running.
    RotateMaster,
    /// Add a tenant key version: subject keys created from now on are wrapped by it.
    RotateTenant {
        /// The tenant's id.
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Subcommand)]
pub enum LogCommand {
    /// Read every record, checking checksums and offsets.
    Verify {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn parse_head(s: &str) -> Result<audit::Head, String> {
    audit::Head::parse(s).ok_or_else(|| {
        "a head is <seq>:<hash> (64 hex digits), as `livora admin audit verify` prints it".into()
    })
}

/// Opens the audit log keyed as the server keys it: under the audit key wrapped by the
/// master key or KMS (`<data_dir>/audit.key`), or unkeyed when encryption at rest is off.
///
/// A key is made here only for an empty log, or at a first start with encryption: `fresh`,
/// when the server has just made the local master key or nothing is wrapped by a master key
/// yet ([`livora_store::crypto::master_key_used`]); a log the CLI wrote before then, without
/// the server's key settings, is adopted. A non-empty log without a key is otherwise
/// refused: it is either from before keying, which `livora admin audit key` adopts once on
/// the operator's word, or its key was deleted and the log rewritten without it, which must
/// not pass unnoticed.
pub async fn open_audit_log(
    config: &Config,
    kms: Option<&dyn livora_store::crypto::Kms>,
    fresh: bool,
) -> anyhow::Result<AuditLog> {
    let path = config.audit_path();
    let broken = "the audit log is broken; see `livora admin audit verify`";
    let Some(kms) = kms else {
        return AuditLog::open(&path).context(broken);
    };
    let key_path = config.data_dir.join("audit.key");
    if let Some(key) = livora_store::crypto::read_audit_key(kms, &key_path)
        .await
        .context("cannot read the audit key (<data_dir>/audit.key)")?
    {
        return AuditLog::open_keyed(&path, Some(key), false).context(broken);
    }
    let (head, _) = audit::verify(&path).context(
        "the audit key (<data_dir>/audit.key) is missing and the audit log does not verify without it",
    )?;
    if head.entries > 0 && !fresh {
        bail!(
            "the audit log ({}) has {} unkeyed entries and there is no audit key \
             (<data_dir>/audit.key). If the log was written before keying (an upgrade, or \
             encryption at rest turned on for an existing data directory), run \
             `livora admin audit key` once to key it from here on. If the key was deleted, \
             the log may have been rewritten without it: keep a copy and compare it with a \
             head kept elsewhere (`livora admin audit verify --head`).",
            path.display(),
            head.entries
        );
    }
    let key = livora_store::crypto::make_audit_key(kms, &key_path)
        .await
        .context("cannot make the audit key (<data_dir>/audit.key)")?;
    AuditLog::open_keyed(&path, Some(key), true).context(broken)
}

/// `livora admin audit key`: keys an unkeyed, non-empty log once, on the operator's word
/// (an upgrade from before keying, or encryption at rest turned on later). The log must
/// verify as unkeyed and there must be no key yet; the `audit.keyed` entry it appends records
/// how many unkeyed entries came before and that the CLI keyed it.
async fn key_audit_log(
    config: &Config,
    kms: Option<&dyn livora_store::crypto::Kms>,
) -> anyhow::Result<serde_json::Value> {
    let Some(kms) = kms else {
        bail!(
            "keying the audit log needs the master key or KMS the server has (encryption at rest on, and its `[privacy]` settings)"
        );
    };
    let key_path = config.data_dir.join("audit.key");
    if key_path.exists() {
        bail!("the audit log is keyed already (<data_dir>/audit.key exists)");
    }
    let path = config.audit_path();
    let (head, _) = audit::verify(&path)
        .context("the audit log does not verify as an unkeyed log; it is not keyed")?;
    let key = livora_store::crypto::make_audit_key(kms, &key_path)
        .await
        .context("cannot make the audit key (<data_dir>/audit.key)")?;
    let log = AuditLog::open_keyed(&path, Some(key), true)
        .context("the audit log is broken; see `livora admin audit verify`")?;
    let (head_now, _) = log.read_verified()?;
    Ok(json!({
        "unkeyed_entries": head.entries,
        "entries": head_now.entries,
        "head": head_now.hash,
    }))
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
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    // The audit key's master key, never made here: a CLI run without the server's key
    // settings must not make a `<data_dir>/master.key` (and an audit key under it that the
    // server could not open); without one, a keyed log is refused as needing the key.
    let kms = if config.local_master_key_missing(&env) {
        None
    } else {
        config.encryption(&env).await?.map(|(kms, _)| kms)
    };
    if let AdminCommand::Audit {
        command: AuditCommand::Key { json },
    } = command
    {
        let done = key_audit_log(config, kms.as_deref()).await?;
        print(json, done.clone(), || {
            format!(
                "audit log keyed: {} unkeyed entries before, head {}:{}",
                done["unkeyed_entries"],
                done["entries"],
                done["head"].as_str().unwrap_or("")
            )
        });
        return Ok(());
    }
    if let AdminCommand::Audit { command } = command {
        // Read only: nothing is made (no log, no key) by reading.
        let key_path = config.data_dir.join("audit.key");
        let key = match (kms.as_deref(), key_path.exists()) {
            (Some(kms), true) => livora_store::crypto::read_audit_key(kms, &key_path)
                .await
                .context("cannot read the audit key (<data_dir>/audit.key)")?,
            (None, true) => bail!(
                "the audit log is keyed (<data_dir>/audit.key): run with the master key or KMS settings the server has"
            ),
            (_, false) => None,
        };
        let (head, entries) = audit::verify_with(&config.audit_path(), key.as_ref(), false)
            .context("the audit log is broken")?;
        let keyed = key.is_some();
        match command {
            AuditCommand::Verify {
                json,
                head: exported,
            } => {
                if let Some(exported) = &exported {
                    audit::check_head(&entries, exported).context("the audit log is broken")?;
                }
                print(
                    json,
                    json!({"entries": head.entries, "head": head.hash, "keyed": keyed,
                        "checked_head": exported.map(|h| h.to_string())}),
                    || {
                        format!(
                            "audit log ok: {} entries ({}), head {head}",
                            head.entries,
                            if keyed { "keyed" } else { "unkeyed" }
                        )
                    },
                )
            }
            AuditCommand::Export { csv: false } => {
                for e in &entries {
                    println!("{}", serde_json::to_string(e)?);
                }
            }
            AuditCommand::Export { csv: true } => {
                audit::write_csv(std::io::stdout(), &entries)?;
            }
            AuditCommand::Key { .. } => unreachable!("handled above"),
        }
        return Ok(());
    }
    let store = crate::open_store(config).await?;
    let audit = open_audit_log(config, kms.as_deref(), false).await?;
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
            command:
                KeyCommand::Create {
                    tenant,
                    kind,
                    scopes,
                    json,
                },
        } => {
            let scopes = match (kind, scopes) {
                (_, None) => None,
                (KeyKind::Write, Some(_)) => bail!("a write key has the ingest scope only"),
                (KeyKind::Secret, Some(mut s)) => {
                    s.sort();
                    s.dedup();
                    Some(s)
                }
            };
            let key = match scopes {
                Some(s) => store.create_key_scoped(tenant_id(&tenant)?, &s).await?,
                None => store.create_key(tenant_id(&tenant)?, kind).await?,
            };
            record(
                "key.create",
                Some(tenant.clone()),
                Some(key.key.id.clone()),
                Some(json!({"kind": key.key.kind.as_str(), "scopes": key.key.scopes})),
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
        AdminCommand::Tenant {
            command:
                TenantCommand::Retention {
                    tenant,
                    days,
                    forever,
                },
        } => {
            if days.is_none() && !forever {
                bail!("give --days N or --forever");
            }
            let before = store.set_retention_days(tenant_id(&tenant)?, days).await?;
            let e = NewEntry {
                actor: actor.clone(),
                action: "tenant.retention".into(),
                tenant: Some(tenant.clone()),
                target: Some(tenant.clone()),
                from: Some("cli".into()),
                before: Some(json!({"retention_days": before})),
                after: Some(json!({"retention_days": days})),
            };
            audit.record(e)?;
            match days {
                Some(d) => println!("tenant {tenant} keeps events for {d} days"),
                None => println!("tenant {tenant} keeps events for ever"),
            }
        }
        AdminCommand::User { command } => user(store.as_ref(), command, &record).await?,
        AdminCommand::Encryption { command } => {
            let env: std::collections::HashMap<String, String> = std::env::vars().collect();
            let Some((kms, _)) = config.encryption(&env).await? else {
                bail!("encryption at rest is off ([privacy] encryption = false)");
            };
            match command {
                EncryptionCommand::RotateMaster => {
                    let n = livora_store::crypto::rewrap_tenant_keys(store.as_ref(), kms.as_ref())
                        .await?;
                    livora_store::crypto::rewrap_audit_key(
                        kms.as_ref(),
                        &config.data_dir.join("audit.key"),
                    )
                    .await?;
                    record(
                        "encryption.rotate_master",
                        None,
                        Some(kms.key_id()),
                        Some(json!({"tenant_keys_rewrapped": n})),
                    )?;
                    println!("rewrapped {n} tenant keys under {}", kms.key_id());
                }
                EncryptionCommand::RotateTenant { tenant } => {
                    let t = tenant_id(&tenant)?;
                    let v =
                        livora_store::crypto::rotate_tenant_key(store.as_ref(), kms.as_ref(), t)
                            .await?;
                    record(
                        "encryption.rotate_tenant",
                        Some(tenant.clone()),
                        Some(format!("version {v}")),
                        None,
                    )?;
                    println!("tenant {tenant} now wraps new keys with version {v}");
                }
            }
        }
        AdminCommand::Log { .. } | AdminCommand::Audit { .. } => unreachable!("handled above"),
    }
    Ok(())
}

/// How the admin commands append to the audit log.
type Record<'a> = dyn Fn(
        &str,
        Option<String>,
        Option<String>,
        Option<serde_json::Value>,
    ) -> Result<audit::Entry, audit::AuditError>
    + 'a;

async fn user(
    store: &dyn MetadataStore,
    command: UserCommand,
    record: &Record<'_>,
) -> anyhow::Result<()> {
    let find = |email: String| async move {
        store
            .credentials(&email)
            .await?
            .map(|c| c.user)
            .with_context(|| format!("no user with email {email}"))
    };
    match command {
        UserCommand::Invite {
            email,
            tenant,
            role,
            name,
            json,
        } => {
            let tenant = tenant_id(&tenant)?;
            if store.tenant(tenant).await?.is_none() {
                bail!("no tenant {tenant}");
            }
            // The invitation's own account: accepted with the password of an existing account
            // of the address, that account joins instead (see `AccountStore`).
            let user = store.create_invited_user(&email, &name, tenant).await?;
            let expires_at = Utc::now() + Duration::hours(72);
            let token = store
                .create_token(
                    &user.id,
                    TokenPurpose::Invite,
                    Some(Membership {
                        tenant_id: tenant,
                        role,
                    }),
                    expires_at,
                    None,
                )
                .await?;
            record(
                "member.invite",
                Some(tenant.to_string()),
                Some(user.id.clone()),
                Some(json!({"email": user.email, "role": role})),
            )?;
            print(
                json,
                json!({"user": user, "role": role, "invitation_token": token, "expires_at": expires_at}),
                || {
                    format!(
                        "user_id:          {}\ninvitation_token: {token}\n(valid until {expires_at}; accept with POST /api/v1/auth/accept-invitation)",
                        user.id
                    )
                },
            );
        }
        UserCommand::Reset { email, json } => {
            let user = find(email).await?;
            let expires_at = Utc::now() + Duration::hours(2);
            let token = store
                .create_token(&user.id, TokenPurpose::Reset, None, expires_at, None)
                .await?;
            record("auth.reset_issued", None, Some(user.id.clone()), None)?;
            print(
                json,
                json!({"user_id": user.id, "reset_token": token, "expires_at": expires_at}),
                || {
                    format!(
                        "reset_token: {token}\n(valid until {expires_at}; use with POST /api/v1/auth/reset-password)"
                    )
                },
            );
        }
        UserCommand::List { tenant, json } => {
            let tenants = match tenant {
                Some(t) => vec![tenant_id(&t)?],
                None => store.tenants().await?.into_iter().map(|t| t.id).collect(),
            };
            let mut rows = Vec::new();
            for t in tenants {
                for m in store.members(t).await? {
                    rows.push(json!({"tenant_id": t, "user": m.user, "role": m.role}));
                }
            }
            print(json, json!(rows), || {
                rows.iter()
                    .map(|r| {
                        format!(
                            "{}  {}  {}  {}",
                            r["tenant_id"].as_str().unwrap_or(""),
                            r["user"]["id"].as_str().unwrap_or(""),
                            r["user"]["email"].as_str().unwrap_or(""),
                            r["role"].as_str().unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        UserCommand::RevokeSessions { email } => {
            let user = find(email).await?;
            let n = store.revoke_user_sessions(&user.id).await?;
            record(
                "auth.sessions_revoked",
                None,
                Some(user.id.clone()),
                Some(json!({"sessions": n})),
            )?;
            println!("revoked {n} sessions of {}", user.id);
        }
    }
    Ok(())
}
