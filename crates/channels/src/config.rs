//! A tenant's channel configuration: which provider serves each channel (and which one to
//! fail over to), with its settings and credentials. Stored sealed with the tenant's key
//! when encryption at rest is on; credentials are never shown again ([`redact`]).
//!
//! ```json
//! {"provider": "smtp", "settings": {"host": "smtp.example.com", "port": 587,
//!   "username": "apikey", "password": "…", "from": "Shop <hello@shop.example>"},
//!  "secondary": {"provider": "smtp", "settings": {…}}, "per_second": 50}
//! ```

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use livora_automation::outbox::{Route, Routes};
use livora_model::TenantId;
use livora_store::MetadataStore;
use livora_store::automation::ChannelRecord;
use livora_store::crypto::Keyring;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::egress::Egress;
use crate::{Channel, ConfigError};

/// One provider and its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub provider: String,
    pub settings: Value,
}

/// A channel's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    pub provider: String,
    pub settings: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary: Option<ProviderConfig>,
    /// At most this many messages a second through the channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_second: Option<u32>,
}

/// The providers that can serve each channel (those built into this binary).
pub fn providers_of(channel: &str) -> &'static [&'static str] {
    match channel {
        "email" => &["smtp"],
        "sms" => &["twilio"],
        "whatsapp" => &["whatsapp-cloud"],
        "push" => &["fcm"],
        "webhook" => &["webhook"],
        _ => &[],
    }
}

/// Setting names that hold credentials: stored sealed, never shown.
const SECRETS: [&str; 7] = [
    "password",
    "auth_token",
    "access_token",
    "private_key",
    "secret",
    "app_secret",
    "verify_token",
];

fn bad(provider: &str, message: String) -> ConfigError {
    ConfigError {
        provider: match provider {
            "smtp" => "smtp",
            "twilio" => "twilio",
            "whatsapp-cloud" => "whatsapp-cloud",
            "fcm" => "fcm",
            "webhook" => "webhook",
            _ => "channel",
        },
        message,
    }
}

fn settings<T: serde::de::DeserializeOwned>(provider: &str, v: &Value) -> Result<T, ConfigError> {
    serde_json::from_value(v.clone()).map_err(|e| bad(provider, format!("settings: {e}")))
}

/// Builds a provider from its configuration; it connects only where `egress` allows.
pub fn build(p: &ProviderConfig, egress: &Arc<Egress>) -> Result<Arc<dyn Channel>, ConfigError> {
    let s = &p.settings;
    #[cfg(not(any(
        feature = "email-smtp",
        feature = "sms-twilio",
        feature = "whatsapp-cloud",
        feature = "push-fcm",
        feature = "webhook"
    )))]
    let _ = egress;
    match p.provider.as_str() {
        #[cfg(feature = "email-smtp")]
        "smtp" => Ok(Arc::new(crate::smtp::Smtp::new(
            settings("smtp", s)?,
            egress.clone(),
        )?)),
        #[cfg(feature = "sms-twilio")]
        "twilio" => Ok(Arc::new(crate::twilio::Twilio::new(
            settings("twilio", s)?,
            egress.clone(),
        )?)),
        #[cfg(feature = "whatsapp-cloud")]
        "whatsapp-cloud" => Ok(Arc::new(crate::whatsapp::WhatsApp::new(
            settings("whatsapp-cloud", s)?,
            egress.clone(),
        )?)),
        #[cfg(feature = "push-fcm")]
        "fcm" => Ok(Arc::new(crate::fcm::Fcm::new(
            settings("fcm", s)?,
            egress.clone(),
        )?)),
        #[cfg(feature = "webhook")]
        "webhook" => {
            let secret = s["secret"]
                .as_str()
                .filter(|x| x.len() >= 16)
                .ok_or_else(|| {
                    bad(
                        "webhook",
                        "settings.secret: the signing secret, at least 16 characters".into(),
                    )
                })?;
            let hook = crate::webhook::Webhook::with_egress(secret.as_bytes(), egress.clone());
            match s.get("url") {
                None | Some(Value::Null) => Ok(Arc::new(hook)),
                Some(Value::String(url)) => Ok(Arc::new(hook.to_url(url)?)),
                Some(_) => Err(bad("webhook", "settings.url: a URL".into())),
            }
        }
        other => Err(bad(
            other,
            format!("unknown provider {other:?} (or not built into this binary)"),
        )),
    }
}

impl ChannelConfig {
    /// Checks that the providers fit `channel` and can be built; returns the route.
    pub fn route(&self, channel: &str, egress: &Arc<Egress>) -> Result<Route, ConfigError> {
        let allowed = providers_of(channel);
        let check = |p: &str| {
            if allowed.contains(&p) {
                Ok(())
            } else {
                Err(bad(
                    p,
                    format!(
                        "{p:?} cannot serve {channel}; one of: {}",
                        allowed.join(", ")
                    ),
                ))
            }
        };
        check(&self.provider)?;
        let primary = build(
            &ProviderConfig {
                provider: self.provider.clone(),
                settings: self.settings.clone(),
            },
            egress,
        )?;
        let secondary = match &self.secondary {
            Some(s) => {
                check(&s.provider)?;
                Some(build(s, egress)?)
            }
            None => None,
        };
        if self.per_second == Some(0) {
            return Err(bad(&self.provider, "per_second must be above 0".into()));
        }
        Ok(Route {
            primary,
            secondary,
            per_second: self.per_second,
        })
    }
}

fn redact_settings(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    if SECRETS.contains(&k.as_str()) {
                        (k.clone(), json!("(set)"))
                    } else {
                        (k.clone(), v.clone())
                    }
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The configuration as it may be shown: credentials replaced by `"(set)"`.
pub fn redact(c: &ChannelConfig) -> Value {
    let mut v = json!({"provider": c.provider, "settings": redact_settings(&c.settings)});
    if let Some(s) = &c.secondary {
        v["secondary"] = json!({"provider": s.provider, "settings": redact_settings(&s.settings)});
    }
    if let Some(n) = c.per_second {
        v["per_second"] = json!(n);
    }
    v
}

/// Why a stored configuration cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error(transparent)]
    Store(#[from] livora_store::Error),
    #[error("stored channel {0:?} is unreadable: {1}")]
    Corrupt(String, String),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Every tenant's channels, read from the store and kept up to date by [`Directory::put`]:
/// the sender's [`Routes`].
pub struct Directory {
    store: Arc<dyn MetadataStore>,
    keyring: Option<Arc<Keyring>>,
    egress: Arc<Egress>,
    routes: RwLock<HashMap<(TenantId, String), (ChannelConfig, Route)>>,
}

fn label(channel: &str) -> String {
    format!("channel:{channel}")
}

impl Directory {
    /// The directory; its providers connect only where `egress` allows.
    pub fn new(
        store: Arc<dyn MetadataStore>,
        keyring: Option<Arc<Keyring>>,
        egress: Arc<Egress>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            keyring,
            egress,
            routes: RwLock::new(HashMap::new()),
        })
    }

    async fn open(
        &self,
        tenant: TenantId,
        r: &ChannelRecord,
    ) -> Result<ChannelConfig, DirectoryError> {
        let corrupt = |e: String| DirectoryError::Corrupt(r.channel.clone(), e);
        let plain = match (&self.keyring, r.sealed) {
            (Some(k), true) => k
                .open_blob(tenant, &label(&r.channel), &r.config)
                .await
                .map_err(|e| corrupt(e.to_string()))?,
            (None, true) => return Err(corrupt("sealed, and encryption at rest is off".into())),
            (_, false) => r.config.clone(),
        };
        serde_json::from_slice(&plain).map_err(|e| corrupt(e.to_string()))
    }

    /// Reads every tenant's channels (at start). A channel that cannot be read or built
    /// is left out, with a warning: its messages wait in the outbox as "no provider".
    pub async fn load(&self) -> Result<(), DirectoryError> {
        let mut all = HashMap::new();
        for (tenant, r) in self.store.all_channels().await? {
            let built = match self.open(tenant, &r).await {
                Ok(c) => c
                    .route(&r.channel, &self.egress)
                    .map(|route| (c, route))
                    .map_err(DirectoryError::from),
                Err(e) => Err(e),
            };
            match built {
                Ok(v) => {
                    all.insert((tenant, r.channel.clone()), v);
                }
                Err(e) => {
                    tracing::warn!(%tenant, channel = %r.channel, error = %e, "channel left out")
                }
            }
        }
        *self.routes.write().unwrap_or_else(|e| e.into_inner()) = all;
        Ok(())
    }

    /// Checks, stores (sealed) and installs a channel's configuration.
    pub async fn put(
        &self,
        tenant: TenantId,
        channel: &str,
        config: ChannelConfig,
        by: &str,
    ) -> Result<(), DirectoryError> {
        let route = config.route(channel, &self.egress)?;
        let plain = serde_json::to_vec(&config)
            .map_err(|e| DirectoryError::Corrupt(channel.into(), e.to_string()))?;
        let (bytes, sealed) = match &self.keyring {
            Some(k) => (k.seal_blob(tenant, &label(channel), &plain).await?, true),
            None => (plain, false),
        };
        self.store
            .put_channel(
                tenant,
                &ChannelRecord {
                    channel: channel.to_owned(),
                    config: bytes,
                    sealed,
                    updated_by: by.to_owned(),
                    updated_at: chrono::Utc::now(),
                },
            )
            .await?;
        self.routes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert((tenant, channel.to_owned()), (config, route));
        Ok(())
    }

    /// The settings of a tenant's providers named `provider` on `channel` (primary and
    /// secondary): what checks the provider's callbacks.
    pub fn settings_of(&self, tenant: TenantId, channel: &str, provider: &str) -> Vec<Value> {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        let Some((c, _)) = routes.get(&(tenant, channel.to_owned())) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if c.provider == provider {
            out.push(c.settings.clone());
        }
        if let Some(s) = c.secondary.as_ref().filter(|s| s.provider == provider) {
            out.push(s.settings.clone());
        }
        out
    }

    pub async fn delete(&self, tenant: TenantId, channel: &str) -> Result<bool, DirectoryError> {
        let gone = self.store.delete_channel(tenant, channel).await?;
        self.routes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(tenant, channel.to_owned()));
        Ok(gone)
    }

    /// A tenant's channels, credentials redacted.
    pub fn list(&self, tenant: TenantId) -> Vec<(String, Value)> {
        let all = self.routes.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(String, Value)> = all
            .iter()
            .filter(|((t, _), _)| *t == tenant)
            .map(|((_, ch), (c, _))| (ch.clone(), redact(c)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

impl Routes for Directory {
    fn route(&self, tenant: TenantId, channel: &str) -> Option<Route> {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(tenant, channel.to_owned()))
            .map(|(_, r)| r.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_must_fit_the_channel_and_credentials_are_redacted() {
        let c: ChannelConfig = serde_json::from_value(json!({
            "provider": "twilio",
            "settings": {"account_sid": "AC1", "auth_token": "t0ps3cret", "from": "+1"},
            "per_second": 10
        }))
        .expect("config");
        let open = Arc::new(Egress::default());
        assert!(c.route("sms", &open).is_ok());
        assert!(c.route("email", &open).is_err());
        let shown = redact(&c).to_string();
        assert!(!shown.contains("t0ps3cret"), "{shown}");
        assert!(shown.contains("(set)") && shown.contains("AC1"));
        let weak: ChannelConfig =
            serde_json::from_value(json!({"provider": "webhook", "settings": {"secret": "short"}}))
                .expect("config");
        assert!(weak.route("webhook", &open).is_err());
    }

    #[test]
    fn provider_endpoints_are_their_documented_hosts_unless_the_allowlist_names_one() {
        let twilio = |base: &str| -> ChannelConfig {
            serde_json::from_value(json!({
                "provider": "twilio",
                "settings": {"base_url": base, "account_sid": "AC1", "auth_token": "t", "from": "+1"}
            }))
            .expect("config")
        };
        let open = Arc::new(Egress::default());
        for refused in [
            "http://127.0.0.1:8080",
            "http://169.254.169.254/latest/meta-data",
            "https://attacker.example",
            "http://api.twilio.com",
            "https://api.twilio.com.attacker.example",
        ] {
            let e = twilio(refused).route("sms", &open).err();
            assert!(
                e.is_some_and(|e| e.message.contains("base_url")),
                "{refused}"
            );
        }
        for fine in [
            "https://api.twilio.com",
            "https://api.dublin.ie1.twilio.com",
        ] {
            assert!(twilio(fine).route("sms", &open).is_ok(), "{fine}");
        }
        let internal = Arc::new(Egress::allowing(["127.0.0.1", "relay.internal"]).expect("list"));
        assert!(
            twilio("http://127.0.0.1:8080")
                .route("sms", &internal)
                .is_ok()
        );
        assert!(
            twilio("http://relay.internal")
                .route("sms", &internal)
                .is_ok()
        );
        assert!(twilio("http://127.0.0.2").route("sms", &internal).is_err());
        let whatsapp: ChannelConfig = serde_json::from_value(json!({"provider": "whatsapp-cloud",
            "settings": {"base_url": "http://10.0.0.1", "phone_number_id": "1", "access_token": "t"}}))
        .expect("config");
        assert!(whatsapp.route("whatsapp", &open).is_err());
        // A webhook's own URL (a failover target) is checked the same way.
        let hook = |url: &str| -> ChannelConfig {
            serde_json::from_value(json!({"provider": "webhook",
                "settings": {"secret": "0123456789abcdef", "url": url}}))
            .expect("config")
        };
        assert!(
            hook("http://169.254.169.254/")
                .route("webhook", &open)
                .is_err()
        );
        assert!(
            hook("https://backup.example/hook")
                .route("webhook", &open)
                .is_ok()
        );
    }
}
