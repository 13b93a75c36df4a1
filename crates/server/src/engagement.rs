//! What comes back after a message went out: the open pixel, click redirects and
//! unsubscribe links of emails ([`livora_automation::tracking`]), and the providers'
//! callbacks — Twilio's status callbacks and incoming SMS, Meta's WhatsApp webhook — with
//! delivery receipts, `STOP` / `START` replies and the messages that open WhatsApp's
//! 24-hour window.
//!
//! None of these routes takes a credential: each request is checked by what signs it (the
//! link's token, `X-Twilio-Signature`, `X-Hub-Signature-256`). Each engagement is recorded
//! on the message (the workflow's metrics count it) and, the first time, appended to the
//! event log as an event of the person (`Email Opened`, `Email Link Clicked`,
//! `Unsubscribed`, `Message Received`), so goals, segments and other workflows can use it.
//! A received message carries its sentiment (`sentiment` in [−1, 1] and `sentiment_label`:
//! `positive`, `neutral` or `negative`), by the tenant's own classifier where one is in
//! use, else by the VADER-style rules.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use livora_automation::tracking::{Kind, Token, links};
use livora_model::TenantId;
use livora_store::Consent;
use livora_store::automation::{Engagement, OutboxRow};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, Code};

/// A 1×1 transparent GIF.
const PIXEL: [u8; 43] = [
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

fn link_error(message: impl Into<String>) -> ApiError {
    ApiError::new(Code::InvalidLink, message)
}

/// The token's message, if the token is valid and of `kind`.
async fn message_of(
    state: &AppState,
    token: &str,
    kind: Kind,
) -> Result<(Token, OutboxRow), ApiError> {
    let t = state
        .tracker
        .verify(token)
        .map_err(|e| link_error(e.to_string()))?;
    if t.kind != kind {
        return Err(link_error("this link is not of this kind"));
    }
    let row = state
        .store
        .message(t.tenant, &t.key)
        .await?
        .ok_or_else(|| ApiError::new(Code::NotFound, "the message is no longer kept"))?;
    Ok((t, row))
}

/// The `userId` / `anonymousId` of a person key.
fn identity(person: &str) -> Option<(&'static str, &str)> {
    match person.split_once(':')? {
        ("u", v) => Some(("userId", v)),
        ("a", v) => Some(("anonymousId", v)),
        _ => None,
    }
}

/// Appends an engagement event of `person` to the log (deduplicated by `message_id`).
async fn append(
    state: &AppState,
    tenant: TenantId,
    person: &str,
    name: &str,
    message_id: String,
    properties: Value,
    at: DateTime<Utc>,
) {
    let Some((field, id)) = identity(person) else {
        return;
    };
    let mut v = json!({"type": "track", "event": name, "messageId": message_id,
        "properties": properties, "timestamp": at.to_rfc3339(), "receivedAt": at.to_rfc3339()});
    v[field] = json!(id);
    let event = match serde_json::from_value::<livora_model::Event>(v) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "engagement event not built");
            return;
        }
    };
    use livora_automation::service::EventSink;
    if let Err(e) = state.sink.append(tenant, vec![event]).await {
        // The engagement itself is recorded on the message; the event is a copy.
        tracing::warn!(error = %e, "engagement event not appended");
    }
}

/// The properties every engagement event carries.
fn about(row: &OutboxRow) -> serde_json::Map<String, Value> {
    let step = serde_json::from_str::<Value>(&row.message)
        .ok()
        .and_then(|m| m["step"].as_str().map(str::to_owned));
    let mut p = serde_json::Map::new();
    p.insert("workflow_id".into(), json!(row.workflow));
    p.insert("step".into(), json!(step));
    p.insert("channel".into(), json!(row.channel));
    p.insert("message_key".into(), json!(row.key));
    p
}

/// Records an engagement; the first of its kind (and link) also becomes an event.
async fn engage(
    state: &AppState,
    row: &OutboxRow,
    kind: Engagement,
    detail: Option<&str>,
    event: Option<(&str, Value)>,
) -> Result<(), ApiError> {
    let now = Utc::now();
    let first = state
        .store
        .record_engagement(row.tenant, &row.key, kind, now, detail)
        .await?;
    if let Some((name, extra)) = event
        && (first || kind == Engagement::Clicked)
    {
        let mut props = about(row);
        if let Value::Object(extra) = extra {
            props.extend(extra);
        }
        // Per link for clicks, else once per message.
        let id = format!(
            "engagement/{}/{}/{}",
            row.key,
            kind.as_str(),
            detail.unwrap_or("")
        );
        append(
            state,
            row.tenant,
            &row.person,
            name,
            id,
            Value::Object(props),
            now,
        )
        .await;
    }
    Ok(())
}

/// `GET /t/o/{token}`: the open pixel.
pub async fn open(
    State(state): State<Arc<AppState>>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let token = token.trim_end_matches(".gif");
    let (_, row) = message_of(&state, token, Kind::Open).await?;
    engage(
        &state,
        &row,
        Engagement::Opened,
        None,
        Some(("Email Opened", json!({}))),
    )
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/gif"),
            (header::CACHE_CONTROL, "no-store, max-age=0"),
        ],
        PIXEL,
    )
        .into_response())
}

/// `GET /t/c/{token}`: a click, redirected to the link the message holds.
pub async fn click(
    State(state): State<Arc<AppState>>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let (t, row) = message_of(&state, &token, Kind::Click).await?;
    let html = serde_json::from_str::<Value>(&row.message)
        .ok()
        .and_then(|m| m["content"]["html"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let url = t
        .link
        .and_then(|i| links(&html).into_iter().nth(i))
        .map(|(_, url)| url)
        .ok_or_else(|| ApiError::new(Code::NotFound, "the message has no such link"))?;
    // A click shows the message was opened, images blocked or not.
    engage(
        &state,
        &row,
        Engagement::Opened,
        None,
        Some(("Email Opened", json!({}))),
    )
    .await?;
    engage(
        &state,
        &row,
        Engagement::Clicked,
        Some(&url),
        Some(("Email Link Clicked", json!({"url": url}))),
    )
    .await?;
    Ok((
        StatusCode::FOUND,
        [
            (header::LOCATION, url.as_str()),
            (header::CACHE_CONTROL, "no-store"),
        ],
    )
        .into_response())
}

fn page(title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title></head>\
         <body style=\"font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem\">\
         <h1>{title}</h1>{body}</body></html>"
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

/// What an unsubscribe link stops: the message's subscription group, else the channel's
/// marketing messages.
fn unsubscribe_purpose(row: &OutboxRow) -> String {
    serde_json::from_str::<Value>(&row.message)
        .ok()
        .and_then(|m| {
            m["subscription"]
                .as_str()
                .map(|g| format!("subscription:{g}"))
        })
        .unwrap_or_else(|| format!("{}_marketing", row.channel))
}

/// `GET /t/u/{token}`: asks to confirm (mail scanners follow links; only the POST acts).
pub async fn unsubscribe_page(
    State(state): State<Arc<AppState>>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    message_of(&state, &token, Kind::Unsubscribe).await?;
    Ok(page(
        "Unsubscribe",
        "<p>Stop receiving these emails?</p><form method=\"post\">\
         <button type=\"submit\" style=\"font-size:1rem;padding:.5rem 1rem\">Unsubscribe</button></form>",
    ))
}

/// `POST /t/u/{token}`: the unsubscribe (also the one-click POST of RFC 8058).
pub async fn unsubscribe(
    State(state): State<Arc<AppState>>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let (_, row) = message_of(&state, &token, Kind::Unsubscribe).await?;
    let purpose = unsubscribe_purpose(&row);
    state
        .store
        .add_consent(
            row.tenant,
            &Consent {
                subject: row.person.clone(),
                purpose: purpose.clone(),
                granted: false,
                source: "unsubscribe_link".into(),
                recorded_at: Utc::now(),
                recorded_by: format!("message:{}", row.key),
            },
        )
        .await?;
    engage(
        &state,
        &row,
        Engagement::Unsubscribed,
        None,
        Some(("Unsubscribed", json!({"purpose": purpose}))),
    )
    .await?;
    Ok(page(
        "You are unsubscribed",
        "<p>You will not get these emails any more.</p>",
    ))
}

fn tenant_of(text: &str) -> Result<TenantId, ApiError> {
    uuid::Uuid::parse_str(text)
        .map(TenantId)
        .map_err(|_| ApiError::new(Code::InvalidRequest, format!("no tenant {text:?}")))
}

fn bad_signature(what: &str) -> ApiError {
    ApiError::new(
        Code::InvalidSignature,
        format!("the request is not signed by the tenant's {what} provider"),
    )
}

/// Records a reply's opt-out or opt-in, for the number (whoever has it) and for the persons
/// who have it now.
async fn record_reply(
    state: &AppState,
    tenant: TenantId,
    channel: &str,
    from: &str,
    granted: bool,
    persons: &[String],
) -> Result<(), ApiError> {
    let source = format!("{channel}_reply");
    let subjects = state
        .tracker
        .address_subject(channel, from)
        .into_iter()
        .chain(persons.iter().cloned());
    for subject in subjects {
        state
            .store
            .add_consent(
                tenant,
                &Consent {
                    subject,
                    purpose: channel.to_owned(),
                    granted,
                    source: source.clone(),
                    recorded_at: Utc::now(),
                    recorded_by: source.clone(),
                },
            )
            .await?;
    }
    Ok(())
}

/// The persons holding a phone number now (its forms with and without `+`).
fn persons_with_phone(state: &AppState, tenant: TenantId, phone: &str) -> Vec<String> {
    let Some(profiles) = &state.profiles else {
        return Vec::new();
    };
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    let mut keys = Vec::new();
    for form in [format!("+{digits}"), digits] {
        if let Some(p) = livora_automation::profiles::by_identifier(
            profiles,
            tenant,
            livora_profiles::identity::PHONE,
            &form,
        ) && let Some(k) = p.keys.first()
            && !keys.contains(k)
        {
            keys.push(k.clone());
        }
    }
    keys
}

/// A person wrote in on `channel`: their reply keyword, and a `Message Received` event.
async fn received(
    state: &AppState,
    tenant: TenantId,
    channel: &str,
    from: &str,
    text: &str,
    at: DateTime<Utc>,
) -> Result<(), ApiError> {
    let persons = persons_with_phone(state, tenant, from);
    if let Some(granted) = livora_channels::keyword(text) {
        record_reply(state, tenant, channel, from, granted, &persons).await?;
    }
    if let Some(person) = persons.first() {
        let id = format!(
            "inbound/{channel}/{}/{}",
            state
                .tracker
                .address_subject(channel, from)
                .unwrap_or_default(),
            at.timestamp_micros()
        );
        append(
            state,
            tenant,
            person,
            "Message Received",
            id,
            // Scored as it arrives, so a workflow can start on a negative message
            // (`where: sentiment_label equals negative`).
            {
                let (polarity, label) = state.intel.judge(tenant, text);
                json!({"channel": channel, "text": text, "sentiment": polarity,
                    "sentiment_label": label})
            },
            at,
        )
        .await;
    }
    Ok(())
}

/// A provider's receipt for the message it knows by `id`.
async fn receipt(
    state: &AppState,
    tenant: TenantId,
    id: &str,
    status: &str,
    error: Option<&str>,
) -> Result<(), ApiError> {
    let Some(row) = state.store.message_by_provider_id(tenant, id).await? else {
        // Not one of Livora's messages (or no longer kept): nothing to record.
        return Ok(());
    };
    match status {
        "delivered" => engage(state, &row, Engagement::Delivered, None, None).await,
        "read" => {
            engage(state, &row, Engagement::Delivered, None, None).await?;
            let opened = Some(("Message Opened", json!({})));
            engage(state, &row, Engagement::Opened, None, opened).await
        }
        "undelivered" | "failed" => engage(state, &row, Engagement::Undelivered, error, None).await,
        _ => Ok(()),
    }
}

fn form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// `POST /hooks/twilio/{tenant}`: status callbacks and incoming SMS.
pub async fn twilio(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(&tenant)?;
    let params = form(&body);
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Twilio signs the URL it called: the public one.
    let base = state.public_url.as_deref().unwrap_or("");
    let url = match uri.query() {
        Some(q) => format!("{base}{}?{q}", uri.path()),
        None => format!("{base}{}", uri.path()),
    };
    let signed = state
        .channels
        .as_ref()
        .map(|d| d.settings_of(tenant, "sms", "twilio"))
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s["auth_token"].as_str())
        .any(|token| livora_channels::twilio::verify(token, &url, &params, signature));
    if !signed {
        return Err(bad_signature("Twilio"));
    }
    match livora_channels::twilio::inbound(&params) {
        Some(livora_channels::twilio::Inbound::Status { sid, status, error }) => {
            receipt(&state, tenant, &sid, &status, error.as_deref()).await?;
        }
        Some(livora_channels::twilio::Inbound::Message { from, body }) => {
            received(&state, tenant, "sms", &from, &body, Utc::now()).await?;
        }
        None => {}
    }
    Ok((
        [(header::CONTENT_TYPE, "text/xml")],
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>",
    )
        .into_response())
}

#[derive(serde::Deserialize)]
pub struct Subscribe {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

fn whatsapp_settings(state: &AppState, tenant: TenantId) -> Vec<Value> {
    state
        .channels
        .as_ref()
        .map(|d| d.settings_of(tenant, "whatsapp", "whatsapp-cloud"))
        .unwrap_or_default()
}

/// `GET /hooks/whatsapp/{tenant}`: Meta's subscription check.
pub async fn whatsapp_subscribe(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    Query(q): Query<Subscribe>,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(&tenant)?;
    let token = q.verify_token.unwrap_or_default();
    let known = !token.is_empty()
        && whatsapp_settings(&state, tenant)
            .iter()
            .any(|s| s["verify_token"].as_str() == Some(token.as_str()));
    if q.mode.as_deref() != Some("subscribe") || !known {
        return Err(bad_signature("WhatsApp"));
    }
    Ok(q.challenge.unwrap_or_default().into_response())
}

/// `POST /hooks/whatsapp/{tenant}`: statuses and incoming messages.
pub async fn whatsapp(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(&tenant)?;
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let signed = whatsapp_settings(&state, tenant)
        .iter()
        .filter_map(|s| s["app_secret"].as_str())
        .any(|secret| livora_channels::whatsapp::verify(secret, &body, signature));
    if !signed {
        return Err(bad_signature("WhatsApp"));
    }
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(Code::InvalidJson, format!("the body is not JSON: {e}")))?;
    use livora_channels::whatsapp::Inbound;
    for item in livora_channels::whatsapp::inbound(&v) {
        match item {
            Inbound::Status { id, status, error } => {
                receipt(&state, tenant, &id, &status, error.as_deref()).await?;
            }
            Inbound::Message { from, text, at } => {
                let at = at
                    .and_then(|s| DateTime::from_timestamp(s, 0))
                    .unwrap_or_else(Utc::now);
                if let Some(a) = state.tracker.address_subject("whatsapp", &from) {
                    state
                        .store
                        .record_inbound(tenant, "whatsapp", &a, at)
                        .await?;
                }
                received(&state, tenant, "whatsapp", &from, &text, at).await?;
            }
        }
    }
    Ok(axum::Json(json!({"ok": true})).into_response())
}
