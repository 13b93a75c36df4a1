//! The key a person is known by outside the profiles: `u:<userId>` or `a:<anonymousId>`.
//!
//! Consents, journeys, messages, erasure requests and the column store's person ids all name
//! a person by such a key, so a user id and an anonymous id that happen to be the same string
//! stay two persons. This module is the one place that knows the format; everyone else builds
//! and reads keys through [`PersonKey`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Event;

/// Which id a [`PersonKey`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// A `userId`: `u:`.
    User,
    /// An `anonymousId`: `a:`.
    Anonymous,
}

impl KeyKind {
    /// The prefix of a key of this kind.
    pub const fn prefix(self) -> &'static str {
        match self {
            KeyKind::User => "u:",
            KeyKind::Anonymous => "a:",
        }
    }
}

/// A person's key: `u:<userId>` or `a:<anonymousId>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PersonKey(String);

impl PersonKey {
    /// The key of an id of `kind`.
    pub fn new(kind: KeyKind, id: &str) -> Self {
        let mut k = String::with_capacity(id.len() + 2);
        Self::write(&mut k, kind, id);
        Self(k)
    }

    /// The key of a `userId`.
    pub fn user(id: &str) -> Self {
        Self::new(KeyKind::User, id)
    }

    /// The key of an `anonymousId`.
    pub fn anonymous(id: &str) -> Self {
        Self::new(KeyKind::Anonymous, id)
    }

    /// Writes the key of `id` into `buf` (cleared first), for callers that reuse one buffer.
    pub fn write(buf: &mut String, kind: KeyKind, id: &str) {
        buf.clear();
        buf.push_str(kind.prefix());
        buf.push_str(id);
    }

    /// A string that already is a key (`u:…` or `a:…`); `None` otherwise.
    pub fn parse(s: &str) -> Option<Self> {
        Self::split(s).map(|_| Self(s.to_owned()))
    }

    /// The kind and the id of a key string; `None` if it is not one.
    pub fn split(s: &str) -> Option<(KeyKind, &str)> {
        if let Some(id) = s.strip_prefix(KeyKind::User.prefix()) {
            Some((KeyKind::User, id))
        } else {
            s.strip_prefix(KeyKind::Anonymous.prefix())
                .map(|id| (KeyKind::Anonymous, id))
        }
    }

    /// Whether the key string `s` is a user id's.
    pub fn is_user_key(s: &str) -> bool {
        s.starts_with(KeyKind::User.prefix())
    }

    /// The subject of an event: its `userId` if set, else its `anonymousId`.
    pub fn subject(e: &Event) -> Option<Self> {
        match (&e.user_id, &e.anonymous_id) {
            (Some(u), _) => Some(Self::user(u)),
            (None, Some(a)) => Some(Self::anonymous(a)),
            (None, None) => None,
        }
    }

    /// Every key of an event's sender, user first; empty ids are none.
    pub fn all_of(e: &Event) -> Vec<Self> {
        let user = e.user_id.as_deref().filter(|s| !s.is_empty());
        let anonymous = e.anonymous_id.as_deref().filter(|s| !s.is_empty());
        user.map(Self::user)
            .into_iter()
            .chain(anonymous.map(Self::anonymous))
            .collect()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for PersonKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<PersonKey> for String {
    fn from(k: PersonKey) -> String {
        k.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_key_splits_back_into_what_made_it(id in ".{0,20}", user in any::<bool>()) {
            let kind = if user { KeyKind::User } else { KeyKind::Anonymous };
            let k = PersonKey::new(kind, &id);
            prop_assert_eq!(PersonKey::split(k.as_str()), Some((kind, id.as_str())));
            prop_assert_eq!(PersonKey::is_user_key(k.as_str()), user);
            prop_assert_eq!(PersonKey::parse(k.as_str()), Some(k.clone()));
        }
    }

    #[test]
    fn the_same_string_as_user_and_anonymous_id_is_two_keys() {
        assert_eq!(PersonKey::user("42").as_str(), "u:42");
        assert_eq!(PersonKey::anonymous("42").as_str(), "a:42");
        assert_ne!(PersonKey::user("42"), PersonKey::anonymous("42"));
        assert_eq!(PersonKey::parse("42"), None);
        assert_eq!(
            serde_json::to_string(&PersonKey::user("x")).expect("json"),
            "\"u:x\""
        );
    }
}
