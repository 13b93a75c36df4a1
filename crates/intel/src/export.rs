//! The models' features and scores as Parquet, for outside tools: one row per person, their
//! canonical identity, the churn features as of today ([`train::CHURN_FEATURES`]) and the
//! latest scores, named `score_<prediction>` (empty where a model has none). The prefix
//! keeps every column name unique: `p_alive` is both a churn feature and a score, and
//! pandas and pyarrow refuse a file with two columns of one name.

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;

use crate::history::Histories;
use crate::train::{self, ClvParams, Scores};

/// Writes the table; `scores` line up with `h.persons` (or are empty).
pub fn features_parquet(
    h: &Histories,
    today: i64,
    clv: Option<&ClvParams>,
    scores: &[Scores],
) -> Result<Vec<u8>, parquet::errors::ParquetError> {
    let persons: Vec<Option<&str>> = h
        .persons
        .iter()
        .map(|p| p.keys.first().map(String::as_str))
        .collect();
    let rows: Vec<Option<Vec<f64>>> = h
        .persons
        .iter()
        .map(|p| train::churn_row(p, today, clv))
        .collect();
    let mut fields = vec![Field::new("person", DataType::Utf8, true)];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from(persons))];
    for (j, name) in train::CHURN_FEATURES.iter().enumerate() {
        fields.push(Field::new(*name, DataType::Float64, true));
        let v: Vec<Option<f64>> = rows.iter().map(|r| r.as_ref().map(|r| r[j])).collect();
        columns.push(Arc::new(Float64Array::from(v)));
    }
    type Pick = fn(&Scores) -> Option<f64>;
    let picks: [(&str, Pick); 5] = [
        ("score_clv_12m", |s| s.clv_12m),
        ("score_churn_risk", |s| s.churn_risk),
        ("score_p_alive", |s| s.p_alive),
        ("score_expected_purchases_90d", |s| s.expected_purchases_90d),
        ("score_best_hour", |s| {
            s.best_time.map(|b| f64::from(b.hour))
        }),
    ];
    for (name, pick) in picks {
        fields.push(Field::new(name, DataType::Float64, true));
        let v: Vec<Option<f64>> = (0..h.persons.len())
            .map(|i| scores.get(i).and_then(pick))
            .collect();
        columns.push(Arc::new(Float64Array::from(v)));
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
    let mut w = ArrowWriter::try_new(Vec::new(), batch.schema(), None)?;
    w.write(&batch)?;
    w.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::PersonHistory;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    #[test]
    fn one_row_per_person_with_every_feature() {
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
                    active_days: vec![20],
                    ..Default::default()
                },
            ],
            days: Vec::new(),
            categories: Default::default(),
        };
        let bytes = features_parquet(&h, 10, None, &[]).expect("writes");
        let r = SerializedFileReader::new(bytes::Bytes::from(bytes)).expect("reads");
        let meta = r.metadata();
        assert_eq!(meta.file_metadata().num_rows(), 2);
        assert_eq!(
            meta.file_metadata().schema_descr().num_columns(),
            1 + train::CHURN_FEATURES.len() + 5
        );
    }

    #[test]
    fn column_names_are_unique() {
        let h = Histories {
            persons: vec![PersonHistory {
                keys: vec!["u:ann".into()],
                active_days: vec![1, 5, 9],
                purchases: vec![(5, 20.0)],
                ..Default::default()
            }],
            days: Vec::new(),
            categories: Default::default(),
        };
        let scores = [Scores {
            p_alive: Some(0.5),
            ..Scores::default()
        }];
        let bytes = features_parquet(&h, 10, None, &scores).expect("writes");
        let r = SerializedFileReader::new(bytes::Bytes::from(bytes)).expect("reads");
        let schema = r.metadata().file_metadata().schema_descr();
        let names: Vec<String> = (0..schema.num_columns())
            .map(|i| schema.column(i).name().to_owned())
            .collect();
        let unique: std::collections::BTreeSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert!(names.iter().any(|n| n == "p_alive") && names.iter().any(|n| n == "score_p_alive"));
    }
}
