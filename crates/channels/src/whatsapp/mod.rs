//! WhatsApp through Meta's Cloud API: `POST /{version}/{phone-number-id}/messages` with a
//! bearer token. Inside the 24-hour customer-service window (the message's
//! `session_open` is true) a free-text message is sent; outside it, WhatsApp only
//! delivers approved templates, so the message's `template_name`, `language` and `params`
//! are sent instead. The answer's `messages[0].id` (`wamid…`) is the provider's id.
//!
//! Meta's webhook (`app_secret` signs it in `X-Hub-Signature-256`; `verify_token` answers
//! its subscription check) reports statuses (`sent`, `delivered`, `read`, `failed`) and the
//! messages persons write, which open the 24-hour window: [`verify`], [`inbound`].

use async_trait::async_trait;
use serde_json::{Value, json};

use std::sync::Arc;

use crate::egress::Egress;
use crate::http::{answer, client, endpoint, unreachable};
use crate::{Channel, ConfigError, Outgoing, SendError};

#[derive(Debug, Clone, serde::Deserialize)]
pub struct WhatsAppSettings {
    /// Default `https://graph.facebook.com` (the only documented host; another needs
    /// `[automation] egress_allow` to name it).
    #[serde(default = "default_base")]
    pub base_url: String,
    /// Default `v21.0`.
    #[serde(default = "default_version")]
    pub api_version: String,
    pub phone_number_id: String,
    pub access_token: String,
    /// The app secret that signs Meta's webhook calls (needed to accept them).
    #[serde(default)]
    pub app_secret: Option<String>,
    /// The token Meta's webhook subscription check must present.
    #[serde(default)]
    pub verify_token: Option<String>,
}

fn default_base() -> String {
    "https://graph.facebook.com".into()
}

fn default_version() -> String {
    "v21.0".into()
}

pub struct WhatsApp {
    settings: WhatsAppSettings,
    client: reqwest::Client,
}

/// Where the Cloud API may be (`base_url`).
pub const DOCUMENTED_HOSTS: [&str; 1] = ["graph.facebook.com"];

impl WhatsApp {
    pub fn new(settings: WhatsAppSettings, egress: Arc<Egress>) -> Result<Self, ConfigError> {
        if settings.phone_number_id.is_empty() || settings.access_token.is_empty() {
            return Err(ConfigError {
                provider: "whatsapp",
                message: "phone_number_id and access_token are required".into(),
            });
        }
        endpoint(&egress, "base_url", &settings.base_url, &DOCUMENTED_HOSTS).map_err(|m| {
            ConfigError {
                provider: "whatsapp",
                message: m,
            }
        })?;
        Ok(Self {
            settings,
            client: client(&egress),
        })
    }
}

/// The request body for `m`: free text inside the session window, else the template.
pub fn body(m: &Outgoing) -> Result<Value, SendError> {
    let to: String = m.to.chars().filter(char::is_ascii_digit).collect();
    let text = m.content.get("body").and_then(Value::as_str);
    let open = m.content.get("session_open").and_then(Value::as_bool) == Some(true);
    let template = m.content.get("template_name").and_then(Value::as_str);
    match (open, text, template) {
        (true, Some(text), _) | (_, Some(text), None) => Ok(json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "text",
            "text": {"preview_url": false, "body": text},
        })),
        (_, _, Some(name)) => {
            let language = m
                .content
                .get("language")
                .and_then(Value::as_str)
                .unwrap_or("en_US");
            let params: Vec<Value> = m
                .content
                .get("params")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| json!({"type": "text", "text": p.as_str().map_or_else(|| p.to_string(), str::to_owned)}))
                        .collect()
                })
                .unwrap_or_default();
            let mut template = json!({"name": name, "language": {"code": language}});
            if !params.is_empty() {
                template["components"] = json!([{"type": "body", "parameters": params}]);
            }
            Ok(json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": to,
                "type": "template",
                "template": template,
            }))
        }
        (_, None, None) => Err(SendError::Permanent(
            "the message has neither a body nor a template_name".into(),
        )),
    }
}

#[async_trait]
impl Channel for WhatsApp {
    fn provider(&self) -> &str {
        "whatsapp-cloud"
    }

    async fn send(&self, m: &Outgoing) -> Result<Option<String>, SendError> {
        let s = &self.settings;
        let url = format!(
            "{}/{}/{}/messages",
            s.base_url.trim_end_matches('/'),
            s.api_version,
            s.phone_number_id
        );
        let resp = self
            .client
            .post(url)
            .bearer_auth(&s.access_token)
            .json(&body(m)?)
            .send()
            .await
            .map_err(unreachable)?;
        let v = answer(resp).await?;
        Ok(v["messages"][0]["id"].as_str().map(str::to_owned))
    }
}

/// Whether `header` (`X-Hub-Signature-256: sha256=<hex>`) signs `body` with the app secret.
pub fn verify(app_secret: &str, body: &[u8], header: &str) -> bool {
    use hmac::Mac;
    let Some(hex) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Some(sig) = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    // HMAC takes a key of any length.
    let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(app_secret.as_bytes())
        .unwrap_or_else(|_| unreachable!());
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// One thing a webhook call reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A message's status: `sent`, `delivered`, `read` or `failed`.
    Status {
        id: String,
        status: String,
        error: Option<String>,
    },
    /// A person wrote (`from`: their number's digits; `text`: empty for media).
    Message {
        from: String,
        text: String,
        at: Option<i64>,
    },
}

/// Reads a webhook call's body (`entry[].changes[].value.statuses[]` and `.messages[]`).
pub fn inbound(body: &Value) -> Vec<Inbound> {
    let mut out = Vec::new();
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    for entry in list(&body["entry"]) {
        for change in list(&entry["changes"]) {
            let value = &change["value"];
            for s in list(&value["statuses"]) {
                if let (Some(id), Some(status)) = (s["id"].as_str(), s["status"].as_str()) {
                    let error = s["errors"][0].as_object().map(|e| {
                        let title = e.get("title").and_then(Value::as_str).unwrap_or("error");
                        match e.get("code") {
                            Some(c) => format!("{c}: {title}"),
                            None => title.to_owned(),
                        }
                    });
                    out.push(Inbound::Status {
                        id: id.to_owned(),
                        status: status.to_owned(),
                        error,
                    });
                }
            }
            for m in list(&value["messages"]) {
                if let Some(from) = m["from"].as_str() {
                    out.push(Inbound::Message {
                        from: from.to_owned(),
                        text: m["text"]["body"]
                            .as_str()
                            .or_else(|| m["button"]["text"].as_str())
                            .unwrap_or_default()
                            .to_owned(),
                        at: m["timestamp"].as_str().and_then(|t| t.parse().ok()),
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_signatures_statuses_and_messages() {
        use hmac::Mac;
        let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
        "field": "messages",
        "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": "123"},
            "statuses": [
                {"id": "wamid.A", "status": "delivered", "timestamp": "1780000000", "recipient_id": "15550100000"},
                {"id": "wamid.B", "status": "failed", "timestamp": "1780000001", "recipient_id": "15550100001",
                 "errors": [{"code": 131047, "title": "Re-engagement message"}]}
            ],
            "messages": [{"from": "15550100000", "id": "wamid.C", "timestamp": "1780000002",
                "type": "text", "text": {"body": "STOP"}}]
        }}]}]});
        let raw = serde_json::to_vec(&body).expect("json");
        let mut mac =
            <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(b"app-secret").expect("key");
        mac.update(&raw);
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(verify("app-secret", &raw, &format!("sha256={hex}")));
        assert!(!verify("other-secret", &raw, &format!("sha256={hex}")));
        assert!(!verify("app-secret", b"{}", &format!("sha256={hex}")));
        assert!(!verify("app-secret", &raw, &hex));
        assert!(!verify("app-secret", &raw, "sha256=zz"));
        assert_eq!(
            inbound(&body),
            vec![
                Inbound::Status {
                    id: "wamid.A".into(),
                    status: "delivered".into(),
                    error: None
                },
                Inbound::Status {
                    id: "wamid.B".into(),
                    status: "failed".into(),
                    error: Some("131047: Re-engagement message".into())
                },
                Inbound::Message {
                    from: "15550100000".into(),
                    text: "STOP".into(),
                    at: Some(1_780_000_002)
                },
            ]
        );
        assert!(inbound(&json!({"entry": "nonsense"})).is_empty());
    }
}
