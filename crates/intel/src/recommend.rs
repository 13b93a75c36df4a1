//! Product recommendations from implicit feedback: item-to-item collaborative filtering
//! over views, carts and purchases, "frequently bought together" from orders, and the most
//! popular items for persons with no history; and the offline measures that judge them
//! (hit rate and NDCG at k on held-out purchases).
//!
//! - A person's interest in an item is the largest weight of what they did with it (by
//!   default view 1, cart 3, purchase 5).
//! - Two items are similar by the cosine of their interest vectors over persons, shrunk
//!   when few persons know both (× n / (n + 3)), so that one person's two views do not
//!   outweigh what many bought together. The dot
//!   products are accumulated person by person over pairs of the person's items (at most
//!   the 50 they are most interested in, so that a few persons who looked at everything do
//!   not cost n²), and each item keeps its 50 nearest neighbours.
//! - A person's score for an item is `Σ interest(i) · similarity(i, item)` over the items
//!   they know; items they bought are not recommended again; the most popular items fill
//!   what is left of the list.
//! - Bought together: items in the same order, ranked by how many orders hold both, at
//!   least two.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

/// What a person did with an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    View,
    Cart,
    Purchase,
}

/// How much each action says about interest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Weights {
    pub view: f64,
    pub cart: f64,
    pub purchase: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            view: 1.0,
            cart: 3.0,
            purchase: 5.0,
        }
    }
}

impl Weights {
    fn of(&self, a: Action) -> f64 {
        match a {
            Action::View => self.view,
            Action::Cart => self.cart,
            Action::Purchase => self.purchase,
        }
    }
}

const ITEMS_PER_PERSON: usize = 50;
const NEIGHBOURS: usize = 50;
/// Similarities resting on few persons shrink: × n / (n + 3) for n persons who know both.
const SHRINK: f64 = 3.0;

/// A trained recommender. Items and persons are the caller's ids.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Recommender {
    /// Per item: its nearest items and their similarity, the nearest first.
    similar: HashMap<String, Vec<(String, f64)>>,
    /// Per item: the items bought with it and in how many orders, the most first.
    together: HashMap<String, Vec<(String, u32)>>,
    /// Items by popularity (total interest), the most popular first.
    popular: Vec<(String, f64)>,
}

/// One interaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Interaction<'a> {
    pub person: &'a str,
    pub item: &'a str,
    pub action: Action,
    /// The order it belongs to (purchases), for "bought together".
    pub order: Option<&'a str>,
}

impl Recommender {
    pub fn train<'a>(interactions: impl IntoIterator<Item = Interaction<'a>>, w: Weights) -> Self {
        let mut interest: HashMap<&str, HashMap<&str, f64>> = HashMap::new();
        let mut orders: HashMap<&str, HashSet<&str>> = HashMap::new();
        for x in interactions {
            let v = interest
                .entry(x.person)
                .or_default()
                .entry(x.item)
                .or_default();
            *v = v.max(w.of(x.action));
            if let (Action::Purchase, Some(o)) = (x.action, x.order) {
                orders.entry(o).or_default().insert(x.item);
            }
        }
        let mut norm: HashMap<&str, f64> = HashMap::new();
        let mut popularity: HashMap<&str, f64> = HashMap::new();
        // Per pair: the dot product, and how many persons know both.
        let mut dot: HashMap<(&str, &str), (f64, u32)> = HashMap::new();
        for items in interest.values() {
            let mut top: Vec<(&str, f64)> = items.iter().map(|(i, v)| (*i, *v)).collect();
            top.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
            top.truncate(ITEMS_PER_PERSON);
            for &(i, v) in &top {
                *norm.entry(i).or_default() += v * v;
                *popularity.entry(i).or_default() += v;
            }
            for (a, &(i, vi)) in top.iter().enumerate() {
                for &(j, vj) in &top[a + 1..] {
                    let key = if i < j { (i, j) } else { (j, i) };
                    let d = dot.entry(key).or_default();
                    d.0 += vi * vj;
                    d.1 += 1;
                }
            }
        }
        let mut similar: HashMap<String, Vec<(String, f64)>> = HashMap::new();
        for ((i, j), (d, both)) in dot {
            let both = f64::from(both);
            let s = d / (norm[i] * norm[j]).sqrt() * both / (both + SHRINK);
            similar
                .entry(i.to_owned())
                .or_default()
                .push((j.to_owned(), s));
            similar
                .entry(j.to_owned())
                .or_default()
                .push((i.to_owned(), s));
        }
        for v in similar.values_mut() {
            v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            v.truncate(NEIGHBOURS);
        }
        let mut pairs: HashMap<(&str, &str), u32> = HashMap::new();
        for items in orders.values() {
            let mut items: Vec<&str> = items.iter().copied().collect();
            items.sort_unstable();
            for (a, i) in items.iter().enumerate() {
                for j in &items[a + 1..] {
                    *pairs.entry((i, j)).or_default() += 1;
                }
            }
        }
        let mut together: HashMap<String, Vec<(String, u32)>> = HashMap::new();
        for ((i, j), n) in pairs.into_iter().filter(|&(_, n)| n >= 2) {
            together
                .entry(i.to_owned())
                .or_default()
                .push((j.to_owned(), n));
            together
                .entry(j.to_owned())
                .or_default()
                .push((i.to_owned(), n));
        }
        for v in together.values_mut() {
            v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            v.truncate(NEIGHBOURS);
        }
        let mut popular: Vec<(String, f64)> = popularity
            .into_iter()
            .map(|(i, v)| (i.to_owned(), v))
            .collect();
        popular.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Self {
            similar,
            together,
            popular,
        }
    }

    /// The items most similar to `item`.
    pub fn similar(&self, item: &str, k: usize) -> &[(String, f64)] {
        self.similar
            .get(item)
            .map_or(&[][..], |v| &v[..k.min(v.len())])
    }

    /// The items most often bought with `item`.
    pub fn bought_together(&self, item: &str, k: usize) -> &[(String, u32)] {
        self.together
            .get(item)
            .map_or(&[][..], |v| &v[..k.min(v.len())])
    }

    /// The most popular items.
    pub fn popular(&self, k: usize) -> impl Iterator<Item = &str> {
        self.popular.iter().take(k).map(|(i, _)| i.as_str())
    }

    /// `k` items for a person who did `history` (item, action): the items nearest to what
    /// they know, then the most popular; never what they bought.
    pub fn recommend(&self, history: &[(&str, Action)], w: Weights, k: usize) -> Vec<Scored> {
        let mut interest: HashMap<&str, f64> = HashMap::new();
        let mut bought: HashSet<&str> = HashSet::new();
        for &(item, a) in history {
            let v = interest.entry(item).or_default();
            *v = v.max(w.of(a));
            if a == Action::Purchase {
                bought.insert(item);
            }
        }
        let mut scores: HashMap<&str, f64> = HashMap::new();
        for (&i, &v) in &interest {
            for (j, s) in self.similar(i, NEIGHBOURS) {
                if !bought.contains(j.as_str()) {
                    *scores.entry(j.as_str()).or_default() += v * s;
                }
            }
        }
        let mut out: Vec<Scored> = scores
            .into_iter()
            .map(|(item, score)| Scored {
                item: item.to_owned(),
                score,
                reason: Reason::Similar,
            })
            .collect();
        out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item)));
        out.truncate(k);
        for (item, score) in &self.popular {
            if out.len() >= k {
                break;
            }
            if !bought.contains(item.as_str()) && !out.iter().any(|s| &s.item == item) {
                out.push(Scored {
                    item: item.clone(),
                    score: *score,
                    reason: Reason::Popular,
                });
            }
        }
        out
    }
}

/// A recommended item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub item: String,
    pub score: f64,
    pub reason: Reason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Near what the person viewed, carted or bought.
    Similar,
    /// Among the most popular items.
    Popular,
}

/// Hit rate at k and NDCG at k of ranked lists against one held-out item each: the share
/// of lists that hold it in their first k, and the mean of 1/log₂(rank + 1) over them.
pub fn hit_rate_and_ndcg(lists: &[(Vec<String>, String)], k: usize) -> (f64, f64) {
    if lists.is_empty() {
        return (0.0, 0.0);
    }
    let (mut hits, mut gain) = (0.0, 0.0);
    for (list, held) in lists {
        if let Some(r) = list.iter().take(k).position(|i| i == held) {
            hits += 1.0;
            gain += 1.0 / ((r + 2) as f64).log2();
        }
    }
    let n = lists.len() as f64;
    (hits / n, gain / n)
}

/// A generated shop for offline evaluation: `items` items in 20 categories; each person
/// likes two categories and browses, carts and buys mostly in them (one event in ten
/// anywhere). Events in time order per person: `(person, item, action)`.
pub fn synthetic_shop(persons: usize, items: usize, seed: u64) -> Vec<(String, String, Action)> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let categories = 20usize;
    let per = (items / categories).max(1);
    let mut out = Vec::new();
    for p in 0..persons {
        let likes = [
            rng.random_range(0..categories),
            rng.random_range(0..categories),
        ];
        let events = rng.random_range(3..30);
        for _ in 0..events {
            let category = if rng.random::<f64>() < 0.9 {
                likes[rng.random_range(0..2)]
            } else {
                rng.random_range(0..categories)
            };
            // Within a category, a few items are much more popular than the rest.
            let rank = ((rng.random::<f64>().powi(3)) * per as f64) as usize;
            let item = category * per + rank.min(per - 1);
            let r: f64 = rng.random();
            let action = if r < 0.6 {
                Action::View
            } else if r < 0.8 {
                Action::Cart
            } else {
                Action::Purchase
            };
            out.push((format!("p{p}"), format!("i{item}"), action));
        }
    }
    out
}

/// Each person's last purchase held out (persons with at least two), the model trained on
/// everything else: hit rate and NDCG at `k` of the recommender, then of the most popular
/// items alone.
pub fn evaluate(events: &[(String, String, Action)], k: usize) -> ((f64, f64), (f64, f64)) {
    let mut last: HashMap<&str, usize> = HashMap::new();
    let mut purchases: HashMap<&str, usize> = HashMap::new();
    for (i, (p, _, a)) in events.iter().enumerate() {
        if *a == Action::Purchase {
            last.insert(p, i);
            *purchases.entry(p).or_default() += 1;
        }
    }
    let held: HashSet<usize> = last
        .iter()
        .filter(|(p, _)| purchases[*p] >= 2)
        .map(|(_, &i)| i)
        .collect();
    let train = events
        .iter()
        .enumerate()
        .filter(|(i, _)| !held.contains(i))
        .map(|(_, (p, item, a))| Interaction {
            person: p,
            item,
            action: *a,
            order: None,
        });
    let w = Weights::default();
    let r = Recommender::train(train, w);
    let mut history: HashMap<&str, Vec<(&str, Action)>> = HashMap::new();
    for (i, (p, item, a)) in events.iter().enumerate() {
        if !held.contains(&i) {
            history.entry(p).or_default().push((item, *a));
        }
    }
    let (mut ours, mut popular) = (Vec::new(), Vec::new());
    let mut held: Vec<usize> = held.into_iter().collect();
    held.sort_unstable();
    for i in held {
        let (p, item, _) = &events[i];
        let h = history.get(p.as_str()).cloned().unwrap_or_default();
        let list = r.recommend(&h, w, k).into_iter().map(|s| s.item).collect();
        ours.push((list, item.clone()));
        let bought: HashSet<&str> = h
            .iter()
            .filter(|(_, a)| *a == Action::Purchase)
            .map(|(i, _)| *i)
            .collect();
        let top = r
            .popular
            .iter()
            .map(|(i, _)| i.clone())
            .filter(|i| !bought.contains(i.as_str()))
            .take(k)
            .collect();
        popular.push((top, item.clone()));
    }
    (hit_rate_and_ndcg(&ours, k), hit_rate_and_ndcg(&popular, k))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x<'a>(person: &'a str, item: &'a str, action: Action) -> Interaction<'a> {
        Interaction {
            person,
            item,
            action,
            order: None,
        }
    }

    #[test]
    fn similar_items_and_the_popular_fallback() {
        use Action::*;
        let data = [
            x("ann", "tent", Purchase),
            x("ann", "stove", Cart),
            x("bob", "tent", View),
            x("bob", "stove", Purchase),
            x("cy", "tent", Purchase),
            x("cy", "mat", View),
            x("dee", "novel", Purchase),
            x("eve", "novel", View),
            x("eve", "poems", Purchase),
        ];
        let r = Recommender::train(data, Weights::default());
        assert_eq!(r.similar("tent", 1)[0].0, "stove");
        assert_eq!(r.similar("novel", 5).len(), 1);
        // Someone who bought a tent gets the stove first, never the tent again.
        let recs = r.recommend(&[("tent", Purchase)], Weights::default(), 3);
        assert_eq!(recs[0].item, "stove");
        assert_eq!(recs[0].reason, Reason::Similar);
        assert!(recs.iter().all(|s| s.item != "tent"));
        assert_eq!(recs.len(), 3);
        // A new person gets the most popular items.
        let new = r.recommend(&[], Weights::default(), 2);
        assert_eq!(new[0].item, "tent");
        assert!(new.iter().all(|s| s.reason == Reason::Popular));
    }

    #[test]
    fn bought_together_counts_orders() {
        let order = |o: &'static str, item: &'static str| Interaction {
            person: "p",
            item,
            action: Action::Purchase,
            order: Some(o),
        };
        let data = [
            order("o1", "phone"),
            order("o1", "case"),
            order("o2", "phone"),
            order("o2", "case"),
            order("o2", "charger"),
            order("o3", "phone"),
            order("o3", "charger"),
            order("o4", "phone"),
            order("o4", "cable"),
        ];
        let r = Recommender::train(data, Weights::default());
        let t = r.bought_together("phone", 5);
        assert_eq!(t.len(), 2, "{t:?}");
        assert_eq!(t[0], ("case".to_owned(), 2));
        assert!(r.bought_together("cable", 5).is_empty());
    }

    #[test]
    fn beats_the_popular_items_on_held_out_purchases() {
        let events = synthetic_shop(3000, 1000, 5);
        let ((hr, ndcg), (hr_pop, ndcg_pop)) = evaluate(&events, 10);
        assert!(
            hr > 1.5 * hr_pop && ndcg > 1.5 * ndcg_pop,
            "ours {hr} {ndcg}, popular {hr_pop} {ndcg_pop}"
        );
    }

    #[test]
    fn measures() {
        let lists = vec![
            (vec!["a".to_owned(), "b".to_owned()], "a".to_owned()),
            (vec!["a".to_owned(), "b".to_owned()], "b".to_owned()),
            (vec!["a".to_owned()], "z".to_owned()),
        ];
        let (hr, ndcg) = hit_rate_and_ndcg(&lists, 10);
        assert!((hr - 2.0 / 3.0).abs() < 1e-12);
        assert!((ndcg - (1.0 + 1.0 / 3f64.log2()) / 3.0).abs() < 1e-12);
    }
}
