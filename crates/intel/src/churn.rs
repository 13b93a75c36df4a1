//! Churn risk: an L2-regularised logistic regression on behavioural features, trained with
//! the same L-BFGS as the lifetime-value models (a few dozen lines on top of it, instead of
//! the ndarray-based `linfa` stack), with each score explained by its features'
//! contributions; and the AUC that measures it.
//!
//! Features are standardised (mean 0, standard deviation 1 over the training rows), so the
//! weights compare with one another and the penalty treats them alike; the intercept is
//! not penalised. A score's explanation is each feature's term `wⱼ·zⱼ` of the log-odds: what
//! moved this person's risk away from an average person's.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::optim::{Objective, OptimError, minimize};

#[derive(Debug, thiserror::Error)]
pub enum ChurnError {
    #[error("no training rows")]
    NoRows,
    #[error("the training rows are all of one class: nothing to learn")]
    OneClass,
    #[error("row {0} has {1} features, the model {2}")]
    Width(usize, usize, usize),
    #[error("row {0} has a feature that is not a finite number")]
    NotFinite(usize),
    #[error(transparent)]
    Optim(#[from] OptimError),
}

/// A trained model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logistic {
    pub features: Vec<String>,
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
    pub weights: Vec<f64>,
    pub intercept: f64,
    /// The penalty it was trained with.
    pub l2: f64,
}

/// One feature's part in a score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    pub feature: String,
    /// The person's value.
    pub value: f64,
    /// Its term of the log-odds (positive: raises the risk).
    pub effect: f64,
}

struct Loss<'a> {
    z: &'a [Vec<f64>],
    y: &'a [bool],
    l2: f64,
}

fn sigmoid(t: f64) -> f64 {
    1.0 / (1.0 + (-t).exp())
}

/// ln(1 + eᵗ), without overflow.
fn softplus(t: f64) -> f64 {
    if t > 0.0 {
        t + (-t).exp().ln_1p()
    } else {
        t.exp().ln_1p()
    }
}

impl Loss<'_> {
    /// The log-odds of row `i` under `w` (intercept last).
    fn logit(&self, w: &[f64], i: usize) -> f64 {
        let k = w.len() - 1;
        w[k] + self.z[i]
            .iter()
            .zip(&w[..k])
            .map(|(x, w)| x * w)
            .sum::<f64>()
    }

    fn penalty(&self, w: &[f64]) -> f64 {
        let k = w.len() - 1;
        0.5 * self.l2 * w[..k].iter().map(|w| w * w).sum::<f64>()
    }
}

impl Objective for Loss<'_> {
    /// The mean negative log-likelihood plus the penalty.
    fn value(&self, w: &[f64]) -> f64 {
        let n = self.y.len() as f64;
        let nll: f64 = (0..self.y.len())
            .into_par_iter()
            .with_min_len(4096)
            .map(|i| {
                let t = self.logit(w, i);
                // −ln σ(t) for churners, −ln(1 − σ(t)) for the others.
                if self.y[i] { softplus(-t) } else { softplus(t) }
            })
            .sum();
        nll / n + self.penalty(w)
    }

    /// Both in one pass over the rows, on all cores.
    fn value_and_gradient(&self, w: &[f64]) -> (f64, Vec<f64>) {
        let n = self.y.len() as f64;
        let k = w.len() - 1;
        // Per row: the loss, then the gradient (features, then the intercept).
        let sums = (0..self.y.len())
            .into_par_iter()
            .with_min_len(4096)
            .fold(
                || vec![0.0; w.len() + 1],
                |mut acc, i| {
                    let t = self.logit(w, i);
                    let y = self.y[i];
                    acc[0] += if y { softplus(-t) } else { softplus(t) };
                    let err = sigmoid(t) - f64::from(u8::from(y));
                    for (a, x) in acc[1..=k].iter_mut().zip(&self.z[i]) {
                        *a += err * x;
                    }
                    acc[k + 1] += err;
                    acc
                },
            )
            .reduce(
                || vec![0.0; w.len() + 1],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                    a
                },
            );
        let mut g: Vec<f64> = sums[1..].iter().map(|v| v / n).collect();
        for j in 0..k {
            g[j] += self.l2 * w[j];
        }
        (sums[0] / n + self.penalty(w), g)
    }
}

impl Logistic {
    /// Trains on `rows` (one value per feature in `features`) and `churned` labels.
    pub fn train(
        features: Vec<String>,
        rows: &[Vec<f64>],
        churned: &[bool],
        l2: f64,
    ) -> Result<Self, ChurnError> {
        let k = features.len();
        if rows.is_empty() || rows.len() != churned.len() {
            return Err(ChurnError::NoRows);
        }
        for (i, r) in rows.iter().enumerate() {
            if r.len() != k {
                return Err(ChurnError::Width(i, r.len(), k));
            }
            if r.iter().any(|v| !v.is_finite()) {
                return Err(ChurnError::NotFinite(i));
            }
        }
        if churned.iter().all(|&c| c) || churned.iter().all(|&c| !c) {
            return Err(ChurnError::OneClass);
        }
        let n = rows.len() as f64;
        let mean: Vec<f64> = (0..k)
            .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
            .collect();
        let scale: Vec<f64> = (0..k)
            .map(|j| {
                let var = rows.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n;
                // A constant feature: left as it is (its weight stays 0 under the penalty).
                if var > 0.0 { var.sqrt() } else { 1.0 }
            })
            .collect();
        let z: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| (0..k).map(|j| (r[j] - mean[j]) / scale[j]).collect())
            .collect();
        let loss = Loss {
            z: &z,
            y: churned,
            l2,
        };
        let w = minimize(&loss, vec![0.0; k + 1])?.x;
        Ok(Self {
            features,
            mean,
            scale,
            weights: w[..k].to_vec(),
            intercept: w[k],
            l2,
        })
    }

    fn terms<'a>(&'a self, x: &'a [f64]) -> impl Iterator<Item = f64> + 'a {
        x.iter()
            .zip(&self.mean)
            .zip(&self.scale)
            .zip(&self.weights)
            .map(|(((x, m), s), w)| w * (x - m) / s)
    }

    /// The churn probability of a person with features `x`.
    pub fn score(&self, x: &[f64]) -> f64 {
        sigmoid(self.intercept + self.terms(x).sum::<f64>())
    }

    /// The features' parts in the score, the largest (in absolute value) first.
    pub fn explain(&self, x: &[f64]) -> Vec<Contribution> {
        let mut out: Vec<Contribution> = self
            .terms(x)
            .zip(&self.features)
            .zip(x)
            .map(|((effect, f), &value)| Contribution {
                feature: f.clone(),
                value,
                effect,
            })
            .collect();
        out.sort_by(|a, b| b.effect.abs().total_cmp(&a.effect.abs()));
        out
    }
}

/// The area under the ROC curve: the probability that a random positive scores above a
/// random negative (ties count half). `None` without both classes.
pub fn auc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len().min(positive.len())).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Mann-Whitney: the sum of the positives' ranks (ties get their mean rank).
    let (mut rank_sum, mut pos) = (0.0, 0usize);
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            if positive[o] {
                rank_sum += mid;
                pos += 1;
            }
        }
        i = j + 1;
    }
    let neg = order.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let (p, q) = (pos as f64, neg as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * q))
}

/// The features [`from_purchases`] builds, in order.
pub const PURCHASE_FEATURES: [&str; 7] = [
    "repeat_purchases",
    "time_since_last_purchase",
    "time_since_first_purchase",
    "mean_spend",
    "p_alive",
    "expected_purchases",
    "purchase_trend",
];

/// A labelled set of persons for training or judging a churn model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelledSet<K> {
    pub keys: Vec<K>,
    /// One row of [`PURCHASE_FEATURES`] per person.
    pub rows: Vec<Vec<f64>>,
    /// No purchase in the `horizon` days after the cutoff.
    pub churned: Vec<bool>,
    /// BG/NBD's probability that the person is alive at the cutoff.
    pub p_alive: Vec<f64>,
}

/// Each customer's features at `cutoff` from purchases `(customer, day, amount)` (times in
/// units of `unit_days`): the BG/NBD summary, P(alive) and the purchases it expects in the
/// next `horizon` days (from a BG/NBD fitted on the purchases up to the cutoff), and the
/// trend (purchase days in the last quarter of a year before the cutoff, less those in the
/// quarter before); labelled churned when they bought nothing in the `horizon` days after.
pub fn from_purchases<K: Ord + Clone + std::hash::Hash>(
    purchases: &[(K, i64, f64)],
    cutoff: i64,
    horizon: i64,
    unit_days: f64,
) -> Result<LabelledSet<K>, crate::clv::ClvError> {
    use std::collections::{BTreeSet, HashMap};
    let summary = crate::clv::summarize(purchases.iter().cloned(), cutoff, unit_days);
    let customers: Vec<crate::clv::Customer> = summary.iter().map(|(_, c)| *c).collect();
    let bg = crate::clv::BgNbd::fit(&customers)?.model;
    let mut days: HashMap<&K, BTreeSet<i64>> = HashMap::new();
    for (k, d, _) in purchases {
        days.entry(k).or_default().insert(*d);
    }
    let count = |k: &K, from: i64, to: i64| {
        days.get(k).map_or(0, |d| d.range(from + 1..=to).count()) as f64
    };
    let mut set = LabelledSet {
        keys: Vec::new(),
        rows: Vec::new(),
        churned: Vec::new(),
        p_alive: Vec::new(),
    };
    for (k, c) in summary {
        let alive = bg.p_alive(&c);
        set.rows.push(vec![
            f64::from(c.frequency),
            c.age - c.recency,
            c.age,
            c.monetary,
            alive,
            bg.expected_purchases(&c, horizon as f64 / unit_days),
            count(&k, cutoff - 91, cutoff) - count(&k, cutoff - 182, cutoff - 91),
        ]);
        set.churned.push(count(&k, cutoff, cutoff + horizon) == 0.0);
        set.p_alive.push(alive);
        set.keys.push(k);
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// AUC by its definition, over every pair.
    fn auc_pairs(s: &[f64], y: &[bool]) -> Option<f64> {
        let (mut wins, mut pairs) = (0.0, 0.0);
        for i in 0..s.len() {
            for j in 0..s.len() {
                if y[i] && !y[j] {
                    pairs += 1.0;
                    wins += if s[i] > s[j] {
                        1.0
                    } else if s[i] == s[j] {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
        }
        (pairs > 0.0).then(|| wins / pairs)
    }

    proptest! {
        #[test]
        fn auc_equals_its_definition(
            v in prop::collection::vec((0u8..6, any::<bool>()), 0..60),
        ) {
            let s: Vec<f64> = v.iter().map(|(s, _)| f64::from(*s)).collect();
            let y: Vec<bool> = v.iter().map(|(_, y)| *y).collect();
            let (a, b) = (auc(&s, &y), auc_pairs(&s, &y));
            prop_assert_eq!(a.is_some(), b.is_some());
            if let (Some(a), Some(b)) = (a, b) {
                prop_assert!((a - b).abs() < 1e-12, "{} {}", a, b);
            }
        }

        #[test]
        fn the_gradient_matches_finite_differences(
            rows in prop::collection::vec((prop::collection::vec(-3.0f64..3.0, 3), any::<bool>()), 2..40),
            w in prop::collection::vec(-2.0f64..2.0, 4),
            l2 in 0.0f64..1.0,
        ) {
            let z: Vec<Vec<f64>> = rows.iter().map(|(x, _)| x.clone()).collect();
            let y: Vec<bool> = rows.iter().map(|(_, y)| *y).collect();
            let loss = Loss { z: &z, y: &y, l2 };
            let (_, g) = loss.value_and_gradient(&w);
            let numeric = crate::optim::numeric_gradient(&loss, &w);
            for (fd, g) in numeric.iter().zip(&g) {
                prop_assert!((fd - g).abs() < 1e-6 * (1.0 + fd.abs()), "{} {}", fd, g);
            }
        }
    }

    #[test]
    fn learns_which_feature_drives_churn_and_says_so() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        // Churn depends on days since the last visit, not on the noise feature.
        let rows: Vec<Vec<f64>> = (0..2000)
            .map(|_| vec![rng.random::<f64>() * 90.0, rng.random::<f64>() * 10.0])
            .collect();
        let y: Vec<bool> = rows
            .iter()
            .map(|r| rng.random::<f64>() < sigmoid((r[0] - 45.0) / 10.0))
            .collect();
        let m = Logistic::train(
            vec!["days_since_last".into(), "noise".into()],
            &rows,
            &y,
            0.01,
        )
        .expect("trains");
        assert!(m.weights[0] > 1.0 && m.weights[1].abs() < 0.2, "{m:?}");
        let scores: Vec<f64> = rows.iter().map(|r| m.score(r)).collect();
        assert!(auc(&scores, &y).expect("both classes") > 0.85);
        let why = m.explain(&[85.0, 5.0]);
        assert_eq!(why[0].feature, "days_since_last");
        assert!(why[0].effect > 0.0 && m.score(&[85.0, 5.0]) > 0.9);
        assert!(matches!(
            Logistic::train(vec!["a".into()], &[vec![1.0]], &[true], 0.0),
            Err(ChurnError::OneClass)
        ));
    }
}
