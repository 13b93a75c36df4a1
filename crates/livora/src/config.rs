//! Configuration: `livora.toml`, then `LIVORA__SECTION__KEY` environment variables, then flags.
//!
//! The loader takes the environment as a map so tests are hermetic. Every section refuses
//! unknown keys, so a typo is an error instead of a silently ignored setting.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use livora_log::LogOptions;
use livora_server::{AuthOptions, AutomationOptions, IngestOptions, LimitOptions};
use livora_store::crypto::{self, Kms, LocalKms, PiiFields};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the log, the metadata database and (later) column segments live.
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub ingest: IngestOptions,
    pub limits: LimitOptions,
    pub auth: AuthOptions,
    pub privacy: PrivacyConfig,
    pub log: LogConfig,
    pub analytics: AnalyticsConfig,
    pub automation: AutomationOptions,
    pub intel: IntelConfig,
}

/// When models are trained (`[intel]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntelConfig {
    /// Hours between trainings of every tenant's models; 0: only on demand
    /// (`POST /api/v1/models/train`).
    pub retrain_hours: u64,
    /// Seconds from the start to the first training.
    pub first_after_secs: u64,
    /// Days of events a training reads, up to today (60 to 3650).
    pub window_days: u32,
    /// Days ahead a training predicts purchases and holds out to judge lifetime value
    /// (7 to 365, at most half of `window_days`).
    pub horizon_days: u32,
}

impl Default for IntelConfig {
    fn default() -> Self {
        Self {
            retrain_hours: 24,
            first_after_secs: 120,
            window_days: 730,
            horizon_days: 90,
        }
    }
}

impl IntelConfig {
    /// The schedule and default options of trainings; out-of-range days are refused.
    pub fn schedule(&self) -> anyhow::Result<livora_server::intel::Schedule> {
        let options = livora_intel::train::Options::new(self.window_days, self.horizon_days)
            .map_err(|e| anyhow::anyhow!("[intel] {e}"))?;
        Ok(livora_server::intel::Schedule {
            every: (self.retrain_hours > 0)
                .then(|| std::time::Duration::from_secs(self.retrain_hours * 3600)),
            first_after: std::time::Duration::from_secs(self.first_after_secs),
            options,
        })
    }
}

/// Encryption at rest of personal data (`[privacy]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Encrypt personal fields (email, phone, name, address, IP, nested ones such as
    /// `properties.customer.email`, `pii_traits`, `pii_paths`) before they are written
    /// anywhere.
    pub encryption: bool,
    /// A file holding the 32-byte master key (base64 or hex). `LIVORA_MASTER_KEY` wins over
    /// it. With neither, `<data_dir>/master.key` is created: crypto-shredding works, but a
    /// leaked data directory then holds its own key; keep the master key elsewhere.
    pub master_key_file: Option<PathBuf>,
    /// Files of previous master keys, still accepted for unwrapping during a rotation
    /// (`LIVORA_MASTER_KEY_PREVIOUS`, comma-separated keys, adds to them).
    pub previous_master_key_files: Vec<PathBuf>,
    /// Trait names that hold personal data, besides the built-in ones (`traits.<name>` and
    /// `context.traits.<name>`).
    pub pii_traits: Vec<String>,
    /// Dot paths from an event's root that hold personal data, besides the built-in ones:
    /// `properties.customer.tax_id`, `context.traits.passport`, `traits.company.ceo`. A path
    /// under `traits` also covers `context.traits`; arrays on the way are entered (each
    /// element); names compare case-insensitively; what a path names is encrypted whole.
    pub pii_paths: Vec<String>,
    /// Where the master key lives: `local` (the settings above), `aws` (AWS KMS), `gcp`
    /// (Google Cloud KMS) or `azure` (Azure Key Vault / Managed HSM). A cloud KMS needs a
    /// binary built with `--features aws-kms`, `gcp-kms` or `azure-kms`.
    pub kms: String,
    /// The AWS KMS key (id, ARN or alias) with `kms = "aws"`; credentials and region come
    /// from the usual AWS environment.
    pub aws_kms_key_id: Option<String>,
    /// Another KMS-compatible endpoint (a VPC endpoint, LocalStack…).
    pub aws_kms_endpoint: Option<String>,
    /// The Cloud KMS key with `kms = "gcp"`:
    /// `projects/P/locations/L/keyRings/R/cryptoKeys/K`.
    pub gcp_kms_key: Option<String>,
    /// Another Cloud KMS endpoint (Private Service Connect…).
    pub gcp_kms_endpoint: Option<String>,
    /// A service-account or authorized-user key file; without it, Application Default
    /// Credentials (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's file, the metadata server).
    pub gcp_credentials_file: Option<PathBuf>,
    /// The vault with `kms = "azure"`: `https://<name>.vault.azure.net` or
    /// `https://<name>.managedhsm.azure.net`; credentials come from `AZURE_*` variables or a
    /// managed identity.
    pub azure_key_vault_url: Option<String>,
    /// The RSA key in that vault that wraps tenant keys.
    pub azure_key_name: Option<String>,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self {
            encryption: true,
            master_key_file: None,
            previous_master_key_files: Vec::new(),
            pii_traits: Vec::new(),
            pii_paths: Vec::new(),
            kms: "local".into(),
            aws_kms_key_id: None,
            aws_kms_endpoint: None,
            gcp_kms_key: None,
            gcp_kms_endpoint: None,
            gcp_credentials_file: None,
            azure_key_vault_url: None,
            azure_key_name: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsConfig {
    /// Keep the column store and serve `/api/v1/query`. Turn off on ingest-only nodes.
    pub enabled: bool,
    /// Keep customer profiles and real-time segments (with `enabled`).
    pub profiles: bool,
    /// Seconds between snapshots of the profiles (in `<data_dir>/profiles`): a restart
    /// reads the newest one and the log after it; the log keeps what the newest one does
    /// not hold. 0: no snapshots (every start reads the whole log again).
    pub profiles_snapshot_secs: u64,
    /// Where sealed column segments go: `s3://bucket/prefix`, `gs://…`, `az://…`,
    /// `file:///path`. Default: `<data_dir>/columns`.
    pub segments_url: Option<String>,
    /// object_store settings for `segments_url` (`aws_endpoint`, `aws_region`,
    /// `aws_allow_http`…). `AWS_*`, `GOOGLE_*` and `AZURE_*` environment variables are read
    /// too; these win.
    pub segments_options: BTreeMap<String, String>,
    /// Seal the hot part when it holds this many events.
    pub seal_rows: usize,
    /// …or when its oldest event has waited this long.
    pub seal_interval_secs: u64,
    /// Merge a tenant's UTC day into one file once it has this many (at least 2).
    pub compact_files: usize,
    /// Columns larger than this (KiB) move from the heap to memory-mapped files in
    /// `<data_dir>/columns-cache`, whose pages the kernel can reclaim; after each seal the
    /// sealed rows' columns are kept there as the tables' image, which a restart maps instead
    /// of decoding the segments. 0: every column stays on the heap (and no image).
    pub spill_min_kb: u64,
    /// Keep the process's resident size under this (MiB) by dropping the pages of spilled
    /// columns (queries read them back from the page cache or the disk). 0: no limit.
    pub memory_limit_mb: u64,
    /// Memory (MiB) the decoded profiles of all tenants may take: past it, the least
    /// recently used go cold (compact encodings in `<data_dir>/profiles-scratch`, read back
    /// when needed). 0: every profile stays decoded.
    pub profiles_memory_limit_mb: u64,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            profiles: true,
            profiles_snapshot_secs: 300,
            segments_url: None,
            segments_options: BTreeMap::new(),
            seal_rows: 1_000_000,
            seal_interval_secs: 300,
            compact_files: 8,
            spill_min_kb: 1024,
            memory_limit_mb: 0,
            profiles_memory_limit_mb: 0,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./livora-data"),
            server: ServerConfig::default(),
            ingest: IngestOptions::default(),
            limits: LimitOptions::default(),
            auth: AuthOptions::default(),
            privacy: PrivacyConfig::default(),
            log: LogConfig::default(),
            analytics: AnalyticsConfig::default(),
            automation: AutomationOptions::default(),
            intel: IntelConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// `json` (default) or `text`.
    pub log_format: String,
    /// Serve HTTPS with this PEM certificate chain (and `tls_key`); plain HTTP without.
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            log_format: "json".into(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub segment_mb: u64,
    pub retention_hours: u64,
    pub dedupe_window_secs: u64,
    /// Heap for the dedupe window's ids; older ids go to memory-mapped run files.
    pub dedupe_memory_mb: u64,
    /// Never turn off in production: an acknowledged event could be lost in a power cut.
    pub fsync: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_mb: 64,
            retention_hours: 7 * 24,
            dedupe_window_secs: 86_400,
            dedupe_memory_mb: 64,
            fsync: true,
        }
    }
}

impl Config {
    /// Loads `file` (or `./livora.toml` if it exists), then applies `LIVORA__…` variables.
    pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> anyhow::Result<Self> {
        let mut table = match file {
            Some(path) => read_table(path)?,
            None if Path::new("livora.toml").exists() => read_table(Path::new("livora.toml"))?,
            None => toml::Table::new(),
        };
        let mut vars: Vec<_> = env
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("LIVORA__")?, v)))
            .collect();
        vars.sort();
        let mut from_env = Vec::new();
        for (key, value) in vars {
            let path: Vec<String> = key.split("__").map(str::to_ascii_lowercase).collect();
            set(&mut table, &path, scalar(value))
                .with_context(|| format!("environment variable LIVORA__{key}"))?;
            from_env.push((path, value.as_str()));
        }
        // A list from the environment is a TOML/JSON array (`["a","b"]`, see `scalar`) or
        // comma-separated (`a,b`): a variable whose text lands where a list is expected is
        // split at commas and the configuration read again.
        loop {
            let value = toml::Value::Table(table.clone());
            let error = match serde_path_to_error::deserialize::<_, Self>(value) {
                Ok(config) => return Ok(config),
                Err(e) => e,
            };
            let at = error.path().to_string();
            let wants_list = error.inner().to_string().contains("expected a sequence");
            match from_env.iter().position(|(p, _)| p.join(".") == at) {
                Some(i) if wants_list => {
                    let (path, text) = from_env.swap_remove(i);
                    let items = text
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.to_owned()))
                        .collect();
                    set(&mut table, &path, toml::Value::Array(items))?;
                }
                _ => {
                    return Err(anyhow::Error::new(error.into_inner())
                        .context(format!("invalid configuration at {at}")));
                }
            }
        }
    }

    /// The column store's options; `env` supplies `AWS_*` / `GOOGLE_*` / `AZURE_*` settings
    /// for object storage.
    pub fn column_options(
        &self,
        env: &HashMap<String, String>,
    ) -> anyhow::Result<livora_columnar::ColumnOptions> {
        let a = &self.analytics;
        let segments = match &a.segments_url {
            None => livora_columnar::SegmentStore::local(&self.data_dir.join("columns"))
                .context("cannot create the column segment directory")?,
            Some(url) => {
                let mut options: BTreeMap<String, String> = env
                    .iter()
                    .filter(|(k, _)| {
                        ["AWS_", "GOOGLE_", "AZURE_"]
                            .iter()
                            .any(|p| k.starts_with(p))
                    })
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                    .collect();
                options.extend(a.segments_options.clone());
                livora_columnar::SegmentStore::from_url(url, options)
                    .context("invalid [analytics] segments_url")?
            }
        };
        Ok(livora_columnar::ColumnOptions {
            segments: Some(segments),
            seal_rows: a.seal_rows.max(1),
            seal_interval: Duration::from_secs(a.seal_interval_secs.max(1)),
            compact_files: a.compact_files.max(2),
            spill: match a.spill_min_kb {
                0 => None,
                kb => Some(
                    livora_columnar::Spill::named(
                        self.data_dir.join("columns-cache"),
                        usize::try_from(kb.saturating_mul(1 << 10)).unwrap_or(usize::MAX),
                    )
                    .context("cannot open <data_dir>/columns-cache")?,
                ),
            },
            memory_limit: (a.memory_limit_mb > 0)
                .then_some(a.memory_limit_mb.saturating_mul(1 << 20)),
        })
    }

    pub fn log_options(&self) -> LogOptions {
        let mut o = LogOptions::new(self.data_dir.join("log"));
        o.segment_bytes = self.log.segment_mb.max(1) << 20;
        o.retention = Duration::from_secs(self.log.retention_hours * 3600);
        o.dedupe_window = Duration::from_secs(self.log.dedupe_window_secs);
        o.dedupe_memory_bytes =
            usize::try_from(self.log.dedupe_memory_mb.max(1) << 20).unwrap_or(usize::MAX);
        o.fsync = self.log.fsync;
        o
    }

    /// How profiles are kept; `None` when they are off (or analytics are).
    pub fn profiles_options(&self) -> anyhow::Result<Option<livora_profiles::snapshot::Options>> {
        if !(self.analytics.enabled && self.analytics.profiles) {
            return Ok(None);
        }
        let budget = match self.analytics.profiles_memory_limit_mb {
            0 => None,
            mb => Some(
                livora_profiles::people::Budget::new(
                    usize::try_from(mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX),
                    self.data_dir.join("profiles-scratch"),
                )
                .context("cannot create <data_dir>/profiles-scratch")?,
            ),
        };
        Ok(Some(livora_profiles::snapshot::Options {
            budget,
            snapshots: (self.analytics.profiles_snapshot_secs > 0).then(|| {
                livora_profiles::snapshot::Snapshots {
                    dir: self.data_dir.join("profiles"),
                    every: std::time::Duration::from_secs(self.analytics.profiles_snapshot_secs),
                }
            }),
        }))
    }

    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("livora.db")
    }

    pub fn audit_path(&self) -> PathBuf {
        self.data_dir.join("audit.jsonl")
    }

    /// The HS256 secret of staff access tokens: `LIVORA_JWT_SECRET` (at least 32 bytes; the
    /// same on every node), else `<data_dir>/jwt.secret`, created with 256 random bits and
    /// mode 0600 on first use.
    pub fn jwt_secret(&self, env: &HashMap<String, String>) -> anyhow::Result<Vec<u8>> {
        if let Some(s) = env.get("LIVORA_JWT_SECRET") {
            if s.len() < 32 {
                anyhow::bail!("LIVORA_JWT_SECRET must have at least 32 bytes");
            }
            return Ok(s.as_bytes().to_vec());
        }
        let text = secret_file(&self.data_dir.join("jwt.secret"), || {
            let mut bytes = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        })?;
        if text.len() < 32 {
            bail!("the JWT secret file holds fewer than 32 bytes");
        }
        Ok(text.into_bytes())
    }
    /// Whether the master key is the local one kept in `<data_dir>/master.key` and that file
    /// does not exist yet (the server's [`Config::encryption`] makes it; the CLI never does).
    pub fn local_master_key_missing(&self, env: &HashMap<String, String>) -> bool {
        self.privacy.kms == "local"
            && !env.contains_key("LIVORA_MASTER_KEY")
            && self.privacy.master_key_file.is_none()
            && !self.data_dir.join("master.key").exists()
    }

    /// The master key service and personal fields, or `None` with encryption off.
    pub async fn encryption(
        &self,
        env: &HashMap<String, String>,
    ) -> anyhow::Result<Option<(Arc<dyn Kms>, PiiFields)>> {
        // Checked with encryption off too: a wrong path is an error, not a silent gap.
        let fields = PiiFields::new(&self.privacy.pii_traits, &self.privacy.pii_paths)?;
        if !self.privacy.encryption {
            return Ok(None);
        }
        match self.privacy.kms.as_str() {
            "local" => {}
            "aws" | "gcp" | "azure" => return Ok(Some((self.cloud_kms().await?, fields))),
            other => bail!("privacy.kms = {other:?}: use local, aws, gcp or azure"),
        }
        let decode = |text: &str, what: &str| {
            crypto::decode_key(text).with_context(|| format!("{what}: not a 32-byte key"))
        };
        let current = match (env.get("LIVORA_MASTER_KEY"), &self.privacy.master_key_file) {
            (Some(k), _) => decode(k, "LIVORA_MASTER_KEY")?,
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                decode(&text, &path.display().to_string())?
            }
            (None, None) => {
                let path = self.data_dir.join("master.key");
                let text = secret_file(&path, crypto::generate_key_text)?;
                decode(&text, &path.display().to_string())?
            }
        };
        let mut previous = Vec::new();
        for path in &self.privacy.previous_master_key_files {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            previous.push(decode(&text, &path.display().to_string())?);
        }
        if let Some(list) = env.get("LIVORA_MASTER_KEY_PREVIOUS") {
            for k in list.split(',').filter(|k| !k.trim().is_empty()) {
                previous.push(decode(k, "LIVORA_MASTER_KEY_PREVIOUS")?);
            }
        }
        let kms = LocalKms::new(&current, &previous).map_err(anyhow::Error::msg)?;
        Ok(Some((Arc::new(kms), fields)))
    }

    /// The cloud KMS that `privacy.kms` names.
    #[allow(unreachable_patterns)] // the arms after the first three, with every feature on
    async fn cloud_kms(&self) -> anyhow::Result<Arc<dyn Kms>> {
        let p = &self.privacy;
        #[cfg(any(feature = "aws-kms", feature = "gcp-kms", feature = "azure-kms"))]
        let need = |v: &Option<String>, field: &str| {
            v.as_deref()
                .with_context(|| format!("privacy.kms = {:?} needs privacy.{field}", p.kms))
                .map(str::to_owned)
        };
        match p.kms.as_str() {
            #[cfg(feature = "aws-kms")]
            "aws" => {
                let key = need(&p.aws_kms_key_id, "aws_kms_key_id")?;
                let kms =
                    livora_store::kms_aws::AwsKms::new(&key, p.aws_kms_endpoint.as_deref()).await;
                Ok(Arc::new(kms))
            }
            #[cfg(feature = "gcp-kms")]
            "gcp" => {
                use livora_store::kms_gcp::{GcpCredentials, GcpKms};
                let key = need(&p.gcp_kms_key, "gcp_kms_key")?;
                let credentials = match &p.gcp_credentials_file {
                    Some(path) => GcpCredentials::from_file(path)?,
                    None => GcpCredentials::from_env()?,
                };
                Ok(Arc::new(GcpKms::new(
                    &key,
                    p.gcp_kms_endpoint.as_deref(),
                    credentials,
                )?))
            }
            #[cfg(feature = "azure-kms")]
            "azure" => {
                use livora_store::kms_azure::{AzureCredentials, AzureKms};
                let vault = need(&p.azure_key_vault_url, "azure_key_vault_url")?;
                let name = need(&p.azure_key_name, "azure_key_name")?;
                Ok(Arc::new(AzureKms::new(
                    &vault,
                    &name,
                    AzureCredentials::from_env()?,
                )?))
            }
            other => bail!(
                "privacy.kms = {other:?}: this binary was built without it; build it with `cargo build --release -p livora --features {other}-kms`"
            ),
        }
    }
}

/// The trimmed text of a secret file, created by `generate` with mode 0600 if missing.
fn secret_file(path: &Path, generate: impl FnOnce() -> String) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => return Ok(text.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = generate();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    std::io::Write::write_all(&mut f, text.as_bytes())?;
    f.sync_all()?;
    Ok(text)
}

fn read_table(path: &Path) -> anyhow::Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid TOML in {}", path.display()))
}

/// An environment value as TOML: numbers, booleans and arrays (`["a", "b"]`, TOML or JSON)
/// typed, anything else a string.
fn scalar(text: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {text}")) {
        Ok(mut t) => match t.remove("v") {
            Some(
                v @ (toml::Value::Integer(_)
                | toml::Value::Float(_)
                | toml::Value::Boolean(_)
                | toml::Value::Array(_)),
            ) => v,
            _ => toml::Value::String(text.to_owned()),
        },
        Err(_) => toml::Value::String(text.to_owned()),
    }
}

fn set(table: &mut toml::Table, path: &[String], value: toml::Value) -> anyhow::Result<()> {
    match path {
        [] => bail!("empty key"),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => {
            let entry = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => set(t, rest, value),
                _ => bail!("{first} is not a section"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn huge_spill_and_memory_limits_saturate_instead_of_overflowing() {
        let dir = tempfile::tempdir().expect("tmp");
        let max = i64::MAX.to_string();
        let c = Config::load(
            None,
            &env(&[
                ("LIVORA__DATA_DIR", dir.path().to_str().expect("utf-8")),
                ("LIVORA__ANALYTICS__SPILL_MIN_KB", &max),
                ("LIVORA__ANALYTICS__MEMORY_LIMIT_MB", &max),
                ("LIVORA__ANALYTICS__PROFILES_MEMORY_LIMIT_MB", &max),
            ]),
        )
        .expect("loads");
        let o = c.column_options(&env(&[])).expect("options");
        assert_eq!(o.memory_limit, Some(u64::MAX));
        assert_eq!(o.spill.expect("spill").min_bytes, usize::MAX);
        let p = c.profiles_options().expect("options").expect("profiles on");
        assert_eq!(p.budget.expect("a budget").limit(), usize::MAX);
        let off = Config::load(
            None,
            &env(&[
                ("LIVORA__DATA_DIR", dir.path().to_str().expect("utf-8")),
                ("LIVORA__ANALYTICS__SPILL_MIN_KB", "0"),
            ]),
        )
        .expect("loads");
        let o = off.column_options(&env(&[])).expect("options");
        assert!(o.spill.is_none() && o.memory_limit.is_none());
        let p = off
            .profiles_options()
            .expect("options")
            .expect("profiles on");
        assert!(p.budget.is_none(), "no profiles budget unless asked for");
    }

    #[test]
    fn intel_window_and_horizon_are_settings_in_days() {
        let c = Config::load(
            None,
            &env(&[
                ("LIVORA__INTEL__WINDOW_DAYS", "365"),
                ("LIVORA__INTEL__HORIZON_DAYS", "30"),
            ]),
        )
        .expect("loads");
        let s = c.intel.schedule().expect("valid");
        assert_eq!((s.options.window_days, s.options.horizon_days), (365, 30));
        let d = Config::load(None, &env(&[])).expect("loads");
        let s = d.intel.schedule().expect("valid");
        assert_eq!((s.options.window_days, s.options.horizon_days), (730, 90));
        let bad =
            Config::load(None, &env(&[("LIVORA__INTEL__HORIZON_DAYS", "400")])).expect("loads");
        let e = bad.intel.schedule().expect_err("refused").to_string();
        assert!(e.contains("horizon_days 400"), "{e}");
    }

    #[tokio::test]
    async fn pii_paths_name_nested_fields_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("livora.toml");
        std::fs::write(
            &file,
            "[privacy]\npii_paths = [\"properties.shipping.recipient\", \"context.device.advertisingId\"]\n",
        )
        .expect("write");
        let mut c = Config::load(Some(&file), &env(&[])).expect("config");
        c.data_dir = dir.path().to_owned();
        let key = "ab".repeat(32);
        let env_key = env(&[("LIVORA_MASTER_KEY", key.as_str())]);
        let (_, fields) = c.encryption(&env_key).await.expect("ok").expect("on");
        assert!(fields.properties.contains(&"shipping".to_owned()));
        assert!(
            fields.properties.contains(&"customer".to_owned()),
            "built in"
        );
        c.privacy.pii_paths = vec!["shipping.recipient".into()];
        c.privacy.encryption = false;
        let e = c
            .encryption(&env_key)
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("shipping.recipient"), "{e}");
    }

    #[test]
    fn file_then_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("livora.toml");
        std::fs::write(
            &file,
            "data_dir = \"/srv/livora\"\n[server]\nlisten = \"127.0.0.1:9000\"\n[ingest]\nmax_batch_events = 10\n",
        )
        .expect("write");
        let c = Config::load(
            Some(&file),
            &env(&[
                ("LIVORA__INGEST__MAX_BATCH_EVENTS", "20"),
                ("LIVORA__LOG__FSYNC", "false"),
                ("OTHER", "x"),
            ]),
        )
        .expect("config");
        assert_eq!(c.data_dir, PathBuf::from("/srv/livora"));
        assert_eq!(c.server.listen.port(), 9000);
        assert_eq!(c.ingest.max_batch_events, 20);
        assert!(!c.log.fsync);
        assert_eq!(c.ingest.max_event_bytes, 32 * 1024, "defaults kept");
    }

    #[test]
    fn lists_come_from_the_environment_as_arrays_or_comma_separated() {
        let c = Config::load(
            None,
            &env(&[
                (
                    "LIVORA__LIMITS__API_CORS_ORIGINS",
                    r#"["https://a.example", "https://b.example"]"#,
                ),
                ("LIVORA__PRIVACY__PII_TRAITS", "tax_id, passport ,"),
                (
                    "LIVORA__PRIVACY__PII_PATHS",
                    r#"["properties.customer.tax_id"]"#,
                ),
                (
                    "LIVORA__PRIVACY__PREVIOUS_MASTER_KEY_FILES",
                    "/k/one,/k/two",
                ),
                ("LIVORA__INGEST__MAX_BATCH_EVENTS", "20"),
            ]),
        )
        .expect("config");
        assert_eq!(
            c.limits.api_cors_origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(c.privacy.pii_traits, ["tax_id", "passport"]);
        assert_eq!(c.privacy.pii_paths, ["properties.customer.tax_id"]);
        assert_eq!(
            c.privacy.previous_master_key_files,
            [PathBuf::from("/k/one"), PathBuf::from("/k/two")]
        );
        assert_eq!(c.ingest.max_batch_events, 20);
        // One item, and an empty list.
        let c = Config::load(
            None,
            &env(&[
                ("LIVORA__LIMITS__API_CORS_ORIGINS", "https://a.example"),
                ("LIVORA__PRIVACY__PII_TRAITS", "[]"),
            ]),
        )
        .expect("config");
        assert_eq!(c.limits.api_cors_origins, ["https://a.example"]);
        assert!(c.privacy.pii_traits.is_empty());
        // A list where one value is expected is still an error, naming the setting.
        let e = Config::load(None, &env(&[("LIVORA__SERVER__LISTEN", "[1, 2]")]))
            .expect_err("not a list");
        assert!(format!("{e:#}").contains("server.listen"), "{e:#}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let e = Config::load(None, &env(&[("LIVORA__INGEST__MAX_BATCH_EVENT", "2")]));
        assert!(e.is_err());
        let e = Config::load(None, &env(&[("LIVORA__SERVER__LISTEN", "nowhere")]));
        assert!(e.is_err());
    }
}
