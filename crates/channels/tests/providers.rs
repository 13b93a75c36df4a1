//! Each HTTP provider against a local server that checks the documented request format
//! (path, auth, body), and the answers that mean "retry" and "give up".

mod local;

use base64::Engine;
use livora_automation::outbox::{Channel, Outgoing, SendError};
use livora_channels::fcm::{Fcm, FcmSettings};
use livora_channels::twilio::{Twilio, TwilioSettings};
use livora_channels::webhook::{Webhook, verify};
use livora_channels::whatsapp::{WhatsApp, WhatsAppSettings};
use livora_model::TenantId;
use serde_json::{Map, Value, json};

use local::Provider;

fn outgoing(to: &str, content: Value) -> Outgoing {
    Outgoing {
        key: "j-cart-00ab/remind".into(),
        tenant: TenantId(uuid::Uuid::nil()),
        person: "u:ada".into(),
        to: to.into(),
        content: content.as_object().cloned().unwrap_or_else(Map::new),
    }
}

fn form(body: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[tokio::test]
async fn twilio_posts_the_messages_api_form_with_basic_auth() {
    let p = Provider::default();
    p.answer(201, r#"{"sid": "SM123", "status": "queued"}"#);
    let base = p.start().await;
    let t = Twilio::new(
        TwilioSettings {
            base_url: base,
            account_sid: "AC42".into(),
            auth_token: "secret".into(),
            from: Some("+15005550006".into()),
            messaging_service_sid: None,
            status_callback: None,
        },
        local::egress(),
    )
    .expect("settings");
    let id = t
        .send(&outgoing(
            "+33612345678",
            json!({"body": "Your cart misses you & so do we"}),
        ))
        .await
        .expect("sent");
    assert_eq!(id.as_deref(), Some("SM123"));
    let seen = p.seen();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/2010-04-01/Accounts/AC42/Messages.json");
    let auth = base64::engine::general_purpose::STANDARD.encode("AC42:secret");
    assert_eq!(
        r.header("authorization"),
        Some(format!("Basic {auth}").as_str())
    );
    assert_eq!(
        r.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        r.header("i-twilio-idempotency-token"),
        Some("j-cart-00ab/remind")
    );
    let f = form(&r.body);
    assert!(f.contains(&("To".into(), "+33612345678".into())), "{f:?}");
    assert!(f.contains(&("From".into(), "+15005550006".into())));
    assert!(f.contains(&("Body".into(), "Your cart misses you & so do we".into())));
    assert!(
        Twilio::new(
            TwilioSettings {
                base_url: "http://x".into(),
                account_sid: "AC42".into(),
                auth_token: "s".into(),
                from: None,
                messaging_service_sid: None,
                status_callback: None,
            },
            local::egress()
        )
        .is_err()
    );
}

#[tokio::test]
async fn errors_that_are_worth_retrying_and_those_that_are_not() {
    let p = Provider::default();
    p.answer(503, r#"{"message": "busy"}"#);
    p.answer(429, r#"{"message": "slow down"}"#);
    p.answer(
        400,
        r#"{"code": 21211, "message": "The 'To' number is not a valid phone number."}"#,
    );
    let base = p.start().await;
    let t = Twilio::new(
        TwilioSettings {
            base_url: base,
            account_sid: "AC42".into(),
            auth_token: "secret".into(),
            from: None,
            messaging_service_sid: Some("MG9".into()),
            status_callback: None,
        },
        local::egress(),
    )
    .expect("settings");
    let m = outgoing("+1", json!({"body": "hi"}));
    assert!(matches!(t.send(&m).await, Err(SendError::Transient(_))));
    assert!(matches!(t.send(&m).await, Err(SendError::Transient(_))));
    match t.send(&m).await {
        Err(SendError::Permanent(why)) => assert!(why.contains("21211"), "{why}"),
        other => panic!("expected a permanent error, got {other:?}"),
    }
    assert!(form(&p.seen()[0].body).contains(&("MessagingServiceSid".into(), "MG9".into())));
    // Nobody listening: worth retrying.
    let t = Twilio::new(
        TwilioSettings {
            base_url: "http://127.0.0.1:9".into(),
            account_sid: "AC42".into(),
            auth_token: "secret".into(),
            from: Some("+1".into()),
            messaging_service_sid: None,
            status_callback: None,
        },
        local::egress(),
    )
    .expect("settings");
    assert!(matches!(t.send(&m).await, Err(SendError::Transient(_))));
}

#[tokio::test]
async fn whatsapp_sends_text_inside_the_window_and_a_template_outside() {
    let p = Provider::default();
    p.answer(200, r#"{"messaging_product": "whatsapp", "contacts": [{"input": "33612345678", "wa_id": "33612345678"}], "messages": [{"id": "wamid.HBg1"}]}"#);
    let base = p.start().await;
    let w = WhatsApp::new(
        WhatsAppSettings {
            base_url: base,
            api_version: "v21.0".into(),
            phone_number_id: "1065".into(),
            access_token: "EAAG".into(),
            app_secret: None,
            verify_token: None,
        },
        local::egress(),
    )
    .expect("settings");
    let inside = outgoing(
        "+33 6 12 34 56 78",
        json!({"body": "Hi Ada", "session_open": true,
        "template_name": "cart_reminder", "language": "fr", "params": ["Ada"]}),
    );
    assert_eq!(
        w.send(&inside).await.expect("sent").as_deref(),
        Some("wamid.HBg1")
    );
    let outside = outgoing(
        "+33 6 12 34 56 78",
        json!({"body": "Hi Ada", "session_open": false,
        "template_name": "cart_reminder", "language": "fr", "params": ["Ada", 3]}),
    );
    w.send(&outside).await.expect("sent");
    let seen = p.seen();
    assert_eq!(seen[0].path, "/v21.0/1065/messages");
    assert_eq!(seen[0].header("authorization"), Some("Bearer EAAG"));
    let text: Value = serde_json::from_str(&seen[0].body).expect("json");
    assert_eq!(
        text,
        json!({"messaging_product": "whatsapp", "recipient_type": "individual",
        "to": "33612345678", "type": "text", "text": {"preview_url": false, "body": "Hi Ada"}})
    );
    let tpl: Value = serde_json::from_str(&seen[1].body).expect("json");
    assert_eq!(tpl["type"], "template");
    assert_eq!(
        tpl["template"],
        json!({"name": "cart_reminder", "language": {"code": "fr"},
        "components": [{"type": "body", "parameters": [{"type": "text", "text": "Ada"}, {"type": "text", "text": "3"}]}]})
    );
}

#[tokio::test]
async fn webhooks_are_signed_and_carry_the_idempotency_key() {
    let p = Provider::default();
    let base = p.start().await;
    let w = Webhook::with_egress(b"whsec_test", local::egress());
    let body = r#"{"person":"u:ada","cart":"c1"}"#;
    w.send(&outgoing(
        &format!("{base}/hooks/cart"),
        json!({"body": body}),
    ))
    .await
    .expect("sent");
    let r = &p.seen()[0];
    assert_eq!(r.path, "/hooks/cart");
    assert_eq!(r.body, body);
    assert_eq!(r.header("idempotency-key"), Some("j-cart-00ab/remind"));
    let sig = r.header("x-livora-signature").expect("signed");
    let now = chrono::Utc::now().timestamp();
    assert!(verify(b"whsec_test", sig, body, now, 300));
    assert!(!verify(b"other", sig, body, now, 300));
    assert!(!verify(b"whsec_test", sig, "tampered", now, 300));
    assert!(
        !verify(b"whsec_test", sig, body, now + 3600, 300),
        "too old"
    );
}

/// A throwaway RSA key for the FCM service account (generated for this test only).
const TEST_RSA_KEY: &str = include_str!("test_rsa_key.pem");

#[tokio::test]
async fn fcm_gets_a_token_with_a_signed_jwt_then_sends() {
    let p = Provider::default();
    p.answer(
        200,
        r#"{"access_token": "ya29.token", "expires_in": 3600, "token_type": "Bearer"}"#,
    );
    p.answer(200, r#"{"name": "projects/shop/messages/0:1500"}"#);
    let base = p.start().await;
    let f = Fcm::new(
        FcmSettings {
            base_url: base.clone(),
            project_id: "shop".into(),
            client_email: "push@shop.iam.gserviceaccount.com".into(),
            private_key: TEST_RSA_KEY.into(),
            token_uri: format!("{base}/token"),
        },
        local::egress(),
    )
    .expect("settings");
    let id = f
        .send(&outgoing(
            "fcm-registration-token",
            json!({"subject": "Come back", "body": "Your cart waits"}),
        ))
        .await
        .expect("sent");
    assert_eq!(id.as_deref(), Some("projects/shop/messages/0:1500"));
    // The token is reused.
    f.send(&outgoing(
        "fcm-registration-token",
        json!({"body": "Again"}),
    ))
    .await
    .expect("sent");
    let seen = p.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].path, "/token");
    let f0 = form(&seen[0].body);
    assert!(f0.contains(&(
        "grant_type".into(),
        "urn:ietf:params:oauth:grant-type:jwt-bearer".into()
    )));
    let jwt = &f0
        .iter()
        .find(|(k, _)| k == "assertion")
        .expect("assertion")
        .1;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jwt.split('.').nth(1).expect("claims"))
            .expect("base64"),
    )
    .expect("json");
    assert_eq!(claims["iss"], "push@shop.iam.gserviceaccount.com");
    assert_eq!(
        claims["scope"],
        "https://www.googleapis.com/auth/firebase.messaging"
    );
    assert_eq!(seen[1].path, "/v1/projects/shop/messages:send");
    assert_eq!(seen[1].header("authorization"), Some("Bearer ya29.token"));
    let body: Value = serde_json::from_str(&seen[1].body).expect("json");
    assert_eq!(body["message"]["token"], "fcm-registration-token");
    assert_eq!(
        body["message"]["notification"],
        json!({"title": "Come back", "body": "Your cart waits"})
    );
}

/// What an error says, whatever its kind.
fn why(r: Result<Option<String>, SendError>) -> (bool, String) {
    match r {
        Err(SendError::Permanent(w)) => (true, w),
        Err(SendError::Transient(w)) => (false, w),
        Ok(id) => panic!("expected an error, got {id:?}"),
    }
}

#[tokio::test]
async fn webhooks_do_not_reach_internal_addresses_unless_allowed() {
    let p = Provider::default();
    let base = p.start().await;
    let port = base.rsplit(':').next().unwrap_or_default().to_owned();
    let m = |to: String| outgoing(&to, json!({"body": "{}"}));
    // By default: an address literal, a name that resolves to loopback, the metadata
    // address, all refused, for good (no retry), and nothing reaches the receiver.
    let w = Webhook::new(b"whsec_test");
    for to in [
        format!("{base}/hook"),
        format!("http://localhost:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.1/".to_owned(),
    ] {
        let (permanent, why) = why(w.send(&m(to.clone())).await);
        assert!(permanent && why.contains("refused"), "{to}: {why}");
    }
    assert_eq!(p.seen().len(), 0);
    assert!(why(w.send(&m("file:///etc/passwd".into())).await).0);
    // Allowed explicitly (the address), the same receiver gets it.
    let allowed = Webhook::with_egress(b"whsec_test", local::egress());
    let id = allowed
        .send(&m(format!("{base}/hook")))
        .await
        .expect("sent");
    assert_eq!(
        id.as_deref(),
        Some(base.as_str()),
        "the origin delivered to"
    );
    assert_eq!(p.seen().len(), 1);
    // A listed name may resolve to an internal address; the address itself is not listed.
    let named = std::sync::Arc::new(
        livora_channels::egress::Egress::allowing(["localhost"]).expect("list"),
    );
    let by_name = Webhook::with_egress(b"whsec_test", named);
    let (permanent, why) = why(by_name.send(&m(format!("{base}/literal"))).await);
    assert!(permanent && why.contains("refused"), "{why}");
    by_name
        .send(&m(format!("http://localhost:{port}/named")))
        .await
        .expect("a listed name is allowed");
    assert_eq!(p.seen().len(), 2);
}

#[tokio::test]
async fn redirects_are_not_followed_and_error_bodies_come_back_short_and_clean() {
    let target = Provider::default();
    let target_url = target.start().await;
    let p = Provider::default();
    p.redirect(302, &format!("{target_url}/elsewhere"));
    let long = format!("\u{1b}[31mboom\r\n{}", "x".repeat(10_000));
    p.answer(400, &long);
    let base = p.start().await;
    let w = Webhook::with_egress(b"whsec_test", local::egress());
    let m = outgoing(&format!("{base}/hook"), json!({"body": "{}"}));
    let (permanent, why302) = why(w.send(&m).await);
    assert!(permanent && why302.contains("302"), "{why302}");
    assert_eq!(target.seen().len(), 0, "the redirect was not followed");
    let (_, why400) = why(w.send(&m).await);
    assert!(why400.starts_with("HTTP 400: [31mboom"), "{why400}");
    assert!(!why400.chars().any(char::is_control), "{why400:?}");
    assert!(
        why400.chars().count() <= "HTTP 400: ".len() + livora_channels::http::SNIPPET + 1,
        "{}",
        why400.len()
    );
}
