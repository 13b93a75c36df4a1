//! The features Parquet (`GET /api/v1/models/features`) read by tools that are not ours:
//! DuckDB and the pandas DataFrame it hands over (from `scripts/test-deps.sh`) see every
//! column under its own name, and the scores under theirs. A file with two columns of one
//! name (`p_alive` was both a churn feature and a score) is renamed by DuckDB and refused by
//! pandas' own readers.

mod common;

use livora_intel::export::features_parquet;
use livora_intel::history::{Histories, PersonHistory};
use livora_intel::train::{self, Scores};

const READ: &str = r#"
import json, sys, duckdb
rel = duckdb.read_parquet(sys.argv[1])
df = rel.df()
print(json.dumps({
    "duckdb": list(rel.columns),
    "pandas": [str(c) for c in df.columns],
    "unique": bool(df.columns.is_unique),
    "score_p_alive": df["score_p_alive"].tolist()[0],
    "p_alive": df["p_alive"].tolist()[0],
}))
"#;

#[test]
fn duckdb_and_pandas_read_every_column_by_its_own_name() {
    let h = Histories {
        persons: vec![
            PersonHistory {
                keys: vec!["u:ann".into()],
                active_days: vec![1, 5, 9],
                purchases: vec![(5, 20.0)],
                ..Default::default()
            },
            PersonHistory {
                keys: vec!["a:x".into()],
                active_days: vec![8],
                ..Default::default()
            },
        ],
        days: Vec::new(),
        categories: Default::default(),
    };
    let scores = [
        Scores {
            p_alive: Some(0.25),
            ..Scores::default()
        },
        Scores::default(),
    ];
    let bytes = features_parquet(&h, 10, None, &scores).expect("writes");
    let path = std::env::temp_dir().join(format!(
        "livora-features-{}-{}.parquet",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::write(&path, &bytes).expect("write the file");
    let out = std::process::Command::new(common::python("duckdb, pandas"))
        .arg("-c")
        .arg(READ)
        .arg(&path)
        .output()
        .expect("python runs");
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "reading failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON line");
    let mut expected = vec!["person".to_owned()];
    expected.extend(train::CHURN_FEATURES.iter().map(|f| f.to_string()));
    expected.extend(
        [
            "score_clv_12m",
            "score_churn_risk",
            "score_p_alive",
            "score_expected_purchases_90d",
            "score_best_hour",
        ]
        .map(String::from),
    );
    assert_eq!(seen["duckdb"], serde_json::json!(expected), "{seen}");
    assert_eq!(seen["pandas"], serde_json::json!(expected), "{seen}");
    assert_eq!(seen["unique"], true, "{seen}");
    // The score and the feature are told apart: the score as trained, the feature as of
    // day 10 without a lifetime-value model (1.0: alive).
    assert_eq!(seen["score_p_alive"], 0.25, "{seen}");
    assert_eq!(seen["p_alive"], 1.0, "{seen}");
}
