//! BG/NBD and Gamma-Gamma on the CDNOW data (see `data/README.md`): the fitted parameters
//! match the published ones to 4 significant digits, and the summaries built from the raw
//! purchases match the published summaries.

use livora_intel::churn::{Logistic, PURCHASE_FEATURES, auc, from_purchases};
use livora_intel::clv::{BgNbd, Customer, GammaGamma, summarize};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");

fn rows(file: &str) -> Vec<csv::StringRecord> {
    let mut r = csv::Reader::from_path(format!("{DATA}/{file}")).expect("the data file");
    r.records().map(|x| x.expect("a record")).collect()
}

fn num(r: &csv::StringRecord, i: usize) -> f64 {
    r[i].parse().expect("a number")
}

/// The published summaries (weeks), with the mean repeat spend.
fn published() -> Vec<(u32, Customer)> {
    rows("cdnow_customers_summary_with_monetary.csv")
        .iter()
        .map(|r| {
            (
                num(r, 0) as u32,
                Customer {
                    frequency: num(r, 1) as u32,
                    recency: num(r, 2),
                    age: num(r, 3),
                    monetary: num(r, 4),
                },
            )
        })
        .collect()
}

/// `value` rounded to 4 significant digits equals `published` rounded the same way.
fn four_digits(name: &str, value: f64, published: f64) {
    let round = |v: f64| {
        let scale = 10f64.powi(3 - v.abs().log10().floor() as i32);
        (v * scale).round() / scale
    };
    assert_eq!(
        round(value),
        round(published),
        "{name}: fitted {value}, published {published}"
    );
}

#[test]
fn bg_nbd_matches_the_published_parameters() {
    let customers: Vec<Customer> = published().into_iter().map(|(_, c)| c).collect();
    assert_eq!(customers.len(), 2357);
    let fit = BgNbd::fit(&customers).expect("fits");
    let m = fit.model;
    eprintln!("BG/NBD {m:?}, mean log-likelihood {}", fit.log_likelihood);
    four_digits("r", m.r, 0.2426);
    four_digits("alpha", m.alpha, 4.4135);
    four_digits("a", m.a, 0.7929);
    four_digits("b", m.b, 2.4258);
    // The paper's log-likelihood, −9582.4.
    let total = fit.log_likelihood * 2357.0;
    assert!((total + 9582.4).abs() < 0.05, "{total}");
    let c = Customer {
        frequency: 2,
        recency: 30.43,
        age: 38.86,
        monetary: 0.0,
    };
    // The paper's example: 2 repeat purchases in 38.86 weeks, the last at 30.43, expects
    // 1.226 purchases in the next 39 weeks.
    let e = m.expected_purchases(&c, 39.0);
    assert!((e - 1.226).abs() < 5e-4, "{e}");
    // The fit's log-likelihood is the sum of the customers' own.
    let own = customers.iter().map(|c| m.log_likelihood(c)).sum::<f64>() / 2357.0;
    assert!(
        (own - fit.log_likelihood).abs() < 1e-9,
        "{own} {}",
        fit.log_likelihood
    );
}

#[test]
fn gamma_gamma_matches_the_published_parameters() {
    let customers: Vec<Customer> = published().into_iter().map(|(_, c)| c).collect();
    let fit = GammaGamma::fit(&customers).expect("fits");
    assert_eq!(fit.customers, 946);
    let m = fit.model;
    eprintln!("Gamma-Gamma {m:?}");
    four_digits("p", m.p, 6.2488);
    four_digits("q", m.q, 3.7446);
    four_digits("v", m.v, 15.4477);
    // `lifetimes`' expected mean spend of the first customer (2 repeat purchases, mean 22.35).
    let first = customers[0];
    assert_eq!((first.frequency, first.monetary), (2, 22.35));
    let spend = m.expected_spend(&first);
    assert!((spend - 24.6586).abs() < 1e-3, "{spend}");
}

/// Every purchase: customer index, day, amount.
fn purchases() -> Vec<(u32, i64, f64)> {
    let day = |d: &str| {
        let n: i64 = d.parse().expect("a date");
        let (y, m, dd) = ((n / 10000) as i32, (n / 100 % 100) as u32, (n % 100) as u32);
        chrono_days(y, m, dd)
    };
    rows("cdnow_sample_transactions.csv")
        .iter()
        .map(|r| (num(r, 1) as u32, day(&r[2]), num(r, 4)))
        .collect()
}

/// Trained on the customers as they were on 1997-06-30 (churned: no purchase in the next 3
/// months), scored on 1997-09-30 against the whole holdout (no purchase up to 1998-06-30),
/// beside the ranking by P(alive) alone.
#[test]
fn churn_auc_on_the_holdout_beside_p_alive() {
    let all = purchases();
    let train = from_purchases(&all, chrono_days(1997, 6, 30), 92, 7.0).expect("features");
    let names = PURCHASE_FEATURES.iter().map(|s| s.to_string()).collect();
    let model = Logistic::train(names, &train.rows, &train.churned, 0.01).expect("trains");
    let calibration_end = chrono_days(1997, 9, 30);
    let holdout = chrono_days(1998, 6, 30) - calibration_end;
    let test = from_purchases(&all, calibration_end, holdout, 7.0).expect("features");
    let (churned, p_alive) = (&test.churned, &test.p_alive);
    let scores: Vec<f64> = test.rows.iter().map(|x| model.score(x)).collect();
    let ours = auc(&scores, churned).expect("both classes");
    let dead: Vec<f64> = p_alive.iter().map(|p| 1.0 - p).collect();
    let alone = auc(&dead, churned).expect("both classes");
    // BG/NBD's own forecast as a ranking: fewer expected purchases, more risk.
    let few: Vec<f64> = test.rows.iter().map(|x| -x[5]).collect();
    let expected = auc(&few, churned).expect("both classes");
    eprintln!(
        "CDNOW churn AUC: logistic {ours:.4}, P(alive) alone {alone:.4}, BG/NBD expected purchases {expected:.4} ({} of {} churned); weights {:?}",
        churned.iter().filter(|&&c| c).count(),
        churned.len(),
        model
            .features
            .iter()
            .zip(&model.weights)
            .collect::<Vec<_>>()
    );
    // P(alive) alone ranks badly: BG/NBD holds every customer without a repeat purchase
    // alive (P = 1), and they are the likeliest to buy nothing more.
    assert!(alone < 0.5, "{alone}");
    assert!(
        ours > 0.75 && ours >= expected,
        "logistic {ours}, expected purchases {expected}"
    );
    let why = model.explain(&test.rows[0]);
    assert_eq!(why.len(), PURCHASE_FEATURES.len());
}

#[test]
fn summaries_from_the_purchases_match_the_published_ones() {
    let purchases = purchases();
    let ours = summarize(purchases, chrono_days(1997, 9, 30), 7.0);
    let theirs = published();
    assert_eq!(ours.len(), theirs.len());
    for ((id, a), (pid, b)) in ours.iter().zip(&theirs) {
        assert_eq!(id, pid);
        assert_eq!(a.frequency, b.frequency, "customer {id}");
        // The published file rounds to 2 decimals.
        for (x, y) in [
            (a.recency, b.recency),
            (a.age, b.age),
            (a.monetary, b.monetary),
        ] {
            assert!((x - y).abs() <= 0.005 + 1e-9, "customer {id}: {a:?} {b:?}");
        }
    }
}

/// Days since 1970-01-01.
fn chrono_days(y: i32, m: u32, d: u32) -> i64 {
    chrono::NaiveDate::from_ymd_opt(y, m, d)
        .expect("a date")
        .signed_duration_since(chrono::NaiveDate::default())
        .num_days()
}
