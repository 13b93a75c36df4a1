//! Training a tenant's models from its [histories](crate::history), judging each on a
//! time-based holdout, and scoring every person.
//!
//! - **Lifetime value**: BG/NBD and Gamma-Gamma on the purchases (times in days). Holdout:
//!   fitted on the purchases up to the horizon ago ([`Options::horizon_days`], 90 days by
//!   default), the purchases each buyer makes in the horizon predicted; the metric is the
//!   mean absolute error per buyer (lower is better). Each person's expected purchases are
//!   predicted over the same horizon.
//! - **Churn**: the logistic model on [`CHURN_FEATURES`], a person labelled churned when
//!   they are not active in the 30 days after the cutoff. Trained with the cutoff 60 days
//!   ago, judged by its AUC with the cutoff 30 days ago (higher is better); the model kept
//!   is then trained again with the cutoff 30 days ago (the newest labels there are), and
//!   scores everyone today.
//! - **Forecasts**: daily revenue, orders and active persons by Holt-Winters (weekly
//!   seasonality); weekly ones (yearly seasonality with two years of data). Holdout: the
//!   last 28 days (8 weeks) forecast from what came before; MAPE beside the seasonal naive
//!   forecast, which is used instead where it did better. Daily revenue and orders also
//!   for each of the ten product categories with the most revenue.
//! - **Recommendations**: item-to-item, judged by hit rate at 10 on each buyer's last
//!   purchase held out (higher is better), beside the most popular items.
//! - **Send time**: each person's best hour, from their engagements and the tenant's.
//!
//! A new version replaces the one in use only when its holdout metric is not worse: for
//! lifetime value and churn, the version in use is judged again on the new holdout, so
//! both are measured on the same persons and days.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::churn::{Contribution, Logistic, auc};
use crate::clv::{self, BgNbd, Customer, GammaGamma};
use crate::forecast::{Forecast, HoltWinters, mape, seasonal_naive, seasonal_naive_forecast};
use crate::history::{Histories, PersonHistory, weekday};
use crate::recommend::{self, Action, Interaction, Recommender, Weights};
use crate::send_time::{BestTime, Hours, best_hour};
use crate::sentiment;

/// The features of the churn model, in order.
pub const CHURN_FEATURES: [&str; 12] = [
    "days_since_last_active",
    "active_days_30",
    "active_days_trend",
    "tenure_days",
    "orders",
    "revenue",
    "days_since_last_order",
    "p_alive",
    "expected_purchases_30",
    "engagements_30",
    "messages_sent_30",
    "sentiment_30",
];

/// Days a churn label looks ahead.
pub const CHURN_DAYS: i64 = 30;
/// The shortest and longest training window, in days.
pub const WINDOW_DAYS: (u32, u32) = (60, 3650);
/// The shortest and longest prediction horizon, in days.
pub const HORIZON_DAYS: (u32, u32) = (7, 365);

/// How much history a training reads and how far ahead it predicts, both in days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    /// Days of events read, up to today (730 by default).
    pub window_days: u32,
    /// Days ahead that purchases are predicted (`expected_purchases`), and the days the
    /// lifetime-value holdout holds out (90 by default).
    pub horizon_days: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            window_days: 730,
            horizon_days: 90,
        }
    }
}

impl Options {
    /// Checks both against [`WINDOW_DAYS`] and [`HORIZON_DAYS`], and that the horizon is at
    /// most half the window (the lifetime-value model is fitted on what comes before it).
    pub fn new(window_days: u32, horizon_days: u32) -> Result<Self, crate::Error> {
        if !(WINDOW_DAYS.0..=WINDOW_DAYS.1).contains(&window_days) {
            return Err(crate::Error::WindowDays(window_days));
        }
        if !(HORIZON_DAYS.0..=HORIZON_DAYS.1).contains(&horizon_days) {
            return Err(crate::Error::HorizonDays(horizon_days));
        }
        if u64::from(horizon_days) * 2 > u64::from(window_days) {
            return Err(crate::Error::HorizonTooLong {
                horizon: horizon_days,
                window: window_days,
            });
        }
        Ok(Self {
            window_days,
            horizon_days,
        })
    }
}

/// Lifetime-value parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClvParams {
    pub bg_nbd: BgNbd,
    /// `None` without repeat buyers: the mean order value is the spend then.
    pub gamma_gamma: Option<GammaGamma>,
    pub mean_order_value: f64,
}

/// A person's scores.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub p_alive: Option<f64>,
    pub expected_purchases_90d: Option<f64>,
    /// Purchases expected over the training's [`Options::horizon_days`].
    #[serde(default)]
    pub expected_purchases: Option<f64>,
    pub clv_12m: Option<f64>,
    pub churn_risk: Option<f64>,
    /// The features that moved the risk most, the strongest first (at most 3).
    pub churn_reasons: Vec<Contribution>,
    pub best_time: Option<BestTime>,
    /// Mean compound sentiment of their texts in the last 30 days and in the 30 before.
    pub sentiment_30d: Option<f64>,
    pub sentiment_previous_30d: Option<f64>,
    pub texts: u32,
}

/// How churn risk spreads over the scored persons: what the overview shows of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RiskSummary {
    /// Persons with a churn risk.
    pub scored: usize,
    /// The risk at or above which a person counts as at risk.
    pub threshold: f64,
    /// Of the scored, those at risk.
    pub at_risk: usize,
    /// The mean risk of the scored (`None` when none is).
    pub mean_risk: Option<f64>,
    /// The 12-month value predicted for the persons at risk: what keeping them is worth.
    pub value_at_risk: f64,
    /// The 12-month value predicted for everyone with one.
    pub value_total: f64,
    /// Persons by risk in tenths: `bands[i]` counts risks in `[i/10, (i+1)/10)`, the last
    /// one including 1.
    pub bands: [usize; 10],
}

/// The churn risk of `scores`, summed up with `threshold` as the line for "at risk".
pub fn risk_summary(scores: &[Scores], threshold: f64) -> RiskSummary {
    let mut out = RiskSummary {
        scored: 0,
        threshold,
        at_risk: 0,
        mean_risk: None,
        value_at_risk: 0.0,
        value_total: 0.0,
        bands: [0; 10],
    };
    let mut sum = 0.0;
    for s in scores {
        let value = s.clv_12m.filter(|v| v.is_finite()).unwrap_or(0.0);
        out.value_total += value;
        let Some(risk) = s.churn_risk.filter(|r| r.is_finite()) else {
            continue;
        };
        out.scored += 1;
        sum += risk;
        // Risks are probabilities; one just outside [0, 1] falls in the end bands.
        out.bands[((risk * 10.0).floor().max(0.0) as usize).min(9)] += 1;
        if risk >= threshold {
            out.at_risk += 1;
            out.value_at_risk += value;
        }
    }
    out.mean_risk = (out.scored > 0).then(|| sum / out.scored as f64);
    out
}

/// One model kind's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome<P> {
    pub params: P,
    /// The holdout metrics and what else training measured.
    pub metrics: Value,
    /// The holdout metric the versions are compared by, and whether lower is better.
    pub score: Option<f64>,
    pub lower_is_better: bool,
    /// The same metric for the version in use, judged on this holdout (when it can be).
    pub previous_score: Option<f64>,
}

impl<P> Outcome<P> {
    /// Whether this version should replace the one in use.
    pub fn better_or_equal(&self) -> bool {
        match (self.score, self.previous_score) {
            (Some(new), Some(old)) if self.lower_is_better => new <= old,
            (Some(new), Some(old)) => new >= old,
            // Nothing to compare with, or this one could not be judged.
            (_, None) => true,
            (None, Some(_)) => false,
        }
    }
}

/// Forecasts of one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesForecast {
    pub metric: String,
    /// The product category (`None`: the whole tenant).
    #[serde(default)]
    pub category: Option<String>,
    /// `day` or `week`.
    pub interval: String,
    /// The first day (days since 1970-01-01) of each forecast point.
    pub start: Vec<i64>,
    pub forecast: Forecast,
    pub model: String,
    /// Holdout MAPE of the model and of the seasonal naive forecast (percent).
    pub mape: Option<f64>,
    pub naive_mape: Option<f64>,
}

/// Everything one training run produced.
#[derive(Debug, Clone)]
pub struct Trained {
    pub today: i64,
    pub first_day: i64,
    pub clv: Option<Outcome<ClvParams>>,
    pub churn: Option<Outcome<Logistic>>,
    pub forecasts: Outcome<Vec<SeriesForecast>>,
    pub recommender: Outcome<Recommender>,
    pub send_time: Outcome<Hours>,
    /// Per person (index into the histories).
    pub scores: Vec<Scores>,
    /// Why a model could not be trained.
    pub skipped: Vec<(String, String)>,
}

/// What the versions in use were, to judge them on the new holdout.
#[derive(Debug, Clone, Default)]
pub struct InUse {
    pub clv: Option<ClvParams>,
    pub churn: Option<Logistic>,
    pub forecast_mape: Option<f64>,
    pub recommendations_hit_rate: Option<f64>,
    /// The tenant's own sentiment classifier, trained from its labelled examples.
    pub sentiment: Option<crate::sentiment::Classifier>,
}

fn customers_at(persons: &[PersonHistory], cutoff: i64) -> Vec<(usize, Customer)> {
    let purchases = persons.iter().enumerate().flat_map(|(i, p)| {
        p.purchases
            .iter()
            .map(move |&(day, amount)| (i, day, amount))
    });
    clv::summarize(purchases, cutoff, 1.0)
}

fn purchases_between(p: &PersonHistory, from: i64, to: i64) -> f64 {
    let mut days: Vec<i64> = p
        .purchases
        .iter()
        .map(|(d, _)| *d)
        .filter(|&d| d > from && d <= to)
        .collect();
    days.dedup();
    days.len() as f64
}

fn fit_clv(customers: &[Customer]) -> Option<ClvParams> {
    let bg = BgNbd::fit(customers).ok()?.model;
    let gg = GammaGamma::fit(customers).ok().map(|f| f.model);
    let spend: Vec<f64> = customers
        .iter()
        .filter(|c| c.monetary > 0.0)
        .map(|c| c.monetary)
        .collect();
    Some(ClvParams {
        bg_nbd: bg,
        gamma_gamma: gg.filter(|g| g.q > 1.0),
        mean_order_value: if spend.is_empty() {
            0.0
        } else {
            spend.iter().sum::<f64>() / spend.len() as f64
        },
    })
}

impl ClvParams {
    /// Expected spend per future purchase.
    pub fn spend(&self, c: &Customer) -> f64 {
        match &self.gamma_gamma {
            Some(g) => g.expected_spend(c),
            None => self.mean_order_value,
        }
    }

    /// 12-month value, discounted 1 % a month.
    pub fn value(&self, c: &Customer) -> f64 {
        let spend = self.spend(c);
        let mut value = 0.0;
        let mut before = 0.0;
        for m in 1..=12 {
            let upto = self.bg_nbd.expected_purchases(c, f64::from(m) * 30.0);
            value += spend * (upto - before) / 1.01f64.powi(m);
            before = upto;
        }
        value
    }
}

/// Mean absolute error of `params`' predicted purchases in the holdout, per buyer.
fn clv_holdout_error(
    params: &ClvParams,
    persons: &[PersonHistory],
    calibration: &[(usize, Customer)],
    cutoff: i64,
    today: i64,
) -> f64 {
    let horizon = (today - cutoff) as f64;
    let errs: f64 = calibration
        .iter()
        .map(|(i, c)| {
            let predicted = params.bg_nbd.expected_purchases(c, horizon);
            (predicted - purchases_between(&persons[*i], cutoff, today)).abs()
        })
        .sum();
    errs / calibration.len().max(1) as f64
}

fn train_clv(
    h: &Histories,
    today: i64,
    in_use: &InUse,
    horizon_days: u32,
) -> Result<Outcome<ClvParams>, String> {
    let cutoff = today - i64::from(horizon_days);
    let calibration = customers_at(&h.persons, cutoff);
    let all = customers_at(&h.persons, today);
    let repeat = all.iter().filter(|(_, c)| c.frequency > 0).count();
    if all.len() < 20 || repeat < 5 {
        return Err(format!(
            "{} buyers, {repeat} with a repeat purchase: at least 20 and 5 are needed",
            all.len()
        ));
    }
    let fitted = |cs: &[(usize, Customer)]| {
        let v: Vec<Customer> = cs.iter().map(|(_, c)| *c).collect();
        fit_clv(&v)
    };
    let params = fitted(&all).ok_or("the lifetime-value models did not converge")?;
    let (score, previous, holdout) = match fitted(&calibration) {
        Some(cal) if calibration.len() >= 20 => {
            let e = clv_holdout_error(&cal, &h.persons, &calibration, cutoff, today);
            let old = in_use
                .clv
                .as_ref()
                .map(|o| clv_holdout_error(o, &h.persons, &calibration, cutoff, today));
            (Some(e), old, calibration.len())
        }
        _ => (None, None, 0),
    };
    Ok(Outcome {
        metrics: json!({
            "holdout_days": horizon_days,
            "holdout_buyers": holdout,
            "purchases_mae": score,
            "in_use_purchases_mae": previous,
            "buyers": all.len(),
            "repeat_buyers": repeat,
            "bg_nbd": params.bg_nbd,
            "gamma_gamma": params.gamma_gamma,
        }),
        params,
        score,
        lower_is_better: true,
        previous_score: previous,
    })
}

/// Days with activity in `(from, to]`.
fn count_in(days: &[i64], from: i64, to: i64) -> f64 {
    let lo = days.partition_point(|&d| d <= from);
    let hi = days.partition_point(|&d| d <= to);
    (hi - lo) as f64
}

/// One person's churn features at `cutoff` (`None`: not yet seen by then), with the
/// lifetime-value model fitted at that cutoff.
pub fn churn_row(p: &PersonHistory, cutoff: i64, clv: Option<&ClvParams>) -> Option<Vec<f64>> {
    let first = *p.active_days.first()?;
    if first > cutoff {
        return None;
    }
    let seen = p.active_days.partition_point(|&d| d <= cutoff);
    let last = p.active_days[seen - 1];
    let orders: Vec<&(i64, f64)> = p.purchases.iter().filter(|(d, _)| *d <= cutoff).collect();
    let revenue: f64 = orders.iter().map(|(_, a)| a).sum();
    let (p_alive, expected) = match (clv, orders.first()) {
        (Some(m), Some(_)) => {
            let c = clv::summarize(p.purchases.iter().map(|&(d, a)| (0u8, d, a)), cutoff, 1.0);
            c.first()
                .map(|(_, c)| (m.bg_nbd.p_alive(c), m.bg_nbd.expected_purchases(c, 30.0)))
                .unwrap_or((1.0, 0.0))
        }
        _ => (1.0, 0.0),
    };
    let mut engaged = p.engagement_days.clone();
    engaged.sort_unstable();
    let texts: Vec<f64> = p
        .texts
        .iter()
        .filter(|(d, _)| *d > cutoff - 30 && *d <= cutoff)
        .map(|(_, t)| sentiment::score(t).compound)
        .collect();
    Some(vec![
        (cutoff - last) as f64,
        count_in(&p.active_days, cutoff - 30, cutoff),
        count_in(&p.active_days, cutoff - 30, cutoff)
            - count_in(&p.active_days, cutoff - 60, cutoff - 30),
        (cutoff - first) as f64,
        orders.len() as f64,
        revenue,
        orders
            .last()
            .map_or((cutoff - first) as f64, |(d, _)| (cutoff - d) as f64),
        p_alive,
        expected,
        count_in(&engaged, cutoff - 30, cutoff),
        texts.len() as f64,
        if texts.is_empty() {
            0.0
        } else {
            texts.iter().sum::<f64>() / texts.len() as f64
        },
    ])
}

/// Rows and labels at `cutoff` (churned: no activity in the following 30 days).
fn churn_set(h: &Histories, cutoff: i64) -> (Vec<usize>, Vec<Vec<f64>>, Vec<bool>) {
    let clv = fit_clv(
        &customers_at(&h.persons, cutoff)
            .into_iter()
            .map(|(_, c)| c)
            .collect::<Vec<_>>(),
    );
    let mut who = Vec::new();
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    for (i, p) in h.persons.iter().enumerate() {
        if let Some(r) = churn_row(p, cutoff, clv.as_ref()) {
            who.push(i);
            rows.push(r);
            labels.push(count_in(&p.active_days, cutoff, cutoff + CHURN_DAYS) == 0.0);
        }
    }
    (who, rows, labels)
}

fn train_churn(h: &Histories, today: i64, in_use: &InUse) -> Result<Outcome<Logistic>, String> {
    let names: Vec<String> = CHURN_FEATURES.iter().map(|s| s.to_string()).collect();
    let (_, train_rows, train_labels) = churn_set(h, today - 2 * CHURN_DAYS);
    let (_, test_rows, test_labels) = churn_set(h, today - CHURN_DAYS);
    let both = |l: &[bool]| l.iter().any(|&c| c) && l.iter().any(|&c| !c);
    if train_rows.len() < 20 || !both(&train_labels) || !both(&test_labels) {
        return Err(format!(
            "{} persons seen {} days ago, with churners and others among them, are needed; there are {}",
            20,
            2 * CHURN_DAYS,
            train_rows.len()
        ));
    }
    let judged = Logistic::train(names.clone(), &train_rows, &train_labels, 0.01)
        .map_err(|e| e.to_string())?;
    let score_of = |m: &Logistic| {
        let s: Vec<f64> = test_rows.iter().map(|x| m.score(x)).collect();
        auc(&s, &test_labels)
    };
    let holdout_auc = score_of(&judged);
    let previous = in_use
        .churn
        .as_ref()
        .filter(|m| m.features == names)
        .and_then(score_of);
    // P(alive) alone on the same holdout, for the record.
    let dead: Vec<f64> = test_rows.iter().map(|x| 1.0 - x[7]).collect();
    let p_alive_auc = auc(&dead, &test_labels);
    let model =
        Logistic::train(names, &test_rows, &test_labels, 0.01).map_err(|e| e.to_string())?;
    Ok(Outcome {
        metrics: json!({
            "label_days": CHURN_DAYS,
            "holdout_auc": holdout_auc,
            "p_alive_auc": p_alive_auc,
            "in_use_auc": previous,
            "training_persons": train_rows.len(),
            "holdout_persons": test_rows.len(),
            "holdout_churned": test_labels.iter().filter(|&&c| c).count(),
            "weights": model.features.iter().zip(&model.weights).map(|(f, w)| json!({"feature": f, "weight": w})).collect::<Vec<_>>(),
        }),
        params: model,
        score: holdout_auc,
        lower_is_better: false,
        previous_score: previous,
    })
}

/// How a series is cut: its name, days per point, season, holdout and horizon in points.
#[derive(Clone, Copy)]
struct Cadence {
    interval: &'static str,
    step: i64,
    period: usize,
    holdout: usize,
    horizon: usize,
}

/// Days, a weekly season, the last 4 weeks held out, 30 days ahead.
const DAILY: Cadence = Cadence {
    interval: "day",
    step: 1,
    period: 7,
    holdout: 28,
    horizon: 30,
};

fn forecast_series(metric: &str, c: &Cadence, start_day: i64, y: &[f64]) -> Option<SeriesForecast> {
    let Cadence {
        interval,
        step,
        period,
        holdout,
        horizon,
    } = *c;
    let fit = |y: &[f64]| {
        HoltWinters::auto(y, period)
            .or_else(|_| HoltWinters::auto(y, 1))
            .ok()
    };
    let m = fit(y)?;
    let (mape_m, naive_m) = if y.len() > holdout + 2 * period.max(2) {
        let (train, test) = y.split_at(y.len() - holdout);
        let ours = fit(train).and_then(|m| mape(test, &m.forecast(holdout, 0.95).point));
        let naive = mape(test, &seasonal_naive(train, period, holdout));
        (ours, naive)
    } else {
        (None, None)
    };
    let next = start_day + step * y.len() as i64;
    // The seasonal naive forecast is used instead where it did better on the holdout.
    let naive_wins = matches!((mape_m, naive_m), (Some(ours), Some(naive)) if naive < ours);
    let (forecast, model) = if naive_wins {
        (
            seasonal_naive_forecast(y, period, horizon, 0.95),
            "seasonal_naive".to_owned(),
        )
    } else {
        (
            m.forecast(horizon, 0.95),
            format!(
                "holt_winters({:?}{})",
                m.seasonality,
                if m.damped { ", damped" } else { "" }
            )
            .to_lowercase(),
        )
    };
    Some(SeriesForecast {
        metric: metric.to_owned(),
        category: None,
        interval: interval.to_owned(),
        start: (0..horizon as i64).map(|i| next + i * step).collect(),
        forecast,
        model,
        mape: if naive_wins { naive_m } else { mape_m },
        naive_mape: naive_m,
    })
}

fn train_forecasts(h: &Histories, in_use: &InUse) -> Outcome<Vec<SeriesForecast>> {
    let mut out = Vec::new();
    // Up to the last full day (today's is partial).
    let days: Vec<_> = h.days.iter().take(h.days.len().saturating_sub(1)).collect();
    let Some(&&(first, _)) = days.first() else {
        return Outcome {
            params: out,
            metrics: json!({"days": 0}),
            score: None,
            lower_is_better: true,
            previous_score: in_use.forecast_mape,
        };
    };
    type Pick = fn(&crate::history::DailyTotals) -> f64;
    let metrics: [(&str, Pick); 3] = [
        ("revenue", |t| t.revenue),
        ("orders", |t| t.orders),
        ("active_persons", |t| t.active_persons),
    ];
    for (name, pick) in metrics {
        let daily: Vec<f64> = days.iter().map(|(_, t)| pick(t)).collect();
        if let Some(f) = forecast_series(name, &DAILY, first, &daily) {
            out.push(f);
        }
        // Whole weeks from the first Monday.
        let skip = days.iter().position(|(d, _)| weekday(*d) == 0).unwrap_or(0);
        let weekly: Vec<f64> = days[skip..]
            .chunks_exact(7)
            .map(|w| w.iter().map(|(_, t)| pick(t)).sum())
            .collect();
        let period = if weekly.len() >= 104 { 52 } else { 1 };
        if weekly.len() >= 8
            && let Some(f) = forecast_series(
                name,
                &Cadence {
                    interval: "week",
                    step: 7,
                    period,
                    holdout: 8,
                    horizon: 12,
                },
                days.get(skip).map_or(first, |(d, _)| *d),
                &weekly,
            )
        {
            out.push(f);
        }
    }
    // The ten categories with the most revenue, daily.
    let last = days.last().map_or(first, |(d, _)| *d);
    let mut ranked: Vec<(&String, f64)> = h
        .categories
        .iter()
        .map(|(c, by_day)| (c, by_day.values().map(|t| t.revenue).sum::<f64>()))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    for (c, _) in ranked.into_iter().take(10) {
        let by_day = &h.categories[c];
        let Some(&start) = by_day.keys().next() else {
            continue;
        };
        for (name, pick) in &metrics[..2] {
            let y: Vec<f64> = (start..=last)
                .map(|d| by_day.get(&d).map_or(0.0, pick))
                .collect();
            if let Some(mut f) = forecast_series(name, &DAILY, start, &y) {
                f.category = Some(c.clone());
                out.push(f);
            }
        }
    }
    let daily_mapes: Vec<f64> = out
        .iter()
        .filter(|f| f.interval == "day" && f.category.is_none())
        .filter_map(|f| f.mape)
        .collect();
    let score = (!daily_mapes.is_empty())
        .then(|| daily_mapes.iter().sum::<f64>() / daily_mapes.len() as f64);
    Outcome {
        metrics: json!({
            "days": days.len(),
            "mean_daily_mape": score,
            "series": out.iter().map(|f| json!({"metric": f.metric, "category": f.category, "interval": f.interval,
                "model": f.model, "mape": f.mape, "seasonal_naive_mape": f.naive_mape})).collect::<Vec<_>>(),
        }),
        params: out,
        score,
        lower_is_better: true,
        previous_score: in_use.forecast_mape,
    }
}

/// The item similarities of every person's views, carts and purchases.
pub fn recommender(h: &Histories, w: Weights) -> Recommender {
    Recommender::train(
        h.persons.iter().flat_map(|p| {
            p.products
                .iter()
                .map(move |(item, action, order)| Interaction {
                    person: p.keys.first().map_or("", String::as_str),
                    item,
                    action: *action,
                    order: order.as_deref(),
                })
        }),
        w,
    )
}

fn train_recommender(h: &Histories, in_use: &InUse) -> Outcome<Recommender> {
    let w = Weights::default();
    let events: Vec<(String, String, Action)> = h
        .persons
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            p.products
                .iter()
                .map(move |(item, a, _)| (i.to_string(), item.clone(), *a))
        })
        .collect();
    let ((hr, ndcg), (hr_pop, ndcg_pop)) = recommend::evaluate(&events, 10);
    let judged = events.iter().any(|(_, _, a)| *a == Action::Purchase);
    Outcome {
        params: recommender(h, w),
        metrics: json!({"hit_rate_10": hr, "ndcg_10": ndcg, "popular_hit_rate_10": hr_pop,
            "popular_ndcg_10": ndcg_pop, "interactions": events.len()}),
        score: judged.then_some(hr),
        lower_is_better: false,
        previous_score: in_use.recommendations_hit_rate,
    }
}

/// The tenant's engagements by hour.
pub fn tenant_hours(h: &Histories) -> Hours {
    Hours::of(
        h.persons
            .iter()
            .flat_map(|p| p.engagement_hours.iter().copied()),
    )
}

/// Scores every person of `h` as of local day `today` with the given models (texts by the
/// tenant's sentiment classifier where it has one, else by the rules); expected purchases
/// over `horizon_days`.
pub fn score(
    h: &Histories,
    today: i64,
    clv: Option<&ClvParams>,
    churn: Option<&Logistic>,
    texts: Option<&crate::sentiment::Classifier>,
    horizon_days: u32,
) -> Vec<Scores> {
    let tenant = tenant_hours(h);
    let today_customers: HashMap<usize, Customer> =
        customers_at(&h.persons, today).into_iter().collect();
    h.persons
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut s = Scores::default();
            if let (Some(m), Some(c)) = (clv, today_customers.get(&i)) {
                s.p_alive = Some(m.bg_nbd.p_alive(c));
                s.expected_purchases_90d = Some(m.bg_nbd.expected_purchases(c, 90.0));
                s.expected_purchases =
                    Some(m.bg_nbd.expected_purchases(c, f64::from(horizon_days)));
                s.clv_12m = Some(m.value(c));
            }
            if let (Some(m), Some(row)) = (churn, churn_row(p, today, clv))
                && m.features.len() == row.len()
            {
                s.churn_risk = Some(m.score(&row));
                s.churn_reasons = m.explain(&row).into_iter().take(3).collect();
            }
            s.best_time = Some(best_hour(
                &Hours::of(p.engagement_hours.iter().copied()),
                &tenant,
            ));
            let mean = |from: i64, to: i64| {
                let v: Vec<f64> = p
                    .texts
                    .iter()
                    .filter(|(d, _)| *d > from && *d <= to)
                    .map(|(_, t)| sentiment::judge(t, texts).0)
                    .collect();
                (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
            };
            s.sentiment_30d = mean(today - 30, today);
            s.sentiment_previous_30d = mean(today - 60, today - 30);
            s.texts = p.texts.len() as u32;
            s
        })
        .collect()
}

/// Trains every model on `h`, as of local day `today`, and scores every person with the
/// models that will be in use (the new version where it is not worse, else `in_use`).
/// `h` is expected to hold `opts.window_days` of history (the caller reads it).
pub fn train(h: &Histories, today: i64, in_use: &InUse, opts: &Options) -> Trained {
    let mut skipped = Vec::new();
    let clv = train_clv(h, today, in_use, opts.horizon_days)
        .map_err(|e| skipped.push(("clv".to_owned(), e)))
        .ok();
    let churn = train_churn(h, today, in_use)
        .map_err(|e| skipped.push(("churn".to_owned(), e)))
        .ok();
    let forecasts = train_forecasts(h, in_use);
    let recommender = train_recommender(h, in_use);
    let tenant_hours = Hours::of(
        h.persons
            .iter()
            .flat_map(|p| p.engagement_hours.iter().copied()),
    );
    let send_time = Outcome {
        metrics: json!({"engagements": tenant_hours.total(), "best_hour": best_hour(&Hours::default(), &tenant_hours).hour}),
        params: tenant_hours.clone(),
        score: None,
        lower_is_better: false,
        previous_score: None,
    };
    let clv_use = match &clv {
        Some(o) if o.better_or_equal() => Some(o.params.clone()),
        _ => in_use
            .clv
            .clone()
            .or_else(|| clv.as_ref().map(|o| o.params.clone())),
    };
    let churn_use = match &churn {
        Some(o) if o.better_or_equal() => Some(o.params.clone()),
        _ => in_use
            .churn
            .clone()
            .or_else(|| churn.as_ref().map(|o| o.params.clone())),
    };
    let scores = score(
        h,
        today,
        clv_use.as_ref(),
        churn_use.as_ref(),
        in_use.sentiment.as_ref(),
        opts.horizon_days,
    );
    Trained {
        today,
        first_day: h.days.first().map_or(today, |(d, _)| *d),
        clv,
        churn,
        forecasts,
        recommender,
        send_time,
        scores,
        skipped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn risk_summary_counts_the_persons_at_risk_and_their_value() {
        let score = |risk: Option<f64>, clv: Option<f64>| Scores {
            churn_risk: risk,
            clv_12m: clv,
            ..Scores::default()
        };
        let scores = [
            score(Some(0.05), Some(100.0)),
            score(Some(0.5), Some(40.0)),
            score(Some(0.93), None),
            score(Some(1.0), Some(10.0)),
            score(None, Some(7.0)),
            score(Some(f64::NAN), Some(1.0)),
        ];
        let s = risk_summary(&scores, 0.5);
        assert_eq!((s.scored, s.at_risk), (4, 3));
        assert_eq!(s.value_at_risk, 50.0);
        assert_eq!(s.value_total, 158.0);
        assert_eq!(s.mean_risk, Some((0.05 + 0.5 + 0.93 + 1.0) / 4.0));
        assert_eq!(s.bands, [1, 0, 0, 0, 0, 1, 0, 0, 0, 2]);
        // The bands always hold every scored person (a reference count per band).
        for t in [0.0, 0.3, 0.99] {
            let s = risk_summary(&scores, t);
            assert_eq!(s.bands.iter().sum::<usize>(), s.scored);
            let reference = scores
                .iter()
                .filter_map(|x| x.churn_risk.filter(|r| r.is_finite()))
                .filter(|r| *r >= t)
                .count();
            assert_eq!(s.at_risk, reference);
        }
        let none = risk_summary(&[], 0.5);
        assert_eq!((none.scored, none.mean_risk), (0, None));
    }
    use crate::history::DailyTotals;

    /// A shop of `n` persons over 200 days: regulars keep coming and buying; others stop
    /// after a while.
    fn shop(n: usize) -> Histories {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let mut persons = Vec::new();
        let mut totals: HashMap<i64, DailyTotals> = HashMap::new();
        for i in 0..n {
            let start = rng.random_range(0..100i64);
            let regular = i % 3 == 0;
            let stop = if regular {
                200
            } else {
                start + rng.random_range(5..120)
            };
            let mut p = PersonHistory {
                keys: vec![format!("u:p{i}")],
                ..Default::default()
            };
            for day in start..stop.min(200) {
                if rng.random::<f64>() < if regular { 0.3 } else { 0.15 } {
                    p.active_days.push(day);
                    let t = totals.entry(day).or_default();
                    t.active_persons += 1.0;
                    if rng.random::<f64>() < 0.3 {
                        let amount = 20.0 + rng.random::<f64>() * 30.0;
                        p.purchases.push((day, amount));
                        p.products.push((
                            format!("i{}", (i % 7) * 3 + rng.random_range(0..3)),
                            Action::Purchase,
                            None,
                        ));
                        t.revenue += amount;
                        t.orders += 1.0;
                    } else {
                        p.products.push((
                            format!("i{}", (i % 7) * 3 + rng.random_range(0..3)),
                            Action::View,
                            None,
                        ));
                    }
                    if rng.random::<f64>() < 0.2 {
                        p.engagement_hours.push(if regular { 9 } else { 19 });
                        p.engagement_days.push(day);
                    }
                }
            }
            if i % 10 == 1 {
                p.texts
                    .push((150, "the parcel arrived broken, terrible".into()));
            }
            persons.push(p);
        }
        let days = (0..200)
            .map(|d| (d, totals.get(&d).copied().unwrap_or_default()))
            .collect();
        Histories {
            persons,
            days,
            categories: Default::default(),
        }
    }

    #[test]
    fn trains_every_model_and_scores_everyone() {
        let h = shop(600);
        let t = train(&h, 199, &InUse::default(), &Options::default());
        assert!(t.skipped.is_empty(), "{:?}", t.skipped);
        let churn = t.churn.as_ref().expect("churn");
        let auc = churn.score.expect("an AUC");
        assert!(auc > 0.7, "{}", churn.metrics);
        assert!(t.clv.as_ref().expect("clv").score.is_some());
        assert_eq!(t.scores.len(), 600);
        // Regulars (i % 3 == 0) are less at risk than the others, on average.
        let risk = |f: &dyn Fn(usize) -> bool| {
            let v: Vec<f64> = (0..600)
                .filter(|&i| f(i))
                .filter_map(|i| t.scores[i].churn_risk)
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        assert!(risk(&|i| i % 3 == 0) < risk(&|i| i % 3 != 0));
        assert_eq!(t.scores[0].churn_reasons.len(), 3);
        assert_eq!(t.scores[0].best_time.expect("best time").hour, 9);
        assert!(t.scores[1].sentiment_30d.is_none() && t.scores[1].texts == 1);
        let daily: Vec<&SeriesForecast> = t
            .forecasts
            .params
            .iter()
            .filter(|f| f.interval == "day")
            .collect();
        assert_eq!(daily.len(), 3);
        assert_eq!(daily[0].forecast.point.len(), 30);
        assert!(t.recommender.score.is_some());
        // Judged again against itself, a version is never worse.
        let again = train(
            &h,
            199,
            &InUse {
                churn: Some(churn.params.clone()),
                clv: t.clv.as_ref().map(|c| c.params.clone()),
                ..Default::default()
            },
            &Options::default(),
        );
        assert!(again.churn.expect("churn").previous_score.is_some());
    }

    #[test]
    fn too_little_data_is_said_not_guessed() {
        let t = train(&shop(5), 199, &InUse::default(), &Options::default());
        let kinds: Vec<&str> = t.skipped.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(kinds, ["clv", "churn"]);
        assert!(
            t.scores
                .iter()
                .all(|s| s.churn_risk.is_none() && s.clv_12m.is_none())
        );
    }

    #[test]
    fn the_horizon_sets_the_holdout_and_the_expected_purchases() {
        let h = shop(600);
        let short = Options::new(200, 30).expect("valid");
        let t = train(&h, 199, &InUse::default(), &short);
        let clv = t.clv.as_ref().expect("clv");
        assert_eq!(clv.metrics["holdout_days"], 30);
        let long = train(&h, 199, &InUse::default(), &Options::default());
        assert_eq!(long.clv.as_ref().expect("clv").metrics["holdout_days"], 90);
        // Fewer purchases are expected in 30 days than in 90, for everyone with a value.
        let (mut compared, mut fewer) = (0, 0);
        for (a, b) in t.scores.iter().zip(&long.scores) {
            if let (Some(a), Some(b)) = (a.expected_purchases, b.expected_purchases) {
                compared += 1;
                fewer += usize::from(a < b || (a == 0.0 && b == 0.0));
            }
        }
        assert!(compared > 0 && fewer == compared, "{fewer} of {compared}");
    }

    #[test]
    fn options_out_of_range_are_refused() {
        assert_eq!(Options::new(730, 90), Ok(Options::default()));
        assert_eq!(Options::new(59, 7), Err(crate::Error::WindowDays(59)));
        assert_eq!(Options::new(3651, 90), Err(crate::Error::WindowDays(3651)));
        assert_eq!(Options::new(730, 6), Err(crate::Error::HorizonDays(6)));
        assert_eq!(Options::new(730, 366), Err(crate::Error::HorizonDays(366)));
        assert_eq!(
            Options::new(100, 60),
            Err(crate::Error::HorizonTooLong {
                horizon: 60,
                window: 100
            })
        );
    }
}
