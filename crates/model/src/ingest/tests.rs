//! Tests for message parsing and normalisation.

use super::*;
use proptest::prelude::*;

fn env_at(received: &str) -> Envelope<'static> {
    Envelope {
        received_at: DateTime::parse_from_rfc3339(received)
            .expect("valid test time")
            .with_timezone(&Utc),
        client_ip: Some("10.1.2.3"),
        future_tolerance: Duration::minutes(5),
        sent_at: None,
        context: None,
        integrations: None,
    }
}

fn check(json: &str, kind: Option<EventType>) -> Result<Event, ItemErrorCode> {
    let env = env_at("2026-01-01T12:00:00Z");
    parse_item(json)
        .and_then(|m| normalise(m, kind, &env))
        .map_err(|e| e.code)
}

#[test]
fn refusals_have_their_codes() {
    use ItemErrorCode::*;
    let cases: &[(&str, ItemErrorCode)] = &[
        ("[1]", NotAnObject),
        ("42", NotAnObject),
        (
            r#"{"type":"track","event":"x","userId":"u","messageId":"lv-seg-vip-3-1-1733500000000000"}"#,
            ReservedMessageId,
        ),
        (
            r#"{"type":"identify","userId":"u","messageId":"lv-"}"#,
            ReservedMessageId,
        ),
        (r#"{"type":"track","userId":"u"}"#, MissingEvent),
        (r#"{"type":"track","event":"","userId":"u"}"#, MissingEvent),
        (
            r#"{"type":"track","event":"x","anonymousId":null}"#,
            MissingIdentity,
        ),
        (
            r#"{"type":"track","event":"x","userId":""}"#,
            MissingIdentity,
        ),
        (r#"{"event":"x","userId":"u"}"#, MissingType),
        (r#"{"type":"launch","userId":"u"}"#, UnknownType),
        (r#"{"type":"group","userId":"u"}"#, MissingGroupId),
        (r#"{"type":"alias","userId":"u"}"#, MissingPreviousId),
        (r#"{"type":"track","event":5,"userId":"u"}"#, InvalidField),
        (
            r#"{"type":"track","event":"x","userId":{"a":1}}"#,
            InvalidField,
        ),
        (
            r#"{"type":"track","event":"x","userId":"u","properties":[1]}"#,
            InvalidField,
        ),
        (
            r#"{"type":"track","event":"x","userId":"u","context":"c"}"#,
            InvalidField,
        ),
        (
            r#"{"type":"track","event":"x","userId":"u","timestamp":"yesterday"}"#,
            InvalidTimestamp,
        ),
        (
            r#"{"type":"track","event":"x","userId":"u","timestamp":5}"#,
            InvalidField,
        ),
    ];
    for (json, code) in cases {
        assert_eq!(check(json, None).err(), Some(*code), "{json}");
    }
}

#[test]
fn error_names_the_field() {
    let e = parse_item(r#"{"userId":true}"#).expect_err("bool user id");
    assert!(e.message.contains("`userId`"), "{}", e.message);
}

#[test]
fn python_sdk_null_anonymous_id_is_absent() {
    let ev = check(
        r#"{"type":"identify","userId":"u1","anonymousId":null,"traits":{"plan":"pro"}}"#,
        None,
    )
    .expect("valid");
    assert_eq!(ev.anonymous_id, None);
    assert_eq!(ev.traits.expect("traits").get(), r#"{"plan":"pro"}"#);
}

#[test]
fn numeric_ids_become_text_and_message_id_is_generated() {
    let ev = check(r#"{"event":"x","userId":42}"#, Some(EventType::Track)).expect("valid");
    assert_eq!(ev.user_id.as_deref(), Some("42"));
    assert_eq!(ev.message_id.len(), 36);
    let ev = check(
        r#"{"event":"x","userId":"u","messageId":"m-1"}"#,
        Some(EventType::Track),
    )
    .expect("valid");
    assert_eq!(ev.message_id, "m-1");
}

#[test]
fn endpoint_type_wins_over_body_type() {
    let ev = check(
        r#"{"type":"track","userId":"u","name":"Home"}"#,
        Some(EventType::Page),
    )
    .expect("valid");
    assert_eq!(ev.kind, EventType::Page);
    assert_eq!(ev.name.as_deref(), Some("Home"));
}

#[test]
fn properties_keep_their_exact_text() {
    let props = r#"{"big":123456789012345678901234567890,"nested":{"a":[1,2.50]}}"#;
    let ev = check(
        &format!(r#"{{"event":"x","userId":"u","properties":{props}}}"#),
        Some(EventType::Track),
    )
    .expect("valid");
    assert_eq!(ev.properties.expect("properties").get(), props);
}

#[test]
fn batch_context_is_merged_and_ip_recorded() {
    let batch_ctx: Map<String, Value> =
        serde_json::from_str(r#"{"library":{"name":"b"},"locale":"en"}"#).expect("json");
    let mut env = env_at("2026-01-01T12:00:00Z");
    env.context = Some(&batch_ctx);
    let m = parse_item(r#"{"type":"track","event":"x","userId":"u","context":{"locale":"fr"}}"#)
        .expect("parse");
    let ev = normalise(m, None, &env).expect("valid");
    assert_eq!(ev.context["locale"], "fr");
    assert_eq!(ev.context["library"]["name"], "b");
    assert_eq!(ev.context["ip"], "10.1.2.3");

    let m = parse_item(r#"{"type":"track","event":"x","userId":"u","context":{"ip":"1.1.1.1"}}"#)
        .expect("parse");
    assert_eq!(
        normalise(m, None, &env).expect("valid").context["ip"],
        "1.1.1.1"
    );
}

#[test]
fn future_timestamps_are_clamped_and_flagged() {
    let ev = check(
        r#"{"event":"x","userId":"u","timestamp":"2026-01-01T13:00:00Z"}"#,
        Some(EventType::Track),
    )
    .expect("valid");
    assert!(ev.timestamp_clamped);
    assert_eq!(ev.timestamp, ev.received_at);
    assert_eq!(
        ev.original_timestamp.as_deref(),
        Some("2026-01-01T13:00:00Z")
    );

    let ev = check(
        r#"{"event":"x","userId":"u","timestamp":"2026-01-01T12:04:00Z"}"#,
        Some(EventType::Track),
    )
    .expect("valid");
    assert!(!ev.timestamp_clamped);
}

#[test]
fn batch_envelope_keeps_items_raw() {
    let body = br#"{"batch":[{"type":"track"},7],"sentAt":"2026-01-01T00:00:00Z","writeKey":"k"}"#;
    let b = parse_batch(body).expect("envelope");
    assert_eq!(b.batch.len(), 2);
    assert_eq!(b.batch[1].get(), "7");
    assert_eq!(b.write_key.as_deref(), Some("k"));
    assert!(parse_batch(br#"{"batch":{}}"#).is_err());
    assert!(parse_batch(b"{").is_err());
}

#[test]
fn event_round_trips_through_json() {
    let ev = check(
        r#"{"event":"Order Completed","userId":"u","properties":{"total":9.5}}"#,
        Some(EventType::Track),
    )
    .expect("valid");
    let text = serde_json::to_string(&ev).expect("encode");
    let back: Event = serde_json::from_str(&text).expect("decode");
    assert_eq!(serde_json::to_string(&back).expect("encode"), text);
}

proptest! {
    /// Skew correction: the corrected time is receivedAt minus the client-measured delay,
    /// whatever the client's clock offset.
    #[test]
    fn skew_correction_matches_reference(
        skew_s in -86_400i64..86_400,
        delay_ms in 0i64..600_000,
    ) {
        let received: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z")
            .expect("time").with_timezone(&Utc);
        // The client's clock is `skew_s` off; it recorded the event `delay_ms` before sending.
        let client_now = received + Duration::seconds(skew_s);
        let ts = client_now - Duration::milliseconds(delay_ms);
        let json = format!(
            r#"{{"event":"x","userId":"u","timestamp":"{}","sentAt":"{}"}}"#,
            ts.to_rfc3339(), client_now.to_rfc3339()
        );
        let mut env = env_at("2026-03-01T10:00:00Z");
        env.client_ip = None;
        let ev = normalise(parse_item(&json).expect("parse"), Some(EventType::Track), &env)
            .expect("valid");
        prop_assert_eq!(ev.timestamp, received - Duration::milliseconds(delay_ms));
        prop_assert!(!ev.timestamp_clamped);
    }
}

#[test]
fn numbers_out_of_range_are_refused_but_big_integers_kept() {
    let e = parse_item(r#"{"event":"x","userId":"u","properties":{"a":[{"p":1e999}]}}"#)
        .expect_err("infinite number");
    assert_eq!(e.code, ItemErrorCode::InvalidField);
    assert!(e.message.contains("out of range"), "{}", e.message);
    let ok = r#"{"event":"x","userId":"u","traits":{"p":123456789012345678901234567890123}}"#;
    let m = parse_item(ok).expect("big integer");
    assert_eq!(
        m.traits.expect("traits").get(),
        r#"{"p":123456789012345678901234567890123}"#
    );
}

proptest! {
    /// The cheap pre-check never lets an infinite number through: whenever the full walk
    /// refuses a text, the pre-check flags it.
    #[test]
    fn overflow_precheck_is_conservative(
        mantissa in "[1-9][0-9]{0,4}(\\.[0-9]{1,3})?",
        exp in proptest::option::of(-400i32..400),
        digits in 0usize..400,
    ) {
        let number = match exp {
            Some(e) => format!("{mantissa}e{e}"),
            None => format!("{mantissa}{}", "7".repeat(digits)),
        };
        let text = format!(r#"{{"a":[1,{{"b":{number}}}],"s":"x"}}"#);
        let refused = serde_json::from_str::<Finite>(&text).is_err();
        if refused {
            prop_assert!(scan(text.as_bytes()).may_overflow, "{}", text);
        }
    }
}

#[test]
fn nesting_is_measured_outside_strings_and_limited() {
    let s = scan(br#"{"a":"{[{[","b":[{"c":"\\\"]"}]}"#);
    assert_eq!(
        (s.depth, s.may_overflow, s.unicode_escape),
        (3, false, false)
    );
    assert!(!scan(br#"{"note":"1e999 in a string"}"#).may_overflow);
    let ok = format!(
        r#"{{"event":"x","userId":"u","properties":{{"a":{}1{}}}}}"#,
        "[".repeat(MAX_DEPTH - 1),
        "]".repeat(MAX_DEPTH - 1)
    );
    assert!(parse_item(&ok).is_ok());
    let too_deep = format!(
        r#"{{"event":"x","userId":"u","properties":{{"a":{}1{}}}}}"#,
        "[".repeat(MAX_DEPTH),
        "]".repeat(MAX_DEPTH)
    );
    let e = parse_item(&too_deep).expect_err("too deep");
    assert_eq!(e.code, ItemErrorCode::InvalidField);
    assert!(e.message.contains("levels deep"), "{}", e.message);
}

#[test]
fn text_a_reader_cannot_parse_is_refused() {
    // A lone surrogate is valid JSON syntax for a raw parser but not a string anyone can decode.
    for json in [
        r#"{"event":"x","userId":"u","properties":{"a":"\ud800"}}"#,
        r#"{"event":"x","userId":"u","traits":{"a":["\udfff x"]}}"#,
    ] {
        let e = parse_item(json).expect_err("lone surrogate");
        assert_eq!(e.code, ItemErrorCode::InvalidField, "{json}");
    }
    let ok = parse_item(r#"{"event":"x","userId":"u","properties":{"a":"\u00e9\ud83d\ude00"}}"#);
    assert!(ok.is_ok(), "valid escapes and pairs pass");
    // context and integrations have the same depth limit, in items and in the batch envelope.
    let deep = format!("{}1{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
    let e = parse_item(&format!(
        r#"{{"event":"x","userId":"u","context":{{"a":{deep}}}}}"#
    ))
    .expect_err("deep context");
    assert_eq!(e.code, ItemErrorCode::InvalidField);
    let body = format!(r#"{{"batch":[],"context":{{"a":{deep}}}}}"#);
    assert!(parse_batch(body.as_bytes()).is_err());
}

#[test]
fn iso_dates_without_offsets_are_utc_and_implausible_times_are_not_used() {
    for (sent, stored) in [
        ("2025-06-01", "2025-06-01T00:00:00Z"),
        ("2025-06-01T10:20:30", "2025-06-01T10:20:30Z"),
        ("2025-06-01 10:20:30.5", "2025-06-01T10:20:30.500Z"),
        ("2025-06-01T12:20:30+02:00", "2025-06-01T10:20:30Z"),
    ] {
        let ev = check(
            &format!(r#"{{"event":"x","userId":"u","timestamp":"{sent}"}}"#),
            Some(EventType::Track),
        )
        .expect("valid");
        assert_eq!(crate::time::format(&ev.timestamp), stored, "{sent}");
    }
    // Go's zero time: not an event time; receivedAt is used and the event is flagged.
    let ev = check(
        r#"{"event":"x","userId":"u","timestamp":"0001-01-01T00:00:00Z"}"#,
        Some(EventType::Track),
    )
    .expect("valid");
    assert_eq!((ev.timestamp, ev.timestamp_clamped), (ev.received_at, true));
    // An absurd sentAt is ignored instead of dragging the event thousands of years back.
    let ev = check(
        r#"{"event":"x","userId":"u","timestamp":"2026-01-01T11:00:00Z","sentAt":"9999-01-01T00:00:00Z"}"#,
        Some(EventType::Track),
    )
    .expect("valid");
    assert_eq!(crate::time::format(&ev.timestamp), "2026-01-01T11:00:00Z");
}
