//! SMS through the Twilio Messages API: `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`
//! with HTTP basic auth (account SID and auth token) and a form body (`To`, `From` or
//! `MessagingServiceSid`, `Body`). The answer's `sid` is kept as the provider's id.

use async_trait::async_trait;

use crate::http::{answer, client, unreachable};
use crate::{Channel, ConfigError, Outgoing, SendError, part};

#[derive(Debug, Clone, serde::Deserialize)]
pub struct TwilioSettings {
    /// Default `https://api.twilio.com`.
    #[serde(default = "default_base")]
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: String,
    /// The sending number, or …
    #[serde(default)]
    pub from: Option<String>,
    /// … a messaging service.
    #[serde(default)]
    pub messaging_service_sid: Option<String>,
}

fn default_base() -> String {
    "https://api.twilio.com".into()
}

pub struct Twilio {
    settings: TwilioSettings,
    client: reqwest::Client,
}

impl Twilio {
    pub fn new(settings: TwilioSettings) -> Result<Self, ConfigError> {
        let bad = |m: &str| ConfigError {
            provider: "twilio",
            message: m.into(),
        };
        if settings.account_sid.is_empty() || settings.auth_token.is_empty() {
            return Err(bad("account_sid and auth_token are required"));
        }
        if settings.from.is_none() && settings.messaging_service_sid.is_none() {
            return Err(bad("from or messaging_service_sid is required"));
        }
        Ok(Self {
            settings,
            client: client(),
        })
    }
}

#[async_trait]
impl Channel for Twilio {
    fn provider(&self) -> &str {
        "twilio"
    }

    async fn send(&self, m: &Outgoing) -> Result<Option<String>, SendError> {
        let s = &self.settings;
        let body = part(m, "body")?;
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            s.base_url.trim_end_matches('/'),
            s.account_sid
        );
        let mut form = vec![("To", m.to.as_str()), ("Body", body)];
        match (&s.messaging_service_sid, &s.from) {
            (Some(sid), _) => form.push(("MessagingServiceSid", sid)),
            (None, Some(from)) => form.push(("From", from)),
            (None, None) => {}
        }
        let resp = self
            .client
            .post(url)
            .basic_auth(&s.account_sid, Some(&s.auth_token))
            .header("i-twilio-idempotency-token", &m.key)
            .form(&form)
            .send()
            .await
            .map_err(unreachable)?;
        let v = answer(resp).await?;
        Ok(v["sid"].as_str().map(str::to_owned))
    }
}
