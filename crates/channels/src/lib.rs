//! Livora's message providers, one folder and one Cargo feature each: email over SMTP
//! ([`smtp`]), SMS through Twilio ([`twilio`]), WhatsApp through the Cloud API
//! ([`whatsapp`]), push through Firebase Cloud Messaging ([`fcm`]) and signed outgoing
//! webhooks ([`webhook`]).
//!
//! Each implements [`livora_automation::outbox::Channel`]: it knows the provider's wire
//! format and how to tell a failure worth retrying (timeouts, 429, 5xx) from one that is not
//! (other 4xx); it does not decide *whether* to send (that is the automation engine's
//! delivery policy). Every provider gets the message's key as its idempotency key (a header
//! where the API has one). Every HTTP call goes through [`egress`]: no connection to a
//! loopback, private or metadata address unless the allowlist names it, no redirects, and a
//! failed answer's body reported as a short snippet. Base URLs are settings limited to the
//! providers' documented hosts, so tests point them at local servers they allow.

pub mod config;
pub mod egress;
#[cfg(feature = "push-fcm")]
pub mod fcm;
#[cfg(any(
    feature = "sms-twilio",
    feature = "whatsapp-cloud",
    feature = "push-fcm",
    feature = "webhook"
))]
pub mod http;
#[cfg(feature = "email-smtp")]
pub mod smtp;
#[cfg(feature = "sms-twilio")]
pub mod twilio;
#[cfg(feature = "webhook")]
pub mod webhook;
#[cfg(feature = "whatsapp-cloud")]
pub mod whatsapp;

pub use livora_automation::outbox::{Channel, Outgoing, SendError};

/// A provider that cannot be built from its settings.
#[derive(Debug, thiserror::Error)]
#[error("{provider}: {message}")]
pub struct ConfigError {
    pub provider: &'static str,
    pub message: String,
}

/// The text part `name` of a message, or an error naming it.
pub(crate) fn part<'a>(m: &'a Outgoing, name: &str) -> Result<&'a str, SendError> {
    m.content
        .get(name)
        .and_then(|v| v.as_str())
        .ok_or_else(|| SendError::Permanent(format!("the message has no {name}")))
}

/// What a reply asks for, by the carriers' standard keywords (the whole message, any
/// case): `Some(false)` to stop, `Some(true)` to start again.
pub fn keyword(body: &str) -> Option<bool> {
    match body.trim().to_ascii_uppercase().as_str() {
        "STOP" | "STOPALL" | "UNSUBSCRIBE" | "CANCEL" | "END" | "QUIT" | "OPTOUT" | "REVOKE" => {
            Some(false)
        }
        "START" | "UNSTOP" | "YES" | "OPTIN" => Some(true),
        _ => None,
    }
}
