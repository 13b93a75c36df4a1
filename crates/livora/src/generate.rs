//! `livora demo generate`: realistic e-commerce traffic written straight into a tenant's
//! event log (the server must be stopped), and optionally the same events as Parquet.
//!
//! The traffic comes from [`Shop`] with a fixed population: sessions with page views,
//! product views, cart adds, checkouts and orders (with revenue, categories and products),
//! sign-ups, refunds, repeat buyers, and anonymous visitors who identify when they sign up
//! or buy; session times follow the time of day, the day of week and the time of year
//! (December and Black Friday week peak, June dips). Every message goes through the same
//! normalisation as the HTTP API, so what is stored is what an SDK would have produced.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, Utc};
use livora_columnar::Table;
use livora_log::{EventLog, NewRecord};
use livora_model::TenantId;
use livora_model::ingest::{Envelope, normalise, parse_item};
use livora_store::MetadataStore;
use serde_json::json;

use crate::config::Config;
use crate::demo::{Shop, before};

#[derive(clap::Args, Clone, Debug)]
pub struct GenerateArgs {
    /// Events to write (about: whole sessions are kept).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Size of the visitor population.
    #[arg(long, default_value_t = 100_000)]
    pub persons: u64,
    /// Days of history, ending at `--end`.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// End of the generated range (RFC 3339; default: now).
    #[arg(long)]
    pub end: Option<DateTime<Utc>>,
    /// Random seed: the same seed gives the same events.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// The tenant to write into (default: the demo tenant, created if missing).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Also write the events to this Parquet file (the sealed-segment schema).
    #[arg(long)]
    pub parquet: Option<PathBuf>,
    /// Only write the Parquet file, not the log.
    #[arg(long, requires = "parquet")]
    pub no_log: bool,
    /// Write the events straight into the column store's sealed segments (the data
    /// directory's `columns/`, or `[analytics] segments_url`) instead of the log: for
    /// histories larger than the disk holds as a log. Queries see them; profiles and
    /// automation, which follow the log, do not. Sessions are generated in time order, as
    /// a shop receives them, so each day is written once; how many is estimated from a
    /// sample of sessions, so the count of events is close to `--events`, not exact.
    #[arg(long, conflicts_with = "no_log")]
    pub sealed: bool,
    /// With `--sealed`, seal at the first day boundary after this many events: bigger seals
    /// write the persons file less often.
    #[arg(long, default_value_t = 10_000_000, requires = "sealed")]
    pub seal_every: usize,
}

/// Sessions sampled to estimate the events of a session (`--sealed`).
const PILOT_SESSIONS: usize = 20_000;

pub async fn run(config: &Config, args: &GenerateArgs) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    let end = args.end.unwrap_or_else(Utc::now);
    let start = end - chrono::Duration::days(i64::from(args.days.max(1)));
    let tenant = if args.no_log {
        TenantId(uuid::Uuid::nil())
    } else {
        resolve_tenant(config, args.tenant.as_deref()).await?
    };
    let log = if args.no_log {
        None
    } else {
        let opts = config.log_options();
        Some(
            tokio::task::spawn_blocking(move || EventLog::open(opts))
                .await?
                .context(
                    "cannot open the event log (is the server running on this data directory?)",
                )?,
        )
    };
    let first_offset = log.as_ref().map(EventLog::end_offset);
    // The log stays open with `--sealed` too: it holds the data directory's lock.
    let columns = if args.sealed {
        let env: std::collections::HashMap<String, String> = std::env::vars().collect();
        let opts = config.column_options(&env)?;
        Some(
            livora_columnar::ColumnStore::open(opts)
                .await
                .context("cannot open the column store")?,
        )
    } else {
        None
    };
    let mut shop = Shop::with_population(args.seed, args.persons);
    let mut table = args.parquet.as_ref().map(|_| Table::default());
    let (mut events, mut sessions, mut orders, mut revenue) = (0usize, 0u64, 0u64, 0.0f64);
    let mut records = Vec::with_capacity(20_000);
    let mut message = 0u64;
    // With `--sealed`, sessions start in time order and their events reach the column store
    // in time order, so that each seal holds whole days and each day is written once.
    let mut planned = match &columns {
        Some(c) => {
            let sessions = planned_sessions(args, start, end);
            let mut starts: Vec<DateTime<Utc>> = (0..sessions)
                .map(|_| shop.seasonal_start(start, end))
                .collect();
            starts.sort_unstable();
            Some((
                starts.into_iter(),
                InTimeOrder::new(c, tenant, args.seal_every.max(1)),
            ))
        }
        None => None,
    };
    loop {
        let at = match &mut planned {
            Some((starts, _)) => match starts.next() {
                Some(at) => at,
                None => break,
            },
            None if events < args.events => shop.seasonal_start(start, end),
            None => break,
        };
        sessions += 1;
        for m in before(shop.session(at), end) {
            message += 1;
            let mut m = m;
            m["messageId"] = json!(format!("gen-{}-{message}", args.seed));
            let env = Envelope {
                received_at: end,
                client_ip: None,
                future_tolerance: chrono::Duration::days(1),
                sent_at: None,
                context: None,
                integrations: None,
            };
            let event = normalise(parse_item(&m.to_string())?, None, &env)
                .map_err(|e| anyhow::anyhow!("generated an invalid message: {}", e.message))?;
            if event.event.as_deref() == Some("Order Completed") {
                orders += 1;
                revenue += m["properties"]["revenue"].as_f64().unwrap_or(0.0);
            }
            let payload = serde_json::to_vec(&event)?;
            if let Some(t) = table.as_mut() {
                t.push_json(&payload)?;
            }
            if let Some((_, ordered)) = &mut planned {
                ordered.push(event.timestamp.timestamp_micros(), payload);
            } else if log.is_some() {
                records.push(NewRecord {
                    tenant: tenant.0,
                    id: event.message_id.clone(),
                    payload,
                });
            }
            events += 1;
        }
        if records.len() >= 10_000
            && let Some(log) = &log
        {
            log.append(std::mem::take(&mut records)).await?;
        }
        if let Some((_, ordered)) = &mut planned {
            // Later sessions start at `at` or after: every event before it is final.
            ordered.release(at.timestamp_micros()).await?;
        }
    }
    if let Some((_, ordered)) = &mut planned {
        ordered.release(i64::MAX).await?;
        ordered.seal().await?;
        if let Some(c) = &columns {
            while c.compact(config.analytics.compact_files.max(2)).await? > 0 {}
        }
    }
    if let Some(log) = &log {
        if !records.is_empty() {
            log.append(std::mem::take(&mut records)).await?;
        }
        let log = log.clone();
        tokio::task::spawn_blocking(move || log.close()).await?;
    }
    let mut parquet_bytes = None;
    if let (Some(path), Some(t)) = (&args.parquet, &table) {
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let file = livora_columnar::export_parquet(t, std::io::BufWriter::new(file))?;
        let file = file.into_inner().context("flushing the Parquet file")?;
        file.sync_all()?;
        parquet_bytes = Some(std::fs::metadata(path)?.len());
    }
    Ok(json!({
        "tenant": tenant.0.to_string(),
        "events": events,
        "sessions": sessions,
        "persons": args.persons,
        "orders": orders,
        "revenue": (revenue * 100.0).round() / 100.0,
        "from": start.to_rfc3339(),
        "to": end.to_rfc3339(),
        "log_offsets": first_offset
            .filter(|_| !args.sealed)
            .map(|f| json!([f, f + events as u64])),
        "sealed": args.sealed,
        "parquet": args.parquet.as_ref().map(|p| p.display().to_string()),
        "parquet_bytes": parquet_bytes,
        "seconds": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    }))
}

/// How many sessions make about `args.events` events: the mean of a sample of sessions from
/// another shop of the same population (same range, another seed).
fn planned_sessions(args: &GenerateArgs, start: DateTime<Utc>, end: DateTime<Utc>) -> usize {
    let mut pilot = Shop::with_population(args.seed.wrapping_add(0x9e37_79b9), args.persons);
    let events: usize = (0..PILOT_SESSIONS)
        .map(|_| {
            let at = pilot.seasonal_start(start, end);
            before(pilot.session(at), end).count()
        })
        .sum();
    let per_session = (events.max(1) as f64) / PILOT_SESSIONS as f64;
    ((args.events as f64 / per_session).round() as usize).max(1)
}

/// Events on their way to the column store in time order (`--sealed`): held until every
/// event before them is known, imported in batches, and sealed at day boundaries.
struct InTimeOrder<'a> {
    columns: &'a livora_columnar::ColumnStore,
    tenant: TenantId,
    /// Held events by (time µs, arrival).
    held: BinaryHeap<Reverse<(i64, u64, Vec<u8>)>>,
    arrivals: u64,
    batch: Vec<Vec<u8>>,
    /// The UTC day (days since the epoch) of the last event released.
    day: i64,
    /// Events imported since the last seal.
    unsealed: usize,
    seal_every: usize,
}

impl<'a> InTimeOrder<'a> {
    fn new(columns: &'a livora_columnar::ColumnStore, tenant: TenantId, seal_every: usize) -> Self {
        Self {
            columns,
            tenant,
            held: BinaryHeap::new(),
            arrivals: 0,
            batch: Vec::with_capacity(10_000),
            day: i64::MIN,
            unsealed: 0,
            seal_every,
        }
    }

    fn push(&mut self, ts_us: i64, payload: Vec<u8>) {
        self.arrivals += 1;
        self.held.push(Reverse((ts_us, self.arrivals, payload)));
    }

    /// Passes on every held event older than `before_us`, oldest first, sealing at the
    /// first day boundary after `seal_every` events.
    async fn release(&mut self, before_us: i64) -> anyhow::Result<()> {
        const DAY: i64 = 86_400_000_000;
        while self.held.peek().is_some_and(|Reverse(e)| e.0 < before_us) {
            let Some(Reverse((ts, _, payload))) = self.held.pop() else {
                break;
            };
            let day = ts.div_euclid(DAY);
            if day != self.day {
                if self.unsealed >= self.seal_every {
                    self.seal().await?;
                }
                self.day = day;
            }
            self.batch.push(payload);
            self.unsealed += 1;
            if self.batch.len() >= 10_000 {
                self.import()?;
            }
        }
        Ok(())
    }

    fn import(&mut self) -> anyhow::Result<()> {
        self.columns
            .import(self.tenant, &std::mem::take(&mut self.batch))?;
        Ok(())
    }

    async fn seal(&mut self) -> anyhow::Result<()> {
        self.import()?;
        self.columns.seal(None).await?;
        self.unsealed = 0;
        Ok(())
    }
}

async fn resolve_tenant(config: &Config, tenant: Option<&str>) -> anyhow::Result<TenantId> {
    let store = crate::open_store(config).await?;
    let store: &dyn MetadataStore = store.as_ref();
    match tenant {
        Some(id) => {
            let id = TenantId::parse(id).with_context(|| format!("{id:?} is not a tenant id"))?;
            store
                .tenant(id)
                .await?
                .with_context(|| format!("no tenant {id}"))?;
            Ok(id)
        }
        None => Ok(crate::demo::demo_tenant(store).await?.0.id),
    }
}
