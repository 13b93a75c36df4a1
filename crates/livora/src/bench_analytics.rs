//! `livora bench analytics`: generated shop traffic in a column-store table; a 4-step funnel
//! (view -> add -> checkout -> order, 7 days), a weekly retention matrix (8 weeks) and daily
//! revenue by category (90 days), each timed over several runs; the same events written as CSV (with merged person ids) for other
//! engines. `bench/analytics.sh` runs this and the same queries in DuckDB and chDB, and
//! compares the answers.

use std::io::Write;
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
use rand::{Rng, SeedableRng};
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
    /// Write the events as CSV (person, ts_us, event, category, revenue).
    #[arg(long)]
    csv: Option<PathBuf>,
}

pub const STEPS: [&str; 4] = [
    "Product Viewed",
    "Product Added",
    "Checkout Started",
    "Order Completed",
];
pub const WINDOW_SECONDS: i64 = 7 * 86_400;

pub fn run(b: &AnalyticsBench) -> anyhow::Result<()> {
    let end: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().context("end time")?;
    let days = 90;
    let mut shop = Shop::new(11);
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let mut table = Table::default();
    let started = Instant::now();
    while table.len() < b.events {
        let ago = rng.random_range(3_600..days * 86_400);
        let at = end - chrono::Duration::seconds(ago);
        for m in shop.session(at) {
            let env = Envelope {
                received_at: end,
                client_ip: None,
                future_tolerance: chrono::Duration::days(1),
                sent_at: None,
                context: None,
                integrations: None,
            };
            let event = normalise(parse_item(&m.to_string())?, None, &env)?;
            table.push_json(&serde_json::to_vec(&event)?)?;
        }
    }
    let load_s = started.elapsed().as_secs_f64();
    let redirects = table.persons.redirects();
    if let Some(path) = &b.csv {
        write_csv(&table, &redirects, path)?;
    }
    let from = end - chrono::Duration::days(days + 1);
    let query = FunnelQuery {
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
        from,
        to: end + chrono::Duration::days(1),
        persons: None,
        breakdown: None,
    };
    let mut times = Vec::new();
    let mut result = None;
    for _ in 0..b.runs.max(1) {
        let t = Instant::now();
        let redirects = table.persons.redirects();
        let r = funnel(&table, &redirects, &query)?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        result = Some(r);
    }
    times.sort_by(f64::total_cmp);
    let counts: Vec<u64> = result
        .map(|r| r.steps.iter().map(|s| s.count).collect())
        .unwrap_or_default();

    // Weekly retention, 8 weeks from the first Monday 8 weeks before the end: cohorts by first
    // product view, returning with an order.
    let first_monday: DateTime<Utc> = "2025-11-03T00:00:00Z".parse().context("monday")?;
    let rq = RetentionQuery {
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
    let mut rtimes = Vec::new();
    let mut matrix = Vec::new();
    for _ in 0..b.runs.max(1) {
        let t = Instant::now();
        let redirects = table.persons.redirects();
        let r = retention(&table, &redirects, &rq, chrono_tz::UTC)?;
        rtimes.push(t.elapsed().as_secs_f64() * 1000.0);
        matrix = r
            .cohorts
            .iter()
            .map(|c| c.counts.clone())
            .collect::<Vec<_>>();
    }
    rtimes.sort_by(f64::total_cmp);

    // Daily revenue by category over the last 90 days.
    let tq = TrendsQuery {
        event: Step {
            event: STEPS[3].into(),
            filters: vec![],
        },
        metric: Metric::Sum {
            property: "revenue".into(),
        },
        interval: Period::Day,
        from: end - chrono::Duration::days(90),
        to: end,
        breakdown: Some(Breakdown {
            source: Source::Event,
            property: "category".into(),
            limit: 100,
        }),
        compare_previous: false,
    };
    let mut ttimes = Vec::new();
    let mut series = serde_json::Map::new();
    for _ in 0..b.runs.max(1) {
        let t = Instant::now();
        let redirects = table.persons.redirects();
        let r = trends(&table, &redirects, &tq, chrono_tz::UTC)?;
        ttimes.push(t.elapsed().as_secs_f64() * 1000.0);
        series = r
            .series
            .iter()
            .map(|s| {
                (
                    s.breakdown.clone().unwrap_or_default(),
                    json!(
                        s.values
                            .iter()
                            .map(|v| v.unwrap_or(0.0))
                            .collect::<Vec<_>>()
                    ),
                )
            })
            .collect();
    }
    ttimes.sort_by(f64::total_cmp);
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
                "from_us": (end - chrono::Duration::days(90)).timestamp_micros(),
                "days": 90,
                "series": series,
                "median_ms": ttimes[ttimes.len() / 2],
            },
        })
    );
    Ok(())
}

fn write_csv(t: &Table, redirects: &[u32], path: &PathBuf) -> anyhow::Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    writeln!(w, "person,ts,event,category,revenue")?;
    let category = t.keys.get("category");
    let revenue = t.keys.get("revenue");
    for row in 0..t.len() {
        let person = redirects[t.person[row] as usize];
        let name = t.names.value(t.name[row]).unwrap_or("");
        let cat = category.and_then(|k| t.str_at(k, row)).unwrap_or("");
        let rev = revenue.and_then(|k| t.num_at(k, row));
        // Names and categories are plain words here; quote them anyway for CSV safety.
        write!(
            w,
            "{person},{},\"{}\",\"{}\",",
            t.ts[row],
            name.replace('"', "\"\""),
            cat.replace('"', "\"\"")
        )?;
        match rev {
            Some(r) => writeln!(w, "{r}")?,
            None => writeln!(w)?,
        }
    }
    w.flush()?;
    Ok(())
}
