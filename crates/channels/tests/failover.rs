//! A webhook channel with a secondary URL: when the step's URL is down, the outbox fails over
//! to the secondary provider, which posts to its own URL, and the message records where it
//! was delivered.

mod local;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use livora_automation::outbox::{FixedRoutes, Retry, Sender};
use livora_automation::policy::Policy;
use livora_automation::runtime::Message;
use livora_automation::service::outbox_row;
use livora_channels::config::ChannelConfig;
use livora_model::TenantId;
use livora_model::clock::Clock;
use livora_model::workflow::Category;
use livora_store::automation::{AutomationCommit, AutomationStore, OutboxStatus};
use livora_store::{MetadataStore, NewTenant, SqliteStore};
use serde_json::{Map, json};

use local::Provider;

/// A clock far enough ahead that every retry is due.
struct Later;

impl Clock for Later {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::days(1)
    }
}

#[tokio::test]
async fn a_webhook_fails_over_to_its_secondary_url_and_records_it() {
    let store = Arc::new(SqliteStore::in_memory().await.expect("store"));
    let tenant: TenantId = store
        .create_tenant(NewTenant {
            name: "Shop".into(),
            time_zone: "UTC".into(),
            currency: livora_model::Currency::parse("EUR").expect("currency"),
        })
        .await
        .expect("tenant")
        .id;
    // The primary receiver is down: a port nobody listens on any more.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}/hook", l.local_addr().expect("addr"))
    };
    let backup = Provider::default();
    let backup_url = backup.start().await;
    let config: ChannelConfig = serde_json::from_value(json!({
        "provider": "webhook",
        "settings": {"secret": "0123456789abcdef"},
        "secondary": {"provider": "webhook",
            "settings": {"secret": "0123456789abcdef", "url": format!("{backup_url}/backup")}}
    }))
    .expect("config");
    let route = config.route("webhook", &local::egress()).expect("route");
    let mut content = Map::new();
    content.insert("body".into(), json!("{\"order\": 1}"));
    let message = Message {
        key: "j1/hook".into(),
        tenant,
        workflow: "wf".into(),
        version: 1,
        journey: "j1".into(),
        step: "hook".into(),
        person: "u:ada".into(),
        channel: "webhook".into(),
        category: Category::Transactional,
        subscription: None,
        to: Some(down),
        content,
        time_zone: None,
        decided_at: Utc::now(),
        error: None,
    };
    store
        .commit(AutomationCommit {
            messages: vec![outbox_row(&message)],
            ..AutomationCommit::default()
        })
        .await
        .expect("commit");
    let dyn_store: Arc<dyn MetadataStore> = store.clone();
    let sender = Arc::new(Sender::new(
        dyn_store,
        Arc::new(Later),
        Arc::new(FixedRoutes(HashMap::from([("webhook".to_owned(), route)]))),
        Policy::default(),
        Retry {
            attempts: 1,
            base: chrono::Duration::seconds(1),
        },
    ));
    let mut row = None;
    for _ in 0..10 {
        sender.send_due().await.expect("send");
        let r = store
            .message(tenant, "j1/hook")
            .await
            .expect("read")
            .expect("row");
        if r.status != OutboxStatus::Pending {
            row = Some(r);
            break;
        }
    }
    let row = row.expect("the message left the queue");
    assert_eq!(row.status, OutboxStatus::Sent, "{row:?}");
    assert_eq!(row.provider.as_deref(), Some("webhook"));
    assert_eq!(
        row.provider_id.as_deref(),
        Some(backup_url.as_str()),
        "where it was delivered"
    );
    let seen = backup.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].path.as_str(), seen[0].body.as_str()),
        ("/backup", "{\"order\": 1}")
    );
    assert_eq!(seen[0].header("idempotency-key"), Some("j1/hook"));
}
