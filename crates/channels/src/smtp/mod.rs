//! Email over SMTP (lettre, on tokio): plain, STARTTLS or TLS, with optional credentials.
//! A message has the rendered `subject` and `body` (plain text), and `html` when the
//! template has one (then both parts go, as multipart/alternative). Its `Message-ID` and an
//! `X-Livora-Key` header carry the idempotency key. 4xx replies are retried, 5xx are not.

use async_trait::async_trait;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::{Channel, ConfigError, Outgoing, SendError, part};

#[derive(Debug, Clone, serde::Deserialize)]
pub struct SmtpSettings {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// `none`, `starttls` (default) or `tls`.
    #[serde(default = "default_security")]
    pub security: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// The sender, e.g. `Shop <hello@shop.example>`.
    pub from: String,
}

fn default_port() -> u16 {
    587
}

fn default_security() -> String {
    "starttls".into()
}

pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Smtp {
    pub fn new(s: SmtpSettings) -> Result<Self, ConfigError> {
        let bad = |m: String| ConfigError {
            provider: "smtp",
            message: m,
        };
        let from: Mailbox = s
            .from
            .parse()
            .map_err(|e| bad(format!("from {:?}: {e}", s.from)))?;
        let builder = match s.security.as_str() {
            "none" => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host),
            "starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&s.host)
                .map_err(|e| bad(e.to_string()))?,
            "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&s.host)
                .map_err(|e| bad(e.to_string()))?,
            other => {
                return Err(bad(format!(
                    "security {other:?}: one of none, starttls, tls"
                )));
            }
        };
        let mut builder = builder
            .port(s.port)
            .timeout(Some(std::time::Duration::from_secs(15)));
        if let (Some(u), Some(p)) = (s.username, s.password) {
            builder = builder.credentials(Credentials::new(u, p));
        }
        Ok(Self {
            transport: builder.build(),
            from,
        })
    }
}

/// A Message-ID local part from a key (only characters every mail system takes).
fn message_id(key: &str) -> String {
    let local: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '.'
            }
        })
        .collect();
    format!("<{local}@livora>")
}

#[async_trait]
impl Channel for Smtp {
    fn provider(&self) -> &str {
        "smtp"
    }

    async fn send(&self, m: &Outgoing) -> Result<Option<String>, SendError> {
        let subject = part(m, "subject")?;
        let text = part(m, "body")?;
        let to: Mailbox =
            m.to.parse()
                .map_err(|e| SendError::Permanent(format!("address {:?}: {e}", m.to)))?;
        let id = message_id(&m.key);
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(id.clone()))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("X-Livora-Key"),
                m.key.clone(),
            ));
        if let Some(url) = m.content.get("list_unsubscribe").and_then(|v| v.as_str()) {
            // RFC 2369 and RFC 8058: mail clients show an unsubscribe button that POSTs.
            builder = builder
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe"),
                    format!("<{url}>"),
                ))
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".to_owned(),
                ));
        }
        let email = match m.content.get("html").and_then(|v| v.as_str()) {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                text.to_owned(),
                html.to_owned(),
            )),
            None => builder.body(text.to_owned()),
        }
        .map_err(|e| SendError::Permanent(format!("building the email: {e}")))?;
        match self.transport.send(email).await {
            Ok(_) => Ok(Some(id)),
            Err(e) if e.is_permanent() => Err(SendError::Permanent(e.to_string())),
            Err(e) => Err(SendError::Transient(e.to_string())),
        }
    }
}
