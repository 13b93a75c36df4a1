//! The delivery policy, checked before any provider is called: consent and subscription
//! groups, frequency caps, quiet hours in the person's time zone, and the transactional
//! override.
//!
//! Consent purposes (recorded through the consent API, an unsubscribe link or a `STOP`
//! reply): `<channel>` (`email`, `sms`, `whatsapp`, `push`) covers every message on that
//! channel; `<channel>_marketing` only marketing; `subscription:<group>` one subscription
//! group. The newest answer for a purpose counts. WhatsApp needs an opt-in (`whatsapp`
//! granted); everything else is allowed until the person says no.

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Timelike, Utc};
use livora_model::workflow::Category;
use livora_store::Consent;

use crate::runtime::Message;

/// The policy's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// At most this many marketing messages per person and channel in `cap_window`.
    pub frequency_cap: Option<u32>,
    pub cap_window: Duration,
    /// Quiet hours (local start hour, end hour), e.g. (21, 8): marketing messages decided
    /// then are held until the end.
    pub quiet_hours: Option<(u32, u32)>,
    /// Channels whose marketing messages need the person's opt-in (`<channel>` or
    /// `<channel>_marketing` granted); elsewhere marketing goes until the person says no.
    pub opt_in: Vec<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            frequency_cap: Some(2),
            cap_window: Duration::days(1),
            quiet_hours: Some((21, 8)),
            opt_in: Vec::new(),
        }
    }
}

impl From<&livora_store::DeliveryPolicy> for Policy {
    /// A tenant's own policy (the cap still counts a day).
    fn from(p: &livora_store::DeliveryPolicy) -> Self {
        Self {
            frequency_cap: p.frequency_cap,
            cap_window: Duration::days(1),
            quiet_hours: p.quiet_hours.map(|q| (q.start, q.end)),
            opt_in: p.opt_in.clone(),
        }
    }
}

/// What the policy says of a message now.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Send,
    /// Not now: try again at this time (quiet hours).
    Hold(DateTime<Utc>),
    /// Never: why.
    Block(String),
}

/// The newest answer for `purpose`, if any.
fn answer(consents: &[Consent], purpose: &str) -> Option<bool> {
    consents
        .iter()
        .filter(|c| c.purpose == purpose)
        .max_by_key(|c| c.recorded_at)
        .map(|c| c.granted)
}

/// The end of the quiet hours `(start, end)` if `now` is inside them in `tz`.
pub fn quiet_until(
    now: DateTime<Utc>,
    tz: chrono_tz::Tz,
    (start, end): (u32, u32),
) -> Option<DateTime<Utc>> {
    if start == end {
        return None;
    }
    let local = now.with_timezone(&tz);
    let h = local.hour();
    let inside = if start < end {
        h >= start && h < end
    } else {
        h >= start || h < end
    };
    if !inside {
        return None;
    }
    let mut date = local.date_naive();
    if h >= end {
        date = date.succ_opt()?;
    }
    let at = date.and_time(NaiveTime::from_hms_opt(end, 0, 0)?);
    let at = match tz.from_local_datetime(&at) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => t,
        chrono::LocalResult::None => tz
            .from_local_datetime(&(at + Duration::hours(1)))
            .earliest()?,
    };
    Some(at.with_timezone(&Utc))
}

impl Policy {
    /// The policy in a tenant's terms (to show the node's as a tenant's default).
    pub fn as_delivery(&self) -> livora_store::DeliveryPolicy {
        livora_store::DeliveryPolicy {
            frequency_cap: self.frequency_cap,
            quiet_hours: self
                .quiet_hours
                .map(|(start, end)| livora_store::QuietHours { start, end }),
            opt_in: self.opt_in.clone(),
        }
    }

    /// Decides for `m` at `now`, given the person's consents and how many marketing
    /// messages they got on the channel within the cap window.
    pub fn decide(
        &self,
        m: &Message,
        consents: &[Consent],
        sent_in_window: u32,
        now: DateTime<Utc>,
    ) -> Decision {
        if m.channel == "webhook" {
            return Decision::Send;
        }
        let ch = m.channel.as_str();
        if ch == "whatsapp" && answer(consents, "whatsapp") != Some(true) {
            return Decision::Block("no WhatsApp opt-in".into());
        }
        if answer(consents, ch) == Some(false) {
            return Decision::Block(format!("opted out of {ch}"));
        }
        if m.category == Category::Transactional {
            return Decision::Send;
        }
        let marketing = answer(consents, &format!("{ch}_marketing"));
        if marketing == Some(false) {
            return Decision::Block(format!("unsubscribed from {ch} marketing"));
        }
        if self.opt_in.iter().any(|c| c == ch)
            && marketing != Some(true)
            && answer(consents, ch) != Some(true)
        {
            return Decision::Block(format!("no {ch} marketing opt-in"));
        }
        if let Some(group) = &m.subscription
            && answer(consents, &format!("subscription:{group}")) == Some(false)
        {
            return Decision::Block(format!("left the subscription group {group:?}"));
        }
        if let Some(cap) = self.frequency_cap
            && sent_in_window >= cap
        {
            return Decision::Block(format!(
                "frequency cap: {cap} marketing {ch} messages within {} h",
                self.cap_window.num_hours()
            ));
        }
        if let Some(q) = self.quiet_hours {
            let tz = m
                .time_zone
                .as_deref()
                .and_then(|z| z.parse().ok())
                .unwrap_or(chrono_tz::UTC);
            if let Some(until) = quiet_until(now, tz, q) {
                return Decision::Hold(until);
            }
        }
        Decision::Send
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use livora_model::TenantId;
    use serde_json::Map;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 3, h, m, 0)
            .single()
            .expect("time")
    }

    fn message(channel: &str, category: Category) -> Message {
        Message {
            key: "j/s".into(),
            tenant: TenantId(uuid::Uuid::nil()),
            workflow: "wf".into(),
            version: 1,
            journey: "j".into(),
            step: "s".into(),
            person: "u:ada".into(),
            channel: channel.into(),
            category,
            subscription: Some("newsletter".into()),
            to: Some("x".into()),
            content: Map::new(),
            time_zone: Some("Europe/Paris".into()),
            decided_at: at(12, 0),
            error: None,
        }
    }

    fn consent(purpose: &str, granted: bool, minute: u32) -> Consent {
        Consent {
            subject: "u:ada".into(),
            purpose: purpose.into(),
            granted,
            source: "test".into(),
            recorded_at: at(10, minute),
            recorded_by: "test".into(),
        }
    }

    #[test]
    fn consent_subscription_and_the_transactional_override() {
        let p = Policy::default();
        let noon = at(10, 0); // 12:00 in Paris
        let mk = message("email", Category::Marketing);
        let tx = message("email", Category::Transactional);
        assert_eq!(p.decide(&mk, &[], 0, noon), Decision::Send);
        let unsub = [consent("email_marketing", false, 1)];
        assert!(matches!(p.decide(&mk, &unsub, 0, noon), Decision::Block(_)));
        assert_eq!(
            p.decide(&tx, &unsub, 0, noon),
            Decision::Send,
            "receipts still go"
        );
        let out = [consent("email", false, 1)];
        assert!(matches!(p.decide(&tx, &out, 0, noon), Decision::Block(_)));
        // The newest answer counts.
        let back = [consent("email", false, 1), consent("email", true, 2)];
        assert_eq!(p.decide(&mk, &back, 0, noon), Decision::Send);
        let left = [consent("subscription:newsletter", false, 1)];
        assert!(matches!(p.decide(&mk, &left, 0, noon), Decision::Block(_)));
        let wa = message("whatsapp", Category::Transactional);
        assert!(
            matches!(p.decide(&wa, &[], 0, noon), Decision::Block(_)),
            "WhatsApp needs an opt-in"
        );
        assert_eq!(
            p.decide(&wa, &[consent("whatsapp", true, 1)], 0, noon),
            Decision::Send
        );
        let sms = message("sms", Category::Marketing);
        let stop = [consent("sms", false, 1)];
        assert!(
            matches!(p.decide(&sms, &stop, 0, noon), Decision::Block(_)),
            "STOP opts out"
        );
    }

    #[test]
    fn opt_in_channels_need_a_yes_before_marketing() {
        let p = Policy {
            opt_in: vec!["email".into()],
            ..Policy::default()
        };
        let noon = at(10, 0);
        let mk = message("email", Category::Marketing);
        assert_eq!(
            p.decide(&mk, &[], 0, noon),
            Decision::Block("no email marketing opt-in".into())
        );
        for yes in ["email", "email_marketing"] {
            assert_eq!(
                p.decide(&mk, &[consent(yes, true, 1)], 0, noon),
                Decision::Send,
                "{yes} granted"
            );
        }
        let withdrawn = [
            consent("email", true, 1),
            consent("email_marketing", false, 2),
        ];
        assert!(matches!(
            p.decide(&mk, &withdrawn, 0, noon),
            Decision::Block(_)
        ));
        let tx = message("email", Category::Transactional);
        assert_eq!(p.decide(&tx, &[], 0, noon), Decision::Send, "receipts go");
        let sms = message("sms", Category::Marketing);
        assert_eq!(
            p.decide(&sms, &[], 0, noon),
            Decision::Send,
            "not an opt-in channel"
        );
    }

    #[test]
    fn frequency_caps_and_quiet_hours() {
        let p = Policy::default();
        let mk = message("email", Category::Marketing);
        assert_eq!(p.decide(&mk, &[], 1, at(10, 0)), Decision::Send);
        assert!(matches!(
            p.decide(&mk, &[], 2, at(10, 0)),
            Decision::Block(_)
        ));
        // 22:30 in Paris (UTC+2 in June): held until 08:00 Paris, 06:00 UTC the next day.
        let held = p.decide(&mk, &[], 0, at(20, 30));
        let next_morning = Utc
            .with_ymd_and_hms(2026, 6, 4, 6, 0, 0)
            .single()
            .expect("time");
        assert_eq!(held, Decision::Hold(next_morning));
        // 07:00 in Paris: held until 08:00 the same day.
        assert_eq!(p.decide(&mk, &[], 0, at(5, 0)), Decision::Hold(at(6, 0)));
        let tx = message("email", Category::Transactional);
        assert_eq!(
            p.decide(&tx, &[], 5, at(20, 30)),
            Decision::Send,
            "no caps or quiet hours for receipts"
        );
    }
}
