//! Email over SMTP (lettre, on tokio): plain, STARTTLS or TLS, with optional credentials.
//! A message has the rendered `subject` and `body` (plain text), and `html` when the
//! template has one (then both parts go, as multipart/alternative). Its `Message-ID` and an
//! `X-Livora-Key` header carry the idempotency key. 4xx replies are retried, 5xx are not.

use async_trait::async_trait;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use std::net::IpAddr;
use std::sync::Arc;

use crate::egress::Egress;
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
    host: String,
    port: u16,
    security: String,
    credentials: Option<Credentials>,
    from: Mailbox,
    egress: Arc<Egress>,
}

impl Smtp {
    /// A provider that connects only where `egress` allows (the host is resolved at each
    /// send, and the connection made to an allowed address it resolved to).
    pub fn new(s: SmtpSettings, egress: Arc<Egress>) -> Result<Self, ConfigError> {
        let bad = |m: String| ConfigError {
            provider: "smtp",
            message: m,
        };
        let from: Mailbox = s
            .from
            .parse()
            .map_err(|e| bad(format!("from {:?}: {e}", s.from)))?;
        if !matches!(s.security.as_str(), "none" | "starttls" | "tls") {
            return Err(bad(format!(
                "security {:?}: one of none, starttls, tls",
                s.security
            )));
        }
        if s.host.trim().is_empty() {
            return Err(bad("host is required".into()));
        }
        if let Ok(ip) = s.host.trim_matches(['[', ']']).parse::<IpAddr>()
            && !egress.allows_ip(ip)
        {
            return Err(bad(format!(
                "host {ip} is not a public address (allow it in [automation] egress_allow)"
            )));
        }
        Ok(Self {
            host: s.host,
            port: s.port,
            security: s.security,
            credentials: s
                .username
                .zip(s.password)
                .map(|(u, p)| Credentials::new(u, p)),
            from,
            egress,
        })
    }

    /// A transport to an allowed address the host resolves to now (so the address checked
    /// is the one connected to), TLS checked against the host's name.
    async fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, SendError> {
        let host = self.host.trim_matches(['[', ']']);
        let listed = self.egress.lists_host(host);
        let found: Vec<IpAddr> = tokio::net::lookup_host((host, self.port))
            .await
            .map_err(|e| SendError::Transient(format!("resolving {host}: {e}")))?
            .map(|a| a.ip())
            .collect();
        let ip = found
            .into_iter()
            .find(|ip| listed || self.egress.allows_ip(*ip))
            .ok_or_else(|| {
                SendError::Permanent(format!(
                    "refused: {host} is not a public address (allow it in [automation] egress_allow)"
                ))
            })?;
        let tls = |host: &str| {
            TlsParameters::new(host.to_owned())
                .map_err(|e| SendError::Permanent(format!("tls for {host}: {e}")))
        };
        let tls = match self.security.as_str() {
            "tls" => Tls::Wrapper(tls(host)?),
            "starttls" => Tls::Required(tls(host)?),
            _ => Tls::None,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(ip.to_string())
            .port(self.port)
            .tls(tls)
            .timeout(Some(std::time::Duration::from_secs(15)));
        if let Some(c) = &self.credentials {
            builder = builder.credentials(c.clone());
        }
        Ok(builder.build())
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
        match self.transport().await?.send(email).await {
            Ok(_) => Ok(Some(id)),
            Err(e) if e.is_permanent() => Err(SendError::Permanent(e.to_string())),
            Err(e) => Err(SendError::Transient(e.to_string())),
        }
    }
}
