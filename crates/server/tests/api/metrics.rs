//! `/metrics` follows Prometheus conventions: every family has `# HELP` and `# TYPE`,
//! counters end in `_total`, byte quantities in `_bytes` (`_bytes_total` for counters), and
//! no family is declared twice.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::helpers::spawn_app;

/// One metric family of an exposition text.
#[derive(Debug, Default)]
struct Family {
    help: usize,
    kind: Vec<String>,
    samples: usize,
}

/// The families of a Prometheus text exposition, by name.
fn families(text: &str) -> BTreeMap<String, Family> {
    let mut out: BTreeMap<String, Family> = BTreeMap::new();
    let mut sample_names = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let words: Vec<&str> = line.splitn(4, ' ').collect();
        match words.as_slice() {
            ["#", "HELP", name, ..] => out.entry((*name).to_owned()).or_default().help += 1,
            ["#", "TYPE", name, kind] => out
                .entry((*name).to_owned())
                .or_default()
                .kind
                .push((*kind).to_owned()),
            ["#", ..] => {}
            _ => {
                let name = line.split(['{', ' ']).next().expect("a sample has a name");
                sample_names.push(name.to_owned());
            }
        }
    }
    for sample in sample_names {
        // A histogram's samples are `<family>_bucket`, `_sum` and `_count`.
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|s| sample.strip_suffix(s))
            .find(|base| {
                out.get(*base)
                    .is_some_and(|f| f.kind.iter().any(|k| k == "histogram" || k == "summary"))
            })
            .unwrap_or(&sample)
            .to_owned();
        out.entry(family).or_default().samples += 1;
    }
    out
}

/// What is wrong with the families' names and metadata, one line each.
fn problems(families: &BTreeMap<String, Family>) -> Vec<String> {
    let mut out = Vec::new();
    for (name, f) in families {
        if f.help != 1 {
            out.push(format!("{name}: {} # HELP lines, want 1", f.help));
        }
        if f.kind.len() != 1 {
            out.push(format!("{name}: {} # TYPE lines, want 1", f.kind.len()));
        }
        let kind = f.kind.first().map(String::as_str).unwrap_or("untyped");
        if kind == "counter" && !name.ends_with("_total") {
            out.push(format!("{name}: a counter's name ends in _total"));
        }
        if kind != "counter" && name.ends_with("_total") {
            out.push(format!("{name}: only counters end in _total ({kind})"));
        }
        let base = name.strip_suffix("_total").unwrap_or(name);
        if base.contains("bytes") && !base.ends_with("_bytes") {
            out.push(format!(
                "{name}: the unit goes last (…_bytes, …_bytes_total)"
            ));
        }
        if base.contains("seconds") && !base.ends_with("_seconds") {
            out.push(format!("{name}: the unit goes last (…_seconds)"));
        }
        if f.samples == 0 {
            out.push(format!("{name}: declared without samples"));
        }
        if name.ends_with("_total") && families.contains_key(base) {
            out.push(format!("{name}: {base} is a family too"));
        }
    }
    out
}

#[test]
fn the_convention_check_finds_what_is_wrong() {
    let text = "\
# TYPE app_bytes_written_total counter
app_bytes_written_total 3
# HELP app_requests requests
# TYPE app_requests counter
app_requests 1
# HELP app_seconds latency
# TYPE app_seconds histogram
app_seconds_bucket{le=\"1\"} 1
app_seconds_sum 0.5
app_seconds_count 1
# HELP app_seconds latency
# TYPE app_ok_total counter
";
    let found = problems(&families(text));
    for expected in [
        "app_bytes_written_total: 0 # HELP lines, want 1",
        "app_bytes_written_total: the unit goes last (…_bytes, …_bytes_total)",
        "app_requests: a counter's name ends in _total",
        "app_seconds: 2 # HELP lines, want 1",
        "app_ok_total: declared without samples",
    ] {
        assert!(
            found.iter().any(|p| p == expected),
            "{expected} in {found:#?}"
        );
    }
    assert_eq!(found.len(), 6, "{found:#?}");
}

/// Every metric name recorded by `metrics::counter!`, `gauge!` or `histogram!` with a literal
/// name in the workspace's sources, and the names given a description.
fn recorded_and_described() -> (BTreeSet<String>, BTreeSet<String>) {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    let mut dirs = vec![crates];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() && !path.ends_with("target") && !path.ends_with("tests") {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let (mut recorded, mut described) = (BTreeSet::new(), BTreeSet::new());
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read source");
        for macro_name in [
            "counter!(",
            "gauge!(",
            "histogram!(",
            "describe_counter!(",
            "describe_gauge!(",
            "describe_histogram!(",
        ] {
            for (at, _) in text.match_indices(macro_name) {
                // `describe_counter!(` also contains `counter!(`: take the longest match.
                let before = &text[..at];
                if !macro_name.starts_with("describe_") && before.ends_with("describe_") {
                    continue;
                }
                let rest = text[at + macro_name.len()..].trim_start();
                if let Some(name) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) {
                    if macro_name.starts_with("describe_") {
                        described.insert(name.to_owned());
                    } else {
                        recorded.insert(name.to_owned());
                    }
                }
            }
        }
    }
    (recorded, described)
}

#[test]
fn every_recorded_metric_is_described() {
    let (recorded, described) = recorded_and_described();
    assert!(recorded.len() > 10, "{recorded:?}");
    let missing: Vec<_> = recorded.difference(&described).collect();
    assert!(missing.is_empty(), "no describe_*! for {missing:?}");
}

#[tokio::test]
async fn metrics_follow_prometheus_conventions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app(dir.path()).await;
    // Accepted, duplicate and refused events, and a refused request.
    let (status, body) = app
        .post(
            "/v1/track",
            r#"{"event":"x","userId":"u","messageId":"m1"}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.post(
        "/v1/track",
        r#"{"event":"x","userId":"u","messageId":"m1"}"#,
    )
    .await;
    app.post("/v1/track", r#"{"userId":"u"}"#).await;
    app.post("/v1/track", "not json").await;
    let text = app
        .http
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("text");
    let families = families(&text);
    for name in [
        "livora_events_accepted_total",
        "livora_events_rejected_total",
        "livora_log_duplicates_total",
        "livora_log_written_bytes_total",
        "livora_ingest_request_seconds",
        "livora_consumer_lag_events",
    ] {
        assert!(families.contains_key(name), "no {name} in:\n{text}");
    }
    let found = problems(&families);
    assert!(found.is_empty(), "{}\n\n{text}", found.join("\n"));
    app.stop().await;
}
