//! `livora bench analytics`: generated shop traffic in a column-store table; a 4-step funnel
//! (view -> add -> checkout -> order, 7 days), a weekly retention matrix (8 weeks) and daily
//! revenue by category (90 days), each timed over several runs, on the sealed layout (rows
//! ordered by day, person and time, as after a seal); the same events written as Parquet
//! (with merged person ids) for other engines. It also reports the column store's memory and
//! the bytes on disk per event (sealed Parquet segments, and the log). `bench/analytics.sh` runs this and the same queries in DuckDB and chDB, and
//! compares the answers.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, Utc};
use livora_analytics::funnel::{FunnelQuery, Order, Source, Step, funnel};
use livora_analytics::period::Period;
use livora_analytics::retention::{Cohort, RetentionQuery, retention};
use livora_analytics::trends::{Breakdown, Metric, TrendsQuery, trends};
use livora_columnar::Table;
use livora_model::ingest::{Envelope, normalise, parse_item};
use serde_json::json;

use crate::demo::Shop;

#[derive(clap::Args, Clone)]
pub struct AnalyticsBench {
    /// Events to generate (about).
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Timed runs; the median is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Size of the visitor population (default: a tenth of the events).
    #[arg(long)]
    persons: Option<u64>,
    /// Write the events as Parquet (person: merged id, ts: µs, event, category, revenue).
    #[arg(long)]
    parquet: Option<PathBuf>,
    /// Columns past this many KiB live in memory-mapped spill files (in a temporary
    /// directory), as `[analytics] spill_min_kb` does in the server; 0: all on the heap.
    #[arg(long, default_value_t = 1024)]
    spill_min_kb: usize,
    /// Drop the spilled columns' pages before every timed run (as `memory_limit_mb` does
    /// when the process is over it): queries fault them back from the page cache.
    #[arg(long)]
    evict: bool,
    /// Keep the sealed table in DIR as the server keeps it (its column image, and the
    /// persons), for a later `--cold DIR`.
    #[arg(long, value_name = "DIR", conflicts_with = "cold")]
    image: Option<PathBuf>,
    /// Instead of generating: map the image an earlier `--image DIR` kept, as a restarted
    /// server does, and run each query once (after the page cache is dropped, the cold
    /// figures: `bench/analytics.sh` drops it first).
    #[arg(long, value_name = "DIR")]
    cold: Option<PathBuf>,
}

/// The tenant and the segment name the bench's image is kept under.
const IMAGE_TENANT: uuid::Uuid = uuid::Uuid::from_u128(0xbe4c);
const IMAGE_SOURCE: &str = "bench-analytics";

/// The end of the generated history, and its length in days.
const END: &str = "2026-01-01T00:00:00Z";
const DAYS: i64 = 90;

fn end() -> anyhow::Result<DateTime<Utc>> {
    END.parse().context("end time")
}

/// The three timed queries over the generated history that ends at `end`.
fn queries(end: DateTime<Utc>) -> anyhow::Result<(FunnelQuery, RetentionQuery, TrendsQuery)> {
    let funnel = FunnelQuery {
        exclusions: Vec::new(),
        steps: STEPS
            .iter()
            .map(|e| Step {
                event: (*e).into(),
                filters: vec![],
            })
            .collect(),
        window_seconds: WINDOW_SECONDS,
        order: Order::Ordered,
        from: end - chrono::Duration::days(DAYS + 1),
        to: end + chrono::Duration::days(1),
        persons: None,
        breakdown: None,
    };
    // Weekly retention, 8 weeks from the first Monday 8 weeks before the end: cohorts by
    // first product view, returning with an order.
    let first_monday: DateTime<Utc> = "2025-11-03T00:00:00Z".parse().context("monday")?;
    let retention = RetentionQuery {
        start_event: Step {
            event: STEPS[0].into(),
            filters: vec![],
        },
        return_event: Step {
            event: STEPS[3].into(),
            filters: vec![],
        },
        period: Period::Week,
        periods: 8,
        from: first_monday,
        cohort: Cohort::First,
    };
    // Daily revenue by category over the last 90 days.
    let trends = TrendsQuery {
        event: Step {
            event: STEPS[3].into(),
            filters: vec![],
        },
        metric: Metric::Sum {
            property: "revenue".into(),
        },
        interval: Period::Day,
        from: end - chrono::Duration::days(DAYS),
        to: end,
        breakdown: Some(Breakdown {
            source: Source::Event,
            property: "category".into(),
            limit: 100,
        }),
        compare_previous: false,
    };
    Ok((funnel, retention, trends))
}

/// Persons reaching each step.
fn funnel_counts(t: &Table, q: &FunnelQuery) -> anyhow::Result<Vec<u64>> {
    let r = funnel(t, &t.persons.redirects(), q)?;
    Ok(r.steps.iter().map(|s| s.count).collect())
}

/// Each cohort's counts by period.
fn retention_matrix(t: &Table, q: &RetentionQuery) -> anyhow::Result<Vec<Vec<u64>>> {
    let r = retention(t, &t.persons.redirects(), q, chrono_tz::UTC)?;
    Ok(r.cohorts.iter().map(|c| c.counts.clone()).collect())
}

/// Each category's daily values.
fn trend_series(
    t: &Table,
    q: &TrendsQuery,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let r = trends(t, &t.persons.redirects(), q, chrono_tz::UTC)?;
    Ok(r.series
        .iter()
        .map(|s| {
            let values: Vec<f64> = s.values.iter().map(|v| v.unwrap_or(0.0)).collect();
            (s.breakdown.clone().unwrap_or_default(), json!(values))
        })
        .collect())
}

/// Empties `--image DIR` of what an earlier `--image` left there (an image left there is of
/// another run); a directory holding anything else is refused, not emptied.
fn clear_image_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    let ours = |name: &str| {
        name == "rows"
            || name == "persons.parquet"
            || [".col", ".dict", ".image.json", ".image.json.tmp"]
                .iter()
                .any(|ext| name.ends_with(ext))
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        anyhow::ensure!(
            entry.file_type()?.is_file() && ours(&name),
            "--image {}: the directory holds {name}, which is not from an earlier --image; \
             give an empty or new directory",
            dir.display()
        );
        files.push(entry.path());
    }
    for f in files {
        std::fs::remove_file(&f).with_context(|| format!("remove {}", f.display()))?;
    }
    Ok(())
}

/// `--cold DIR`: maps the kept image and runs each query once, timing each.
fn run_cold(dir: &std::path::Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let spill = livora_columnar::Spill::named(dir, usize::MAX)?;
    let rows: u64 = std::fs::read_to_string(dir.join("rows"))
        .context("the image's row count (run with --image first)")?
        .trim()
        .parse()
        .context("the image's row count")?;
    let persons = std::fs::read(dir.join("persons.parquet")).context("the image's persons")?;
    let mut table = Table {
        persons: livora_columnar::segment::decode_persons(persons.into())?,
        ..Table::with_spill(Some(spill.clone()))
    };
    let source = livora_columnar::storage::SegmentMeta {
        path: IMAGE_SOURCE.into(),
        rows,
        bytes: 0,
        min_ts: 0,
        max_ts: 0,
    };
    let held = livora_columnar::image::load(&spill, IMAGE_TENANT, &[source], &mut table);
    anyhow::ensure!(
        held == [true],
        "the image in {} could not be read",
        dir.display()
    );
    let load_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (fq, rq, tq) = queries(end()?)?;
    let t = Instant::now();
    let counts = funnel_counts(&table, &fq)?;
    let funnel_ms = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    let matrix = retention_matrix(&table, &rq)?;
    let retention_ms = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    let series = trend_series(&table, &tq)?;
    let trends_ms = t.elapsed().as_secs_f64() * 1000.0;
    println!(
        "{}",
        json!({
            "events": table.len(),
            "load_ms": load_ms,
            "funnel_ms": funnel_ms,
            "retention_ms": retention_ms,
            "trends_ms": trends_ms,
            "counts": counts,
            "matrix": matrix,
            "series": series,
            "rss_mb": crate::bench::rss_mb(std::process::id(), "VmRSS:"),
        })
    );
    Ok(())
}

pub const STEPS: [&str; 4] = [
    "Product Viewed",
    "Product Added",
    "Checkout Started",
    "Order Completed",
];
pub const WINDOW_SECONDS: i64 = 7 * 86_400;

pub fn run(b: &AnalyticsBench) -> anyhow::Result<()> {
    if let Some(dir) = &b.cold {
        return run_cold(dir);
    }
    let end = end()?;
    let persons = b.persons.unwrap_or(b.events as u64 / 10).max(1);
    let mut shop = Shop::with_population(11, persons);
    let scratch = tempfile::tempdir().context("spill directory")?;
    let spill = match (b.spill_min_kb, &b.image) {
        (_, Some(dir)) => {
            clear_image_dir(dir)?;
            Some(livora_columnar::Spill::named(
                dir,
                b.spill_min_kb.max(1) << 10,
            )?)
        }
        (0, None) => None,
        (kb, None) => Some(livora_columnar::Spill::new(scratch.path(), kb << 10)?),
    };
    let mut table = Table::with_spill(spill);
    let started = Instant::now();
    let mut log_bytes = 0usize;
    while table.len() < b.events {
        let at = shop.seasonal_start(end - chrono::Duration::days(DAYS), end);
        for m in crate::demo::before(shop.session(at), end) {
            let env = Envelope {
                received_at: end,
                client_ip: None,
                future_tolerance: chrono::Duration::days(1),
                sent_at: None,
                context: None,
                integrations: None,
            };
            let event = normalise(parse_item(&m.to_string())?, None, &env)?;
            let payload = serde_json::to_vec(&event)?;
            // A log record: 42 bytes of header, the message id, the JSON.
            log_bytes += 42 + event.message_id.len() + payload.len();
            table.push_json(&payload)?;
        }
    }
    let load_s = started.elapsed().as_secs_f64();
    // Seal: the layout queries read once the hot part is sealed.
    let sealed = Instant::now();
    let days_ranges = table.order_hot();
    let mut segment_bytes = 0usize;
    for r in &days_ranges {
        segment_bytes += livora_columnar::segment::encode_events(&table, r.clone())?.len();
    }
    segment_bytes += livora_columnar::segment::encode_persons(&table.persons)?.len();
    table.mark_sealed(&days_ranges);
    let seal_s = sealed.elapsed().as_secs_f64();
    // The person-ordered projection the store extends after each seal.
    let indexed = Instant::now();
    table.by_person = table.by_person.extended(&table);
    let projection_s = indexed.elapsed().as_secs_f64();
    let redirects = table.persons.redirects();
    if let Some(path) = &b.parquet {
        write_parquet(&table, &redirects, path)?;
    }
    if let (Some(dir), Some(spill)) = (&b.image, &table.spill.clone()) {
        // As a server's seal leaves it: one source for every sealed row.
        table.sources = vec![livora_columnar::image::Source {
            path: IMAGE_SOURCE.into(),
            rows: table.sealed as u64,
        }];
        let pending = livora_columnar::image::collect(&mut table, IMAGE_TENANT)?;
        table.image = livora_columnar::image::finish(pending, spill)?;
        std::fs::write(
            dir.join("persons.parquet"),
            livora_columnar::segment::encode_persons(&table.persons)?,
        )?;
        std::fs::write(dir.join("rows"), table.sealed.to_string())?;
    }
    let (query, rq, tq) = queries(end)?;
    let from = query.from;
    /// Each run's time (sorted) and the last run's answer.
    fn timed<R>(
        b: &AnalyticsBench,
        table: &Table,
        mut f: impl FnMut() -> anyhow::Result<R>,
    ) -> anyhow::Result<(Vec<f64>, R)> {
        let mut times = Vec::new();
        let mut last = None;
        for _ in 0..b.runs.max(1) {
            if b.evict {
                table.evict();
            }
            let t = Instant::now();
            last = Some(f()?);
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        Ok((times, last.context("no run")?))
    }
    let (times, counts) = timed(b, &table, || funnel_counts(&table, &query))?;
    let (rtimes, matrix) = timed(b, &table, || retention_matrix(&table, &rq))?;
    let first_monday = rq.from;
    let (ttimes, series) = timed(b, &table, || trend_series(&table, &tq))?;
    let persons = redirects
        .iter()
        .enumerate()
        .filter(|(i, r)| *i as u32 == **r)
        .count();
    println!(
        "{}",
        json!({
            "events": table.len(),
            "persons": persons,
            "load_seconds": load_s,
            "seal_seconds": seal_s,
            "projection_seconds": projection_s,
            "memory_bytes_per_event": table.heap_bytes() as f64 / table.len() as f64,
            "mapped_bytes_per_event": table.mapped_bytes() as f64 / table.len() as f64,
            "spill_min_kb": b.spill_min_kb,
            "evict": b.evict,
            "memory_breakdown_bytes_per_event": table
                .heap_breakdown()
                .into_iter()
                .map(|(part, b)| (part.to_owned(), json!(b as f64 / table.len() as f64)))
                .collect::<serde_json::Map<_, _>>(),
            // The whole process's resident set (generator leftovers included; capacity never
            // written is not resident, so it can be below `memory_bytes_per_event`).
            "rss_bytes_per_event": crate::bench::rss_mb(std::process::id(), "VmRSS:") * 1_048_576.0
                / table.len() as f64,
            "segment_bytes_per_event": segment_bytes as f64 / table.len() as f64,
            "log_bytes_per_event": log_bytes as f64 / table.len() as f64,
            "from_us": from.timestamp_micros(),
            "to_us": (end + chrono::Duration::days(1)).timestamp_micros(),
            "window_seconds": WINDOW_SECONDS,
            "steps": STEPS,
            "counts": counts,
            "median_ms": times[times.len() / 2],
            "runs_ms": times,
            "retention": {
                "start_event": STEPS[0],
                "return_event": STEPS[3],
                "from_us": first_monday.timestamp_micros(),
                "period_us": 7 * 86_400_000_000i64,
                "periods": 8,
                "matrix": matrix,
                "median_ms": rtimes[rtimes.len() / 2],
            },
            "trends": {
                "event": STEPS[3],
                "from_us": (end - chrono::Duration::days(DAYS)).timestamp_micros(),
                "days": DAYS,
                "series": series,
                "median_ms": ttimes[ttimes.len() / 2],
            },
        })
    );
    Ok(())
}

fn write_parquet(t: &Table, redirects: &[u32], path: &PathBuf) -> anyhow::Result<()> {
    use std::sync::Arc;

    use arrow_array::builder::{Float64Builder, StringBuilder};
    use arrow_array::{ArrayRef, Int64Array, RecordBatch, UInt64Array};
    use arrow_schema::{DataType, Field, Schema};

    let schema = Arc::new(Schema::new(vec![
        Field::new("person", DataType::UInt64, false),
        Field::new("ts", DataType::Int64, false),
        Field::new("event", DataType::Utf8, false),
        Field::new("category", DataType::Utf8, true),
        Field::new("revenue", DataType::Float64, true),
    ]));
    let file = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut w = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None)?;
    let category = t.keys.get("category");
    let revenue = t.keys.get("revenue");
    for start in (0..t.len()).step_by(1 << 20) {
        let rows = start..(start + (1 << 20)).min(t.len());
        let person = UInt64Array::from_iter_values(
            rows.clone()
                .map(|r| u64::from(redirects[t.person[r] as usize])),
        );
        let ts = Int64Array::from(t.ts[rows.clone()].to_vec());
        let (mut event, mut cat, mut rev) = (
            StringBuilder::new(),
            StringBuilder::new(),
            Float64Builder::new(),
        );
        for r in rows {
            event.append_value(t.names.value(t.name[r]).unwrap_or(""));
            cat.append_option(category.and_then(|k| t.str_at(k, r)));
            rev.append_option(revenue.and_then(|k| t.num_at(k, r)));
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(person),
            Arc::new(ts),
            Arc::new(event.finish()),
            Arc::new(cat.finish()),
            Arc::new(rev.finish()),
        ];
        w.write(&RecordBatch::try_new(schema.clone(), columns)?)?;
    }
    w.close()?;
    Ok(())
}
