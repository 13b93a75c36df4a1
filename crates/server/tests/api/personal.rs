//! Personal data in conditions: a caller without `pii.view` (an analyst) may not compare
//! the traits and properties `[privacy]` protects, in a segment preview, a saved segment or
//! a workflow, since counts over `email contains "a"`, `"ab"`, … rebuild the values.

use std::time::{Duration, Instant};

use livora_store::Role;
use serde_json::{Value, json};

use crate::helpers::{TestApp, admin_app, call, decode, staff_token};

async fn as_staff(
    app: &TestApp,
    token: &str,
    method: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let url = format!("{}{path}", app.url);
    let req = match method {
        "POST" => app.http.post(url),
        "PATCH" => app.http.patch(url),
        "PUT" => app.http.put(url),
        other => panic!("method {other}"),
    };
    decode(
        req.bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request"),
    )
    .await
}

/// Asserts a `pii_condition` refusal that names `field` at `path`.
fn refused(answer: (u16, Value), field: &str, path: &str) {
    let (s, v) = answer;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["code"], "pii_condition", "{v}");
    assert_eq!(v["field"], field, "{v}");
    assert_eq!(v["path"], path, "{v}");
    assert_eq!(v["permission"], "pii.view", "{v}");
    let message = v["message"].as_str().expect("message");
    assert!(
        message.contains(field) && message.contains("pii.view"),
        "{message}"
    );
}

#[tokio::test]
async fn an_analyst_cannot_compare_personal_traits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = admin_app(dir.path()).await;
    let (s, v) = app
        .post(
            "/v1/batch",
            json!({"batch": [
                {"type": "identify", "userId": "ann", "timestamp": "2026-11-01T10:00:00Z",
                 "traits": {"email": "ann@example.com", "plan": "pro"}},
                {"type": "identify", "userId": "bob", "timestamp": "2026-11-01T10:01:00Z",
                 "traits": {"email": "bob@example.org", "plan": "free"}},
                {"type": "track", "userId": "bob", "event": "Order Completed",
                 "timestamp": "2026-11-01T10:02:00Z",
                 "properties": {"revenue": 10, "email": "bob@example.org"}},
            ]})
            .to_string(),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, v) = call(&app, "GET", "/api/v1/people/bob", None).await;
        if s == 200 && v["computed"]["orders"] == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "profiles never caught up: {s} {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let analyst = staff_token(&app, "analyst@shop.example", Role::Analyst).await;
    let email_has_a = json!({"trait": {"name": "email", "op": "contains", "value": "a"}});

    // The preview of the report: refused, wherever the trait is in the tree.
    refused(
        as_staff(
            &app,
            &analyst,
            "POST",
            "/api/v1/segments/preview",
            json!({"condition": email_has_a}),
        )
        .await,
        "email",
        "condition.trait.name",
    );
    let nested = json!({"or": [
        {"trait": {"name": "plan", "op": "equals", "value": "pro"}},
        {"not": {"and": [{"tag": "vip"},
            {"trait": {"name": "Email", "op": "equals", "value": "ann@example.com"}}]}},
    ]});
    refused(
        as_staff(
            &app,
            &analyst,
            "POST",
            "/api/v1/segments/preview",
            json!({"condition": nested}),
        )
        .await,
        "Email",
        "condition.or[1].not.and[1].trait.name",
    );
    let by_property = json!({"performed": {"event": "Order Completed",
        "where": [{"property": "email", "op": "contains", "value": "bob"}]}});
    refused(
        as_staff(
            &app,
            &analyst,
            "POST",
            "/api/v1/segments/preview",
            json!({"condition": by_property}),
        )
        .await,
        "email",
        "condition.performed.where[0].property",
    );
    // What is not personal, and whether a personal trait exists, stay open.
    let (s, v) = as_staff(
        &app,
        &analyst,
        "POST",
        "/api/v1/segments/preview",
        json!({"condition": {"trait": {"name": "plan", "op": "equals", "value": "pro"}}}),
    )
    .await;
    assert_eq!((s, v["count"].as_u64()), (200, Some(1)), "{v}");
    let (s, v) = as_staff(
        &app,
        &analyst,
        "POST",
        "/api/v1/segments/preview",
        json!({"condition": {"trait": {"name": "email", "op": "exists"}}}),
    )
    .await;
    assert_eq!((s, v["count"].as_u64()), (200, Some(2)), "{v}");

    // Saved segments: neither created nor changed into one, nor a list of identifiers.
    refused(
        as_staff(
            &app,
            &analyst,
            "POST",
            "/api/v1/segments",
            json!({"id": "a-emails", "name": "A", "condition": email_has_a}),
        )
        .await,
        "email",
        "condition.trait.name",
    );
    let (s, v) = as_staff(
        &app,
        &analyst,
        "POST",
        "/api/v1/segments",
        json!({"id": "pros", "name": "Pros",
            "condition": {"trait": {"name": "plan", "op": "equals", "value": "pro"}}}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    refused(
        as_staff(
            &app,
            &analyst,
            "PATCH",
            "/api/v1/segments/pros",
            json!({"condition": {"and": [{"in_segment": "pros"}, email_has_a]}}),
        )
        .await,
        "email",
        "condition.and[1].trait.name",
    );
    refused(
        as_staff(
            &app,
            &analyst,
            "POST",
            "/api/v1/tags",
            json!({"name": "A people", "condition": email_has_a}),
        )
        .await,
        "email",
        "condition.trait.name",
    );
    refused(
        as_staff(
            &app,
            &analyst,
            "POST",
            "/api/v1/segments",
            json!({"name": "Guesses", "manual_csv": "email\nann@example.com\n"}),
        )
        .await,
        "identifiers",
        "manual_csv",
    );

    // Workflows: an analyst may not edit them at all; a branch on a personal trait is
    // refused by the same check for any caller without pii.view (unit test in the server's
    // privacy module), and callers with it may write one.
    let workflow = json!({"name": "By email", "definition": {
    "trigger": {"event": {"name": "Order Completed"}},
    "steps": [
        {"id": "b", "branch": {"if": email_has_a, "then": "s"}},
        {"id": "s", "send": {"channel": "email",
            "template": {"subject": "Hi", "body": "Hi"}}},
    ]}});
    let (s, v) = as_staff(
        &app,
        &analyst,
        "POST",
        "/api/v1/workflows",
        workflow.clone(),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (403, Some("forbidden")), "{v}");
    let marketer = staff_token(&app, "marketer@shop.example", Role::Marketer).await;
    let (s, v) = as_staff(&app, &marketer, "POST", "/api/v1/workflows", workflow).await;
    assert_eq!(s, 201, "{v}");
    // So can the admin key (pii.view) preview on email.
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/segments/preview",
        Some(json!({"condition": {"trait": {"name": "email", "op": "contains", "value": "ann"}}})),
    )
    .await;
    assert_eq!((s, v["count"].as_u64()), (200, Some(1)), "{v}");

    // Analytics queries: a breakdown by a personal trait shows its values and a comparison
    // (`gt`, …) rebuilds them from counts, so both are refused; a non-personal breakdown
    // and an `is_set` filter stay open.
    let range = json!({"from": "2026-10-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"});
    let trends = |event: Value, breakdown: Value| {
        let mut q = json!({"kind": "trends", "interval": "day", "event": event,
            "metric": {"kind": "count"}, "breakdown": breakdown});
        q["from"] = range["from"].clone();
        q["to"] = range["to"].clone();
        q
    };
    let orders = json!({"event": "Order Completed"});
    refused(
        as_staff(
            &app,
            &analyst,
            "POST",
            "/api/v1/query",
            trends(
                orders.clone(),
                json!({"property": "email", "source": "person"}),
            ),
        )
        .await,
        "email",
        "query.breakdown.property",
    );
    let email_after_m = json!({"event": "Order Completed", "filters": [
        {"property": "email", "op": "gt", "value": "m"}]});
    refused(
        as_staff(
            &app,
            &analyst,
            "POST",
            "/api/v1/query",
            trends(
                email_after_m,
                json!({"property": "plan", "source": "person"}),
            ),
        )
        .await,
        "email",
        "query.event.filters[0].property",
    );
    let email_set = json!({"event": "Order Completed", "filters": [
        {"property": "email", "op": "is_set"}]});
    let (s, v) = as_staff(
        &app,
        &analyst,
        "POST",
        "/api/v1/query",
        trends(email_set, json!({"property": "plan", "source": "person"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // The admin key (pii.view) may break down by email.
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/query",
        Some(trends(
            orders,
            json!({"property": "email", "source": "person"}),
        )),
    )
    .await;
    assert_eq!(s, 200, "{v}");
}
