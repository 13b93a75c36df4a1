//! WhatsApp through Meta's Cloud API: `POST /{version}/{phone-number-id}/messages` with a
//! bearer token. Inside the 24-hour customer-service window (the message's
//! `session_open` is true) a free-text message is sent; outside it, WhatsApp only
//! delivers approved templates, so the message's `template_name`, `language` and `params`
//! are sent instead. The answer's `messages[0].id` (`wamid…`) is the provider's id.

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::http::{answer, client, unreachable};
use crate::{Channel, ConfigError, Outgoing, SendError};

#[derive(Debug, Clone, serde::Deserialize)]
pub struct WhatsAppSettings {
    /// Default `https://graph.facebook.com`.
    #[serde(default = "default_base")]
    pub base_url: String,
    /// Default `v21.0`.
    #[serde(default = "default_version")]
    pub api_version: String,
    pub phone_number_id: String,
    pub access_token: String,
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

impl WhatsApp {
    pub fn new(settings: WhatsAppSettings) -> Result<Self, ConfigError> {
        if settings.phone_number_id.is_empty() || settings.access_token.is_empty() {
            return Err(ConfigError {
                provider: "whatsapp",
                message: "phone_number_id and access_token are required".into(),
            });
        }
        Ok(Self {
            settings,
            client: client(),
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
