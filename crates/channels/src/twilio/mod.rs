//! SMS through the Twilio Messages API: `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`
//! with HTTP basic auth (account SID and auth token) and a form body (`To`, `From` or
//! `MessagingServiceSid`, `Body`). The answer's `sid` is kept as the provider's id.
//!
//! Twilio calls back (`status_callback`, and the number's incoming-message webhook) with a
//! form signed in `X-Twilio-Signature`: [`verify`] checks it, [`inbound`] reads it.

use std::sync::Arc;

use async_trait::async_trait;

use crate::egress::Egress;
use crate::http::{answer, client, endpoint, unreachable};
use crate::{Channel, ConfigError, Outgoing, SendError, part};

#[derive(Debug, Clone, serde::Deserialize)]
pub struct TwilioSettings {
    /// Default `https://api.twilio.com`; `https://` a Twilio host (`api.dublin.ie1.twilio.com`)
    /// or a host `[automation] egress_allow` names.
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
    /// Where Twilio reports delivery (`{public_url}/hooks/twilio/{tenant}`).
    #[serde(default)]
    pub status_callback: Option<String>,
}

fn default_base() -> String {
    "https://api.twilio.com".into()
}

pub struct Twilio {
    settings: TwilioSettings,
    client: reqwest::Client,
}

/// Where Twilio's API may be (`base_url`).
pub const DOCUMENTED_HOSTS: [&str; 2] = ["api.twilio.com", ".twilio.com"];

impl Twilio {
    pub fn new(settings: TwilioSettings, egress: Arc<Egress>) -> Result<Self, ConfigError> {
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
        endpoint(&egress, "base_url", &settings.base_url, &DOCUMENTED_HOSTS)
            .map_err(|m| bad(&m))?;
        Ok(Self {
            settings,
            client: client(&egress),
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
        if let Some(cb) = &s.status_callback {
            form.push(("StatusCallback", cb));
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

/// Twilio's signature of a callback: base64 of HMAC-SHA1, keyed with the auth token, over
/// the full URL Twilio called followed by each POST parameter's name and value, sorted by
/// name.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    use base64::Engine;
    use hmac::Mac;
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    // HMAC takes a key of any length.
    let mut mac = <hmac::Hmac<sha1::Sha1> as Mac>::new_from_slice(auth_token.as_bytes())
        .unwrap_or_else(|_| unreachable!());
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `header` (`X-Twilio-Signature`) is Twilio's signature of the callback.
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], header: &str) -> bool {
    let expected = signature(auth_token, url, params);
    // Compared in constant time.
    expected.len() == header.len()
        && expected
            .bytes()
            .zip(header.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// What a Twilio callback reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A message's status changed (`delivered`, `undelivered`, `failed`, `sent` …).
    Status {
        sid: String,
        status: String,
        error: Option<String>,
    },
    /// A person wrote to the number.
    Message { from: String, body: String },
}

/// Reads a callback's form; `None` if it is neither kind.
pub fn inbound(params: &[(String, String)]) -> Option<Inbound> {
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    if let (Some(sid), Some(status)) = (get("MessageSid"), get("MessageStatus")) {
        let error = get("ErrorCode").map(|c| match get("ErrorMessage") {
            Some(m) => format!("{c}: {m}"),
            None => format!("Twilio error {c}"),
        });
        return Some(Inbound::Status { sid, status, error });
    }
    Some(Inbound::Message {
        from: get("From")?,
        body: get("Body").unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn signatures_match_twilios_published_example() {
        // The example of Twilio's request-validation docs and helper libraries.
        let params = form(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]);
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(
            signature("12345", url, &params),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert!(verify(
            "12345",
            url,
            &params,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(!verify(
            "12346",
            url,
            &params,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        let mut altered = params.clone();
        altered[2].1 = "1235".into();
        assert!(!verify(
            "12345",
            url,
            &altered,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn callbacks_and_keywords() {
        assert_eq!(
            inbound(&form(&[
                ("MessageSid", "SM1"),
                ("MessageStatus", "undelivered"),
                ("ErrorCode", "30003"),
            ])),
            Some(Inbound::Status {
                sid: "SM1".into(),
                status: "undelivered".into(),
                error: Some("Twilio error 30003".into()),
            })
        );
        assert_eq!(
            inbound(&form(&[("From", "+15550100"), ("Body", " stop ")])),
            Some(Inbound::Message {
                from: "+15550100".into(),
                body: " stop ".into()
            })
        );
        assert_eq!(inbound(&form(&[("Body", "hi")])), None);
        assert_eq!(crate::keyword(" stop "), Some(false));
        assert_eq!(crate::keyword("Unsubscribe"), Some(false));
        assert_eq!(crate::keyword("START"), Some(true));
        assert_eq!(crate::keyword("please stop texting"), None);
    }
}
