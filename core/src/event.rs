//! The validated event model, and the wire conversion from `weft.v1.Event`.
//!
//! Everything downstream (speed, batch, reference) folds [`Event`]s, never
//! raw protobuf: decoding and validation happen once, at the edge, and an
//! event that fails them goes to the dead-letter topic with the
//! [`InvalidEvent`] reason.

use std::collections::BTreeMap;
use std::fmt;

use prost::Message;
use serde::{Deserialize, Serialize};
use weft_proto::v1;

/// Earliest event time accepted: 2000-01-01T00:00:00Z. Anything earlier is a
/// unit mistake (seconds instead of milliseconds) or a zero default.
pub const MIN_TS_MS: i64 = 946_684_800_000;
/// Latest event time accepted: 2100-01-01T00:00:00Z (microseconds sent as
/// milliseconds land far beyond it). A fixed bound keeps validation
/// deterministic, so the reference and every layer agree on what is valid.
pub const MAX_TS_MS: i64 = 4_102_444_800_000;
/// Longest tenant, user or event id accepted, in bytes.
pub const MAX_ID_LEN: usize = 256;

/// What the shopper did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    View,
    Click,
    AddToCart,
    Purchase,
    Search,
}

impl EventKind {
    /// Every kind, in wire order.
    pub const ALL: [EventKind; 5] = [
        EventKind::View,
        EventKind::Click,
        EventKind::AddToCart,
        EventKind::Purchase,
        EventKind::Search,
    ];

    /// The name used in feature specs, JSONL and the Parquet archive.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::View => "view",
            EventKind::Click => "click",
            EventKind::AddToCart => "add_to_cart",
            EventKind::Purchase => "purchase",
            EventKind::Search => "search",
        }
    }

    /// Parses the name used in feature specs and the archive.
    pub fn parse(s: &str) -> Option<EventKind> {
        // A match (length first, then a fixed-size compare): the batch
        // scan parses every archived row's kind.
        Some(match s {
            "view" => EventKind::View,
            "click" => EventKind::Click,
            "add_to_cart" => EventKind::AddToCart,
            "purchase" => EventKind::Purchase,
            "search" => EventKind::Search,
            _ => return None,
        })
    }

    fn to_wire(self) -> v1::EventKind {
        match self {
            EventKind::View => v1::EventKind::View,
            EventKind::Click => v1::EventKind::Click,
            EventKind::AddToCart => v1::EventKind::AddToCart,
            EventKind::Purchase => v1::EventKind::Purchase,
            EventKind::Search => v1::EventKind::Search,
        }
    }

    /// How much an event of this kind says an item is wanted, for
    /// popularity (the batch view's and the speed layer's trending): view
    /// 1, click 2, add to cart 4, purchase 8; a search names no item.
    pub fn popularity_weight(self) -> f64 {
        match self {
            EventKind::View => 1.0,
            EventKind::Click => 2.0,
            EventKind::AddToCart => 4.0,
            EventKind::Purchase => 8.0,
            EventKind::Search => 0.0,
        }
    }

    fn from_wire(raw: i32) -> Option<EventKind> {
        match v1::EventKind::try_from(raw).ok()? {
            v1::EventKind::Unspecified => None,
            v1::EventKind::View => Some(EventKind::View),
            v1::EventKind::Click => Some(EventKind::Click),
            v1::EventKind::AddToCart => Some(EventKind::AddToCart),
            v1::EventKind::Purchase => Some(EventKind::Purchase),
            v1::EventKind::Search => Some(EventKind::Search),
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decoded, validated event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub event_id: String,
    pub tenant: String,
    pub user_id: String,
    pub ts_ms: i64,
    pub kind: EventKind,
    /// Empty when the kind concerns no item (search).
    pub item_id: String,
    pub category: String,
    /// Unit price in minor currency units.
    pub price_minor: i64,
    pub quantity: i32,
    pub attributes: BTreeMap<String, String>,
}

/// Why an event was rejected. The `Display` text is what the dead-letter
/// record carries in its `weft.reason` header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEvent {
    #[error("undecodable protobuf: {0}")]
    Undecodable(String),
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("{field} is {len} bytes, longer than {MAX_ID_LEN}")]
    TooLong { field: &'static str, len: usize },
    #[error("{0} contains '/' or a control character")]
    BadId(&'static str),
    #[error("unknown or unspecified event kind {0}")]
    UnknownKind(i32),
    #[error("ts_ms {0} is outside [{MIN_TS_MS}, {MAX_TS_MS}] (2000-01-01 .. 2100-01-01)")]
    AbsurdTimestamp(i64),
    #[error("negative {0}")]
    Negative(&'static str),
    #[error("record key {key:?} does not match the event's tenant/user_id {expected:?}")]
    KeyMismatch { key: String, expected: String },
}

fn check_id(field: &'static str, value: &str, required: bool) -> Result<(), InvalidEvent> {
    if value.is_empty() {
        return if required {
            Err(InvalidEvent::Missing(field))
        } else {
            Ok(())
        };
    }
    if value.len() > MAX_ID_LEN {
        return Err(InvalidEvent::TooLong {
            field,
            len: value.len(),
        });
    }
    if value.chars().any(|c| c == '/' || c.is_control()) {
        return Err(InvalidEvent::BadId(field));
    }
    Ok(())
}

impl Event {
    /// The Kafka record key: `<tenant>/<user_id>`.
    pub fn kafka_key(&self) -> String {
        kafka_key(&self.tenant, &self.user_id)
    }

    /// Checks the rules every layer relies on. Decoding from the wire and
    /// building events in code both go through here.
    pub fn validate(&self) -> Result<(), InvalidEvent> {
        check_id("tenant", &self.tenant, true)?;
        check_id("user_id", &self.user_id, true)?;
        check_id("event_id", &self.event_id, true)?;
        if self.item_id.len() > MAX_ID_LEN {
            return Err(InvalidEvent::TooLong {
                field: "item_id",
                len: self.item_id.len(),
            });
        }
        if !(MIN_TS_MS..MAX_TS_MS).contains(&self.ts_ms) {
            return Err(InvalidEvent::AbsurdTimestamp(self.ts_ms));
        }
        if self.price_minor < 0 {
            return Err(InvalidEvent::Negative("price_minor"));
        }
        if self.quantity < 0 {
            return Err(InvalidEvent::Negative("quantity"));
        }
        Ok(())
    }

    /// Decodes and validates a record value.
    pub fn decode(bytes: &[u8]) -> Result<Event, InvalidEvent> {
        let wire =
            v1::Event::decode(bytes).map_err(|e| InvalidEvent::Undecodable(e.to_string()))?;
        Event::try_from(wire)
    }

    /// Decodes a record and checks that its key names the same tenant/user,
    /// so a user's events cannot be smuggled into another partition.
    pub fn decode_record(key: Option<&[u8]>, value: &[u8]) -> Result<Event, InvalidEvent> {
        let event = Event::decode(value)?;
        let expected = event.kafka_key();
        match key {
            Some(k) if k == expected.as_bytes() => Ok(event),
            other => Err(InvalidEvent::KeyMismatch {
                key: String::from_utf8_lossy(other.unwrap_or_default()).into_owned(),
                expected,
            }),
        }
    }

    /// Encodes to the wire form (the Kafka record value).
    pub fn encode(&self) -> Vec<u8> {
        self.to_wire().encode_to_vec()
    }

    /// The protobuf message for this event.
    pub fn to_wire(&self) -> v1::Event {
        v1::Event {
            event_id: self.event_id.clone(),
            tenant: self.tenant.clone(),
            user_id: self.user_id.clone(),
            ts_ms: self.ts_ms,
            kind: self.kind.to_wire() as i32,
            item_id: self.item_id.clone(),
            category: self.category.clone(),
            price_minor: self.price_minor,
            quantity: self.quantity,
            attributes: self
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

impl TryFrom<v1::Event> for Event {
    type Error = InvalidEvent;

    fn try_from(w: v1::Event) -> Result<Event, InvalidEvent> {
        let kind = EventKind::from_wire(w.kind).ok_or(InvalidEvent::UnknownKind(w.kind))?;
        let event = Event {
            event_id: w.event_id,
            tenant: w.tenant,
            user_id: w.user_id,
            ts_ms: w.ts_ms,
            kind,
            item_id: w.item_id,
            category: w.category,
            price_minor: w.price_minor,
            quantity: w.quantity,
            attributes: w.attributes.into_iter().collect(),
        };
        event.validate()?;
        Ok(event)
    }
}

/// The Kafka record key of a user: `<tenant>/<user_id>`.
pub fn kafka_key(tenant: &str, user_id: &str) -> String {
    let mut key = String::with_capacity(tenant.len() + 1 + user_id.len());
    key.push_str(tenant);
    key.push('/');
    key.push_str(user_id);
    key
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_from_their_names_only() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        for bad in ["", "View", "views", "add-to-cart", "purchase "] {
            assert_eq!(EventKind::parse(bad), None, "{bad:?}");
        }
    }

    pub(crate) fn sample() -> Event {
        Event {
            event_id: "e1".into(),
            tenant: "acme".into(),
            user_id: "u1".into(),
            ts_ms: 1_700_000_000_000,
            kind: EventKind::Purchase,
            item_id: "i9".into(),
            category: "shoes".into(),
            price_minor: 4_999,
            quantity: 2,
            attributes: [("device".to_string(), "mobile".to_string())].into(),
        }
    }

    #[test]
    fn wire_round_trip() {
        let e = sample();
        assert_eq!(Event::decode(&e.encode()), Ok(e.clone()));
        let key = e.kafka_key();
        assert_eq!(
            Event::decode_record(Some(key.as_bytes()), &e.encode()),
            Ok(e)
        );
    }

    #[test]
    fn rejects_bad_events_with_reasons() {
        let mut e = sample();
        e.tenant.clear();
        assert_eq!(e.validate(), Err(InvalidEvent::Missing("tenant")));
        let mut e = sample();
        e.ts_ms = 1_700_000_000; // seconds, not ms
        assert!(matches!(
            e.validate(),
            Err(InvalidEvent::AbsurdTimestamp(_))
        ));
        let mut e = sample();
        e.user_id = "a/b".into();
        assert_eq!(e.validate(), Err(InvalidEvent::BadId("user_id")));
        assert!(matches!(
            Event::decode(b"\xff\xff\xff"),
            Err(InvalidEvent::Undecodable(_))
        ));
        let mut w = sample().to_wire();
        w.kind = 0;
        assert_eq!(Event::try_from(w), Err(InvalidEvent::UnknownKind(0)));
        let e = sample();
        assert!(matches!(
            Event::decode_record(Some(b"acme/u2"), &e.encode()),
            Err(InvalidEvent::KeyMismatch { .. })
        ));
    }
}
