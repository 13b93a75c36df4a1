//! What happens to a message after a provider took it: opens (a tracking pixel), clicks
//! (links rewritten to pass through Livora), unsubscribe links, and the keyed hashes by
//! which an address (a phone number, an email) is remembered without being stored.
//!
//! Links carry a signed token, `<payload>.<signature>` in base64url: the payload names the
//! kind (`o`pen, `c`lick, `u`nsubscribe), the tenant, the message key and, for a click,
//! which link of the message it was. The redirect target is read back from the message
//! itself, so a token can only ever lead to a link the message holds (no open redirect),
//! and a forged or altered token is refused.
//!
//! Tracking is added when the message is handed to its provider ([`Tracker::decorate`]),
//! so the outbox keeps the message as the template rendered it. Without a public base URL
//! (`[server] public_url`) no tracking is added; templates' `unsubscribe_url` is then
//! empty.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use livora_model::TenantId;
use serde_json::{Map, Value};
use sha2::Sha256;

/// What templates see as `unsubscribe_url`; replaced by the real link when the message is
/// sent (the link needs the message's key, which the template does not know).
pub const UNSUBSCRIBE_MARKER: &str = "%%livora_unsubscribe_url%%";

/// What a tracking link records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Open,
    Click,
    Unsubscribe,
}

impl Kind {
    fn letter(self) -> char {
        match self {
            Self::Open => 'o',
            Self::Click => 'c',
            Self::Unsubscribe => 'u',
        }
    }

    fn of(letter: &str) -> Option<Self> {
        match letter {
            "o" => Some(Self::Open),
            "c" => Some(Self::Click),
            "u" => Some(Self::Unsubscribe),
            _ => None,
        }
    }
}

/// A checked token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: Kind,
    pub tenant: TenantId,
    /// The message's key in the outbox.
    pub key: String,
    /// Which link of the message (clicks).
    pub link: Option<usize>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadToken(&'static str);

/// Makes and checks tracking tokens; hashes addresses.
pub struct Tracker {
    key: [u8; 32],
    /// `https://crm.shop.example` (no trailing slash); `None`: no tracking links.
    base: Option<String>,
}

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length.
    <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

impl Tracker {
    /// A tracker whose key is derived from `secret` (the node's signing secret).
    pub fn new(secret: &[u8], base: Option<String>) -> Self {
        let mut m = mac(secret);
        m.update(b"livora tracking v1");
        let key = m.finalize().into_bytes().into();
        Self {
            key,
            base: base
                .map(|b| b.trim_end_matches('/').to_owned())
                .filter(|b| !b.is_empty()),
        }
    }

    fn sign(&self, payload: &[u8]) -> Vec<u8> {
        let mut m = mac(&self.key);
        m.update(payload);
        m.finalize().into_bytes()[..16].to_vec()
    }

    /// The token for one message's open, click (of link `link`) or unsubscribe.
    pub fn token(&self, kind: Kind, tenant: TenantId, key: &str, link: Option<usize>) -> String {
        let payload = format!(
            "{}|{}|{}|{}",
            kind.letter(),
            tenant.0.simple(),
            link.map_or_else(String::new, |l| l.to_string()),
            key
        );
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload.as_bytes()),
            URL_SAFE_NO_PAD.encode(self.sign(payload.as_bytes()))
        )
    }

    /// Checks a token and reads it.
    pub fn verify(&self, token: &str) -> Result<Token, BadToken> {
        let bad = BadToken("the link is not valid (altered or not made by this Livora)");
        let (payload, sig) = token.split_once('.').ok_or(bad.clone())?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| bad.clone())?;
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| bad.clone())?;
        if sig.len() != 16 {
            return Err(bad);
        }
        let mut m = mac(&self.key);
        m.update(&payload);
        m.verify_truncated_left(&sig).map_err(|_| bad.clone())?;
        let text = String::from_utf8(payload).map_err(|_| bad.clone())?;
        let mut parts = text.splitn(4, '|');
        let (Some(kind), Some(tenant), Some(link), Some(key)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad);
        };
        Ok(Token {
            kind: Kind::of(kind).ok_or(bad.clone())?,
            tenant: TenantId(uuid::Uuid::parse_str(tenant).map_err(|_| bad.clone())?),
            key: key.to_owned(),
            link: if link.is_empty() {
                None
            } else {
                Some(link.parse().map_err(|_| bad)?)
            },
        })
    }

    /// The consent subject standing for an address: `p:<hash>` for a phone number (its
    /// digits), `e:<hash>` for an email (lower-cased). A `STOP` from a number is kept
    /// under it, so it holds for whoever has that number, and the store never holds the
    /// number itself.
    pub fn address_subject(&self, channel: &str, address: &str) -> Option<String> {
        let (prefix, norm) = match channel {
            "sms" | "whatsapp" => {
                let digits: String = address.chars().filter(char::is_ascii_digit).collect();
                ("p", digits)
            }
            "email" => ("e", address.trim().to_lowercase()),
            _ => return None,
        };
        if norm.is_empty() {
            return None;
        }
        let mut m = mac(&self.key);
        m.update(prefix.as_bytes());
        m.update(b"|");
        m.update(norm.as_bytes());
        let digest = m.finalize().into_bytes();
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        Some(format!("{prefix}:{hex}"))
    }

    /// The public URL of a tracking route for a token.
    fn url(&self, route: &str, token: &str) -> Option<String> {
        self.base.as_ref().map(|b| format!("{b}/t/{route}/{token}"))
    }

    /// Adds tracking to an email as it is handed to the provider: its links go through the
    /// click redirect, a pixel reports opens, `unsubscribe_url` becomes the message's own
    /// link, and `list_unsubscribe` asks the provider for the one-click header (RFC 8058).
    pub fn decorate(
        &self,
        tenant: TenantId,
        key: &str,
        channel: &str,
        content: &mut Map<String, Value>,
    ) {
        let unsubscribe = if channel == "email" {
            self.url("u", &self.token(Kind::Unsubscribe, tenant, key, None))
        } else {
            None
        };
        if channel == "email"
            && self.base.is_some()
            && let Some(Value::String(html)) = content.get("html")
        {
            let html = self.track_html(tenant, key, html);
            content.insert("html".into(), Value::String(html));
        }
        // After the links were found: the unsubscribe link is not a tracked one.
        for v in content.values_mut() {
            if let Value::String(s) = v
                && s.contains(UNSUBSCRIBE_MARKER)
            {
                *s = s.replace(UNSUBSCRIBE_MARKER, unsubscribe.as_deref().unwrap_or(""));
            }
        }
        if let Some(u) = unsubscribe {
            content.insert("list_unsubscribe".into(), Value::String(u));
        }
    }

    /// Links through the click redirect, and the open pixel before `</body>`.
    fn track_html(&self, tenant: TenantId, key: &str, html: &str) -> String {
        let mut out = String::with_capacity(html.len() + 256);
        let mut at = 0;
        for (i, (range, _)) in links(html).into_iter().enumerate() {
            out.push_str(&html[at..range.start]);
            let token = self.token(Kind::Click, tenant, key, Some(i));
            out.push_str(&self.url("c", &token).unwrap_or_default());
            at = range.end;
        }
        out.push_str(&html[at..]);
        let pixel = format!(
            r#"<img src="{}" width="1" height="1" alt="" style="display:none">"#,
            self.url("o", &self.token(Kind::Open, tenant, key, None))
                .unwrap_or_default()
        );
        match out.to_ascii_lowercase().rfind("</body>") {
            Some(p) => out.insert_str(p, &pixel),
            None => out.push_str(&pixel),
        }
        out
    }
}

/// The `http(s)` links of an HTML body, in order: where each `href` value is, and the URL
/// it leads to (entities `&amp;` undone). The unsubscribe link is not one of them.
pub fn links(html: &str) -> Vec<(std::ops::Range<usize>, String)> {
    let lower = html.to_ascii_lowercase();
    let bytes = html.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(p) = lower[from..].find("href") {
        let mut i = from + p + 4;
        from = i;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if bytes.get(i) != Some(&b'=') {
            continue;
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let Some(&quote) = bytes.get(i).filter(|q| **q == b'"' || **q == b'\'') else {
            continue;
        };
        let start = i + 1;
        let Some(len) = html[start..].find(quote as char) else {
            break;
        };
        let end = start + len;
        from = end;
        let value = &html[start..end];
        let l = value.trim_start().to_ascii_lowercase();
        if (l.starts_with("http://") || l.starts_with("https://"))
            && !value.contains(UNSUBSCRIBE_MARKER)
        {
            out.push((start..end, value.trim().replace("&amp;", "&")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> TenantId {
        TenantId(uuid::Uuid::from_u128(42))
    }

    #[test]
    fn tokens_round_trip_and_refuse_tampering() {
        let t = Tracker::new(b"a secret of thirty-two bytes or more!!", None);
        let tok = t.token(Kind::Click, tenant(), "j-00ff/remind", Some(3));
        let back = t.verify(&tok).expect("valid");
        assert_eq!(
            back,
            Token {
                kind: Kind::Click,
                tenant: tenant(),
                key: "j-00ff/remind".into(),
                link: Some(3),
            }
        );
        // Another link of the same message: another token.
        let other = t.token(Kind::Click, tenant(), "j-00ff/remind", Some(4));
        let (p, _) = other.split_once('.').expect("dot");
        let (_, s) = tok.split_once('.').expect("dot");
        assert!(t.verify(&format!("{p}.{s}")).is_err());
        // Another node's secret.
        let stranger = Tracker::new(b"another secret of thirty-two bytes!!!", None);
        assert!(stranger.verify(&tok).is_err());
        for junk in ["", ".", "abc", "abc.def", &tok[..tok.len() - 2]] {
            assert!(t.verify(junk).is_err(), "{junk}");
        }
    }

    #[test]
    fn emails_get_click_links_a_pixel_and_their_unsubscribe_link() {
        let t = Tracker::new(
            b"a secret of thirty-two bytes or more!!",
            Some("https://crm.example/".into()),
        );
        let html = format!(
            "<html><body><a href=\"https://shop.example/cart?id=1&amp;u=2\">Cart</a> \
             <a href='http://shop.example/'>Shop</a> <a href=\"mailto:help@shop.example\">Help</a> \
             <a href=\"{UNSUBSCRIBE_MARKER}\">Unsubscribe</a></BODY></html>"
        );
        let found = links(&html);
        assert_eq!(
            found.iter().map(|(_, u)| u.as_str()).collect::<Vec<_>>(),
            ["https://shop.example/cart?id=1&u=2", "http://shop.example/"]
        );
        let mut content = Map::new();
        content.insert("html".into(), Value::String(html));
        content.insert(
            "body".into(),
            Value::String(format!("Unsubscribe: {UNSUBSCRIBE_MARKER}")),
        );
        t.decorate(tenant(), "j-1/send", "email", &mut content);
        let out = content["html"].as_str().expect("html");
        assert!(!out.contains("shop.example/cart"), "{out}");
        assert_eq!(out.matches("https://crm.example/t/c/").count(), 2, "{out}");
        assert!(out.contains("mailto:help@shop.example"));
        let pixel = out.find("https://crm.example/t/o/").expect("pixel");
        assert!(pixel < out.find("</BODY>").expect("body end"));
        let unsubscribe = content["list_unsubscribe"].as_str().expect("header");
        assert!(unsubscribe.starts_with("https://crm.example/t/u/"));
        assert_eq!(
            content["body"],
            Value::String(format!("Unsubscribe: {unsubscribe}"))
        );
        assert!(out.contains(unsubscribe));
        // Each rewritten link's token names its link.
        let first = out.split("https://crm.example/t/c/").nth(1).expect("link");
        let token = &first[..first.find('"').expect("quote")];
        assert_eq!(t.verify(token).expect("token").link, Some(0));
        // Without a public URL: no tracking, and no unsubscribe link to show.
        let plain = Tracker::new(b"a secret of thirty-two bytes or more!!", None);
        let mut content = Map::new();
        content.insert(
            "body".into(),
            Value::String(format!("x{UNSUBSCRIBE_MARKER}y")),
        );
        plain.decorate(tenant(), "k", "email", &mut content);
        assert_eq!(content["body"], Value::String("xy".into()));
        assert!(!content.contains_key("list_unsubscribe"));
    }

    #[test]
    fn addresses_hash_by_their_normal_form() {
        let t = Tracker::new(b"a secret of thirty-two bytes or more!!", None);
        let a = t
            .address_subject("sms", "+1 (555) 010-0000")
            .expect("phone");
        assert_eq!(
            Some(a.clone()),
            t.address_subject("whatsapp", "15550100000")
        );
        assert!(a.starts_with("p:") && !a.contains("5550100000"));
        assert_eq!(
            t.address_subject("email", " Ada@Example.com"),
            t.address_subject("email", "ada@example.com")
        );
        assert_eq!(t.address_subject("push", "tok"), None);
        assert_eq!(t.address_subject("sms", "n/a"), None);
    }
}
