//! Errors found while validating one incoming message.

use serde::Serialize;

/// Why one message was refused. Serialised in API responses as `{index, code, message}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ItemError {
    /// Machine-readable reason.
    pub code: ItemErrorCode,
    /// Human-readable explanation, naming the field at fault.
    pub message: String,
}

impl ItemError {
    pub fn new(code: ItemErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// The reasons a message can be refused; the wire form is the snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemErrorCode {
    /// The item is not a JSON object.
    NotAnObject,
    /// A known field has the wrong JSON type.
    InvalidField,
    /// `type` is missing from a batch item.
    MissingType,
    /// `type` is not one of track, identify, page, screen, group, alias.
    UnknownType,
    /// Neither `userId` nor `anonymousId` is set.
    MissingIdentity,
    /// A `track` call has no `event`.
    MissingEvent,
    /// A `track` call uses an event name Livora writes itself ([`crate::RESERVED_EVENTS`]).
    ReservedEvent,
    /// A `messageId` in the namespace of the ids Livora gives its own events
    /// ([`crate::INTERNAL_ID_PREFIX`]).
    ReservedMessageId,
    /// A `group` call has no `groupId`.
    MissingGroupId,
    /// An `alias` call has no `previousId`.
    MissingPreviousId,
    /// `timestamp`, `sentAt` or `originalTimestamp` is not an ISO-8601 date-time.
    InvalidTimestamp,
}

impl ItemErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotAnObject => "not_an_object",
            Self::InvalidField => "invalid_field",
            Self::MissingType => "missing_type",
            Self::UnknownType => "unknown_type",
            Self::MissingIdentity => "missing_identity",
            Self::MissingEvent => "missing_event",
            Self::ReservedEvent => "reserved_event",
            Self::ReservedMessageId => "reserved_message_id",
            Self::MissingGroupId => "missing_group_id",
            Self::MissingPreviousId => "missing_previous_id",
            Self::InvalidTimestamp => "invalid_timestamp",
        }
    }
}

impl std::fmt::Display for ItemErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
