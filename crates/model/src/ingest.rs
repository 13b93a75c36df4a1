//! Parsing and normalisation of Segment HTTP Tracking API bodies.
//!
//! [`parse_batch`] reads a `/v1/batch` body: the envelope must be valid JSON, but items are kept
//! as raw JSON so that each can be judged on its own ([`parse_item`]) and a bad item is reported
//! with its index instead of failing the whole batch. [`normalise`] turns a parsed item into an
//! [`Event`].
//!
//! Rules (documented in the README, "Ingestion semantics"):
//! - `userId`, `anonymousId`, `groupId`, `previousId` and `messageId` may be strings or numbers
//!   (numbers are stored as their decimal text); `null` and `""` count as absent.
//! - `properties`, `traits`, `context` and `integrations` must be objects or `null`.
//! - `timestamp = receivedAt − (sentAt − timestamp)` when both are present; a timestamp further
//!   than the tolerance in the future is clamped to `receivedAt` and flagged.
//! - batch-level `context` and `integrations` are merged into each item (the item's keys win);
//!   `context.ip` is set to the client address unless the client set it.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, Utc};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::{Event, EventType, ItemError, ItemErrorCode};

/// The envelope of a `/v1/batch` (or `/v1/import`) body. Items borrow from the request body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchEnvelope<'a> {
    #[serde(borrow)]
    pub batch: Vec<&'a RawValue>,
    #[serde(default, deserialize_with = "limited_map")]
    pub context: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "limited_map")]
    pub integrations: Option<Map<String, Value>>,
    #[serde(default)]
    pub sent_at: Option<String>,
    #[serde(default)]
    pub write_key: Option<String>,
}

/// Parses a batch body. Errors here concern the whole request (invalid JSON, no `batch` array).
pub fn parse_batch(body: &[u8]) -> Result<BatchEnvelope<'_>, serde_json::Error> {
    serde_json::from_slice(body)
}

/// The `writeKey` of a message whose other fields may be invalid.
pub fn write_key_of(json: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct KeyOnly {
        #[serde(rename = "writeKey", default)]
        write_key: Option<Value>,
    }
    let k: KeyOnly = serde_json::from_str(json).ok()?;
    match k.write_key {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

/// One message as the client sent it, before normalisation.
#[derive(Debug, Default, Clone)]
pub struct RawMessage {
    pub kind: Option<String>,
    pub message_id: Option<String>,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub event: Option<String>,
    pub name: Option<String>,
    pub category: Option<String>,
    pub group_id: Option<String>,
    pub previous_id: Option<String>,
    pub properties: Option<Box<RawValue>>,
    pub traits: Option<Box<RawValue>>,
    pub context: Option<Map<String, Value>>,
    pub integrations: Option<Map<String, Value>>,
    pub timestamp: Option<String>,
    pub original_timestamp: Option<String>,
    pub sent_at: Option<String>,
    pub write_key: Option<String>,
}

/// Parses one message. A JSON syntax error or a field of the wrong type gives an [`ItemError`]
/// naming the field.
pub fn parse_item(json: &str) -> Result<RawMessage, ItemError> {
    let mut de = serde_json::Deserializer::from_str(json);
    let result = de.deserialize_any(MessageVisitor).and_then(|m| {
        de.end()?;
        Ok(m)
    });
    result.map_err(|e| {
        let text = e.to_string();
        if let Some(rest) = text.strip_prefix(NOT_OBJECT) {
            ItemError::new(
                ItemErrorCode::NotAnObject,
                format!("message must be a JSON object{rest}"),
            )
        } else {
            ItemError::new(ItemErrorCode::InvalidField, text)
        }
    })
}

const NOT_OBJECT: &str = "\u{1}not-object";

struct MessageVisitor;

impl<'de> Visitor<'de> for MessageVisitor {
    type Value = RawMessage;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawMessage, A::Error> {
        let mut m = RawMessage::default();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            macro_rules! field {
                ($ty:ty) => {
                    map.next_value::<$ty>()
                        .map_err(|e| de::Error::custom(format_args!("field `{key}`: {e}")))?
                };
            }
            match key.as_ref() {
                "type" => m.kind = field!(Option<String>),
                "messageId" => m.message_id = field!(Option<Id>).and_then(Id::into_option),
                "userId" => m.user_id = field!(Option<Id>).and_then(Id::into_option),
                "anonymousId" => m.anonymous_id = field!(Option<Id>).and_then(Id::into_option),
                "groupId" => m.group_id = field!(Option<Id>).and_then(Id::into_option),
                "previousId" => m.previous_id = field!(Option<Id>).and_then(Id::into_option),
                "event" => m.event = field!(Option<String>),
                "name" => m.name = field!(Option<String>),
                "category" => m.category = field!(Option<String>),
                "properties" => m.properties = field!(Option<ObjectText>).map(|o| o.0),
                "traits" => m.traits = field!(Option<ObjectText>).map(|o| o.0),
                "context" => m.context = field!(Option<LimitedMap>).map(|l| l.0),
                "integrations" => m.integrations = field!(Option<LimitedMap>).map(|l| l.0),
                "timestamp" => m.timestamp = field!(Option<String>),
                "originalTimestamp" => m.original_timestamp = field!(Option<String>),
                "sentAt" => m.sent_at = field!(Option<String>),
                "writeKey" => m.write_key = field!(Option<String>),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(m)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawMessage, E> {
        Err(E::custom(NOT_OBJECT))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawMessage, E> {
        Err(E::custom(NOT_OBJECT))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawMessage, E> {
        Err(E::custom(NOT_OBJECT))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawMessage, E> {
        Err(E::custom(NOT_OBJECT))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<RawMessage, E> {
        Err(E::custom(NOT_OBJECT))
    }
    fn visit_unit<E: de::Error>(self) -> Result<RawMessage, E> {
        Err(E::custom(NOT_OBJECT))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<RawMessage, A::Error> {
        Err(de::Error::custom(NOT_OBJECT))
    }
}

/// An identifier that SDKs send as a string or a number.
struct Id(String);

impl Id {
    fn into_option(self) -> Option<String> {
        (!self.0.is_empty()).then_some(self.0)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Id;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Id, E> {
                Ok(Id(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Id, E> {
                Ok(Id(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Id, E> {
                Ok(Id(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Id, E> {
                Ok(Id(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Id, E> {
                Ok(Id(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A JSON object kept as its exact text, after checking that every number in it is finite
/// (`1e999` is valid JSON syntax but no reader can represent it).
struct ObjectText(Box<RawValue>);

impl<'de> Deserialize<'de> for ObjectText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        if raw.get().starts_with('{') {
            check_readable(raw.get()).map_err(de::Error::custom)?;
            Ok(ObjectText(raw))
        } else {
            Err(de::Error::custom(format_args!(
                "expected an object, got {}",
                json_kind(raw.get())
            )))
        }
    }
}

/// The deepest nesting accepted inside `properties` or `traits`: the stored event stays well
/// under serde_json's recursion limit (128), so every reader can parse what was accepted.
pub const MAX_DEPTH: usize = 100;

/// What one pass over JSON text found.
struct Scan {
    depth: usize,
    may_overflow: bool,
    unicode_escape: bool,
}

/// One pass over valid JSON text: the deepest nesting, whether a number could lie beyond `f64`
/// (that needs an exponent or more than 300 digits in a row), and whether a string holds a
/// `\u` escape. Cheap enough to run on every object, so the full walk ([`Finite`]) runs only
/// on the rare text that might need it.
fn scan(text: &[u8]) -> Scan {
    let (mut depth, mut max_depth) = (0usize, 0usize);
    let (mut in_str, mut escaped, mut unicode_escape) = (false, false, false);
    let (mut run, mut prev_digit, mut may_overflow) = (0usize, false, false);
    for &b in text {
        if in_str {
            if escaped {
                escaped = false;
                unicode_escape |= b == b'u';
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        if b.is_ascii_digit() {
            run += 1;
            may_overflow |= run > 300;
            prev_digit = true;
            continue;
        }
        may_overflow |= prev_digit && (b | 0x20) == b'e';
        run = 0;
        prev_digit = false;
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                max_depth = max_depth.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Scan {
        depth: max_depth,
        may_overflow,
        unicode_escape,
    }
}

/// Walks a JSON value without building it; fails on a number that does not fit an `f64`.
struct Finite;

impl<'de> Deserialize<'de> for Finite {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Finite)
    }
}

impl<'de> Visitor<'de> for Finite {
    type Value = Finite;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Finite, E> {
        Ok(Finite)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Finite, E> {
        Ok(Finite)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Finite, E> {
        Ok(Finite)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Finite, E> {
        if v.is_finite() {
            Ok(Finite)
        } else {
            Err(E::custom("number out of range"))
        }
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Finite, E> {
        Ok(Finite)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Finite, E> {
        Ok(Finite)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Finite, A::Error> {
        while seq.next_element::<Finite>()?.is_some() {}
        Ok(Finite)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Finite, A::Error> {
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value::<Finite>()?;
        }
        Ok(Finite)
    }
}

/// Refuses JSON text that a reader could not parse back: nesting deeper than [`MAX_DEPTH`],
/// numbers beyond `f64`, and `\u` escapes that are not valid UTF-16 (a lone surrogate).
fn check_readable(text: &str) -> Result<(), String> {
    let s = scan(text.as_bytes());
    if s.depth > MAX_DEPTH {
        return Err(format!(
            "nested {} levels deep; the limit is {MAX_DEPTH}",
            s.depth
        ));
    }
    if s.may_overflow || s.unicode_escape {
        serde_json::from_str::<Finite>(text).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// An object checked by [`check_readable`], then decoded (for `context` and `integrations`,
/// which ingestion edits).
struct LimitedMap(Map<String, Value>);

impl<'de> Deserialize<'de> for LimitedMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <&RawValue>::deserialize(d)?;
        check_readable(raw.get()).map_err(de::Error::custom)?;
        serde_json::from_str(raw.get())
            .map(LimitedMap)
            .map_err(de::Error::custom)
    }
}

fn limited_map<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Map<String, Value>>, D::Error> {
    Ok(Option::<LimitedMap>::deserialize(d)?.map(|l| l.0))
}

fn json_kind(text: &str) -> &'static str {
    match text.as_bytes().first() {
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        _ => "a number",
    }
}

/// Everything about the request that normalisation needs besides the message itself.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    pub received_at: DateTime<Utc>,
    /// The client's address, recorded as `context.ip` unless the message carries one.
    pub client_ip: Option<&'a str>,
    /// Timestamps further ahead of `received_at` than this are clamped.
    pub future_tolerance: Duration,
    /// Batch-level `sentAt`, used when the item has none.
    pub sent_at: Option<&'a str>,
    pub context: Option<&'a Map<String, Value>>,
    pub integrations: Option<&'a Map<String, Value>>,
}

/// Turns a parsed message into an [`Event`]. `kind` is the type fixed by the endpoint
/// (`/v1/track` …); `None` for batch items, which must carry their own `type`.
pub fn normalise(
    m: RawMessage,
    kind: Option<EventType>,
    env: &Envelope<'_>,
) -> Result<Event, ItemError> {
    let kind = match kind {
        Some(k) => k,
        None => match m.kind.as_deref() {
            None => {
                return Err(ItemError::new(
                    ItemErrorCode::MissingType,
                    "batch item has no `type`",
                ));
            }
            Some(t) => EventType::parse(t).ok_or_else(|| {
                ItemError::new(
                    ItemErrorCode::UnknownType,
                    format!(
                        "unknown type {t:?}; expected track, identify, page, screen, group or alias"
                    ),
                )
            })?,
        },
    };
    if m.user_id.is_none() && m.anonymous_id.is_none() {
        return Err(ItemError::new(
            ItemErrorCode::MissingIdentity,
            "a message needs a `userId` or an `anonymousId`",
        ));
    }
    if m.message_id
        .as_deref()
        .is_some_and(|id| id.starts_with(crate::INTERNAL_ID_PREFIX))
    {
        return Err(ItemError::new(
            ItemErrorCode::ReservedMessageId,
            format!(
                "a messageId starting with {:?} is reserved: Livora gives such ids to the events it writes itself",
                crate::INTERNAL_ID_PREFIX
            ),
        ));
    }
    match kind {
        EventType::Track if m.event.as_deref().is_none_or(str::is_empty) => {
            return Err(ItemError::new(
                ItemErrorCode::MissingEvent,
                "a track call needs an `event` name",
            ));
        }
        EventType::Track
            if m.event
                .as_deref()
                .is_some_and(|e| crate::RESERVED_EVENTS.contains(&e)) =>
        {
            return Err(ItemError::new(
                ItemErrorCode::ReservedEvent,
                format!(
                    "the event name {:?} is reserved: Livora writes it itself when a person enters or leaves a segment or tag",
                    m.event.as_deref().unwrap_or_default()
                ),
            ));
        }
        EventType::Group if m.group_id.is_none() => {
            return Err(ItemError::new(
                ItemErrorCode::MissingGroupId,
                "a group call needs a `groupId`",
            ));
        }
        EventType::Alias if m.previous_id.is_none() => {
            return Err(ItemError::new(
                ItemErrorCode::MissingPreviousId,
                "an alias call needs a `previousId`",
            ));
        }
        _ => {}
    }

    let timestamp = m
        .timestamp
        .as_deref()
        .or(m.original_timestamp.as_deref())
        .map(|t| parse_time("timestamp", t))
        .transpose()?;
    let sent_at = m
        .sent_at
        .as_deref()
        .or(env.sent_at)
        .map(|t| parse_time("sentAt", t))
        .transpose()?;
    let received_at = env.received_at;
    // Times outside 1970..=9999 (a Go zero time, a broken clock) are not used: the event gets
    // receivedAt and the flag.
    let mut clamped = timestamp.is_some_and(|t| !plausible(t));
    let timestamp = timestamp.filter(|t| plausible(*t));
    let sent_at = sent_at.filter(|t| plausible(*t));
    let mut corrected = match (timestamp, sent_at) {
        (Some(ts), Some(sent)) => received_at
            .checked_sub_signed(sent - ts)
            .filter(|t| plausible(*t))
            .unwrap_or(ts),
        (Some(ts), None) => ts,
        (None, _) => received_at,
    };
    if corrected > received_at + env.future_tolerance {
        corrected = received_at;
        clamped = true;
    }

    let mut context = merge(env.context, m.context);
    if let Some(ip) = env.client_ip
        && !context.contains_key("ip")
    {
        context.insert("ip".to_owned(), Value::String(ip.to_owned()));
    }
    let integrations = merge(env.integrations, m.integrations);

    let (properties, traits) = match kind {
        EventType::Identify | EventType::Group => (None, m.traits.or(m.properties)),
        _ => (m.properties, m.traits),
    };

    Ok(Event {
        kind,
        message_id: m
            .message_id
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        user_id: m.user_id,
        anonymous_id: m.anonymous_id,
        event: m.event.filter(|_| kind == EventType::Track),
        name: m.name,
        category: m.category,
        group_id: m.group_id,
        previous_id: m.previous_id,
        properties,
        traits,
        context,
        integrations,
        timestamp: corrected,
        original_timestamp: m.timestamp.or(m.original_timestamp),
        sent_at,
        received_at,
        timestamp_clamped: clamped,
    })
}

fn plausible(t: DateTime<Utc>) -> bool {
    (1970..=9999).contains(&t.year())
}

/// ISO-8601 as SDKs send it: RFC 3339 with an offset; without an offset (taken as UTC), with
/// `T` or a space; or a bare date (midnight UTC).
fn parse_time(field: &str, text: &str) -> Result<DateTime<Utc>, ItemError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        && let Some(t) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(t.and_utc());
    }
    Err(ItemError::new(
        ItemErrorCode::InvalidTimestamp,
        format!("field `{field}`: {text:?} is not an ISO-8601 date-time"),
    ))
}

fn merge(base: Option<&Map<String, Value>>, own: Option<Map<String, Value>>) -> Map<String, Value> {
    match (base, own) {
        (None, own) => own.unwrap_or_default(),
        (Some(base), None) => base.clone(),
        (Some(base), Some(mut own)) => {
            for (k, v) in base {
                if !own.contains_key(k) {
                    own.insert(k.clone(), v.clone());
                }
            }
            own
        }
    }
}

#[cfg(test)]
mod tests;
