//! Tests of the workflow runtime: journeys through triggers, waits, goals, re-entry,
//! branches, splits, the holdout group, versions, local times and schedules, with the time
//! given (nothing sleeps).

use chrono::{DateTime, TimeZone, Utc};
use livora_model::workflow::Workflow;
use livora_model::{Event, EventType, TenantId};
use serde_json::{Value, json};

use super::*;
use crate::people::{Directory, Person};

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000 + secs, 0)
        .single()
        .expect("time")
}

fn tenant() -> TenantId {
    TenantId(uuid::Uuid::from_u128(7))
}

fn track(
    user: Option<&str>,
    anon: Option<&str>,
    name: &str,
    props: Value,
    id: &str,
    at: i64,
) -> Event {
    let mut v = json!({"type": "track", "event": name, "properties": props,
        "messageId": id, "timestamp": t(at).to_rfc3339(), "receivedAt": t(at).to_rfc3339()});
    if let Some(u) = user {
        v["userId"] = json!(u);
    }
    if let Some(a) = anon {
        v["anonymousId"] = json!(a);
    }
    let e: Event = serde_json::from_value(v).expect("event");
    assert_eq!(e.kind, EventType::Track);
    e
}

fn person(keys: &[&str], traits: Value) -> Person {
    Person {
        keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        traits: traits.as_object().cloned().unwrap_or_default(),
        ..Person::default()
    }
}

fn runtime_with(def: Value) -> Runtime {
    let mut rt = Runtime::new();
    rt.add_version(Version {
        tenant: tenant(),
        workflow: "wf".into(),
        version: 1,
        definition: Workflow::parse(&def).expect("valid workflow"),
    });
    rt.set_live(tenant(), "wf", Some(1));
    rt
}

fn abandoned_cart() -> Value {
    json!({
        "trigger": {"event": {"name": "Product Added"}},
        "goal": {"event": "Order Completed", "same": ["cart_id"]},
        "steps": [
            {"id": "wait", "wait_for": {"event": "Order Completed", "same": ["cart_id"], "timeout_minutes": 60}},
            {"id": "remind", "send": {"channel": "email",
                "template": {"subject": "Your {{ event.properties.name }} is waiting", "body": "Hi {{ traits.first_name }}"}}}
        ]
    })
}

fn sends(c: &Changes) -> Vec<&Message> {
    c.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn people() -> Directory {
    let mut d = Directory::default();
    d.put(
        tenant(),
        person(
            &["u:ada"],
            json!({"email": "ada@example.com", "first_name": "Ada"}),
        ),
    );
    d
}

#[test]
fn the_abandoned_cart_sends_once_after_the_timeout() {
    let mut rt = runtime_with(abandoned_cart());
    let dir = people();
    let add = track(
        Some("ada"),
        None,
        "Product Added",
        json!({"cart_id": "c1", "name": "Lamp"}),
        "m1",
        0,
    );
    let c = rt.on_event(tenant(), &add, &dir, t(0));
    assert_eq!(c.journeys.len(), 1);
    assert!(sends(&c).is_empty());
    assert_eq!(rt.timer_count(), 1);
    assert_eq!(rt.next_wake(), Some(t(3600)));
    // A second item in the same cart while waiting starts nothing (re-entry after exit).
    let add2 = track(
        Some("ada"),
        None,
        "Product Added",
        json!({"cart_id": "c1", "name": "Rug"}),
        "m2",
        60,
    );
    assert!(
        rt.on_event(tenant(), &add2, &dir, t(60))
            .journeys
            .is_empty()
    );
    // Not yet.
    assert!(sends(&rt.advance(t(3599), &dir)).is_empty());
    let c = rt.advance(t(3600), &dir);
    let sent = sends(&c);
    assert_eq!(sent.len(), 1);
    let m = sent[0];
    assert_eq!(m.to.as_deref(), Some("ada@example.com"));
    assert_eq!(m.content["subject"], json!("Your Lamp is waiting"));
    assert_eq!(m.content["body"], json!("Hi Ada"));
    assert_eq!(m.key, format!("{}/remind", c.journeys[0].id));
    assert_eq!(c.journeys[0].outcome, Some(Outcome::Completed));
    assert_eq!(rt.timer_count(), 0);
    assert!(sends(&rt.advance(t(99_999), &dir)).is_empty());
}

#[test]
fn an_order_in_time_sends_nothing_and_ends_the_journey_as_a_goal() {
    let mut rt = runtime_with(abandoned_cart());
    let dir = people();
    let add = track(
        Some("ada"),
        None,
        "Product Added",
        json!({"cart_id": "c1"}),
        "m1",
        0,
    );
    rt.on_event(tenant(), &add, &dir, t(0));
    // An order of another cart is not this cart's.
    let other = track(
        Some("ada"),
        None,
        "Order Completed",
        json!({"cart_id": "c9"}),
        "m2",
        100,
    );
    assert!(
        rt.on_event(tenant(), &other, &dir, t(100))
            .journeys
            .is_empty()
    );
    let order = track(
        Some("ada"),
        None,
        "Order Completed",
        json!({"cart_id": "c1"}),
        "m3",
        200,
    );
    let c = rt.on_event(tenant(), &order, &dir, t(200));
    assert_eq!(c.journeys.len(), 1);
    assert_eq!(c.journeys[0].outcome, Some(Outcome::Goal));
    assert_eq!(rt.timer_count(), 0);
    assert!(sends(&rt.advance(t(10_000), &dir)).is_empty());
}

#[test]
fn a_goal_after_the_journey_ended_counts_as_a_conversion_within_its_window() {
    let mut rt = runtime_with(abandoned_cart());
    let dir = people();
    let add = |cart: &str, id: &str, at: i64| {
        track(
            Some("ada"),
            None,
            "Product Added",
            json!({"cart_id": cart}),
            id,
            at,
        )
    };
    let order = |cart: &str, id: &str, at: i64| {
        track(
            Some("ada"),
            None,
            "Order Completed",
            json!({"cart_id": cart}),
            id,
            at,
        )
    };
    rt.on_event(tenant(), &add("c1", "m1", 0), &dir, t(0));
    let c = rt.advance(t(3600), &dir);
    assert_eq!(sends(&c).len(), 1);
    let id = c.journeys[0].id;
    assert_eq!(c.journeys[0].outcome, Some(Outcome::Completed));
    // Another cart's order is not this journey's conversion.
    assert!(
        rt.on_event(tenant(), &order("c9", "m2", 5000), &dir, t(5000))
            .journeys
            .is_empty()
    );
    // The reminder worked: the order comes two hours later.
    let c = rt.on_event(tenant(), &order("c1", "m3", 7200), &dir, t(7200));
    assert_eq!(c.journeys.len(), 1);
    assert_eq!(c.journeys[0].id, id);
    assert_eq!(c.journeys[0].outcome, Some(Outcome::Converted));
    // Only once.
    assert!(
        rt.on_event(tenant(), &order("c1", "m4", 7300), &dir, t(7300))
            .journeys
            .is_empty()
    );
    // A cart whose order comes after the goal's 7 days is not converted, even after a
    // restart that put the ended journey back.
    rt.on_event(tenant(), &add("c2", "m5", 10_000), &dir, t(10_000));
    let ended = rt.advance(t(13_600), &dir).journeys;
    assert_eq!(ended.len(), 1);
    let mut again = runtime_with(abandoned_cart());
    again.restore(ended.clone());
    let day = 86_400;
    assert!(
        again
            .on_event(
                tenant(),
                &order("c2", "m6", 10_000 + 7 * day),
                &dir,
                t(10_000 + 7 * day)
            )
            .journeys
            .is_empty()
    );
    // Within the window, the restored journey converts.
    let mut third = runtime_with(abandoned_cart());
    third.restore(ended);
    let c = third.on_event(tenant(), &order("c2", "m7", 20_000), &dir, t(20_000));
    assert_eq!(c.journeys[0].outcome, Some(Outcome::Converted));
}

#[test]
fn a_journey_follows_a_visitor_who_signs_in() {
    let mut rt = runtime_with(abandoned_cart());
    let mut dir = Directory::default();
    dir.put(tenant(), person(&["a:anon1"], json!({})));
    let add = track(
        None,
        Some("anon1"),
        "Product Added",
        json!({"cart_id": "c1"}),
        "m1",
        0,
    );
    assert_eq!(rt.on_event(tenant(), &add, &dir, t(0)).journeys.len(), 1);
    // The visitor signs in: the profiles join the keys.
    dir.put(
        tenant(),
        person(&["u:bob", "a:anon1"], json!({"email": "bob@example.com"})),
    );
    let order = track(
        Some("bob"),
        None,
        "Order Completed",
        json!({"cart_id": "c1"}),
        "m2",
        100,
    );
    let c = rt.on_event(tenant(), &order, &dir, t(100));
    assert_eq!(
        c.journeys.len(),
        1,
        "the order of the signed-in person ends the visitor's journey"
    );
    assert_eq!(c.journeys[0].outcome, Some(Outcome::Goal));
}

#[test]
fn reading_an_event_twice_starts_nothing_twice() {
    let mut rt = runtime_with(json!({
        "trigger": {"event": {"name": "Signed Up"}},
        "reentry": "always",
        "steps": [{"id": "hello", "send": {"channel": "email", "template": {"subject": "Hi", "body": "Welcome"}}}]
    }));
    let dir = people();
    let e = track(Some("ada"), None, "Signed Up", json!({}), "m1", 0);
    let first = rt.on_event(tenant(), &e, &dir, t(0));
    let again = rt.on_event(tenant(), &e, &dir, t(1));
    // The journey ended at once, so a replay starts one with the same id and message key:
    // the store and the outbox keep the first.
    assert_eq!(sends(&first).len(), 1);
    assert_eq!(sends(&again)[0].key, sends(&first)[0].key);
    let other = track(Some("ada"), None, "Signed Up", json!({}), "m2", 5);
    assert_ne!(
        sends(&rt.on_event(tenant(), &other, &dir, t(5)))[0].key,
        sends(&first)[0].key
    );
}

#[test]
fn reentry_rules() {
    let def = |reentry: Value| {
        json!({"trigger": {"event": {"name": "Visited"}}, "reentry": reentry,
            "steps": [{"id": "d", "delay": {"hours": 1}}]})
    };
    let dir = people();
    let visit = |n: i64| track(Some("ada"), None, "Visited", json!({}), &format!("m{n}"), n);
    for (rule, expect) in [
        (json!("once"), [true, false, false, false]),
        (json!("after_exit"), [true, false, true, true]),
        (json!({"after_days": 1}), [true, false, false, true]),
        (json!("always"), [true, true, true, true]),
    ] {
        let mut rt = runtime_with(def(rule.clone()));
        let mut got = Vec::new();
        // Entries at 0 s, 60 s (the first journey still runs), 7200 s (it ended) and 2 days.
        for (i, at) in [0, 60, 7200, 172_800].into_iter().enumerate() {
            rt.advance(t(at), &dir);
            let started = rt
                .on_event(tenant(), &visit(at + i as i64), &dir, t(at))
                .journeys
                .iter()
                .any(|j| j.entered_at == t(at));
            got.push(started);
        }
        assert_eq!(got, expect, "{rule}");
    }
}

#[test]
fn a_branch_on_behaviour_reads_the_segment_that_keeps_it() {
    let mut rt = runtime_with(json!({
        "trigger": {"event": {"name": "Signed Up"}},
        "steps": [
            {"id": "buyer", "branch": {"if": {"performed": {"event": "Order Completed", "within_days": 30}}, "else": "nudge"}},
            {"id": "thanks", "send": {"channel": "email", "template": {"subject": "Thanks", "body": "."}}, "next": "end"},
            {"id": "nudge", "send": {"channel": "email", "template": {"subject": "Nudge", "body": "."}}},
            {"id": "end", "exit": {}}
        ]
    }));
    let mut dir = Directory::default();
    let mut ann = person(&["u:ann"], json!({"email": "ann@x.io"}));
    ann.segments
        .insert(livora_model::workflow::branch_segment("wf", "buyer"));
    dir.put(tenant(), ann);
    dir.put(tenant(), person(&["u:bob"], json!({"email": "bob@x.io"})));
    let mut subjects = Vec::new();
    for (n, user) in ["ann", "bob"].into_iter().enumerate() {
        let e = track(
            Some(user),
            None,
            "Signed Up",
            json!({}),
            &format!("m{n}"),
            0,
        );
        let c = rt.on_event(tenant(), &e, &dir, t(0));
        subjects.extend(sends(&c).iter().map(|m| m.content["subject"].clone()));
    }
    assert_eq!(subjects, [json!("Thanks"), json!("Nudge")]);
}

#[test]
fn tags_are_added_and_removed_through_the_tags_trait() {
    let mut rt = runtime_with(json!({
        "trigger": {"event": {"name": "Order Completed"}},
        "reentry": "always",
        "steps": [
            {"id": "vip", "add_tag": "vip"},
            {"id": "fresh", "remove_tag": "new-buyer"},
            {"id": "check", "branch": {"if": {"tag": "loyal"}, "else": "end"}},
            {"id": "thanks", "send": {"channel": "email", "template": {"subject": "Thanks", "body": "."}}},
            {"id": "end", "exit": {}}
        ]
    }));
    let mut dir = Directory::default();
    dir.put(
        tenant(),
        person(
            &["u:ann"],
            json!({"email": "a@x.io", "tags": ["new-buyer", "loyal"]}),
        ),
    );
    dir.put(
        tenant(),
        person(&["u:bob"], json!({"email": "b@x.io", "tags": ["vip"]})),
    );
    let set = |c: &Changes| -> Vec<Value> {
        c.effects
            .iter()
            .filter_map(|e| match e {
                Effect::SetTrait { name, value, .. } if name == "tags" => Some(value.clone()),
                _ => None,
            })
            .collect()
    };
    let e = track(Some("ann"), None, "Order Completed", json!({}), "m1", 0);
    let c = rt.on_event(tenant(), &e, &dir, t(0));
    assert_eq!(
        set(&c),
        [
            json!(["new-buyer", "loyal", "vip"]),
            json!(["loyal", "vip"])
        ]
    );
    // A tag the workflow added counts in a `tag` branch like a smart tag.
    assert_eq!(sends(&c).len(), 1);
    // Bob has `vip` already and never had `new-buyer`: nothing to write, no `loyal` tag.
    let e = track(Some("bob"), None, "Order Completed", json!({}), "m2", 0);
    let c = rt.on_event(tenant(), &e, &dir, t(0));
    assert!(set(&c).is_empty());
    assert!(sends(&c).is_empty());
}

#[test]
fn branches_splits_and_the_holdout_group() {
    let mut rt = runtime_with(json!({
        "trigger": {"event": {"name": "Signed Up"}},
        "reentry": "always",
        "holdout_percent": 20,
        "steps": [
            {"id": "vip", "branch": {"if": {"trait": {"name": "plan", "op": "equals", "value": "pro"}}, "else": "ab"}},
            {"id": "pro", "send": {"channel": "email", "template": {"subject": "Pro", "body": "."}}, "next": "end"},
            {"id": "ab", "split": {"branches": [{"weight": 50, "next": "a"}, {"weight": 50, "next": "b"}]}},
            {"id": "a", "send": {"channel": "email", "template": {"subject": "A", "body": "."}}, "next": "end"},
            {"id": "b", "send": {"channel": "email", "template": {"subject": "B", "body": "."}}, "next": "end"},
            {"id": "end", "exit": {}}
        ]
    }));
    let mut dir = Directory::default();
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut held = 0;
    for n in 0..2000 {
        let plan = if n % 4 == 0 { "pro" } else { "free" };
        dir.put(
            tenant(),
            person(
                &[&format!("u:p{n}")],
                json!({"email": format!("p{n}@x.io"), "plan": plan}),
            ),
        );
        let e = track(
            Some(&format!("p{n}")),
            None,
            "Signed Up",
            json!({}),
            &format!("m{n}"),
            n,
        );
        let c = rt.on_event(tenant(), &e, &dir, t(n));
        for e in &c.effects {
            match e {
                Effect::Send(m) => {
                    *counts
                        .entry(m.content["subject"].as_str().unwrap_or("").to_owned())
                        .or_default() += 1
                }
                Effect::HeldOut { .. } => held += 1,
                Effect::SetTrait { .. } => {}
            }
        }
        // The same person always gets the same branch and the same holdout answer.
        assert_eq!(c.journeys.len(), 1);
    }
    let (pro, a, b) = (counts["Pro"], counts["A"], counts["B"]);
    assert_eq!(pro + a + b + held, 2000);
    assert!((300..=450).contains(&held), "about 20 % held out: {held}");
    assert!(
        (pro as f64 / (pro + a + b) as f64 - 0.25).abs() < 0.04,
        "{pro}"
    );
    assert!((a as f64 / (a + b) as f64 - 0.5).abs() < 0.05, "{a} / {b}");
}

#[test]
fn a_journey_finishes_on_its_version_and_pausing_stops_new_ones() {
    let mut rt = runtime_with(abandoned_cart());
    let dir = people();
    let add = track(
        Some("ada"),
        None,
        "Product Added",
        json!({"cart_id": "c1", "name": "Lamp"}),
        "m1",
        0,
    );
    rt.on_event(tenant(), &add, &dir, t(0));
    let mut v2 = abandoned_cart();
    v2["steps"][1]["send"]["template"]["subject"] = json!("Version 2");
    rt.add_version(Version {
        tenant: tenant(),
        workflow: "wf".into(),
        version: 2,
        definition: Workflow::parse(&v2).expect("valid"),
    });
    rt.set_live(tenant(), "wf", Some(2));
    let c = rt.advance(t(3600), &dir);
    assert_eq!(
        sends(&c)[0].content["subject"],
        json!("Your Lamp is waiting")
    );
    let add = track(
        Some("ada"),
        None,
        "Product Added",
        json!({"cart_id": "c2"}),
        "m2",
        4000,
    );
    rt.on_event(tenant(), &add, &dir, t(4000));
    let c = rt.advance(t(4000 + 3600), &dir);
    assert_eq!(sends(&c)[0].content["subject"], json!("Version 2"));
    rt.set_live(tenant(), "wf", None);
    let add = track(
        Some("ada"),
        None,
        "Product Added",
        json!({"cart_id": "c3"}),
        "m3",
        9000,
    );
    assert!(
        rt.on_event(tenant(), &add, &dir, t(9000))
            .journeys
            .is_empty()
    );
}

#[test]
fn delays_until_a_local_time_and_a_trait() {
    let mut rt = runtime_with(json!({
        "trigger": {"event": {"name": "Signed Up"}},
        "steps": [
            {"id": "morning", "delay_until": {"time": "09:00", "weekdays": ["mon"]}},
            {"id": "renewal", "delay_until_trait": {"trait": "renews_at", "offset_minutes": -1440}},
            {"id": "tell", "send": {"channel": "sms", "template": {"body": "Renewing soon"}}}
        ]
    }));
    let mut dir = Directory::default();
    // 2026-06-03 is a Wednesday; Tokyo is UTC+9.
    dir.put(
        tenant(),
        person(
            &["u:kei"],
            json!({"phone": "+81900000000", "timezone": "Asia/Tokyo",
        "renews_at": "2026-06-20T00:00:00Z"}),
        ),
    );
    let now = Utc
        .with_ymd_and_hms(2026, 6, 3, 12, 0, 0)
        .single()
        .expect("time");
    let e = track(Some("kei"), None, "Signed Up", json!({}), "m1", 0);
    rt.on_event(tenant(), &e, &dir, now);
    // Monday 2026-06-08 09:00 in Tokyo is 00:00 UTC.
    let monday = Utc
        .with_ymd_and_hms(2026, 6, 8, 0, 0, 0)
        .single()
        .expect("time");
    assert_eq!(rt.next_wake(), Some(monday));
    rt.advance(monday, &dir);
    let day_before = Utc
        .with_ymd_and_hms(2026, 6, 19, 0, 0, 0)
        .single()
        .expect("time");
    assert_eq!(rt.next_wake(), Some(day_before));
    let c = rt.advance(day_before, &dir);
    assert_eq!(sends(&c)[0].to.as_deref(), Some("+81900000000"));
    assert_eq!(sends(&c)[0].time_zone.as_deref(), Some("Asia/Tokyo"));
}

#[test]
fn delays_until_the_persons_best_hour_or_the_fallback() {
    let mut rt = runtime_with(json!({
        "trigger": {"event": {"name": "Signed Up"}},
        "steps": [
            {"id": "best", "delay_until_best_hour": {"time": "10:00"}},
            {"id": "tell", "send": {"channel": "sms", "template": {"body": "Hello"}}}
        ]
    }));
    let mut dir = Directory::default();
    let mut owl = person(&["u:owl"], json!({"phone": "+15550000001"}));
    owl.computed.insert("best_hour".into(), json!(21.0));
    dir.put(tenant(), owl);
    dir.put(
        tenant(),
        person(&["u:new"], json!({"phone": "+15550000002"})),
    );
    let now = Utc
        .with_ymd_and_hms(2026, 6, 3, 12, 0, 0)
        .single()
        .expect("time");
    rt.on_event(
        tenant(),
        &track(Some("owl"), None, "Signed Up", json!({}), "m1", 0),
        &dir,
        now,
    );
    rt.on_event(
        tenant(),
        &track(Some("new"), None, "Signed Up", json!({}), "m2", 0),
        &dir,
        now,
    );
    // The tenant's zone is UTC here: 21:00 today for the owl, 10:00 tomorrow for the other.
    let at = |d, h| {
        Utc.with_ymd_and_hms(2026, 6, d, h, 0, 0)
            .single()
            .expect("time")
    };
    assert_eq!(rt.next_wake(), Some(at(3, 21)));
    let c = rt.advance(at(3, 21), &dir);
    assert_eq!(sends(&c)[0].to.as_deref(), Some("+15550000001"));
    assert_eq!(rt.next_wake(), Some(at(4, 10)));
    let c = rt.advance(at(4, 10), &dir);
    assert_eq!(sends(&c)[0].to.as_deref(), Some("+15550000002"));
}

#[test]
fn segment_triggers_and_a_missing_address() {
    let mut rt = runtime_with(json!({
        "trigger": {"segment_entered": "at-risk"},
        "steps": [{"id": "win", "send": {"channel": "email", "template": {"subject": "Miss you", "body": "."}}}]
    }));
    let mut dir = people();
    dir.put(tenant(), person(&["u:noemail"], json!({})));
    let other = track(
        Some("ada"),
        None,
        "Segment Entered",
        json!({"segment_id": "vip"}),
        "s0",
        0,
    );
    assert!(
        rt.on_event(tenant(), &other, &dir, t(0))
            .journeys
            .is_empty()
    );
    let e = track(
        Some("ada"),
        None,
        "Segment Entered",
        json!({"segment_id": "at-risk"}),
        "s1",
        0,
    );
    assert_eq!(sends(&rt.on_event(tenant(), &e, &dir, t(0)))[0].error, None);
    let e = track(
        Some("noemail"),
        None,
        "Segment Entered",
        json!({"segment_id": "at-risk"}),
        "s2",
        0,
    );
    let c = rt.on_event(tenant(), &e, &dir, t(0));
    assert_eq!(
        sends(&c)[0].error.as_deref(),
        Some("the person has no email address")
    );
}

#[test]
fn restored_journeys_go_on_where_they_were() {
    let mut rt = runtime_with(abandoned_cart());
    let dir = people();
    let add = track(
        Some("ada"),
        None,
        "Product Added",
        json!({"cart_id": "c1", "name": "Lamp"}),
        "m1",
        0,
    );
    let saved = rt.on_event(tenant(), &add, &dir, t(0)).journeys;
    let json = serde_json::to_string(&saved).expect("json");
    let mut back = runtime_with(abandoned_cart());
    back.restore(serde_json::from_str::<Vec<Journey>>(&json).expect("journeys"));
    assert_eq!(back.next_wake(), Some(t(3600)));
    // Still waiting: a second add starts nothing; the timer sends once.
    let add2 = track(
        Some("ada"),
        None,
        "Product Added",
        json!({"cart_id": "c2"}),
        "m2",
        10,
    );
    assert!(
        back.on_event(tenant(), &add2, &dir, t(10))
            .journeys
            .is_empty()
    );
    assert_eq!(sends(&back.advance(t(3600), &dir)).len(), 1);
}

#[test]
fn a_schedule_starts_its_audience_once_per_run_in_the_tenant_time_zone() {
    let mut rt = runtime_with(json!({
        "trigger": {"schedule": {"cron": "0 9 * * *", "segment": "newsletter"}},
        "steps": [{"id": "digest", "send": {"channel": "email", "template": {"subject": "Daily", "body": "."}}}]
    }));
    rt.set_time_zone(tenant(), chrono_tz::Europe::Paris);
    let mut dir = Directory::default();
    for (n, member) in [("ann", true), ("ben", true), ("cyd", false)] {
        let mut p = person(&[&format!("u:{n}")], json!({"email": format!("{n}@x.io")}));
        if member {
            p.segments.insert("newsletter".into());
        }
        dir.put(tenant(), p);
    }
    // 2026-06-03 06:00 UTC (08:00 in Paris): armed, nothing yet.
    let morning = Utc
        .with_ymd_and_hms(2026, 6, 3, 6, 0, 0)
        .single()
        .expect("time");
    assert!(sends(&rt.advance(morning, &dir)).is_empty());
    let nine = Utc
        .with_ymd_and_hms(2026, 6, 3, 7, 0, 0)
        .single()
        .expect("time");
    assert_eq!(rt.next_wake(), Some(nine));
    let c = rt.advance(nine, &dir);
    let mut to: Vec<_> = sends(&c).iter().filter_map(|m| m.to.clone()).collect();
    to.sort();
    assert_eq!(to, ["ann@x.io", "ben@x.io"]);
    assert!(
        sends(&rt.advance(nine + chrono::Duration::minutes(5), &dir)).is_empty(),
        "once per run"
    );
    let next_day = nine + chrono::Duration::days(1);
    assert_eq!(rt.next_wake(), Some(next_day));
    assert_eq!(
        sends(&rt.advance(next_day, &dir)).len(),
        2,
        "and again the next day"
    );
}

#[test]
fn timers_fire_in_bounded_batches_oldest_first() {
    let mut rt = runtime_with(json!({
        "trigger": {"event": {"name": "Signed Up"}},
        "steps": [{"id": "wait", "delay": {"minutes": 1}},
                  {"id": "hi", "send": {"channel": "email", "template": {"subject": "Hi", "body": "."}}}]
    }));
    let mut dir = Directory::default();
    for n in 0..3 {
        dir.put(
            tenant(),
            person(
                &[&format!("u:p{n}")],
                json!({"email": format!("p{n}@x.io")}),
            ),
        );
        let e = track(
            Some(&format!("p{n}")),
            None,
            "Signed Up",
            json!({}),
            &format!("m{n}"),
            n,
        );
        rt.on_event(tenant(), &e, &dir, t(n));
    }
    let later = t(3600);
    let first = rt.advance_up_to(later, &dir, 2);
    let to: Vec<_> = sends(&first).iter().filter_map(|m| m.to.clone()).collect();
    assert_eq!(to, ["p0@x.io", "p1@x.io"]);
    assert_eq!(rt.timer_count(), 1);
    assert_eq!(sends(&rt.advance_up_to(later, &dir, 2)).len(), 1);
    assert_eq!(rt.timer_count(), 0);
}
