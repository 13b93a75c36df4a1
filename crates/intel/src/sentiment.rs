//! Sentiment of customer messages: a lexicon-and-rules scorer in the manner of VADER (Hutto
//! & Gilbert 2014), and a per-tenant naive Bayes classifier trained from labelled examples.
//!
//! The scorer uses VADER's word and emoji lexicons (from the `vader_sentiment` crate, MIT)
//! and applies its rules here: words in capitals among words that are not, boosters and
//! dampeners in the three words before a sentiment word (weaker with distance), negations
//! in the same window (the valence flips and shrinks, ×−0.74), a contrast (`but`: what
//! comes before counts half, what follows one and a half), exclamation and question marks,
//! and emoji read as their descriptions. The sum is normalised to a `compound` score in
//! [−1, 1] (x / √(x² + 15)); `positive`, `negative` and `neutral` are the shares of the text.
//! By VADER's convention a compound of 0.05 or more is positive and −0.05 or less negative.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// A text's scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sentiment {
    pub compound: f64,
    pub positive: f64,
    pub negative: f64,
    pub neutral: f64,
}

impl Sentiment {
    pub fn label(&self) -> &'static str {
        if self.compound >= 0.05 {
            "positive"
        } else if self.compound <= -0.05 {
            "negative"
        } else {
            "neutral"
        }
    }
}

const BOOST: f64 = 0.293;
const CAPS: f64 = 0.733;
const NEGATE: f64 = -0.74;

const BOOSTERS: &[&str] = &[
    "absolutely",
    "amazingly",
    "awfully",
    "completely",
    "considerably",
    "decidedly",
    "deeply",
    "effing",
    "enormously",
    "entirely",
    "especially",
    "exceptionally",
    "extremely",
    "fabulously",
    "flipping",
    "flippin",
    "fricking",
    "frickin",
    "frigging",
    "friggin",
    "fully",
    "fucking",
    "greatly",
    "hella",
    "highly",
    "hugely",
    "incredibly",
    "intensely",
    "majorly",
    "more",
    "most",
    "particularly",
    "purely",
    "quite",
    "really",
    "remarkably",
    "so",
    "substantially",
    "thoroughly",
    "totally",
    "tremendously",
    "uber",
    "unbelievably",
    "unusually",
    "utterly",
    "very",
];

const DAMPENERS: &[&str] = &[
    "almost",
    "barely",
    "hardly",
    "kinda",
    "kindof",
    "kind-of",
    "less",
    "little",
    "marginally",
    "occasionally",
    "partly",
    "scarcely",
    "slightly",
    "somewhat",
    "sorta",
    "sortof",
    "sort-of",
];

const NEGATIONS: &[&str] = &[
    "aint", "arent", "cannot", "cant", "couldnt", "darent", "didnt", "doesnt", "dont", "hadnt",
    "hasnt", "havent", "isnt", "mightnt", "mustnt", "neither", "neednt", "never", "none", "nope",
    "nor", "not", "nothing", "nowhere", "oughtnt", "shant", "shouldnt", "uhuh", "wasnt", "werent",
    "without", "wont", "wouldnt", "rarely", "seldom", "despite", "uh-uh",
];

/// VADER's word lexicon, lower-cased.
fn lexicon() -> &'static HashMap<String, f64> {
    static L: OnceLock<HashMap<String, f64>> = OnceLock::new();
    L.get_or_init(|| {
        vader_sentiment::LEXICON
            .iter()
            .map(|(k, v)| (k.to_lowercase(), *v))
            .collect()
    })
}

fn emoji() -> &'static HashMap<char, &'static str> {
    static E: OnceLock<HashMap<char, &'static str>> = OnceLock::new();
    E.get_or_init(|| {
        vader_sentiment::EMOJI_LEXICON
            .iter()
            .filter_map(|(k, v)| {
                let mut c = k.chars();
                match (c.next(), c.next()) {
                    (Some(ch), None) => Some((ch, *v)),
                    _ => None,
                }
            })
            .collect()
    })
}

fn is_negation(w: &str) -> bool {
    let w = w.to_lowercase();
    NEGATIONS.contains(&w.replace('\'', "").as_str()) || w.contains("n't")
}

/// A token's letters are all capitals (and it has some).
fn is_caps(w: &str) -> bool {
    w.chars().any(char::is_alphabetic) && w.chars().all(|c| !c.is_alphabetic() || c.is_uppercase())
}

/// The booster's push on a valence of the sign of `valence`.
fn boost(word: &str, valence: f64, caps_differ: bool) -> f64 {
    let lower = word.to_lowercase();
    let mut s = if BOOSTERS.contains(&lower.as_str()) {
        BOOST
    } else if DAMPENERS.contains(&lower.as_str()) {
        -BOOST
    } else {
        return 0.0;
    };
    if valence < 0.0 {
        s = -s;
    }
    if is_caps(word) && caps_differ {
        s += if valence > 0.0 { CAPS } else { -CAPS };
    }
    s
}

/// Scores `text`.
pub fn score(text: &str) -> Sentiment {
    // Emoji become their descriptions.
    let mut expanded = String::with_capacity(text.len());
    for c in text.chars() {
        match emoji().get(&c) {
            Some(d) => {
                expanded.push(' ');
                expanded.push_str(d);
                expanded.push(' ');
            }
            None => expanded.push(c),
        }
    }
    let lex = lexicon();
    // Punctuation is stripped from a word's ends unless that leaves two characters or
    // fewer: emoticons (`:)`, `:D`) stay whole.
    let words: Vec<&str> = expanded
        .split_whitespace()
        .map(|t| {
            let s = t.trim_matches(|c: char| c.is_ascii_punctuation());
            if s.chars().count() <= 2 { t } else { s }
        })
        .filter(|w| !w.is_empty())
        .collect();
    let caps = words.iter().filter(|w| is_caps(w)).count();
    let caps_differ = caps > 0 && caps < words.len();
    let lower: Vec<String> = words.iter().map(|w| w.to_lowercase()).collect();
    let mut valences = vec![0.0; words.len()];
    for i in 0..words.len() {
        let w = lower[i].as_str();
        // Boosters carry no sentiment of their own; nor does `kind` in `kind of`.
        if BOOSTERS.contains(&w) || (w == "kind" && lower.get(i + 1).is_some_and(|n| n == "of")) {
            continue;
        }
        let Some(&base) = lex.get(w) else {
            continue;
        };
        let mut v = base;
        if is_caps(words[i]) && caps_differ {
            v += if v > 0.0 { CAPS } else { -CAPS };
        }
        for back in 1..=3 {
            if i < back || lex.contains_key(lower[i - back].as_str()) {
                continue;
            }
            let b = boost(words[i - back], v, caps_differ);
            v += b * [1.0, 0.95, 0.9][back - 1];
            if is_negation(&lower[i - back]) {
                // `without doubt` and `never so/this good` intensify instead.
                let intensifies = (back >= 2
                    && lower[i - back] == "never"
                    && matches!(lower[i - back + 1].as_str(), "so" | "this"))
                    || (lower[i - back] == "without"
                        && lower.get(i - back + 1).is_some_and(|n| n == "doubt"));
                v *= if intensifies { 1.25 } else { NEGATE };
            }
        }
        valences[i] = v;
    }
    if let Some(but) = lower.iter().position(|w| w == "but") {
        for (i, v) in valences.iter_mut().enumerate() {
            if i < but {
                *v *= 0.5;
            } else if i > but {
                *v *= 1.5;
            }
        }
    }
    let mut sum: f64 = valences.iter().sum();
    let bangs = text.matches('!').count().min(4) as f64 * 0.292;
    let questions = match text.matches('?').count() {
        0 | 1 => 0.0,
        n @ 2..=3 => n as f64 * 0.18,
        _ => 0.96,
    };
    let punct = bangs + questions;
    if sum > 0.0 {
        sum += punct;
    } else if sum < 0.0 {
        sum -= punct;
    }
    let compound = (sum / (sum * sum + 15.0).sqrt()).clamp(-1.0, 1.0);
    let (mut pos, mut neg, mut neu) = (0.0, 0.0, 0.0);
    for &v in &valences {
        if v > 0.0 {
            pos += v + 1.0;
        } else if v < 0.0 {
            neg += v - 1.0;
        } else {
            neu += 1.0;
        }
    }
    if pos > neg.abs() {
        pos += punct;
    } else if pos < neg.abs() {
        neg -= punct;
    }
    let total = pos + neg.abs() + neu;
    let share = |x: f64| if total > 0.0 { x / total } else { 0.0 };
    Sentiment {
        compound,
        positive: share(pos),
        negative: share(neg.abs()),
        neutral: if total > 0.0 { share(neu) } else { 1.0 },
    }
}

/// A per-tenant classifier: multinomial naive Bayes over lower-cased words, with add-one
/// smoothing, trained from labelled examples (any labels).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classifier {
    labels: Vec<String>,
    log_prior: Vec<f64>,
    /// Per word: the log-likelihood under each label.
    words: HashMap<String, Vec<f64>>,
}

fn tokens(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

impl Classifier {
    /// `None` without examples of at least two labels.
    pub fn train<'a>(examples: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<Self> {
        let mut labels: Vec<String> = Vec::new();
        let mut docs: Vec<f64> = Vec::new();
        let mut counts: HashMap<String, Vec<f64>> = HashMap::new();
        let mut totals: Vec<f64> = Vec::new();
        for (text, label) in examples {
            let li = match labels.iter().position(|l| l == label) {
                Some(i) => i,
                None => {
                    labels.push(label.to_owned());
                    docs.push(0.0);
                    totals.push(0.0);
                    counts.values_mut().for_each(|c| c.push(0.0));
                    labels.len() - 1
                }
            };
            docs[li] += 1.0;
            for t in tokens(text) {
                counts.entry(t).or_insert_with(|| vec![0.0; labels.len()])[li] += 1.0;
                totals[li] += 1.0;
            }
        }
        if labels.len() < 2 {
            return None;
        }
        let vocab = counts.len() as f64;
        let n: f64 = docs.iter().sum();
        let denominators: Vec<f64> = totals.iter().map(|t| t + vocab).collect();
        Some(Self {
            log_prior: docs.iter().map(|d| (d / n).ln()).collect(),
            words: counts
                .into_iter()
                .map(|(w, c)| {
                    let l = c
                        .iter()
                        .zip(&denominators)
                        .map(|(c, d)| ((c + 1.0) / d).ln())
                        .collect();
                    (w, l)
                })
                .collect(),
            labels,
        })
    }

    /// Each label's probability for `text`, the likeliest first.
    pub fn classify(&self, text: &str) -> Vec<(String, f64)> {
        let mut logp = self.log_prior.clone();
        for t in tokens(text) {
            // Words never seen in training say nothing.
            if let Some(l) = self.words.get(&t) {
                logp.iter_mut().zip(l).for_each(|(p, l)| *p += l);
            }
        }
        let max = logp.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = logp.iter().map(|p| (p - max).exp()).sum();
        let mut out: Vec<(String, f64)> = self
            .labels
            .iter()
            .zip(&logp)
            .map(|(l, p)| (l.clone(), (p - max).exp() / z))
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        out
    }
}

/// The labels a tenant's examples carry: the three the rules give.
pub const LABELS: [&str; 3] = ["positive", "neutral", "negative"];

/// A text's polarity in [−1, 1] and its label: by the tenant's classifier where one is in
/// use (P(positive) − P(negative), and its likeliest label), else by the rules.
pub fn judge(text: &str, tenant: Option<&Classifier>) -> (f64, &'static str) {
    match tenant {
        Some(c) => {
            let p = c.classify(text);
            let of = |l: &str| p.iter().find(|(x, _)| x == l).map_or(0.0, |(_, v)| *v);
            let label = p
                .first()
                .and_then(|(l, _)| LABELS.iter().find(|x| *x == l))
                .copied()
                .unwrap_or("neutral");
            (of("positive") - of("negative"), label)
        }
        None => {
            let s = score(text);
            (s.compound, s.label())
        }
    }
}

/// How a classifier trained on a tenant's examples does, beside the rules on the same
/// examples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// The share of examples labelled right by a classifier that never saw them
    /// (k-fold cross-validation).
    pub accuracy: f64,
    /// The share the rules label right.
    pub rules_accuracy: f64,
    pub examples: usize,
    pub folds: usize,
}

/// Cross-validates a classifier on `examples` over `folds` folds (example i in fold
/// i mod `folds`). `None` with fewer than two labels or fewer examples than folds.
pub fn cross_validate(examples: &[(String, String)], folds: usize) -> Option<Evaluation> {
    let folds = folds.max(2);
    let labels: std::collections::BTreeSet<&str> =
        examples.iter().map(|(_, l)| l.as_str()).collect();
    if labels.len() < 2 || examples.len() < folds {
        return None;
    }
    let mut right = 0usize;
    for f in 0..folds {
        let train = examples
            .iter()
            .enumerate()
            .filter(|(i, _)| i % folds != f)
            .map(|(_, (t, l))| (t.as_str(), l.as_str()));
        let Some(c) = Classifier::train(train) else {
            continue;
        };
        right += examples
            .iter()
            .enumerate()
            .filter(|(i, _)| i % folds == f)
            .filter(|(_, (t, l))| c.classify(t).first().is_some_and(|(got, _)| got == l))
            .count();
    }
    let rules = examples
        .iter()
        .filter(|(t, l)| score(t).label() == l)
        .count();
    let n = examples.len() as f64;
    Some(Evaluation {
        accuracy: right as f64 / n,
        rules_accuracy: rules as f64 / n,
        examples: examples.len(),
        folds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// VADER's published examples (its README), to ±0.005.
    #[test]
    fn matches_vaders_published_examples() {
        for (text, want) in [
            ("VADER is smart, handsome, and funny.", 0.8316),
            ("VADER is smart, handsome, and funny!", 0.8439),
            ("VADER is very smart, handsome, and funny.", 0.8545),
            ("VADER is VERY SMART, handsome, and FUNNY.", 0.9227),
            ("VADER is VERY SMART, handsome, and FUNNY!!!", 0.9342),
            ("VADER is not smart, handsome, nor funny.", -0.7424),
            ("The book was good.", 0.4404),
            ("At least it isn't a horrible book.", 0.431),
            ("Today SUX!", -0.5461),
            ("Make sure you :) or :D today!", 0.8633),
            (
                "The plot was good, but the characters are uncompelling and the dialog is not great.",
                -0.7042,
            ),
        ] {
            let got = score(text).compound;
            assert!((got - want).abs() < 0.005, "{text}: {got} (VADER {want})");
        }
    }

    #[test]
    fn emoji_count_and_shares_add_up() {
        let happy = score("thanks 😀");
        let sad = score("the parcel arrived broken 😞");
        assert!(
            happy.compound > 0.3 && sad.compound < -0.05,
            "{happy:?} {sad:?}"
        );
        assert_eq!(sad.label(), "negative");
        let s = score("The delivery was late but the support team was great");
        assert!(s.compound > 0.0, "{s:?}");
        assert!((s.positive + s.negative + s.neutral - 1.0).abs() < 1e-9);
        assert_eq!(score("").label(), "neutral");
    }

    #[test]
    fn a_tenant_classifier_learns_its_own_words() {
        let examples = [
            ("where is my parcel", "complaint"),
            ("parcel still not here", "complaint"),
            ("refund my order now", "complaint"),
            ("love the new colours", "praise"),
            ("fast delivery thank you", "praise"),
            ("the colours are lovely", "praise"),
        ];
        let c = Classifier::train(examples).expect("two labels");
        assert_eq!(c.classify("my parcel is not here")[0].0, "complaint");
        assert_eq!(c.classify("lovely colours")[0].0, "praise");
        let p: f64 = c.classify("anything").iter().map(|(_, p)| p).sum();
        assert!((p - 1.0).abs() < 1e-9);
        assert!(Classifier::train([("only one", "x")]).is_none());
    }

    /// A support desk's words the rules do not know ("still waiting", "no tracking"): its
    /// own examples teach a classifier that labels them better than the rules, and
    /// [`judge`] uses it.
    #[test]
    fn a_tenant_classifier_beats_the_rules_on_its_own_words_when_cross_validated() {
        let negative = [
            "still waiting for my parcel",
            "parcel has no tracking number",
            "order number 5512 still not shipped",
            "waiting two weeks for the order",
            "no tracking and no reply",
            "where is my order",
            "the parcel is still not here",
            "my order was not shipped yet",
        ];
        let positive = [
            "arrived a day early",
            "the parcel came today thank you",
            "colours exactly as pictured",
            "will order again",
            "arrived early and well packed",
            "the order came today",
            "exactly as pictured",
            "packed well and came early",
        ];
        let examples: Vec<(String, String)> = negative
            .iter()
            .map(|t| (t.to_string(), "negative".to_owned()))
            .zip(
                positive
                    .iter()
                    .map(|t| (t.to_string(), "positive".to_owned())),
            )
            .flat_map(|(a, b)| [a, b])
            .collect();
        let e = cross_validate(&examples, 4).expect("two labels");
        assert_eq!((e.examples, e.folds), (16, 4));
        // Measured: 0.69 against the rules' 0.31.
        assert!(e.accuracy >= e.rules_accuracy + 0.25, "{e:?}");
        let c = Classifier::train(examples.iter().map(|(t, l)| (t.as_str(), l.as_str())))
            .expect("trained");
        let (polarity, label) = judge("still no tracking for my parcel", Some(&c));
        assert_eq!(label, "negative");
        assert!(polarity < 0.0);
        let (rules, _) = judge("still no tracking for my parcel", None);
        assert_eq!(rules, score("still no tracking for my parcel").compound);
        assert!(cross_validate(&examples[..3], 4).is_none());
        let one: Vec<(String, String)> = examples
            .iter()
            .filter(|(_, l)| l == "positive")
            .cloned()
            .collect();
        assert!(cross_validate(&one, 4).is_none());
    }
}
