//! Encryption at rest of personal data: envelope encryption with AES-256-GCM.
//!
//! Three levels of keys:
//! - the **master key** lives outside the data directory (the environment, a file, or a cloud
//!   KMS behind the [`Kms`] trait; [`LocalKms`] is the local implementation). It only wraps
//!   tenant keys.
//! - each tenant has **tenant keys** (versioned; the newest wraps new subject keys; older
//!   versions stay to unwrap what they wrapped), stored wrapped in the metadata store.
//! - each **subject** (a `userId` or an `anonymousId`, as `u:<id>` / `a:<id>`) has its own
//!   random data key, stored wrapped by a tenant key. Personal fields of that subject's
//!   events are encrypted under it. Erasing a person deletes its subjects' keys (securely:
//!   SQLite `secure_delete` and a WAL checkpoint), which makes every copy of those fields, in
//!   the immutable log and in Parquet segments, unreadable: crypto-shredding.
//!
//! An encrypted field is the JSON string `"$lv1:<kid>:<base64(nonce ‖ ciphertext)>"`, where
//! `kid` names the subject key (a hash of tenant and subject, not the subject itself) and the
//! plaintext is the field's JSON text. The tenant id and `kid` are the associated data, so a
//! value moved to another tenant or subject does not decrypt.
//!
//! Rotation without downtime: [`LocalKms`] holds the current master key and any previous
//! ones (each wrapped value names its master key), and `livora admin keys rotate-master`
//! rewraps every tenant key under the current one; `rotate-tenant` adds a tenant key version.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use livora_model::TenantId;
use rand::RngCore;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::{Error, MetadataStore};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;

/// The prefix of an encrypted field value.
pub const PREFIX: &str = "$lv1:";

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the master key must be 32 bytes, base64 or hex encoded")]
    BadMasterKey,
    #[error("no master key {0} is configured (was it rotated away too early?)")]
    UnknownMasterKey(String),
    #[error("decryption failed: wrong key or tampered data")]
    Decrypt,
    #[error("malformed wrapped key")]
    Malformed,
    #[error("the key management service refused: {0}")]
    Kms(String),
}

/// What wraps tenant keys: the master key, here or in a cloud KMS (async: a cloud KMS is a
/// network call; tenant keys are unwrapped once per process and tenant, so it is never on
/// the hot path).
#[async_trait::async_trait]
pub trait Kms: Send + Sync + 'static {
    /// The id of the key that [`Kms::wrap`] uses now.
    fn key_id(&self) -> String;
    async fn wrap(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError>;
    async fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError>;
}

/// AES-256-GCM under a 32-byte key.
#[derive(Clone)]
struct Key {
    id: String,
    cipher: Aes256Gcm,
}

impl Key {
    fn new(bytes: &[u8]) -> Result<Self, CryptoError> {
        let cipher = Aes256Gcm::new_from_slice(bytes).map_err(|_| CryptoError::BadMasterKey)?;
        let digest = Sha256::digest(bytes);
        let id: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self { id, cipher })
    }
}

fn seal(cipher: &Aes256Gcm, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; 12];
    rand::rng().fill_bytes(&mut nonce);
    let mut out = nonce.to_vec();
    // Encryption with a valid key and a fresh nonce cannot fail.
    out.extend(
        cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .unwrap_or_default(),
    );
    out
}

fn open(cipher: &Aes256Gcm, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < 12 + 16 {
        return Err(CryptoError::Decrypt);
    }
    let (nonce, ct) = sealed.split_at(12);
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .map_err(|_| CryptoError::Decrypt)
}

/// A master key held in this process (from `LIVORA_MASTER_KEY` or a key file), with the
/// previous ones still accepted for unwrapping during a rotation.
pub struct LocalKms {
    current: Key,
    previous: Vec<Key>,
}

/// Decodes a 32-byte key written as base64 or hex.
pub fn decode_key(text: &str) -> Result<Vec<u8>, CryptoError> {
    let t = text.trim();
    let bytes = if t.len() == 64 && t.chars().all(|c| c.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| CryptoError::BadMasterKey)?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(t)
            .or_else(|_| B64.decode(t))
            .map_err(|_| CryptoError::BadMasterKey)?
    };
    if bytes.len() == 32 {
        Ok(bytes)
    } else {
        Err(CryptoError::BadMasterKey)
    }
}

/// A fresh random 32-byte key, base64 encoded.
pub fn generate_key_text() -> String {
    let mut k = [0u8; 32];
    rand::rng().fill_bytes(&mut k);
    base64::engine::general_purpose::STANDARD.encode(k)
}

impl LocalKms {
    pub fn new(current: &[u8], previous: &[Vec<u8>]) -> Result<Self, CryptoError> {
        Ok(Self {
            current: Key::new(current)?,
            previous: previous
                .iter()
                .map(|k| Key::new(k))
                .collect::<Result<_, _>>()?,
        })
    }
}

#[async_trait::async_trait]
impl Kms for LocalKms {
    fn key_id(&self) -> String {
        format!("local:{}", self.current.id)
    }

    async fn wrap(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut out = self.current.id.as_bytes().to_vec();
        out.push(b':');
        out.extend(seal(&self.current.cipher, plaintext, aad));
        Ok(out)
    }

    async fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let colon = wrapped
            .iter()
            .position(|b| *b == b':')
            .ok_or(CryptoError::Malformed)?;
        let id = std::str::from_utf8(&wrapped[..colon]).map_err(|_| CryptoError::Malformed)?;
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| CryptoError::UnknownMasterKey(id.to_owned()))?;
        open(&key.cipher, &wrapped[colon + 1..], aad)
    }
}

/// How the audit log names a person where there is no per-person key to seal the name under
/// (encryption at rest off): an HMAC-SHA256 of tenant and subject under a key derived from the
/// node's signing secret. A plain hash would let whoever reads an audit export confirm a
/// guessed user id or email by hashing it; this needs the secret.
pub struct SubjectTagger([u8; 32]);

impl SubjectTagger {
    /// A tagger whose key is derived from `secret` (the node's signing secret).
    pub fn new(secret: &[u8]) -> Self {
        use hmac::Mac;
        let mut m = <hmac::Hmac<Sha256> as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        m.update(b"livora audit subject v1");
        Self(m.finalize().into_bytes().into())
    }

    /// `subject:<32 hex digits>`, the same for the same tenant and subject.
    pub fn tag(&self, tenant: TenantId, subject: &str) -> String {
        use hmac::Mac;
        let mut m = <hmac::Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        m.update(tenant.0.as_bytes());
        m.update(&[0]);
        m.update(subject.as_bytes());
        let hex: String = m.finalize().into_bytes()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("subject:{hex}")
    }
}

impl std::fmt::Debug for SubjectTagger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubjectTagger(…)")
    }
}

/// The id of a subject's key: a hash of tenant and subject (the subject is not recoverable
/// from it without guessing).
pub fn kid(tenant: TenantId, subject: &str) -> String {
    let mut h = Sha256::new();
    h.update(tenant.0.as_bytes());
    h.update([0]);
    h.update(subject.as_bytes());
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn tenant_aad(tenant: TenantId, version: u32) -> Vec<u8> {
    format!("livora-tenant-key:{}:{version}", tenant.0).into_bytes()
}

fn subject_aad(tenant: TenantId, kid: &str) -> Vec<u8> {
    format!("livora-subject-key:{}:{kid}", tenant.0).into_bytes()
}

fn blob_aad(tenant: TenantId, label: &str, version: u32) -> Vec<u8> {
    format!("livora-blob:{}:{label}:{version}", tenant.0).into_bytes()
}

fn field_aad(tenant: TenantId, kid: &str) -> Vec<u8> {
    format!("livora-field:{}:{kid}", tenant.0).into_bytes()
}

/// A subject's data key, ready to use.
#[derive(Clone)]
pub struct SubjectKey {
    kid: String,
    cipher: Aes256Gcm,
    tenant: TenantId,
}

impl SubjectKey {
    /// Encrypts a field value into its `$lv1:` string.
    pub fn encrypt(&self, value: &Value) -> Value {
        let text = value.to_string();
        let sealed = seal(
            &self.cipher,
            text.as_bytes(),
            &field_aad(self.tenant, &self.kid),
        );
        Value::String(format!("{PREFIX}{}:{}", self.kid, B64.encode(sealed)))
    }
}

/// Which fields hold personal data: positions in an event, as dot paths from its root
/// (`traits.email`, `properties.customer.email`, `context.traits.phone`, `context.ip`).
///
/// Names are compared case-insensitively. A path under `traits` also covers
/// `context.traits` (where Segment's libraries copy traits). Arrays met on the way are
/// entered: `properties.items.email` covers the `email` of every item. What a path names is
/// encrypted whole (an object as one value), so `traits.address` hides street and city.
#[derive(Debug, Clone)]
pub struct PiiFields {
    /// The top-level traits that hold personal data, at or below them (lowercase): what a
    /// masked profile hides and what a condition needs `pii.view` to compare.
    pub traits: Vec<String>,
    /// The top-level event properties that hold personal data, at or below them.
    pub properties: Vec<String>,
    /// `context.ip` is personal.
    pub ip: bool,
    /// Every personal position, from the event's root.
    tree: PathTree,
}

/// The trait names personal by default (`traits.<name>` and `context.traits.<name>`).
const DEFAULT_TRAITS: [&str; 9] = [
    "email",
    "phone",
    "name",
    "firstname",
    "lastname",
    "first_name",
    "last_name",
    "address",
    "birthday",
];

/// The other paths personal by default: properties that name a person (`properties.name`
/// is a product or page name in Segment's spec, so it is not one), the customer or user
/// objects that commerce events and webhooks carry, and the client's address.
pub const DEFAULT_PATHS: [&str; 24] = [
    "properties.email",
    "properties.phone",
    "properties.address",
    "properties.first_name",
    "properties.last_name",
    "properties.billing_address",
    "properties.shipping_address",
    "properties.customer.email",
    "properties.customer.phone",
    "properties.customer.name",
    "properties.customer.first_name",
    "properties.customer.last_name",
    "properties.customer.firstname",
    "properties.customer.lastname",
    "properties.customer.address",
    "properties.customer.birthday",
    "properties.user.email",
    "properties.user.phone",
    "properties.user.name",
    "properties.user.first_name",
    "properties.user.last_name",
    "properties.user.address",
    "properties.user.birthday",
    "context.ip",
];

/// A configured path that cannot name a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "privacy path {path:?}: {reason} (a dot path under traits, properties or context, such as properties.customer.email)"
)]
pub struct BadPath {
    pub path: String,
    pub reason: &'static str,
}

/// Personal positions below one position: `leaf` when the value here is personal itself.
#[derive(Debug, Clone, Default)]
struct PathTree {
    leaf: bool,
    /// By lowercase name.
    children: std::collections::BTreeMap<String, PathTree>,
}

impl PathTree {
    fn insert(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.leaf = true,
            Some((first, rest)) => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    fn get(&self, name: &str) -> Option<&PathTree> {
        self.children
            .get(name)
            .or_else(|| self.children.get(&name.to_lowercase()))
    }

    fn at(&self, path: &[&str]) -> Option<&PathTree> {
        path.iter().try_fold(self, |t, p| t.get(p))
    }

    fn names(&self) -> Vec<String> {
        self.children.keys().cloned().collect()
    }
}

impl Default for PiiFields {
    fn default() -> Self {
        Self::new(&[], &[]).unwrap_or_else(|_| Self {
            traits: Vec::new(),
            properties: Vec::new(),
            ip: false,
            tree: PathTree::default(),
        })
    }
}

impl PiiFields {
    /// The built-in fields, plus trait names (`traits`: a name covers `traits.<name>` and
    /// `context.traits.<name>`) and dot paths (`paths`).
    pub fn new(traits: &[String], paths: &[String]) -> Result<Self, BadPath> {
        let mut tree = PathTree::default();
        let mut add = |path: &str| -> Result<(), BadPath> {
            let bad = |reason| BadPath {
                path: path.to_owned(),
                reason,
            };
            let parts: Vec<String> = path.split('.').map(|p| p.trim().to_lowercase()).collect();
            if parts.iter().any(String::is_empty) {
                return Err(bad("an empty name"));
            }
            if parts.len() < 2 {
                return Err(bad("names no field"));
            }
            match parts[0].as_str() {
                "traits" => {
                    tree.insert(&parts);
                    let mut in_context = vec!["context".to_owned()];
                    in_context.extend(parts);
                    tree.insert(&in_context);
                }
                "properties" | "context" => tree.insert(&parts),
                _ => return Err(bad("starts elsewhere than traits, properties or context")),
            }
            Ok(())
        };
        for t in DEFAULT_TRAITS
            .iter()
            .map(|t| (*t).to_owned())
            .chain(traits.iter().cloned())
        {
            if t.contains('.') || t.trim().is_empty() {
                return Err(BadPath {
                    path: t,
                    reason: "a trait name (pii_traits) is one name; use pii_paths for nested ones",
                });
            }
            add(&format!("traits.{t}"))?;
        }
        for p in DEFAULT_PATHS
            .iter()
            .copied()
            .chain(paths.iter().map(String::as_str))
        {
            add(p)?;
        }
        let names = |path: &[&str]| tree.at(path).map(PathTree::names).unwrap_or_default();
        let mut traits = names(&["traits"]);
        for t in names(&["context", "traits"]) {
            if !traits.contains(&t) {
                traits.push(t);
            }
        }
        Ok(Self {
            traits,
            properties: names(&["properties"]),
            ip: tree.at(&["context", "ip"]).is_some_and(|t| t.leaf),
            tree,
        })
    }

    /// The defaults plus configured trait names.
    pub fn with_traits(extra: &[String]) -> Self {
        Self::new(extra, &[]).unwrap_or_default()
    }

    /// Whether the raw text of an object might hold one of `names` as a key (a fast
    /// pre-check, so objects without personal fields are not parsed).
    fn might_hold(raw: &str, names: &[String]) -> bool {
        // An escaped key (`"em\u0061il"`) defeats the byte scan: parse such objects.
        if raw.contains("\\u") {
            return true;
        }
        // At every quote, is a name (ASCII case-insensitive) followed by a closing quote?
        let b = raw.as_bytes();
        let mut from = 0;
        while let Some(p) = b[from..].iter().position(|&c| c == b'"') {
            let start = from + p + 1;
            for n in names {
                let end = start + n.len();
                if end < b.len()
                    && b[end] == b'"'
                    && b[start..end].eq_ignore_ascii_case(n.as_bytes())
                {
                    return true;
                }
            }
            from = start;
        }
        false
    }

    /// Encrypts, in the raw JSON text of a value at position `node`, what lies at the
    /// personal positions below it; `None` when there is nothing to encrypt. The other
    /// values keep their exact text.
    fn seal_raw(raw: &str, node: &PathTree, key: &SubjectKey) -> Option<String> {
        let text = raw.trim_start();
        if text.starts_with('[') {
            let mut items: Vec<Box<RawValue>> = serde_json::from_str(raw).ok()?;
            let mut changed = false;
            for item in &mut items {
                if let Some(new) = Self::seal_raw(item.get(), node, key) {
                    *item = RawValue::from_string(new).ok()?;
                    changed = true;
                }
            }
            return if changed {
                serde_json::to_string(&items).ok()
            } else {
                None
            };
        }
        if !text.starts_with('{') || !Self::might_hold(raw, &node.names()) {
            return None;
        }
        let mut map: std::collections::BTreeMap<String, Box<RawValue>> =
            serde_json::from_str(raw).ok()?;
        let mut changed = false;
        for (k, v) in map.iter_mut() {
            let Some(child) = node.get(k) else {
                continue;
            };
            if child.leaf {
                // A value that merely looks encrypted is encrypted too: only our own
                // envelopes may ever decrypt.
                if v.get() != "null" {
                    let value: Value = serde_json::from_str(v.get()).ok()?;
                    *v = RawValue::from_string(key.encrypt(&value).to_string()).ok()?;
                    changed = true;
                }
            } else if let Some(new) = Self::seal_raw(v.get(), child, key) {
                *v = RawValue::from_string(new).ok()?;
                changed = true;
            }
        }
        if changed {
            serde_json::to_string(&map).ok()
        } else {
            None
        }
    }

    /// Encrypts what lies at the personal positions below `node` in a parsed value.
    fn seal_value(value: &mut Value, node: &PathTree, key: &SubjectKey) {
        match value {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    match node.get(k) {
                        Some(child) if child.leaf && !v.is_null() => *v = key.encrypt(v),
                        Some(child) if !child.leaf => Self::seal_value(v, child, key),
                        _ => {}
                    }
                }
            }
            Value::Array(items) => items
                .iter_mut()
                .for_each(|v| Self::seal_value(v, node, key)),
            _ => {}
        }
    }

    /// Encrypts the personal fields of `traits` (or `properties`) held as raw JSON text;
    /// `None` when it has none (the text is kept as is). The other values keep their exact
    /// text.
    pub fn encrypt_raw(&self, raw: &str, properties: bool, key: &SubjectKey) -> Option<String> {
        let node = self
            .tree
            .get(if properties { "properties" } else { "traits" })?;
        Self::seal_raw(raw, node, key)
    }

    /// Encrypts the personal fields of `context` (`context.ip`, `context.traits.*` and any
    /// configured `context.…` path).
    pub fn encrypt_context(&self, context: &mut Map<String, Value>, key: &SubjectKey) {
        if let Some(node) = self.tree.get("context") {
            let mut whole = Value::Object(std::mem::take(context));
            Self::seal_value(&mut whole, node, key);
            if let Value::Object(m) = whole {
                *context = m;
            }
        }
    }
}

/// The keys of a running node: tenant keys unwrapped once, subject keys cached (erased ones
/// too, as absent).
///
/// New subject keys are written with group commit: the requests that need new keys at the
/// same time share one transaction (one fsync), and each waits until its keys are durable
/// before it encrypts anything with them.
pub struct Keyring {
    store: Arc<dyn MetadataStore>,
    kms: Arc<dyn Kms>,
    tenants: RwLock<HashMap<TenantId, Arc<TenantKeys>>>,
    /// By key id, for decryption; `None` for an erased or unknown key.
    subjects: RwLock<HashMap<(TenantId, String), Option<SubjectKey>>>,
    /// By subject, for encryption: the key and the commit group that makes it durable (0:
    /// durable already).
    known: RwLock<HashMap<TenantId, Known>>,
    pending: Mutex<Pending>,
    /// Serialises commits; the holder commits everything pending.
    commit_lock: Arc<tokio::sync::Mutex<()>>,
    /// Held shared while keys are looked up and created, exclusively while keys are
    /// destroyed: a key being erased is never taken back into the cache.
    erase_lock: tokio::sync::RwLock<()>,
    /// Every group up to this one has been committed or has failed.
    done: AtomicU64,
    failed: Mutex<HashSet<u64>>,
}

/// A tenant's subject keys by subject, each with the commit group it waits for (0: none).
type Known = HashMap<String, (SubjectKey, u64)>;

/// Keys waiting for the next commit.
#[derive(Default)]
struct Pending {
    /// The group new keys join now.
    group: u64,
    rows: Vec<NewSubjectKey>,
}

/// A subject key to store.
#[derive(Debug, Clone)]
pub struct NewSubjectKey {
    pub tenant: TenantId,
    pub subject: String,
    pub kid: String,
    pub version: u32,
    pub wrapped: Vec<u8>,
}

struct TenantKeys {
    /// version -> key
    keys: HashMap<u32, Aes256Gcm>,
    current: u32,
}

const MAX_CACHED_SUBJECTS: usize = 1_000_000;

impl Keyring {
    pub fn new(store: Arc<dyn MetadataStore>, kms: Arc<dyn Kms>) -> Self {
        Self {
            store,
            kms,
            tenants: RwLock::new(HashMap::new()),
            subjects: RwLock::new(HashMap::new()),
            known: RwLock::new(HashMap::new()),
            pending: Mutex::new(Pending {
                group: 1,
                rows: Vec::new(),
            }),
            commit_lock: Arc::new(tokio::sync::Mutex::new(())),
            erase_lock: tokio::sync::RwLock::new(()),
            done: AtomicU64::new(0),
            failed: Mutex::new(HashSet::new()),
        }
    }

    async fn tenant_keys(&self, tenant: TenantId) -> Result<Arc<TenantKeys>, Error> {
        if let Some(k) = self
            .tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&tenant)
        {
            return Ok(k.clone());
        }
        let mut stored = self.store.tenant_keys(tenant).await?;
        if stored.is_empty() {
            let mut raw = [0u8; 32];
            rand::rng().fill_bytes(&mut raw);
            let wrapped = self
                .kms
                .wrap(&raw, &tenant_aad(tenant, 1))
                .await
                .map_err(crypt)?;
            self.store.add_tenant_key(tenant, 1, &wrapped).await?;
            stored = self.store.tenant_keys(tenant).await?;
        }
        let mut keys = HashMap::new();
        let mut current = 0;
        for (version, wrapped) in stored {
            let raw = self
                .kms
                .unwrap(&wrapped, &tenant_aad(tenant, version))
                .await
                .map_err(crypt)?;
            let cipher =
                Aes256Gcm::new_from_slice(&raw).map_err(|_| crypt(CryptoError::Malformed))?;
            keys.insert(version, cipher);
            current = current.max(version);
        }
        let k = Arc::new(TenantKeys { keys, current });
        self.tenants
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tenant, k.clone());
        Ok(k)
    }

    /// Encrypts a blob of the tenant's own (e.g. a profiles snapshot) under its current
    /// tenant key; `label` names what it is and is authenticated with it. Erasing a subject
    /// does not reach such a blob: whoever keeps one rewrites it after an erasure.
    pub async fn seal_blob(
        &self,
        tenant: TenantId,
        label: &str,
        plain: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let tk = self.tenant_keys(tenant).await?;
        let cipher = tk
            .keys
            .get(&tk.current)
            .ok_or_else(|| Error::Corrupt("the current tenant key is missing".into()))?;
        let mut out = tk.current.to_be_bytes().to_vec();
        out.extend(seal(cipher, plain, &blob_aad(tenant, label, tk.current)));
        Ok(out)
    }

    /// Decrypts what [`Keyring::seal_blob`] wrote for the same tenant and label.
    pub async fn open_blob(
        &self,
        tenant: TenantId,
        label: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let (version, rest) = sealed
            .split_first_chunk::<4>()
            .ok_or_else(|| crypt(CryptoError::Malformed))?;
        let version = u32::from_be_bytes(*version);
        let mut tk = self.tenant_keys(tenant).await?;
        if !tk.keys.contains_key(&version) {
            // Rotated by another process since the keys were cached.
            self.forget_tenant(tenant);
            tk = self.tenant_keys(tenant).await?;
        }
        let cipher = tk
            .keys
            .get(&version)
            .ok_or_else(|| Error::Corrupt(format!("tenant key version {version} is missing")))?;
        open(cipher, rest, &blob_aad(tenant, label, version)).map_err(crypt)
    }

    /// Forgets cached tenant keys (after a rotation by another process).
    pub fn forget_tenant(&self, tenant: TenantId) {
        self.tenants
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&tenant);
    }

    fn unwrap_subject(
        &self,
        tenant: TenantId,
        tk: &TenantKeys,
        kid: &str,
        version: u32,
        wrapped: &[u8],
    ) -> Result<SubjectKey, Error> {
        let cipher = tk
            .keys
            .get(&version)
            .ok_or_else(|| Error::Corrupt(format!("tenant key version {version} is missing")))?;
        let raw = open(cipher, wrapped, &subject_aad(tenant, kid)).map_err(crypt)?;
        Ok(SubjectKey {
            kid: kid.to_owned(),
            cipher: Aes256Gcm::new_from_slice(&raw).map_err(|_| crypt(CryptoError::Malformed))?,
            tenant,
        })
    }

    /// The keys of `subjects` (`u:<userId>` / `a:<anonymousId>`), created where missing;
    /// every key returned is durable.
    pub async fn subject_keys(
        self: &Arc<Self>,
        tenant: TenantId,
        subjects: &[String],
    ) -> Result<HashMap<String, SubjectKey>, Error> {
        let mut wait = 0;
        let mut missing = Vec::new();
        {
            let known = self.known.read().unwrap_or_else(|e| e.into_inner());
            let of_tenant = known.get(&tenant);
            for s in subjects {
                match of_tenant.and_then(|m| m.get(s)) {
                    Some((_, group)) => wait = wait.max(*group),
                    None => missing.push(s.clone()),
                }
            }
        }
        if !missing.is_empty() {
            wait = wait.max(self.create(tenant, missing).await?);
        }
        if wait > 0 {
            self.commit_until(wait).await?;
        }
        // Read back after the commit: a conflicting key stored first has replaced ours.
        let known = self.known.read().unwrap_or_else(|e| e.into_inner());
        let of_tenant = known.get(&tenant);
        subjects
            .iter()
            .map(|s| {
                of_tenant
                    .and_then(|m| m.get(s))
                    .map(|(k, _)| (s.clone(), k.clone()))
                    .ok_or_else(|| Error::Corrupt(format!("no key for a subject of {tenant}")))
            })
            .collect()
    }

    /// Loads the stored keys of `missing` and generates the others into the pending group;
    /// returns the group to wait for (0 if none).
    async fn create(&self, tenant: TenantId, missing: Vec<String>) -> Result<u64, Error> {
        let _no_erasure = self.erase_lock.read().await;
        let tk = self.tenant_keys(tenant).await?;
        let kids: Vec<String> = missing.iter().map(|s| kid(tenant, s)).collect();
        let stored: HashMap<String, (u32, Vec<u8>)> = self
            .store
            .subject_keys(tenant, &kids)
            .await?
            .into_iter()
            .map(|(k, v, w)| (k, (v, w)))
            .collect();
        let current = tk
            .keys
            .get(&tk.current)
            .ok_or_else(|| Error::Corrupt("no current tenant key".into()))?;
        let mut wait = 0;
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        if known.values().map(HashMap::len).sum::<usize>() > MAX_CACHED_SUBJECTS {
            // Only durable keys can be forgotten: they are read again when needed.
            for m in known.values_mut() {
                m.retain(|_, (_, group)| *group != 0);
            }
        }
        let of_tenant = known.entry(tenant).or_default();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for (s, k) in missing.into_iter().zip(kids) {
            if let Some((_, group)) = of_tenant.get(&s) {
                // Another request got there first.
                wait = wait.max(*group);
                continue;
            }
            if let Some((version, wrapped)) = stored.get(&k) {
                let key = self.unwrap_subject(tenant, &tk, &k, *version, wrapped)?;
                self.subjects
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert((tenant, k), Some(key.clone()));
                of_tenant.insert(s, (key, 0));
                continue;
            }
            let mut raw = [0u8; 32];
            rand::rng().fill_bytes(&mut raw);
            let key = SubjectKey {
                kid: k.clone(),
                cipher: Aes256Gcm::new_from_slice(&raw)
                    .map_err(|_| crypt(CryptoError::Malformed))?,
                tenant,
            };
            pending.rows.push(NewSubjectKey {
                tenant,
                subject: s.clone(),
                wrapped: seal(current, &raw, &subject_aad(tenant, &k)),
                kid: k,
                version: tk.current,
            });
            of_tenant.insert(s, (key, pending.group));
            wait = wait.max(pending.group);
        }
        Ok(wait)
    }

    /// Returns once group `group` is durable: commits it (and everything pending with it)
    /// unless another request is already doing so. The commit runs on its own task holding
    /// the commit lock, so a request dropped meanwhile (a timeout, a client gone) cannot leave
    /// a group half done: the group ends committed or failed, and its waiters learn which.
    async fn commit_until(self: &Arc<Self>, group: u64) -> Result<(), Error> {
        loop {
            let turn = self.commit_lock.clone().lock_owned().await;
            if self.done.load(Ordering::Acquire) >= group {
                let failed = self
                    .failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&group);
                return if failed {
                    Err(Error::Corrupt("storing new encryption keys failed".into()))
                } else {
                    Ok(())
                };
            }
            let ring = self.clone();
            let task = tokio::spawn(async move {
                let _turn = turn;
                ring.commit_pending().await;
            });
            // A panic in the task is a failed group too: `done` was not advanced, so the next
            // turn of the loop commits again.
            let _ = task.await;
        }
    }

    /// Commits the pending group; marks it done (and failed, on any error).
    async fn commit_pending(&self) {
        let (this, rows) = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let this = p.group;
            p.group += 1;
            (this, std::mem::take(&mut p.rows))
        };
        let outcome = self.store_group(this, &rows).await;
        if outcome.is_err() {
            // Nothing of this group may be used: forget its keys; waiters get the error.
            let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
            for r in &rows {
                if let Some(m) = known.get_mut(&r.tenant)
                    && m.get(&r.subject).is_some_and(|(_, g)| *g == this)
                {
                    m.remove(&r.subject);
                }
            }
            self.failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(this);
        }
        self.done.store(this, Ordering::Release);
    }

    async fn store_group(&self, this: u64, rows: &[NewSubjectKey]) -> Result<(), Error> {
        let conflicts = self.store.insert_subject_keys(rows).await?;
        let mut theirs = Vec::new();
        for i in conflicts {
            // Someone else stored a key for this subject first: use theirs.
            let r = &rows[i];
            let tk = self.tenant_keys(r.tenant).await?;
            let stored = self
                .store
                .subject_keys(r.tenant, std::slice::from_ref(&r.kid))
                .await?;
            let Some((_, version, wrapped)) = stored.into_iter().next() else {
                return Err(Error::Corrupt(format!("subject key {} vanished", r.kid)));
            };
            theirs.push((
                i,
                self.unwrap_subject(r.tenant, &tk, &r.kid, version, &wrapped)?,
            ));
        }
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        let mut by_kid = self.subjects.write().unwrap_or_else(|e| e.into_inner());
        for (i, key) in theirs {
            let r = &rows[i];
            known
                .entry(r.tenant)
                .or_default()
                .insert(r.subject.clone(), (key, this));
        }
        for r in rows {
            if let Some(e) = known.get_mut(&r.tenant).and_then(|m| m.get_mut(&r.subject))
                && e.1 == this
            {
                e.1 = 0;
                // Decryption sees the key at once (also after an erasure of the same subject).
                by_kid.insert((r.tenant, r.kid.clone()), Some(e.0.clone()));
            }
        }
        Ok(())
    }

    /// Decrypts the personal fields of a stored event's JSON text (the envelopes under
    /// `traits`, `properties` and `context`, at any depth: wherever [`PiiFields`] put them);
    /// a field whose key was erased becomes `null`. Everything else keeps its
    /// exact text. Returns the text and how many fields were erased.
    pub async fn decrypt_text(
        &self,
        tenant: TenantId,
        text: &str,
    ) -> Result<(String, usize), Error> {
        if !text.contains(PREFIX) {
            return Ok((text.to_owned(), 0));
        }
        let mut kids = Vec::new();
        rewrite_fields(text, &mut |envelope| {
            if let Some((kid, _)) = envelope
                .strip_prefix(PREFIX)
                .and_then(|r| r.split_once(':'))
            {
                kids.push(kid.to_owned());
            }
            None
        });
        if kids.is_empty() {
            return Ok((text.to_owned(), 0));
        }
        kids.sort();
        kids.dedup();
        let keys = self.existing(tenant, &kids).await?;
        let mut erased = 0;
        let out = rewrite_fields(text, &mut |envelope| {
            let plain = envelope
                .strip_prefix(PREFIX)
                .and_then(|r| r.split_once(':'))
                .and_then(|(kid, data)| {
                    let k = keys.get(kid)?;
                    let sealed = B64.decode(data).ok()?;
                    let p = open(&k.cipher, &sealed, &field_aad(tenant, kid)).ok()?;
                    let text = String::from_utf8(p).ok()?;
                    // Only a well-formed JSON value goes back into the text.
                    RawValue::from_string(text).ok()
                });
            plain.or_else(|| {
                erased += 1;
                RawValue::from_string("null".into()).ok()
            })
        });
        Ok((out.unwrap_or_else(|| text.to_owned()), erased))
    }

    /// The keys among `kids` that still exist (erased ones are cached as absent).
    async fn existing(
        &self,
        tenant: TenantId,
        kids: &[String],
    ) -> Result<HashMap<String, SubjectKey>, Error> {
        let mut out = HashMap::new();
        let mut unknown = Vec::new();
        {
            let cache = self.subjects.read().unwrap_or_else(|e| e.into_inner());
            for k in kids {
                match cache.get(&(tenant, k.clone())) {
                    Some(Some(key)) => {
                        out.insert(k.clone(), key.clone());
                    }
                    Some(None) => {}
                    None => unknown.push(k.clone()),
                }
            }
        }
        if unknown.is_empty() {
            return Ok(out);
        }
        let tk = self.tenant_keys(tenant).await?;
        let stored = self.store.subject_keys(tenant, &unknown).await?;
        let mut cache = self.subjects.write().unwrap_or_else(|e| e.into_inner());
        let mut found = std::collections::HashSet::new();
        for (k, version, wrapped) in stored {
            let key = self.unwrap_subject(tenant, &tk, &k, version, &wrapped)?;
            cache.insert((tenant, k.clone()), Some(key.clone()));
            found.insert(k.clone());
            out.insert(k, key);
        }
        for k in unknown {
            if !found.contains(&k) {
                cache.insert((tenant, k), None);
            }
        }
        Ok(out)
    }

    /// `text` encrypted under the key of `subject` (`u:<userId>` / `a:<anonymousId>`, made if
    /// missing), as a `$lv1:` envelope: how the audit log names a person, so that erasing
    /// the person (destroying the key) leaves nothing readable there.
    pub async fn seal_for_subject(
        self: &Arc<Self>,
        tenant: TenantId,
        subject: &str,
        text: &str,
    ) -> Result<String, Error> {
        let keys = self.subject_keys(tenant, &[subject.to_owned()]).await?;
        let key = keys
            .get(subject)
            .ok_or_else(|| Error::Corrupt(format!("no key for a subject of {tenant}")))?;
        match key.encrypt(&Value::String(text.to_owned())) {
            Value::String(envelope) => Ok(envelope),
            _ => Err(Error::Corrupt("an envelope is a string".into())),
        }
    }

    /// The text [`Keyring::seal_for_subject`] sealed into `envelope`; `None` once the
    /// subject's key is destroyed (or for anything that is not such an envelope).
    pub async fn open_for_subject(
        &self,
        tenant: TenantId,
        envelope: &str,
    ) -> Result<Option<String>, Error> {
        let Some((kid, data)) = envelope
            .strip_prefix(PREFIX)
            .and_then(|r| r.split_once(':'))
        else {
            return Ok(None);
        };
        let keys = self.existing(tenant, &[kid.to_owned()]).await?;
        let Some(key) = keys.get(kid) else {
            return Ok(None);
        };
        let plain = B64
            .decode(data)
            .ok()
            .and_then(|sealed| open(&key.cipher, &sealed, &field_aad(tenant, kid)).ok())
            .and_then(|p| serde_json::from_slice::<Value>(&p).ok());
        Ok(plain.and_then(|v| v.as_str().map(str::to_owned)))
    }

    /// Destroys the keys of `subjects`: their encrypted fields become unreadable everywhere.
    /// Returns how many keys existed.
    pub async fn shred(&self, tenant: TenantId, subjects: &[String]) -> Result<u64, Error> {
        let _exclusive = self.erase_lock.write().await;
        let kids: Vec<String> = subjects.iter().map(|s| kid(tenant, s)).collect();
        let n = self.store.delete_subject_keys(tenant, &kids).await?;
        if let Some(m) = self
            .known
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&tenant)
        {
            for s in subjects {
                m.remove(s);
            }
        }
        let mut cache = self.subjects.write().unwrap_or_else(|e| e.into_inner());
        for k in kids {
            cache.insert((tenant, k), None);
        }
        Ok(n)
    }
}

type RawMap = std::collections::BTreeMap<String, Box<RawValue>>;

/// Calls `f` with every envelope string found under `traits`, `properties` and `context`,
/// at any depth (wherever a configured path, today's or an earlier one, put it), and puts
/// back what it returns (`None`: unchanged). Returns the new text if anything changed.
/// Values elsewhere that merely look like envelopes are left alone.
fn rewrite_fields(text: &str, f: &mut dyn FnMut(&str) -> Option<Box<RawValue>>) -> Option<String> {
    fn envelope(v: &RawValue) -> Option<String> {
        if !v.get().starts_with(&format!("\"{PREFIX}")) {
            return None;
        }
        serde_json::from_str::<String>(v.get()).ok()
    }
    fn in_value(
        raw: &RawValue,
        f: &mut dyn FnMut(&str) -> Option<Box<RawValue>>,
    ) -> Option<Box<RawValue>> {
        if let Some(e) = envelope(raw) {
            return f(&e);
        }
        let text = raw.get();
        if !text.contains(PREFIX) {
            return None;
        }
        if text.trim_start().starts_with('[') {
            let mut items: Vec<Box<RawValue>> = serde_json::from_str(text).ok()?;
            let mut changed = false;
            for v in &mut items {
                if let Some(new) = in_value(v, f) {
                    *v = new;
                    changed = true;
                }
            }
            return if changed {
                serde_json::value::to_raw_value(&items).ok()
            } else {
                None
            };
        }
        if !text.trim_start().starts_with('{') {
            return None;
        }
        let mut map: RawMap = serde_json::from_str(text).ok()?;
        let mut changed = false;
        for v in map.values_mut() {
            if let Some(new) = in_value(v, f) {
                *v = new;
                changed = true;
            }
        }
        if changed {
            serde_json::value::to_raw_value(&map).ok()
        } else {
            None
        }
    }
    let mut top: RawMap = serde_json::from_str(text).ok()?;
    let mut changed = false;
    for key in ["traits", "properties", "context"] {
        if let Some(v) = top.get_mut(key)
            && !v.get().trim_start().starts_with('"')
            && let Some(new) = in_value(v, f)
        {
            *v = new;
            changed = true;
        }
    }
    if changed {
        serde_json::to_string(&top).ok()
    } else {
        None
    }
}

fn crypt(e: CryptoError) -> Error {
    Error::Corrupt(e.to_string())
}

/// The associated data of the wrapped audit key.
const AUDIT_KEY_AAD: &[u8] = b"livora-audit-key:1";

/// The key of the audit log's chain ([`crate::audit::AuditKey`]): 256 random bits kept at
/// `path` (`<data_dir>/audit.key`) wrapped by the master key or KMS, as base64. `None` when
/// there is no key file ([`make_audit_key`] makes one). Whoever can write the data directory
/// but has no master key can neither read it nor make a valid replacement.
pub async fn read_audit_key(
    kms: &dyn Kms,
    path: &std::path::Path,
) -> Result<Option<crate::audit::AuditKey>, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::Corrupt(format!("{}: {e}", path.display()))),
    };
    let wrapped = B64
        .decode(text.trim())
        .map_err(|_| Error::Corrupt(format!("{} is not base64", path.display())))?;
    let raw = kms.unwrap(&wrapped, AUDIT_KEY_AAD).await.map_err(crypt)?;
    let raw: [u8; 32] = raw
        .try_into()
        .map_err(|_| Error::Corrupt(format!("{} is not a 256-bit key", path.display())))?;
    Ok(Some(crate::audit::AuditKey::from_bytes(raw)))
}

/// Makes a new audit key at `path` (mode 0600, wrapped by the master key or KMS); refuses to
/// replace one that exists. Whether a log may be keyed by a new key is the caller's decision
/// (a non-empty log without a key is either from before keying or had its key deleted).
pub async fn make_audit_key(
    kms: &dyn Kms,
    path: &std::path::Path,
) -> Result<crate::audit::AuditKey, Error> {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let wrapped = kms.wrap(&raw, AUDIT_KEY_AAD).await.map_err(crypt)?;
    write_new_secret(path, &B64.encode(wrapped))?;
    Ok(crate::audit::AuditKey::from_bytes(raw))
}

/// Rewraps the audit key at `path` under the KMS's current master key (after a master
/// rotation); `Ok(false)` if there is none.
pub async fn rewrap_audit_key(kms: &dyn Kms, path: &std::path::Path) -> Result<bool, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::Corrupt(format!("{}: {e}", path.display()))),
    };
    let wrapped = B64
        .decode(text.trim())
        .map_err(|_| Error::Corrupt(format!("{} is not base64", path.display())))?;
    let raw = kms.unwrap(&wrapped, AUDIT_KEY_AAD).await.map_err(crypt)?;
    let again = kms.wrap(&raw, AUDIT_KEY_AAD).await.map_err(crypt)?;
    let tmp = path.with_extension("key.tmp");
    let _ = std::fs::remove_file(&tmp);
    write_new_secret(&tmp, &B64.encode(again))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::Corrupt(format!("{}: {e}", path.display())))?;
    Ok(true)
}

/// Writes a new file readable by its owner only, synced; refuses to overwrite one.
fn write_new_secret(path: &std::path::Path, text: &str) -> Result<(), Error> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let io = |e: std::io::Error| Error::Corrupt(format!("{}: {e}", path.display()));
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(())
}

/// Whether anything is wrapped by a master key yet: any tenant's key. Nothing is until the
/// first personal field is sealed, so a node that never ran with encryption at rest has none.
/// Deleting them would make every sealed value unreadable, so unlike a file in the data
/// directory, their presence is not something an intruder can quietly undo.
pub async fn master_key_used(store: &dyn MetadataStore) -> Result<bool, Error> {
    for t in store.tenants().await? {
        if !store.tenant_keys(t.id).await?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Rewraps every tenant key under the KMS's current master key (after a master rotation;
/// the previous master must still be configured). Returns how many keys were rewrapped.
pub async fn rewrap_tenant_keys(store: &dyn MetadataStore, kms: &dyn Kms) -> Result<u64, Error> {
    let mut n = 0;
    for t in store.tenants().await? {
        for (version, wrapped) in store.tenant_keys(t.id).await? {
            let aad = tenant_aad(t.id, version);
            let raw = kms.unwrap(&wrapped, &aad).await.map_err(crypt)?;
            let again = kms.wrap(&raw, &aad).await.map_err(crypt)?;
            store.replace_tenant_key(t.id, version, &again).await?;
            n += 1;
        }
    }
    Ok(n)
}

/// Adds a tenant key version: new subject keys are wrapped by it; older versions stay.
pub async fn rotate_tenant_key(
    store: &dyn MetadataStore,
    kms: &dyn Kms,
    tenant: TenantId,
) -> Result<u32, Error> {
    let next = store
        .tenant_keys(tenant)
        .await?
        .iter()
        .map(|(v, _)| *v)
        .max()
        .unwrap_or(0)
        + 1;
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let wrapped = kms
        .wrap(&raw, &tenant_aad(tenant, next))
        .await
        .map_err(crypt)?;
    store.add_tenant_key(tenant, next, &wrapped).await?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An in-memory store with one tenant.
    async fn store_with_tenant() -> (Arc<dyn MetadataStore>, TenantId) {
        let store: Arc<dyn MetadataStore> =
            Arc::new(crate::SqliteStore::in_memory().await.expect("store"));
        let tenant = store
            .create_tenant(crate::NewTenant {
                name: "t".into(),
                time_zone: "UTC".into(),
                currency: livora_model::Currency::parse("USD").expect("usd"),
            })
            .await
            .expect("tenant")
            .id;
        (store, tenant)
    }

    /// Audit targets sealed for a person read back until the person is erased, then never;
    /// the audit key is wrapped by the KMS, read back, and rewrapped.
    #[tokio::test]
    async fn sealed_audit_targets_die_with_the_subject_and_the_audit_key_is_wrapped() {
        let (store, tenant) = store_with_tenant().await;
        let kms: Arc<dyn Kms> = Arc::new(LocalKms::new(&[9u8; 32], &[]).expect("kms"));
        let ring = Arc::new(Keyring::new(store.clone(), kms.clone()));
        let subject = "u:ann@example.com";
        let sealed = ring
            .seal_for_subject(tenant, subject, subject)
            .await
            .expect("seal");
        assert!(
            sealed.starts_with(PREFIX) && !sealed.contains("ann"),
            "{sealed}"
        );
        let fresh = Keyring::new(store.clone(), kms.clone());
        assert_eq!(
            fresh.open_for_subject(tenant, &sealed).await.expect("open"),
            Some(subject.to_owned())
        );
        assert_eq!(
            fresh
                .open_for_subject(tenant, "plain text")
                .await
                .expect("open"),
            None
        );
        ring.shred(tenant, &[subject.to_owned()])
            .await
            .expect("shred");
        let after = Keyring::new(store.clone(), kms.clone());
        assert_eq!(
            after.open_for_subject(tenant, &sealed).await.expect("open"),
            None
        );

        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("audit.key");
        assert!(
            read_audit_key(kms.as_ref(), &path)
                .await
                .expect("none")
                .is_none()
        );
        make_audit_key(kms.as_ref(), &path).await.expect("made");
        let text = std::fs::read_to_string(&path).expect("file");
        assert!(
            read_audit_key(kms.as_ref(), &path)
                .await
                .expect("read")
                .is_some()
        );
        assert!(
            make_audit_key(kms.as_ref(), &path).await.is_err(),
            "never replaces a key"
        );
        assert_eq!(std::fs::read_to_string(&path).expect("file"), text);
        let other: Arc<dyn Kms> = Arc::new(LocalKms::new(&[1u8; 32], &[]).expect("kms"));
        assert!(
            read_audit_key(other.as_ref(), &path).await.is_err(),
            "needs the master key"
        );
        let rotated: Arc<dyn Kms> =
            Arc::new(LocalKms::new(&[1u8; 32], &[vec![9u8; 32]]).expect("kms"));
        assert!(
            rewrap_audit_key(rotated.as_ref(), &path)
                .await
                .expect("rewrap")
        );
        assert_ne!(std::fs::read_to_string(&path).expect("file"), text);
        assert!(
            read_audit_key(other.as_ref(), &path)
                .await
                .is_ok_and(|k| k.is_some()),
            "under the new master"
        );
    }

    /// The audit's stand-in for a person is stable, differs by tenant and by secret, and is
    /// not the plain hash anyone could compute from a guessed id.
    #[test]
    fn subject_tags_need_the_secret() {
        let (a, b) = (TenantId::generate(), TenantId::generate());
        let tagger = SubjectTagger::new(b"node secret");
        let tag = tagger.tag(a, "u:ann@example.com");
        assert_eq!(tag, tagger.tag(a, "u:ann@example.com"));
        assert_ne!(tag, tagger.tag(b, "u:ann@example.com"));
        assert_ne!(
            tag,
            SubjectTagger::new(b"other").tag(a, "u:ann@example.com")
        );
        assert_ne!(tag, format!("subject:{}", kid(a, "u:ann@example.com")));
        assert!(tag.starts_with("subject:") && tag.len() == 8 + 32, "{tag}");
    }

    #[tokio::test]
    async fn local_kms_wraps_and_rotates() {
        let old = decode_key(&generate_key_text()).expect("key");
        let new = decode_key(&generate_key_text()).expect("key");
        let a = LocalKms::new(&old, &[]).expect("kms");
        let wrapped = a.wrap(b"secret", b"aad").await.expect("wrap");
        assert_eq!(a.unwrap(&wrapped, b"aad").await.expect("unwrap"), b"secret");
        assert!(a.unwrap(&wrapped, b"other aad").await.is_err());
        let b = LocalKms::new(&new, std::slice::from_ref(&old)).expect("kms");
        assert_eq!(
            b.unwrap(&wrapped, b"aad").await.expect("previous key"),
            b"secret"
        );
        let c = LocalKms::new(&new, &[]).expect("kms");
        assert!(matches!(
            c.unwrap(&wrapped, b"aad").await,
            Err(CryptoError::UnknownMasterKey(_))
        ));
        assert!(decode_key("c2hvcnQ=").is_err());
        assert_eq!(decode_key(&"ab".repeat(32)).expect("hex").len(), 32);
    }

    /// Concurrent requests for overlapping new subjects share commits, agree on one key per
    /// subject, and every key they return is durable: a fresh keyring (a restart) reads it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_new_subjects_get_one_durable_key_each() {
        let (store, tenant) = store_with_tenant().await;
        let kms: Arc<dyn Kms> = Arc::new(LocalKms::new(&[9u8; 32], &[]).expect("kms"));
        let ring = Arc::new(Keyring::new(store.clone(), kms.clone()));
        let mut tasks = Vec::new();
        for t in 0..16 {
            let ring = ring.clone();
            tasks.push(tokio::spawn(async move {
                let subjects: Vec<String> =
                    (0..40).map(|i| format!("u:{}", (i * 7 + t) % 50)).collect();
                let keys = ring.subject_keys(tenant, &subjects).await.expect("keys");
                subjects
                    .iter()
                    .map(|s| {
                        (
                            s.clone(),
                            format!(
                                r#"{{"traits":{{"email":{}}},"n":1.10}}"#,
                                keys[s].encrypt(&Value::String(s.clone()))
                            ),
                        )
                    })
                    .collect::<Vec<_>>()
            }));
        }
        let mut sealed = Vec::new();
        for t in tasks {
            sealed.extend(t.await.expect("task"));
        }
        assert_eq!(
            store
                .subject_keys(
                    tenant,
                    &(0..50)
                        .map(|i| kid(tenant, &format!("u:{i}")))
                        .collect::<Vec<_>>()
                )
                .await
                .expect("rows")
                .len(),
            50
        );
        let restarted = Arc::new(Keyring::new(store.clone(), kms));
        for (subject, text) in sealed {
            let (plain, erased) = restarted
                .decrypt_text(tenant, &text)
                .await
                .expect("decrypt");
            assert_eq!(
                (plain, erased),
                (
                    format!(r#"{{"n":1.10,"traits":{{"email":"{subject}"}}}}"#),
                    0
                )
            );
        }
        // Erasure: the fields stop decrypting, in this keyring and after a restart.
        let sample = format!(
            r#"{{"traits":{{"email":{}}}}}"#,
            ring.subject_keys(tenant, &["u:1".to_owned()])
                .await
                .expect("key")["u:1"]
                .encrypt(&Value::from("x"))
        );
        assert_eq!(ring.shred(tenant, &["u:1".into()]).await.expect("shred"), 1);
        assert_eq!(
            ring.decrypt_text(tenant, &sample).await.expect("d"),
            (r#"{"traits":{"email":null}}"#.to_owned(), 1)
        );
        let again = Arc::new(Keyring::new(
            store,
            Arc::new(LocalKms::new(&[9u8; 32], &[]).expect("kms")),
        ));
        assert_eq!(again.decrypt_text(tenant, &sample).await.expect("d").1, 1);
        // The same person sends new data after the erasure: a new key, readable at once.
        let fresh = format!(
            r#"{{"traits":{{"email":{}}}}}"#,
            ring.subject_keys(tenant, &["u:1".to_owned()])
                .await
                .expect("key")["u:1"]
                .encrypt(&Value::from("y"))
        );
        assert_eq!(
            ring.decrypt_text(tenant, &fresh).await.expect("d").0,
            r#"{"traits":{"email":"y"}}"#
        );
        // Look-alike envelopes outside personal fields, or broken ones, never break the text.
        let odd = r#"{"event":"\"$lv1:x","properties":{"note":"$lv1:zz:AAAA"},"traits":{"email":"$lv1:nope"}}"#;
        let (out, erased) = ring.decrypt_text(tenant, odd).await.expect("d");
        serde_json::from_str::<Value>(&out).expect("still JSON");
        assert!(
            out.contains(r#""note":null"#) && out.contains(r#""email":null"#),
            "{out}"
        );
        assert_eq!(erased, 2);
    }

    /// Nested personal data, by default and configured, is encrypted wherever it sits
    /// (objects, arrays, `context`), decrypts back to the same values, and is unreadable once
    /// the subject's key is destroyed.
    #[tokio::test]
    async fn nested_paths_encrypt_decrypt_and_shred() {
        let (store, tenant) = store_with_tenant().await;
        let kms: Arc<dyn Kms> = Arc::new(LocalKms::new(&[3u8; 32], &[]).expect("kms"));
        let ring = Arc::new(Keyring::new(store, kms));
        let key = ring
            .subject_keys(tenant, &["u:1".to_owned()])
            .await
            .expect("key")["u:1"]
            .clone();
        let f = PiiFields::new(
            &["Tax_Id".into()],
            &[
                "properties.shipping.Recipient".into(),
                "properties.items.buyer_email".into(),
                "context.device.advertisingId".into(),
                "traits.company.ceo".into(),
            ],
        )
        .expect("paths");
        let secrets = [
            "c.secret@example.com",
            "+44 20 7946 0000",
            "Carla Hidden",
            "r.hidden@example.com",
            "Rita Recipient",
            "buyer1@example.com",
            "buyer2@example.com",
            "ctx.secret@example.com",
            "AD-123-SECRET",
            "TAX-999",
            "Ceo Hidden",
        ];
        let properties = json!({
            "revenue": 10.50,
            "customer": {"Email": secrets[0], "phone": secrets[1], "name": secrets[2], "tier": "gold"},
            "user": {"email": secrets[3]},
            "shipping": {"recipient": secrets[4], "city": "Leeds"},
            "items": [{"sku": "a", "buyer_email": secrets[5]}, {"sku": "b", "buyer_email": secrets[6]}],
            "name": "Blue T-shirt",
        })
        .to_string();
        let traits = json!({"tax_id": secrets[9], "company": {"ceo": secrets[10], "size": 4}, "plan": "pro"})
            .to_string();
        let mut context = json!({"ip": "198.51.100.7", "traits": {"email": secrets[7]},
            "device": {"advertisingId": secrets[8], "model": "x"}})
        .as_object()
        .cloned()
        .expect("object");
        let sealed_p = f.encrypt_raw(&properties, true, &key).expect("encrypted");
        let sealed_t = f.encrypt_raw(&traits, false, &key).expect("encrypted");
        f.encrypt_context(&mut context, &key);
        let event = format!(
            r#"{{"type":"track","properties":{sealed_p},"traits":{sealed_t},"context":{}}}"#,
            Value::Object(context)
        );
        for s in secrets.iter().chain(&["198.51.100.7"]) {
            assert!(!event.contains(s), "{s} in plaintext: {event}");
        }
        for kept in [
            "Blue T-shirt",
            "Leeds",
            "gold",
            "\"sku\":\"a\"",
            "10.5",
            "\"model\":\"x\"",
            "\"plan\":\"pro\"",
        ] {
            assert!(event.contains(kept), "{kept} kept: {event}");
        }
        let (plain, erased) = ring.decrypt_text(tenant, &event).await.expect("decrypt");
        assert_eq!(erased, 0);
        for s in secrets.iter().chain(&["198.51.100.7"]) {
            assert!(plain.contains(s), "{s} decrypts: {plain}");
        }
        let v: Value = serde_json::from_str(&plain).expect("json");
        assert_eq!(v["properties"]["customer"]["Email"], secrets[0]);
        assert_eq!(v["properties"]["items"][1]["buyer_email"], secrets[6]);
        assert_eq!(v["context"]["device"]["advertisingId"], secrets[8]);
        ring.shred(tenant, &["u:1".into()]).await.expect("shred");
        let (gone, erased) = ring.decrypt_text(tenant, &event).await.expect("decrypt");
        assert_eq!(erased, 12, "{gone}");
        for s in secrets.iter().chain(&["198.51.100.7"]) {
            assert!(!gone.contains(s), "{s} after erasure: {gone}");
        }
        // What conditions and masks treat as personal: top-level names, nested or not.
        assert!(
            f.traits.contains(&"tax_id".to_owned()) && f.traits.contains(&"company".to_owned())
        );
        assert!(
            f.properties.contains(&"customer".to_owned())
                && f.properties.contains(&"shipping".to_owned())
        );
        assert!(!f.properties.contains(&"name".to_owned()));
        // Paths that name nothing are refused.
        for bad in ["email", "properties.", "events.email", "properties..email"] {
            assert!(PiiFields::new(&[], &[bad.to_owned()]).is_err(), "{bad}");
        }
        assert!(PiiFields::new(&["a.b".into()], &[]).is_err());
    }

    #[test]
    fn fields_encrypt_only_when_named() {
        let cipher = Aes256Gcm::new_from_slice(&[7u8; 32]).expect("key");
        let key = SubjectKey {
            kid: "k1".into(),
            cipher,
            tenant: TenantId(uuid::Uuid::nil()),
        };
        let f = PiiFields::with_traits(&["Favourite_Colour".into()]);
        assert_eq!(f.encrypt_raw(r#"{"plan":"pro"}"#, false, &key), None);
        let out = f
            .encrypt_raw(
                r#"{"Email":"ann@example.com","plan":"pro","favourite_colour":"red","name":null}"#,
                false,
                &key,
            )
            .expect("encrypted");
        assert!(
            !out.contains("ann@example.com") && !out.contains("red"),
            "{out}"
        );
        assert!(
            out.contains(r#""plan":"pro""#) && out.contains(r#""name":null"#),
            "{out}"
        );
        // Other values keep their exact text.
        let out = f
            .encrypt_raw(
                r#"{"email":"x@y.z","big":123456789012345678901234567890}"#,
                true,
                &key,
            )
            .expect("encrypted");
        assert!(out.contains("123456789012345678901234567890"), "{out}");
        // A product name is not personal.
        assert_eq!(f.encrypt_raw(r#"{"name":"T-shirt"}"#, true, &key), None);
    }
}
