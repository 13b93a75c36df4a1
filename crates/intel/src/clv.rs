//! Customer lifetime value: the BG/NBD model of repeat purchases and dropout (Fader, Hardie
//! & Lee 2005, "Counting Your Customers the Easy Way") and the Gamma-Gamma model of spend per
//! purchase (Fader, Hardie & Lee 2005, "RFM and CLV"), as the `lifetimes` library has them.
//!
//! - A customer is summarised by `frequency` (repeat purchases: purchase days after the
//!   first), `recency` (time from the first purchase to the last), `age` (`T`: time from the
//!   first purchase to the end of the calibration period) and `monetary` (mean spend of the
//!   repeat purchases), in any time unit; [`summarize`] builds them from purchases.
//! - Both models are fitted by maximum likelihood with L-BFGS over the logarithms of their
//!   parameters, with analytic gradients (a property test checks them against finite
//!   differences). Like `lifetimes`, BG/NBD is fitted on times scaled so the oldest customer
//!   is 10 units old, and `alpha` scaled back: the optimum is the same, the steps are better
//!   conditioned.
//! - The likelihood sums are this module's hot loop, written by hand: customers with the
//!   same summary are counted once with a weight, every term that depends only on the
//!   frequency (the log-gamma and digamma functions) is computed once per distinct
//!   frequency, and the rest is summed on all cores.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use statrs::function::gamma::{digamma, ln_gamma};

use crate::optim::{Objective, OptimError, minimize};

/// One customer's purchase summary.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    /// Repeat purchases (purchase periods after the first).
    pub frequency: u32,
    /// Time from the first purchase to the last.
    pub recency: f64,
    /// Time from the first purchase to the end of the period observed (`T`).
    pub age: f64,
    /// Mean spend of the repeat purchases (0 without any).
    pub monetary: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ClvError {
    #[error("no customers to fit")]
    NoCustomers,
    #[error("no customer with a repeat purchase and a positive spend: Gamma-Gamma needs some")]
    NoRepeatBuyers,
    #[error("invalid customer summary: {0}")]
    Invalid(String),
    #[error(transparent)]
    Optim(#[from] OptimError),
}

/// A fitted model, with what the fit reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fitted<M> {
    pub model: M,
    /// The mean log-likelihood per customer at the optimum.
    pub log_likelihood: f64,
    pub customers: usize,
    pub iterations: u64,
}

/// Purchases per customer and day: `(customer, day, amount)`, days counted from any origin.
/// Purchases on the same day are one purchase (their amounts added), as in `lifetimes`'
/// daily summaries; purchases after `end_day` are left out, and so are customers whose
/// first purchase is after it. Times are in units of `unit_days` days (7: weeks). Answers
/// the customers in the order of their keys.
pub fn summarize<K: Ord + Clone>(
    purchases: impl IntoIterator<Item = (K, i64, f64)>,
    end_day: i64,
    unit_days: f64,
) -> Vec<(K, Customer)> {
    let mut by: std::collections::BTreeMap<K, std::collections::BTreeMap<i64, f64>> =
        Default::default();
    for (k, day, amount) in purchases {
        if day <= end_day {
            *by.entry(k).or_default().entry(day).or_default() += amount;
        }
    }
    by.into_iter()
        .filter_map(|(k, days)| {
            let (&first, _) = days.first_key_value()?;
            let (&last, _) = days.last_key_value()?;
            let repeats: Vec<f64> = days.values().skip(1).copied().collect();
            let monetary = if repeats.is_empty() {
                0.0
            } else {
                repeats.iter().sum::<f64>() / repeats.len() as f64
            };
            Some((
                k,
                Customer {
                    frequency: repeats.len() as u32,
                    recency: (last - first) as f64 / unit_days,
                    age: (end_day - first) as f64 / unit_days,
                    monetary,
                },
            ))
        })
        .collect()
}

fn check(c: &Customer) -> Result<(), ClvError> {
    let ok = c.recency.is_finite()
        && c.age.is_finite()
        && c.monetary.is_finite()
        && c.recency >= 0.0
        && c.age >= c.recency
        && c.monetary >= 0.0
        && (c.frequency > 0 || c.recency == 0.0);
    if ok {
        Ok(())
    } else {
        Err(ClvError::Invalid(format!("{c:?}")))
    }
}

/// Customers with the same summary, counted once: columns, sorted by frequency.
#[derive(Debug, Default)]
struct Rows {
    x: Vec<u32>,
    tx: Vec<f64>,
    t: Vec<f64>,
    m: Vec<f64>,
    /// ln m (0 where m is 0).
    ln_m: Vec<f64>,
    w: Vec<f64>,
    /// Index of each row's frequency in `xs`.
    xi: Vec<u32>,
    xs: Vec<u32>,
    total: f64,
}

impl Rows {
    fn new(items: impl Iterator<Item = (u32, f64, f64, f64)>) -> Self {
        // Sorted, then equal summaries counted once (times are non-negative, so their bit
        // patterns sort as the numbers do).
        let mut keys: Vec<(u32, u64, u64, u64)> = items
            .map(|(x, tx, t, m)| (x, tx.to_bits(), t.to_bits(), m.to_bits()))
            .collect();
        keys.par_sort_unstable();
        let mut r = Rows::default();
        for k in keys {
            let (x, tx, t, m) = k;
            if r.x.last() == Some(&x)
                && r.tx.last().map(|v| v.to_bits()) == Some(tx)
                && r.t.last().map(|v| v.to_bits()) == Some(t)
                && r.m.last().map(|v| v.to_bits()) == Some(m)
            {
                if let Some(w) = r.w.last_mut() {
                    *w += 1.0;
                }
                r.total += 1.0;
                continue;
            }
            if r.xs.last() != Some(&x) {
                r.xs.push(x);
            }
            r.xi.push((r.xs.len() - 1) as u32);
            r.x.push(x);
            r.tx.push(f64::from_bits(tx));
            r.t.push(f64::from_bits(t));
            let m = f64::from_bits(m);
            r.m.push(m);
            r.ln_m.push(if m > 0.0 { m.ln() } else { 0.0 });
            r.w.push(1.0);
            r.total += 1.0;
        }
        r
    }

    /// `Σ w·f(row)` over all rows, for `K` sums at once, on all cores.
    fn sum<const K: usize>(&self, f: impl Fn(usize) -> [f64; K] + Sync) -> [f64; K] {
        (0..self.x.len())
            .into_par_iter()
            .with_min_len(8192)
            .fold(
                || [0.0; K],
                |mut acc, i| {
                    let v = f(i);
                    let w = self.w[i];
                    for k in 0..K {
                        acc[k] += w * v[k];
                    }
                    acc
                },
            )
            .reduce(
                || [0.0; K],
                |mut a, b| {
                    for k in 0..K {
                        a[k] += b[k];
                    }
                    a
                },
            )
    }
}

/// The BG/NBD model: while alive, a customer buys at a Poisson rate λ ~ Gamma(r, α); after
/// each purchase they drop out with probability p ~ Beta(a, b).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BgNbd {
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
}

/// The negative mean BG/NBD log-likelihood over `ln(r, α, a, b)`.
struct BgNbdObjective {
    rows: Rows,
}

/// Terms of the log-likelihood that depend on the frequency alone, with their derivatives.
struct PerFrequency {
    /// lnΓ(r+x) − lnΓ(r), and its derivative in r.
    g1: f64,
    d1r: f64,
    /// lnB(a, b+x) − lnB(a, b), and its derivatives in a and b.
    g2: f64,
    d2a: f64,
    d2b: f64,
    /// ln a − ln(b+x−1) (x > 0), and its derivative in b.
    c4: f64,
    d4b: f64,
}

impl BgNbdObjective {
    fn per_frequency(&self, p: &BgNbd, grad: bool) -> Vec<PerFrequency> {
        let (r, a, b) = (p.r, p.a, p.b);
        let (lg_r, lg_b, lg_ab) = (ln_gamma(r), ln_gamma(b), ln_gamma(a + b));
        let (dg_r, dg_b, dg_ab) = if grad {
            (digamma(r), digamma(b), digamma(a + b))
        } else {
            (0.0, 0.0, 0.0)
        };
        self.rows
            .xs
            .iter()
            .map(|&x| {
                let x = f64::from(x);
                let d = |v: f64| if grad { digamma(v) } else { 0.0 };
                let pos = x > 0.0;
                PerFrequency {
                    g1: ln_gamma(r + x) - lg_r,
                    d1r: d(r + x) - dg_r,
                    g2: lg_ab + ln_gamma(b + x) - lg_b - ln_gamma(a + b + x),
                    d2a: dg_ab - d(a + b + x),
                    d2b: dg_ab + d(b + x) - dg_b - d(a + b + x),
                    c4: if pos {
                        a.ln() - (b + x - 1.0).ln()
                    } else {
                        0.0
                    },
                    d4b: if pos { -1.0 / (b + x - 1.0) } else { 0.0 },
                }
            })
            .collect()
    }

    fn params(x: &[f64]) -> BgNbd {
        BgNbd {
            r: x[0].exp(),
            alpha: x[1].exp(),
            a: x[2].exp(),
            b: x[3].exp(),
        }
    }
}

impl Objective for BgNbdObjective {
    fn value(&self, x: &[f64]) -> f64 {
        let p = Self::params(x);
        let per = self.per_frequency(&p, false);
        let ln_alpha = p.alpha.ln();
        let rows = &self.rows;
        let [ll] = rows.sum(|i| {
            let f = &per[rows.xi[i] as usize];
            let rx = p.r + f64::from(rows.x[i]);
            let a3 = -rx * (p.alpha + rows.t[i]).ln();
            let tail = if rows.x[i] > 0 {
                let a4 = f.c4 - rx * (p.alpha + rows.tx[i]).ln();
                log_add(a3, a4)
            } else {
                a3
            };
            [f.g1 + p.r * ln_alpha + f.g2 + tail]
        });
        -ll / rows.total
    }

    fn value_and_gradient(&self, x: &[f64]) -> (f64, Vec<f64>) {
        let p = Self::params(x);
        let per = self.per_frequency(&p, true);
        let ln_alpha = p.alpha.ln();
        let rows = &self.rows;
        let [ll, dr, dalpha, da, db] = rows.sum(|i| {
            let f = &per[rows.xi[i] as usize];
            let rx = p.r + f64::from(rows.x[i]);
            let l_t = (p.alpha + rows.t[i]).ln();
            let a3 = -rx * l_t;
            let a1 = f.g1 + p.r * ln_alpha + f.g2;
            let mut dr = f.d1r + ln_alpha;
            let mut dalpha = p.r / p.alpha;
            if rows.x[i] > 0 {
                let l_tx = (p.alpha + rows.tx[i]).ln();
                let a4 = f.c4 - rx * l_tx;
                let tail = log_add(a3, a4);
                let w3 = (a3 - tail).exp();
                let w4 = (a4 - tail).exp();
                dr -= w3 * l_t + w4 * l_tx;
                dalpha -= w3 * rx / (p.alpha + rows.t[i]) + w4 * rx / (p.alpha + rows.tx[i]);
                [a1 + tail, dr, dalpha, f.d2a + w4 / p.a, f.d2b + w4 * f.d4b]
            } else {
                dr -= l_t;
                dalpha -= rx / (p.alpha + rows.t[i]);
                [a1 + a3, dr, dalpha, f.d2a, f.d2b]
            }
        });
        let n = rows.total;
        // d/d(ln θ) = θ · d/dθ.
        (
            -ll / n,
            vec![
                -dr * p.r / n,
                -dalpha * p.alpha / n,
                -da * p.a / n,
                -db * p.b / n,
            ],
        )
    }
}

/// ln(eᵃ + eᵇ), without overflow.
fn log_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp().ln_1p()
}

impl BgNbd {
    /// Fits the model to `customers` (their `monetary` is not used).
    pub fn fit(customers: &[Customer]) -> Result<Fitted<BgNbd>, ClvError> {
        if customers.is_empty() {
            return Err(ClvError::NoCustomers);
        }
        customers.iter().try_for_each(check)?;
        let oldest = customers.iter().map(|c| c.age).fold(0.0, f64::max);
        let scale = if oldest > 0.0 { 10.0 / oldest } else { 1.0 };
        let objective = BgNbdObjective {
            rows: Rows::new(
                customers
                    .iter()
                    .map(|c| (c.frequency, c.recency * scale, c.age * scale, 0.0)),
            ),
        };
        let m = minimize(&objective, vec![0.0; 4])?;
        let mut model = BgNbdObjective::params(&m.x);
        model.alpha /= scale;
        let n = customers.len();
        // The log-likelihood on the original times: the scaled one less Σ x·ln(scale).
        let repeats: f64 = customers.iter().map(|c| f64::from(c.frequency)).sum();
        Ok(Fitted {
            model,
            log_likelihood: -m.value + repeats * scale.ln() / n as f64,
            customers: n,
            iterations: m.iterations,
        })
    }

    /// The log-likelihood of one customer.
    pub fn log_likelihood(&self, c: &Customer) -> f64 {
        let x = f64::from(c.frequency);
        let rx = self.r + x;
        let a1 = ln_gamma(rx) - ln_gamma(self.r) + self.r * self.alpha.ln();
        let a2 = ln_gamma(self.a + self.b) + ln_gamma(self.b + x)
            - ln_gamma(self.b)
            - ln_gamma(self.a + self.b + x);
        let a3 = -rx * (self.alpha + c.age).ln();
        if c.frequency == 0 {
            return a1 + a2 + a3;
        }
        let a4 = self.a.ln() - (self.b + x - 1.0).ln() - rx * (self.alpha + c.recency).ln();
        a1 + a2 + log_add(a3, a4)
    }

    /// The odds that the customer dropped out after their last purchase, relative to being
    /// alive (0 without repeat purchases).
    fn dropout_odds(&self, c: &Customer) -> f64 {
        if c.frequency == 0 {
            return 0.0;
        }
        let x = f64::from(c.frequency);
        let ratio = ((self.alpha + c.age).ln() - (self.alpha + c.recency).ln()) * (self.r + x);
        self.a / (self.b + x - 1.0) * ratio.exp()
    }

    /// The probability that the customer is still alive at the end of the period.
    pub fn p_alive(&self, c: &Customer) -> f64 {
        1.0 / (1.0 + self.dropout_odds(c))
    }

    /// The expected number of purchases in the next `t` units.
    pub fn expected_purchases(&self, c: &Customer, t: f64) -> f64 {
        if t <= 0.0 {
            return 0.0;
        }
        let x = f64::from(c.frequency);
        let (r, alpha, a, b) = (self.r, self.alpha, self.a, self.b);
        let rx = r + x;
        let z = t / (alpha + c.age + t);
        let lead = (a + b + x - 1.0) / (a - 1.0);
        let decay = (rx * ((alpha + c.age).ln() - (alpha + c.age + t).ln())).exp();
        let bracket = 1.0 - decay * hyp2f1(rx, b + x, a + b + x - 1.0, z);
        lead * bracket / (1.0 + self.dropout_odds(c))
    }

    /// The expected number of purchases of a new customer in their first `t` units.
    pub fn expected_purchases_new(&self, t: f64) -> f64 {
        if t <= 0.0 {
            return 0.0;
        }
        let (r, alpha, a, b) = (self.r, self.alpha, self.a, self.b);
        let decay = (r * (alpha.ln() - (alpha + t).ln())).exp();
        (a + b - 1.0) / (a - 1.0) * (1.0 - decay * hyp2f1(r, b, a + b - 1.0, t / (alpha + t)))
    }
}

/// The Gauss hypergeometric function ₂F₁(a, b; c; z) for 0 ≤ z < 1, by its series (the models
/// call it with z = t / (α + T + t): it converges fast for horizons near the history's
/// length; at most 100,000 terms).
pub fn hyp2f1(a: f64, b: f64, c: f64, z: f64) -> f64 {
    let mut term = 1.0;
    let mut sum = 1.0;
    for k in 0..100_000 {
        let k = f64::from(k);
        term *= (a + k) * (b + k) / ((c + k) * (k + 1.0)) * z;
        sum += term;
        if term.abs() <= 1e-16 * sum.abs() {
            break;
        }
    }
    sum
}

/// The Gamma-Gamma model of spend: a customer's purchases are Gamma(p, ν) in amount, with
/// ν ~ Gamma(q, v) across customers (independent of how often they buy).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GammaGamma {
    pub p: f64,
    pub q: f64,
    pub v: f64,
}

/// The negative mean Gamma-Gamma log-likelihood over `ln(p, q, v)`; rows have x > 0, m > 0.
struct GammaGammaObjective {
    rows: Rows,
}

impl GammaGammaObjective {
    fn params(x: &[f64]) -> GammaGamma {
        GammaGamma {
            p: x[0].exp(),
            q: x[1].exp(),
            v: x[2].exp(),
        }
    }

    /// Per distinct frequency: lnΓ(px+q) − lnΓ(px), ψ(px+q) − ψ(px), ψ(px+q), ln x.
    fn per_frequency(&self, g: &GammaGamma, grad: bool) -> Vec<[f64; 4]> {
        self.rows
            .xs
            .iter()
            .map(|&x| {
                let px = g.p * f64::from(x);
                let lg = ln_gamma(px + g.q) - ln_gamma(px);
                let ln_x = f64::from(x).ln();
                if grad {
                    let d = digamma(px + g.q);
                    [lg, d - digamma(px), d, ln_x]
                } else {
                    [lg, 0.0, 0.0, ln_x]
                }
            })
            .collect()
    }
}

impl Objective for GammaGammaObjective {
    fn value(&self, x: &[f64]) -> f64 {
        let g = Self::params(x);
        let per = self.per_frequency(&g, false);
        let (lg_q, ln_v) = (ln_gamma(g.q), g.v.ln());
        let rows = &self.rows;
        let [ll] = rows.sum(|i| {
            let x = f64::from(rows.x[i]);
            let (m, px) = (rows.m[i], g.p * f64::from(rows.x[i]));
            [
                per[rows.xi[i] as usize][0] - lg_q + g.q * ln_v + (px - 1.0) * m.ln() + px * x.ln()
                    - (px + g.q) * (x * m + g.v).ln(),
            ]
        });
        -ll / rows.total
    }

    fn value_and_gradient(&self, x: &[f64]) -> (f64, Vec<f64>) {
        let g = Self::params(x);
        let per = self.per_frequency(&g, true);
        let (lg_q, dg_q, ln_v) = (ln_gamma(g.q), digamma(g.q), g.v.ln());
        let rows = &self.rows;
        let [ll, dp, dq, dv] = rows.sum(|i| {
            let f = &per[rows.xi[i] as usize];
            let x = f64::from(rows.x[i]);
            let (m, px) = (rows.m[i], g.p * x);
            let (ln_m, ln_x, ln_xmv) = (rows.ln_m[i], f[3], (x * m + g.v).ln());
            [
                f[0] - lg_q + g.q * ln_v + (px - 1.0) * ln_m + px * ln_x - (px + g.q) * ln_xmv,
                x * (f[1] + ln_m + ln_x - ln_xmv),
                f[2] - dg_q + ln_v - ln_xmv,
                g.q / g.v - (px + g.q) / (x * m + g.v),
            ]
        });
        let n = rows.total;
        (-ll / n, vec![-dp * g.p / n, -dq * g.q / n, -dv * g.v / n])
    }
}

impl GammaGamma {
    /// Fits the model to the customers with repeat purchases and a positive mean spend (the
    /// others say nothing about spend per repeat purchase).
    pub fn fit(customers: &[Customer]) -> Result<Fitted<GammaGamma>, ClvError> {
        customers.iter().try_for_each(check)?;
        let buyers = customers
            .iter()
            .filter(|c| c.frequency > 0 && c.monetary > 0.0);
        let rows = Rows::new(buyers.map(|c| (c.frequency, 0.0, 0.0, c.monetary)));
        if rows.x.is_empty() {
            return Err(ClvError::NoRepeatBuyers);
        }
        let n = rows.total as usize;
        let objective = GammaGammaObjective { rows };
        let m = minimize(&objective, vec![0.0; 3])?;
        Ok(Fitted {
            model: GammaGammaObjective::params(&m.x),
            log_likelihood: -m.value,
            customers: n,
            iterations: m.iterations,
        })
    }

    /// The expected mean spend of the customer's future purchases: their own mean, shrunk
    /// towards the population's by how few purchases it rests on.
    pub fn expected_spend(&self, c: &Customer) -> f64 {
        let x = f64::from(c.frequency);
        if c.frequency == 0 || c.monetary <= 0.0 {
            return self.p * self.v / (self.q - 1.0);
        }
        self.p * (self.v + x * c.monetary) / (self.p * x + self.q - 1.0)
    }
}

/// The customer's expected value over the next `months`, each month's expected purchases
/// times the expected spend, discounted by `monthly_discount` per month (as `lifetimes`'
/// `customer_lifetime_value`). `units_per_month`: the models' time unit (30 for days, 4.345
/// for weeks).
pub fn lifetime_value(
    bg: &BgNbd,
    gg: &GammaGamma,
    c: &Customer,
    months: u32,
    monthly_discount: f64,
    units_per_month: f64,
) -> f64 {
    let spend = gg.expected_spend(c);
    let mut value = 0.0;
    let mut before = 0.0;
    for i in 1..=months {
        let upto = bg.expected_purchases(c, f64::from(i) * units_per_month);
        value += spend * (upto - before) / (1.0 + monthly_discount).powi(i as i32);
        before = upto;
    }
    value
}

/// Customers drawn from the two models (for tests and benchmarks): each is observed for a
/// time uniform in `[0, horizon)` after their first purchase; while alive they buy at
/// their rate, and after each repeat purchase drop out with their probability; each
/// purchase's amount is Gamma(p, ν) with their ν.
pub fn simulate(bg: &BgNbd, gg: &GammaGamma, n: usize, horizon: f64, seed: u64) -> Vec<Customer> {
    simulate_holdout(bg, gg, n, horizon, 0.0, seed)
        .into_iter()
        .map(|(c, _)| c)
        .collect()
}

/// As [`simulate`], and each customer's purchases in the `holdout` time after the period
/// observed (what a churn label or a forecast is checked against).
pub fn simulate_holdout(
    bg: &BgNbd,
    gg: &GammaGamma,
    n: usize,
    horizon: f64,
    holdout: f64,
    seed: u64,
) -> Vec<(Customer, u32)> {
    use rand::{Rng, SeedableRng};
    use rand_distr::{Beta, Distribution, Exp, Gamma};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (Ok(rate), Ok(drop), Ok(nu)) = (
        Gamma::new(bg.r, 1.0 / bg.alpha),
        Beta::new(bg.a, bg.b),
        Gamma::new(gg.q, 1.0 / gg.v),
    ) else {
        return Vec::new();
    };
    (0..n)
        .map(|_| {
            let age = rng.random::<f64>() * horizon;
            let (lambda, p, nu) = (
                rate.sample(&mut rng),
                drop.sample(&mut rng),
                nu.sample(&mut rng),
            );
            let none = Customer {
                frequency: 0,
                recency: 0.0,
                age,
                monetary: 0.0,
            };
            let (Ok(gap), Ok(amount)) = (Exp::new(lambda.max(1e-12)), Gamma::new(gg.p, 1.0 / nu))
            else {
                return (none, 0);
            };
            let (mut t, mut x, mut last, mut spent, mut later) = (0.0, 0u32, 0.0, 0.0, 0u32);
            // Alive at the first purchase; a dropout may follow each repeat purchase.
            loop {
                t += gap.sample(&mut rng);
                if t >= age + holdout {
                    break;
                }
                if t >= age {
                    later += 1;
                } else {
                    x += 1;
                    last = t;
                    spent += amount.sample(&mut rng);
                }
                if rng.random::<f64>() < p {
                    break;
                }
            }
            let c = Customer {
                frequency: x,
                recency: last,
                age,
                monetary: if x > 0 { spent / f64::from(x) } else { 0.0 },
            };
            (c, later)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn customers() -> impl Strategy<Value = Vec<Customer>> {
        prop::collection::vec(
            (0u32..20, 0.0f64..1.0, 1.0f64..50.0, 1.0f64..100.0).prop_map(|(x, f, t, m)| {
                Customer {
                    frequency: x,
                    recency: if x == 0 { 0.0 } else { f * t },
                    age: t,
                    monetary: if x == 0 { 0.0 } else { m },
                }
            }),
            1..60,
        )
    }

    /// The analytic gradient (and value) of `f` at `x` agree with central differences.
    fn gradient_agrees(f: &dyn Objective, x: &[f64]) -> Result<(), TestCaseError> {
        let (v, g) = f.value_and_gradient(x);
        prop_assert!(close(v, f.value(x)));
        let fd = crate::optim::numeric_gradient(f, x);
        for (a, b) in g.iter().zip(&fd) {
            prop_assert!(close(*a, *b), "analytic {g:?} numeric {fd:?}");
        }
        Ok(())
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-5 * (1.0 + a.abs().max(b.abs()))
    }

    proptest! {
        #[test]
        fn bg_nbd_gradient_matches_finite_differences(
            cs in customers(),
            x in prop::collection::vec(-1.5f64..1.5, 4),
        ) {
            let f = BgNbdObjective {
                rows: Rows::new(cs.iter().map(|c| (c.frequency, c.recency, c.age, 0.0))),
            };
            gradient_agrees(&f, &x)?;
        }

        #[test]
        fn gamma_gamma_gradient_matches_finite_differences(
            cs in customers(),
            x in prop::collection::vec(-1.0f64..2.0, 3),
        ) {
            let rows = Rows::new(
                cs.iter()
                    .filter(|c| c.frequency > 0)
                    .map(|c| (c.frequency, 0.0, 0.0, c.monetary)),
            );
            prop_assume!(!rows.x.is_empty());
            gradient_agrees(&GammaGammaObjective { rows }, &x)?;
        }

        #[test]
        fn the_likelihood_does_not_depend_on_the_order_of_customers(
            cs in customers(),
            x in prop::collection::vec(-1.0f64..1.0, 4),
        ) {
            let f = |cs: &[Customer]| BgNbdObjective {
                rows: Rows::new(cs.iter().map(|c| (c.frequency, c.recency, c.age, 0.0))),
            }
            .value(&x);
            let mut rev = cs.clone();
            rev.reverse();
            prop_assert!(close(f(&cs), f(&rev)));
            // And it is the mean of the customers' own log-likelihoods.
            let p = BgNbdObjective::params(&x);
            let mean = cs.iter().map(|c| p.log_likelihood(c)).sum::<f64>() / cs.len() as f64;
            prop_assert!(close(-f(&cs), mean));
        }
    }

    #[test]
    fn fits_recover_the_parameters_customers_were_drawn_with() {
        let bg = BgNbd {
            r: 0.5,
            alpha: 6.0,
            a: 0.8,
            b: 2.5,
        };
        let gg = GammaGamma {
            p: 6.0,
            q: 4.0,
            v: 15.0,
        };
        let cs = simulate(&bg, &gg, 40_000, 52.0, 7);
        let fit = BgNbd::fit(&cs).expect("fits").model;
        let near = |x: f64, y: f64, tol: f64| (x / y - 1.0).abs() < tol;
        assert!(
            near(fit.r, bg.r, 0.1) && near(fit.alpha, bg.alpha, 0.15),
            "{fit:?}"
        );
        assert!(near(fit.a, bg.a, 0.25) && near(fit.b, bg.b, 0.3), "{fit:?}");
        let g = GammaGamma::fit(&cs).expect("fits").model;
        // The mean spend p·v/(q−1) is what the data pin down best.
        let mean = |m: &GammaGamma| m.p * m.v / (m.q - 1.0);
        assert!(near(mean(&g), mean(&gg), 0.05), "{g:?}");
        assert!(near(g.p, gg.p, 0.15) && near(g.q, gg.q, 0.25), "{g:?}");
    }

    #[test]
    fn hyp2f1_matches_closed_forms() {
        // ₂F₁(1, 1; 2; z) = −ln(1 − z) / z; ₂F₁(a, b; b; z) = (1 − z)^−a.
        for z in [0.01, 0.3, 0.7, 0.95] {
            assert!(close(hyp2f1(1.0, 1.0, 2.0, z), -(1.0 - z).ln() / z));
            assert!(close(hyp2f1(2.5, 1.5, 1.5, z), (1.0 - z).powf(-2.5)));
        }
    }

    #[test]
    fn predictions_behave() {
        let m = BgNbd {
            r: 0.2426,
            alpha: 4.4135,
            a: 0.7929,
            b: 2.4258,
        };
        let once = Customer {
            frequency: 0,
            recency: 0.0,
            age: 38.86,
            monetary: 0.0,
        };
        assert_eq!(m.p_alive(&once), 1.0);
        let lapsed = Customer {
            frequency: 5,
            recency: 5.0,
            age: 38.86,
            monetary: 20.0,
        };
        let active = Customer {
            recency: 38.0,
            ..lapsed
        };
        assert!(m.p_alive(&lapsed) < 0.2 && m.p_alive(&active) > 0.8);
        assert!(m.expected_purchases(&active, 10.0) > m.expected_purchases(&lapsed, 10.0));
        let mut last = 0.0;
        for t in [1.0, 10.0, 52.0, 104.0] {
            let e = m.expected_purchases(&active, t);
            assert!(e > last);
            last = e;
        }
        // E[X(t)] of a new customer, by the closed form and by its definition as the
        // conditional expectation of a customer with nothing yet (x = 0, T = 0).
        let new = Customer {
            frequency: 0,
            recency: 0.0,
            age: 0.0,
            monetary: 0.0,
        };
        assert!(close(
            m.expected_purchases_new(39.0),
            m.expected_purchases(&new, 39.0)
        ));
    }

    #[test]
    fn summaries_count_days_not_purchases() {
        let s = summarize(
            [
                ("a", 0, 10.0),
                ("a", 0, 5.0),
                ("a", 14, 20.0),
                ("a", 28, 30.0),
                ("a", 40, 99.0),
                ("b", 7, 12.0),
                ("c", 50, 1.0),
            ],
            35,
            7.0,
        );
        assert_eq!(
            s,
            [
                (
                    "a",
                    Customer {
                        frequency: 2,
                        recency: 4.0,
                        age: 5.0,
                        monetary: 25.0
                    }
                ),
                (
                    "b",
                    Customer {
                        frequency: 0,
                        recency: 0.0,
                        age: 4.0,
                        monetary: 0.0
                    }
                ),
            ]
        );
    }
}
