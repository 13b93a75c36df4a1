//! Holt-Winters on the airline passengers series (see `data/README.md`): the last 12 months
//! held out, MAPE beside the seasonal naive forecast and Grafana's `augurs` MSTL (with its
//! AutoETS trend, on the series and on its logarithm).

use livora_intel::forecast::{HoltWinters, Seasonality, mape, seasonal_naive};

fn series() -> Vec<f64> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/airpassengers.csv");
    let mut r = csv::Reader::from_path(path).expect("the data file");
    let header = r.headers().expect("a header").clone();
    let col = header.len() - 1;
    r.records()
        .map(|x| x.expect("a record")[col].parse().expect("a number"))
        .collect()
}

#[test]
fn twelve_month_holdout_beats_the_seasonal_naive_forecast() {
    let y = series();
    assert_eq!(y.len(), 144);
    let (train, test) = y.split_at(132);
    let m = HoltWinters::auto(train, 12).expect("fits");
    let f = m.forecast(12, 0.95);
    let ours = mape(test, &f.point).expect("nonzero");
    let naive = mape(test, &seasonal_naive(train, 12, 12)).expect("nonzero");
    let mul = HoltWinters::fit(train, 12, Seasonality::Multiplicative, false).expect("fits");
    let mul_mape = mape(test, &mul.forecast(12, 0.95).point).expect("nonzero");
    eprintln!(
        "AirPassengers, 12-month holdout: chosen {:?} (damped {}) MAPE {ours:.2} %, multiplicative {mul_mape:.2} %, seasonal naive {naive:.2} %; α {:.3} β {:.3} γ {:.3}",
        m.seasonality, m.damped, m.alpha, m.beta, m.gamma
    );
    assert!(ours < naive / 2.0, "ours {ours}, naive {naive}");
    let (mstl, mstl_log) = (mstl_mape(train, test, false), mstl_mape(train, test, true));
    eprintln!("augurs MSTL + AutoETS: MAPE {mstl:.2} %, on the logarithm {mstl_log:.2} %");
    assert!(
        ours <= mstl && ours <= mstl_log + 0.1,
        "ours {ours}, MSTL {mstl} / {mstl_log}"
    );
    let inside = test
        .iter()
        .enumerate()
        .filter(|&(i, a)| f.lower[i] <= *a && *a <= f.upper[i])
        .count();
    assert!(inside >= 10, "{inside} of 12 inside the 95 % interval");
}

fn mstl_mape(train: &[f64], test: &[f64], log: bool) -> f64 {
    use augurs_core::{Fit, Predict};
    use augurs_ets::{AutoETS, trend::AutoETSTrendModel};
    let t: Vec<f64> = train
        .iter()
        .map(|v| if log { v.ln() } else { *v })
        .collect();
    let model =
        augurs_mstl::MSTLModel::new(vec![12], AutoETSTrendModel::from(AutoETS::non_seasonal()));
    let f = model
        .fit(&t)
        .expect("MSTL fits")
        .predict(12, 0.95)
        .expect("MSTL forecasts");
    let p: Vec<f64> = f
        .point
        .iter()
        .map(|v| if log { v.exp() } else { *v })
        .collect();
    mape(test, &p).expect("nonzero")
}
