//! Push through Firebase Cloud Messaging HTTP v1:
//! `POST /v1/projects/{project_id}/messages:send` with an OAuth 2 access token. The token
//! comes from the service account: a JWT signed with its private key (RS256) is exchanged at
//! its `token_uri` (the JWT-bearer grant), and kept until a minute before it expires.
//! The message goes to the person's registration token (`to`) with the rendered `subject`
//! as the notification title and `body` as its text. `404 UNREGISTERED` (the app was
//! removed) is final; 429 and 5xx are retried.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use tokio::sync::Mutex;

use std::sync::Arc;

use crate::egress::Egress;
use crate::http::{answer, client, endpoint, unreachable};
use crate::{Channel, ConfigError, Outgoing, SendError, part};

#[derive(Debug, Clone, serde::Deserialize)]
pub struct FcmSettings {
    /// Default `https://fcm.googleapis.com` (the only documented host; another needs
    /// `[automation] egress_allow` to name it).
    #[serde(default = "default_base")]
    pub base_url: String,
    pub project_id: String,
    /// From the service-account key file.
    pub client_email: String,
    pub private_key: String,
    /// Default `https://oauth2.googleapis.com/token` (likewise).
    #[serde(default = "default_token_uri")]
    pub token_uri: String,
}

fn default_base() -> String {
    "https://fcm.googleapis.com".into()
}

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".into()
}

pub struct Fcm {
    settings: FcmSettings,
    key: jsonwebtoken::EncodingKey,
    client: reqwest::Client,
    token: Mutex<Option<(String, DateTime<Utc>)>>,
}

impl Fcm {
    pub fn new(settings: FcmSettings, egress: Arc<Egress>) -> Result<Self, ConfigError> {
        let bad = |message: String| ConfigError {
            provider: "fcm",
            message,
        };
        endpoint(
            &egress,
            "base_url",
            &settings.base_url,
            &["fcm.googleapis.com"],
        )
        .map_err(bad)?;
        endpoint(
            &egress,
            "token_uri",
            &settings.token_uri,
            &["oauth2.googleapis.com"],
        )
        .map_err(bad)?;
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(settings.private_key.as_bytes())
            .map_err(|e| ConfigError {
                provider: "fcm",
                message: format!("private_key is not an RSA key in PEM: {e}"),
            })?;
        Ok(Self {
            settings,
            key,
            client: client(&egress),
            token: Mutex::new(None),
        })
    }

    async fn access_token(&self) -> Result<String, SendError> {
        let mut cached = self.token.lock().await;
        let now = Utc::now();
        if let Some((t, until)) = cached.as_ref()
            && *until > now
        {
            return Ok(t.clone());
        }
        let s = &self.settings;
        let claims = json!({
            "iss": s.client_email,
            "scope": "https://www.googleapis.com/auth/firebase.messaging",
            "aud": s.token_uri,
            "iat": now.timestamp(),
            "exp": (now + Duration::minutes(60)).timestamp(),
        });
        let jwt = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &self.key,
        )
        .map_err(|e| SendError::Permanent(format!("signing the token request: {e}")))?;
        let resp = self
            .client
            .post(&s.token_uri)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", jwt.as_str()),
            ])
            .send()
            .await
            .map_err(unreachable)?;
        let v = answer(resp).await.map_err(|e| match e {
            SendError::Transient(m) => SendError::Transient(format!("token: {m}")),
            SendError::Permanent(m) => SendError::Permanent(format!("token: {m}")),
        })?;
        let token = v["access_token"]
            .as_str()
            .ok_or_else(|| SendError::Transient("the token answer has no access_token".into()))?
            .to_owned();
        let life = v["expires_in"].as_i64().unwrap_or(3600);
        *cached = Some((token.clone(), now + Duration::seconds(life - 60)));
        Ok(token)
    }
}

#[async_trait]
impl Channel for Fcm {
    fn provider(&self) -> &str {
        "fcm"
    }

    async fn send(&self, m: &Outgoing) -> Result<Option<String>, SendError> {
        let body = part(m, "body")?;
        let title = m
            .content
            .get("subject")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let token = self.access_token().await?;
        let url = format!(
            "{}/v1/projects/{}/messages:send",
            self.settings.base_url.trim_end_matches('/'),
            self.settings.project_id
        );
        let resp = self
            .client
            .post(url)
            .bearer_auth(token)
            .json(&json!({"message": {
                "token": m.to,
                "notification": {"title": title, "body": body},
                "data": {"livora_key": m.key},
            }}))
            .send()
            .await
            .map_err(unreachable)?;
        let v = answer(resp).await?;
        Ok(v["name"].as_str().map(str::to_owned))
    }
}
