//! Staff accounts: users, their memberships (a role per tenant), one-time tokens for
//! invitations and password resets, and login sessions with rotating refresh tokens.
//!
//! Passwords are hashed with argon2id (the `argon2` crate's defaults: 19 MiB, 2 passes, the
//! OWASP minimum) in PHC string form. One-time and refresh tokens are 256-bit random strings
//! stored, like API keys, only as SHA-256 hashes.
//!
//! A refresh token is used once: [`AccountStore::refresh`] marks it used and issues the next
//! one of the same session. Presenting a used token again means it was copied, so the whole
//! session is revoked (reuse detection, as in RFC 9700 §4.14.2).

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use async_trait::async_trait;
use base64::Engine;
use chrono::{DateTime, Utc};
use livora_model::TenantId;
use rand::RngCore;
use serde::Serialize;

use crate::Error;
use crate::access::Role;

/// A staff user (never the password hash).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct User {
    /// `usr_…`
    pub id: String,
    /// Lower-cased.
    pub email: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// False until an invitation is accepted.
    pub active: bool,
}

/// A user's role in one tenant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Membership {
    pub tenant_id: TenantId,
    pub role: Role,
}

/// A member of a tenant, as listed to its administrators.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Member {
    #[serde(flatten)]
    pub user: User,
    pub role: Role,
}

/// What the login check needs about a user.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: User,
    /// `None` until an invitation is accepted.
    pub password_hash: Option<String>,
    pub lock: LoginLock,
    /// The tenant whose invitation made the account (`None`: made otherwise).
    pub origin_tenant: Option<TenantId>,
}

/// Consecutive failed logins and the lockout they caused.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoginLock {
    pub failures: u32,
    pub locked_until: Option<DateTime<Utc>>,
}

/// Why a one-time token exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenPurpose {
    /// Join a tenant with a role (and set a password if the user has none).
    Invite,
    /// Set a new password.
    Reset,
}

impl TokenPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invite => "invite",
            Self::Reset => "reset",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Self::Invite => "lv_inv_",
            Self::Reset => "lv_rst_",
        }
    }
}

/// A one-time token, once taken.
#[derive(Debug, Clone, PartialEq)]
pub struct OneTimeToken {
    pub user_id: String,
    pub purpose: TokenPurpose,
    /// For an invitation: the tenant and role it grants.
    pub grant: Option<Membership>,
}

/// A login session: one chain of refresh tokens, bound to one tenant at a time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Session {
    /// `ses_…`; access tokens carry it as `sid`.
    pub id: String,
    pub user_id: String,
    pub tenant_id: TenantId,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Session {
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

/// The outcome of presenting a refresh token.
#[derive(Debug, Clone, PartialEq)]
pub enum Refreshed {
    /// The token was good: here is the session and the next token.
    Rotated { session: Session, token: String },
    /// The token had been used already: the session is now revoked.
    Reused { session_id: String },
    /// Unknown token, or its session is expired or revoked.
    Invalid,
}

/// Staff accounts and sessions.
///
/// # Accounts and addresses
/// Nobody here proves they control an email address (invitation tokens are shown to the
/// inviter, who passes them on), so an address does not name one account: an inviting tenant
/// has its own account of the address (its origin), without a password until an invitation
/// is accepted, and accepting either joins an existing account of that address (whose
/// password the acceptor must give) or gives the invitation's own account its first password
/// (once per origin: [`Credentials::origin_tenant`]). So a tenant that invites an address and
/// accepts the invitation itself makes an account that holds that tenant's membership and
/// nothing else, and can neither set the password of, nor block, the account that another
/// tenant's invitation leads the real person to. An address has at most one account per
/// tenant that invited it (tenants are made by the operator), and signing in tries the
/// password against each.
///
/// # Contract
/// - Emails are compared lower-cased; [`AccountStore::create_user`] makes the first account
///   of an address, [`AccountStore::create_invited_user`] the inviting tenant's.
/// - [`AccountStore::take_token`] succeeds at most once per token and never after it expires.
/// - [`AccountStore::refresh`] is atomic: two concurrent uses of one token yield one rotation
///   and one [`Refreshed::Reused`].
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Creates a user without a password; `Error::Conflict` if the email has an account.
    async fn create_user(&self, email: &str, name: &str) -> Result<User, Error>;
    /// The account of `email` whose origin is `origin` (the inviting tenant), made without a
    /// password if there is none, whether or not the email has other accounts.
    async fn create_invited_user(
        &self,
        email: &str,
        name: &str,
        origin: TenantId,
    ) -> Result<User, Error>;
    /// Removes a user that never got a password, with its tokens (an invitation's account,
    /// once its invitation joined an existing account instead); `Ok(false)` if it has one.
    async fn discard_unclaimed_user(&self, id: &str) -> Result<bool, Error>;
    async fn user(&self, id: &str) -> Result<Option<User>, Error>;
    /// The account of `email` that signs in: the oldest with a password, else the oldest.
    async fn credentials(&self, email: &str) -> Result<Option<Credentials>, Error>;
    /// Every account of `email`, oldest first.
    async fn accounts(&self, email: &str) -> Result<Vec<Credentials>, Error>;
    async fn set_password_hash(&self, user_id: &str, hash: &str) -> Result<(), Error>;
    async fn set_login_lock(&self, user_id: &str, lock: &LoginLock) -> Result<(), Error>;
    /// Counts one more failed sign-in, atomically; returns the count.
    async fn bump_login_failures(&self, user_id: &str) -> Result<u32, Error>;
    /// Adds a membership unless the user already has one in `tenant`; `Ok(false)` then.
    async fn add_member(&self, tenant: TenantId, user_id: &str, role: Role) -> Result<bool, Error>;
    async fn memberships(&self, user_id: &str) -> Result<Vec<Membership>, Error>;
    async fn members(&self, tenant: TenantId) -> Result<Vec<Member>, Error>;
    /// Gives `user_id` `role` in `tenant`; returns the role it had before.
    async fn set_role(
        &self,
        tenant: TenantId,
        user_id: &str,
        role: Role,
    ) -> Result<Option<Role>, Error>;
    /// Removes the membership, revokes the user's sessions in that tenant and the unused
    /// invitations they sent into it; returns the role removed.
    async fn remove_member(&self, tenant: TenantId, user_id: &str) -> Result<Option<Role>, Error>;
    /// Creates a one-time token; the returned text is its only copy.
    async fn create_token(
        &self,
        user_id: &str,
        purpose: TokenPurpose,
        grant: Option<Membership>,
        expires_at: DateTime<Utc>,
        created_by: Option<&str>,
    ) -> Result<String, Error>;
    /// A token of `purpose` that is unused and has not expired at `now`, without using it.
    async fn peek_token(
        &self,
        token: &str,
        purpose: TokenPurpose,
        now: DateTime<Utc>,
    ) -> Result<Option<OneTimeToken>, Error>;
    /// Uses up a token of `purpose` that has not expired at `now`.
    async fn take_token(
        &self,
        token: &str,
        purpose: TokenPurpose,
        now: DateTime<Utc>,
    ) -> Result<Option<OneTimeToken>, Error>;
    /// Starts a session; returns it with its first refresh token.
    async fn create_session(
        &self,
        user_id: &str,
        tenant: TenantId,
        expires_at: DateTime<Utc>,
    ) -> Result<(Session, String), Error>;
    async fn session(&self, id: &str) -> Result<Option<Session>, Error>;
    /// Rotates a refresh token (see the module doc on reuse).
    async fn refresh(&self, token: &str, now: DateTime<Utc>) -> Result<Refreshed, Error>;
    /// Moves a session to another tenant (the caller has checked the membership).
    async fn set_session_tenant(&self, session_id: &str, tenant: TenantId) -> Result<(), Error>;
    /// Revokes one session; `Ok(false)` if there is no such live session.
    async fn revoke_session(&self, id: &str) -> Result<bool, Error>;
    /// Revokes every session of a user; returns how many were live.
    async fn revoke_user_sessions(&self, user_id: &str) -> Result<u64, Error>;
}

/// Shortest password accepted (NIST SP 800-63B asks for at least 8).
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest password accepted: hashing cost must stay bounded.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// The lowest zxcvbn score accepted: 3 is "safely unguessable: moderate protection from an
/// offline slow-hash scenario" (about 10^10 guesses), which argon2id storage is.
pub const MIN_PASSWORD_SCORE: zxcvbn::Score = zxcvbn::Score::Three;
/// How much of a password the strength estimator reads: its matching grows faster than
/// linearly with length, and 100 characters already score far above the minimum unless they
/// repeat themselves.
const SCORED_CHARS: usize = 100;

/// Checks a new password against the policy: 10 characters to 1024 bytes, and not easy to
/// guess. Guessability is zxcvbn's estimate (Dropbox's: dictionaries of common and breached
/// passwords, names and words, keyboard walks, repeats, sequences, dates, l33t spellings),
/// counting `user_inputs` (the account's email, its parts and its name) as known to an
/// attacker; a score below [`MIN_PASSWORD_SCORE`] is refused with [`Error::WeakPassword`],
/// whose message carries zxcvbn's reason and advice. `password12` is refused.
pub fn check_password_policy(password: &str, user_inputs: &[&str]) -> Result<(), Error> {
    let invalid = |message: String| Error::Invalid {
        field: "password",
        message,
    };
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(invalid(format!(
            "a password has at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(invalid(format!(
            "a password has at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    let scored: String = password.chars().take(SCORED_CHARS).collect();
    // The email's local part and domain words count as known, as the whole address does
    // (lower-cased: zxcvbn matches the lower-cased password against them).
    let mut inputs: Vec<String> = Vec::new();
    for input in user_inputs {
        let input = input.to_lowercase();
        inputs.extend(
            input
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| w.chars().count() >= 3)
                .map(str::to_owned),
        );
        inputs.push(input);
    }
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let estimate = zxcvbn::zxcvbn(&scored, &inputs);
    if estimate.score() >= MIN_PASSWORD_SCORE {
        return Ok(());
    }
    let mut message = String::from("this password is too easy to guess");
    if let Some(feedback) = estimate.feedback() {
        if let Some(warning) = feedback.warning() {
            message.push_str(&format!(" ({})", warning.to_string().to_lowercase()));
        }
        let advice: Vec<String> = feedback
            .suggestions()
            .iter()
            .map(|s| s.to_string().trim_end_matches('.').to_lowercase())
            .collect();
        if !advice.is_empty() {
            message.push_str(&format!(": {}", advice.join("; ")));
        }
    }
    message.push_str("; a few uncommon words together make a strong one");
    Err(Error::WeakPassword(
        message.trim_end_matches('.').to_owned(),
    ))
}

/// The argon2id PHC string of `password` under a fresh random salt. CPU-heavy (~20 ms):
/// call it from a blocking thread.
pub fn hash_password(password: &str) -> Result<String, Error> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Corrupt(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Corrupt(format!("password hashing failed: {e}")))
}

/// Whether `password` matches the stored PHC string. CPU-heavy: call it from a blocking thread.
/// With no stored hash, a dummy one is checked so that the time taken does not reveal whether
/// the account exists.
pub fn verify_password(stored: Option<&str>, password: &str) -> bool {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash_password("livora-dummy-password").unwrap_or_default());
    let text = stored.unwrap_or(dummy);
    let Ok(parsed) = PasswordHash::new(text) else {
        return false;
    };
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && stored.is_some()
}

/// A fresh one-time token text.
pub(crate) fn generate_token(tag: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{tag}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

pub(crate) fn token_tag(purpose: TokenPurpose) -> &'static str {
    purpose.tag()
}

/// The tag of refresh tokens.
pub(crate) const REFRESH_TAG: &str = "lv_rt_";

/// Normalises and checks an email address (lower-cased; one `@`; at most 254 bytes).
pub fn normalize_email(email: &str) -> Result<String, Error> {
    let e = email.trim().to_lowercase();
    let ok = e.len() <= 254
        && e.split('@').count() == 2
        && e.split('@').all(|p| !p.is_empty())
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(e)
    } else {
        Err(Error::Invalid {
            field: "email",
            message: format!("{email:?} is not an email address"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password("correct horse battery").expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password(Some(&h), "correct horse battery"));
        assert!(!verify_password(Some(&h), "correct horse batterY"));
        assert!(!verify_password(None, "livora-dummy-password"));
        assert!(!verify_password(Some("not a hash"), "x"));
        assert_ne!(
            h,
            hash_password("correct horse battery").expect("hash"),
            "salted"
        );
    }

    #[test]
    fn common_breached_and_personal_passwords_are_refused() {
        assert!(matches!(
            check_password_policy("short", &[]),
            Err(Error::Invalid { .. })
        ));
        assert!(matches!(
            check_password_policy(&"x".repeat(2000), &[]),
            Err(Error::Invalid { .. })
        ));
        for weak in [
            "password12",
            "password123",
            "Password1!",
            "qwertyuiop",
            "1234567890",
            "iloveyou12",
            "aaaaaaaaaaaa",
            "letmein2024",
        ] {
            let err = check_password_policy(weak, &[]).expect_err(weak);
            let Error::WeakPassword(message) = err else {
                panic!("{weak}: {err}");
            };
            assert!(
                message.starts_with("this password is too easy to guess"),
                "{message}"
            );
            assert!(!message.ends_with('.'), "{message}");
        }
        // The account's own email and name count as known.
        let me = ["newhire@livora-shop.test", "Mirabelle Quist"];
        for personal in ["newhire@livora-shop.test", "mirabellequist"] {
            assert!(
                check_password_policy(personal, &[]).is_ok(),
                "{personal}: strong for a stranger"
            );
            assert!(
                matches!(
                    check_password_policy(personal, &me),
                    Err(Error::WeakPassword(_))
                ),
                "{personal}"
            );
        }
        // A long passphrase and a random string pass; a very long one is read in part only.
        for strong in [
            "correct horse battery staple",
            "vQ7#t9Lm!2xR",
            "tangerine submarine oboe lantern",
        ] {
            check_password_policy(strong, &me).expect(strong);
        }
        let long = "tangerine submarine oboe lantern ".repeat(30);
        check_password_policy(&long, &me).expect("long");
    }

    #[test]
    fn emails_are_normalised() {
        assert_eq!(
            normalize_email(" Ann@Example.COM ").expect("ok"),
            "ann@example.com"
        );
        for bad in ["", "ann", "@x", "a@", "a@b@c", "a b@c.d"] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }
}
