//! `livora bench intel`: the models of issue 7, their speed and their quality beside their
//! baselines, in one run.
//!
//! 1. **Lifetime value fit**: BG/NBD and Gamma-Gamma fitted to `--sizes` customers drawn
//!    from CDNOW-like parameters over a year (times in whole days, as a tenant's daily
//!    summaries are): seconds per fit, median of `--runs`.
//! 2. **Scoring**: P(alive), the purchases expected in 30 days and the 12-month CLV of every
//!    customer of the largest size: customers per second, on one thread and on all cores.
//! 3. **Churn training**: the logistic model on the largest size's customers (their
//!    purchase features and whether they bought in the 90 days after), its training time,
//!    and its AUC on a second, independent draw beside P(alive) alone and BG/NBD's
//!    expected purchases.
//! 4. **Quality on real data** (`--data`, the repository's test data): the CDNOW
//!    parameters beside the published ones, CDNOW churn AUC on the 39-week holdout,
//!    AirPassengers' 12-month MAPE beside the seasonal naive forecast; and hit rate and NDCG
//!    at 10 of the recommender on a generated shop beside the most popular items.

use std::path::PathBuf;
use std::time::Instant;

use rayon::prelude::*;
use serde_json::{Value, json};

use livora_intel::churn::{Logistic, PURCHASE_FEATURES, auc, from_purchases};
use livora_intel::clv::{self, BgNbd, Customer, GammaGamma};
use livora_intel::forecast::{HoltWinters, mape, seasonal_naive};
use livora_intel::recommend;

use crate::bench_profiles::median;

#[derive(clap::Args, Clone)]
pub struct IntelBench {
    /// Customers per lifetime-value fit, one measurement per size.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    sizes: Vec<usize>,
    /// Runs per size; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The reference data (CDNOW, AirPassengers).
    #[arg(long, default_value = "crates/intel/tests/data")]
    data: PathBuf,
    /// Persons in the generated shop of the recommendation measure.
    #[arg(long, default_value_t = 20_000)]
    shop_persons: usize,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

const BG: BgNbd = BgNbd {
    r: 0.24,
    alpha: 31.0,
    a: 0.79,
    b: 2.43,
};
const GG: GammaGamma = GammaGamma {
    p: 6.25,
    q: 3.74,
    v: 15.4,
};

/// Customers over a year, times in whole days.
fn customers(n: usize, holdout: f64, seed: u64) -> Vec<(Customer, u32)> {
    clv::simulate_holdout(&BG, &GG, n, 365.0, holdout, seed)
        .into_iter()
        .map(|(c, later)| {
            let (age, recency) = (c.age.floor(), c.recency.floor());
            (
                Customer {
                    recency: if c.frequency > 0 { recency } else { 0.0 },
                    age: age.max(recency),
                    ..c
                },
                later,
            )
        })
        .collect()
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

pub fn run(b: &IntelBench) -> anyhow::Result<()> {
    let mut fits = Vec::new();
    for &n in &b.sizes {
        let cs: Vec<Customer> = customers(n, 0.0, 1).into_iter().map(|(c, _)| c).collect();
        let (mut bg_t, mut gg_t) = (Vec::new(), Vec::new());
        let mut last = None;
        for _ in 0..b.runs.max(1) {
            let t = Instant::now();
            let bg = BgNbd::fit(&cs)?;
            bg_t.push(secs(t));
            let t = Instant::now();
            let gg = GammaGamma::fit(&cs)?;
            gg_t.push(secs(t));
            last = Some((bg, gg));
        }
        let (bg, gg) = last.ok_or_else(|| anyhow::anyhow!("no run"))?;
        let (bg_s, gg_s) = (median(&mut bg_t), median(&mut gg_t));
        eprintln!(
            "{n} customers: BG/NBD {bg_s:.3} s ({} iterations, {:?}), Gamma-Gamma {gg_s:.3} s ({:?})",
            bg.iterations, bg.model, gg.model
        );
        fits.push(
            json!({"customers": n, "bg_nbd_secs": bg_s, "gamma_gamma_secs": gg_s,
            "total_secs": bg_s + gg_s, "bg_nbd": bg.model, "gamma_gamma": gg.model,
            "bg_nbd_runs": bg_t, "gamma_gamma_runs": gg_t}),
        );
    }
    let n = b.sizes.iter().copied().max().unwrap_or(100_000);
    let drawn = customers(n, 90.0, 2);
    let cs: Vec<Customer> = drawn.iter().map(|(c, _)| *c).collect();
    let bg = BgNbd::fit(&cs)?.model;
    let gg = GammaGamma::fit(&cs)?.model;
    let score = |c: &Customer| {
        bg.p_alive(c)
            + bg.expected_purchases(c, 30.0)
            + clv::lifetime_value(&bg, &gg, c, 12, 0.01, 30.0)
    };
    let t = Instant::now();
    let one: f64 = cs.iter().map(score).sum();
    let one_rate = n as f64 / secs(t);
    let t = Instant::now();
    let all: f64 = cs.par_iter().map(score).sum();
    let all_rate = n as f64 / secs(t);
    anyhow::ensure!(
        (one - all).abs() <= 1e-6 * one.abs().max(1.0),
        "scores differ"
    );
    eprintln!("scoring: {one_rate:.0} customers/s on one thread, {all_rate:.0}/s on all cores");

    // Churn: features of the drawn customers, label = nothing bought in the next 90 days.
    let rows = |cs: &[(Customer, u32)], bg: &BgNbd| -> (Vec<Vec<f64>>, Vec<bool>, Vec<f64>) {
        let mut rows = Vec::with_capacity(cs.len());
        let (mut y, mut alive) = (Vec::new(), Vec::new());
        for (c, later) in cs {
            let p = bg.p_alive(c);
            rows.push(vec![
                f64::from(c.frequency),
                c.age - c.recency,
                c.age,
                c.monetary,
                p,
                bg.expected_purchases(c, 90.0),
                // The draws have no purchase dates to take a trend from.
                0.0,
            ]);
            y.push(*later == 0);
            alive.push(p);
        }
        (rows, y, alive)
    };
    let (train, labels, _) = rows(&drawn, &bg);
    let names: Vec<String> = PURCHASE_FEATURES.iter().map(|s| s.to_string()).collect();
    let t = Instant::now();
    let model = Logistic::train(names.clone(), &train, &labels, 0.01)?;
    let churn_secs = secs(t);
    let other = customers(n, 90.0, 3);
    let bg_other = BgNbd::fit(&other.iter().map(|(c, _)| *c).collect::<Vec<_>>())?.model;
    let (test, truth, alive) = rows(&other, &bg_other);
    let judged = judge(&model, &test, &truth, &alive);
    eprintln!("churn: trained on {n} in {churn_secs:.2} s; AUC {judged}");

    // Real data.
    let data = |f: &str| b.data.join(f);
    let published = cdnow_published(&data("cdnow_customers_summary_with_monetary.csv"))?;
    let cdnow_bg = BgNbd::fit(&published)?;
    let cdnow_gg = GammaGamma::fit(&published)?;
    let purchases = cdnow_purchases(&data("cdnow_sample_transactions.csv"))?;
    let day = |y, m, d| {
        chrono::NaiveDate::from_ymd_opt(y, m, d)
            .map(|x| {
                x.signed_duration_since(chrono::NaiveDate::default())
                    .num_days()
            })
            .ok_or_else(|| anyhow::anyhow!("bad date"))
    };
    let cal = day(1997, 9, 30)?;
    let cdnow_train = from_purchases(&purchases, day(1997, 6, 30)?, 92, 7.0)?;
    let cdnow_model = Logistic::train(names, &cdnow_train.rows, &cdnow_train.churned, 0.01)?;
    let cdnow_test = from_purchases(&purchases, cal, day(1998, 6, 30)? - cal, 7.0)?;
    let cdnow_churn = judge(
        &cdnow_model,
        &cdnow_test.rows,
        &cdnow_test.churned,
        &cdnow_test.p_alive,
    );
    let air = airpassengers(&data("airpassengers.csv"))?;
    let (air_train, air_test) = air.split_at(air.len() - 12);
    let hw = HoltWinters::auto(air_train, 12)?;
    let air_mape = mape(air_test, &hw.forecast(12, 0.95).point).unwrap_or(f64::NAN);
    let air_naive = mape(air_test, &seasonal_naive(air_train, 12, 12)).unwrap_or(f64::NAN);
    let shop = recommend::synthetic_shop(b.shop_persons, 2000, 5);
    let t = Instant::now();
    let ((hr, ndcg), (hr_pop, ndcg_pop)) = recommend::evaluate(&shop, 10);
    let rec_secs = secs(t);

    let out = json!({
        "fits": fits,
        "scoring": {"customers": n, "per_sec_one_thread": one_rate, "per_sec_all_cores": all_rate},
        "churn_synthetic": {"customers": n, "train_secs": churn_secs, "auc": judged},
        "cdnow": {
            "bg_nbd": cdnow_bg.model, "published_bg_nbd": {"r": 0.2426, "alpha": 4.4135, "a": 0.7929, "b": 2.4258},
            "log_likelihood": cdnow_bg.log_likelihood * published.len() as f64,
            "gamma_gamma": cdnow_gg.model, "published_gamma_gamma": {"p": 6.2488, "q": 3.7446, "v": 15.4477},
            "churn_auc": cdnow_churn,
        },
        "airpassengers_mape": {"holt_winters": air_mape, "seasonal_naive": air_naive,
            "model": format!("{:?}{}", hw.seasonality, if hw.damped { ", damped" } else { "" })},
        "recommendations": {"persons": b.shop_persons, "items": 2000, "secs": rec_secs,
            "hit_rate_10": hr, "ndcg_10": ndcg, "popular_hit_rate_10": hr_pop, "popular_ndcg_10": ndcg_pop},
    });
    if b.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for f in &out["fits"].as_array().cloned().unwrap_or_default() {
            println!(
                "fit {} customers: BG/NBD {:.3} s + Gamma-Gamma {:.3} s",
                f["customers"], f["bg_nbd_secs"], f["gamma_gamma_secs"]
            );
        }
        println!(
            "scoring {n}: {one_rate:.0}/s one thread, {all_rate:.0}/s all cores; churn training {churn_secs:.2} s"
        );
        println!("churn AUC (synthetic): {judged}");
        println!(
            "CDNOW: {:?}, {:?}; churn AUC {cdnow_churn}",
            cdnow_bg.model, cdnow_gg.model
        );
        println!(
            "AirPassengers MAPE: Holt-Winters {air_mape:.2} %, seasonal naive {air_naive:.2} %"
        );
        println!(
            "recommendations: HR@10 {hr:.3} NDCG@10 {ndcg:.3}; popular HR@10 {hr_pop:.3} NDCG@10 {ndcg_pop:.3}"
        );
    }
    Ok(())
}

/// AUC of the model, of P(alive) alone and of BG/NBD's expected purchases (feature 5).
fn judge(model: &Logistic, rows: &[Vec<f64>], churned: &[bool], alive: &[f64]) -> Value {
    let scores: Vec<f64> = rows.iter().map(|x| model.score(x)).collect();
    let dead: Vec<f64> = alive.iter().map(|p| 1.0 - p).collect();
    let few: Vec<f64> = rows.iter().map(|x| -x[5]).collect();
    json!({
        "logistic": auc(&scores, churned),
        "p_alive": auc(&dead, churned),
        "expected_purchases": auc(&few, churned),
        "churned_share": churned.iter().filter(|&&c| c).count() as f64 / churned.len().max(1) as f64,
    })
}

fn records(path: &std::path::Path) -> anyhow::Result<Vec<csv::StringRecord>> {
    let mut r = csv::Reader::from_path(path).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e} (run from the repository root, or pass --data)",
            path.display()
        )
    })?;
    Ok(r.records().collect::<Result<_, _>>()?)
}

fn cdnow_published(path: &std::path::Path) -> anyhow::Result<Vec<Customer>> {
    records(path)?
        .iter()
        .map(|r| {
            Ok(Customer {
                frequency: r[1].parse()?,
                recency: r[2].parse()?,
                age: r[3].parse()?,
                monetary: r[4].parse()?,
            })
        })
        .collect()
}

fn cdnow_purchases(path: &std::path::Path) -> anyhow::Result<Vec<(u32, i64, f64)>> {
    records(path)?
        .iter()
        .map(|r| {
            let d = chrono::NaiveDate::parse_from_str(&r[2], "%Y%m%d")?;
            Ok((
                r[1].parse()?,
                d.signed_duration_since(chrono::NaiveDate::default())
                    .num_days(),
                r[4].parse()?,
            ))
        })
        .collect()
}

fn airpassengers(path: &std::path::Path) -> anyhow::Result<Vec<f64>> {
    records(path)?
        .iter()
        .map(|r| Ok(r[r.len() - 1].parse()?))
        .collect()
}
