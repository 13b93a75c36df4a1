//! Tests of the contract check itself (`contract.rs`): what it lets through, what it
//! catches, and that the server's document and the test clients are fit for it.

use serde_json::Value;

use crate::contract::{Contract, METHODS, escape};

fn doc(schema: Value) -> Contract {
    let doc = serde_json::json!({
        "openapi": "3.1.0",
        "paths": {
            "/things/{id}": {"get": {"responses": {
                "200": {"description": "a thing", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}},
                "404": {"$ref": "#/components/responses/NotFound"}
            }}},
            "/things/special": {"get": {"responses": {"204": {"description": "none"}}}}
        },
        "components": {
            "schemas": {
                "Thing": schema,
                "Error": {"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}
            },
            "responses": {"NotFound": {"description": "no", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}
        }
    });
    Contract::parse(&doc.to_string()).expect("usable")
}

fn thing() -> Value {
    serde_json::json!({"type": "object", "required": ["id", "at"], "properties": {
        "id": {"type": "integer"}, "at": {"type": "string", "format": "date-time"},
        "note": {"type": ["string", "null"]}
    }})
}

const JSON: Option<&str> = Some("application/json");

#[test]
fn matching_responses_pass() {
    let c = doc(thing());
    let ok = br#"{"id": 1, "at": "2026-01-02T03:04:05Z", "note": null}"#;
    assert_eq!(c.check("GET", "/things/7", 200, JSON, ok), Ok(()));
    let err = br#"{"code": "not_found", "message": "no such thing"}"#;
    assert_eq!(c.check("GET", "/things/7", 404, JSON, err), Ok(()));
    assert_eq!(c.check("GET", "/things/special", 204, None, b""), Ok(()));
    assert_eq!(
        c.template("GET", "/things/special"),
        Some("/things/special")
    );
    assert_eq!(c.template("GET", "/things/x"), Some("/things/{id}"));
    // Undescribed paths and methods are the routes test's business.
    assert_eq!(c.check("GET", "/elsewhere", 500, JSON, b"{}"), Ok(()));
    assert_eq!(c.check("OPTIONS", "/things/7", 200, None, b""), Ok(()));
}

#[test]
fn a_wrong_schema_fails_with_path_status_and_errors() {
    // The document says `id` is a string; the server sends a number.
    let mut wrong = thing();
    wrong["properties"]["id"] = serde_json::json!({"type": "string"});
    let c = doc(wrong);
    let body = br#"{"id": 1, "at": "yesterday"}"#;
    let why = c
        .check("GET", "/things/7", 200, JSON, body)
        .expect_err("mismatch");
    assert!(
        why.contains("GET /things/7 (documented as /things/{id}) answered 200"),
        "{why}"
    );
    assert!(why.contains("\"/id\""), "{why}");
    assert!(why.contains("\"/at\""), "the format is checked: {why}");
    // A nullable field is declared with a type list in 3.1, never `nullable`.
    let c = doc(thing());
    let why = c
        .check("GET", "/things/7", 200, JSON, br#"{"id": 1}"#)
        .expect_err("missing field");
    assert!(why.contains("\"at\" is a required property"), "{why}");
}

#[test]
fn undocumented_statuses_and_media_types_fail() {
    let c = doc(thing());
    let why = c
        .check("GET", "/things/7", 500, JSON, b"{}")
        .expect_err("undocumented");
    assert!(why.contains("status 500 is not documented"), "{why}");
    let why = c
        .check("GET", "/things/7", 200, Some("text/html"), b"<p>")
        .expect_err("media type");
    assert!(
        why.contains("content-type text/html is not documented"),
        "{why}"
    );
    let why = c
        .check("GET", "/things/special", 204, JSON, b"{}")
        .expect_err("body");
    assert!(why.contains("where the document has none"), "{why}");
    let why = c
        .check("GET", "/things/7", 404, JSON, b"{\"code\": 1}")
        .expect_err("error body");
    assert!(
        why.contains("#/components") || why.contains("responses/NotFound"),
        "{why}"
    );
}

#[test]
fn the_documented_error_codes_are_the_code_table() {
    // `Code::as_str` in error.rs is the one table of codes.
    let source = include_str!("../../src/error.rs");
    let start = source.find("pub fn as_str").expect("as_str");
    let end = source[start..].find("\n    }\n").expect("end of as_str") + start;
    let table: std::collections::BTreeSet<&str> = source[start..end]
        .split("=> \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    let doc = &Contract::livora().doc;
    let documented: std::collections::BTreeSet<&str> = doc
        .pointer("/components/schemas/Error/properties/code/anyOf/0/enum")
        .and_then(Value::as_array)
        .expect("the Error schema's codes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(table.len() > 20, "{table:?}");
    assert_eq!(documented, table);
}

#[test]
fn no_unchecked_clients() {
    // Every HTTP client of these tests, and of the `livora` crate's tests that run the
    // binary, is wrapped by `client`, so no response escapes the check: a bare
    // `reqwest::Client` must be built inside `contract::client(…)`.
    let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in ["server/tests/api", "livora/tests", "livora/tests/common"] {
        for entry in std::fs::read_dir(crates.join(dir)).expect("tests dir") {
            files.push(entry.expect("entry").path());
        }
    }
    let mut bare = Vec::new();
    for path in files {
        let own = ["contract.rs", "contract_tests.rs"];
        if own.iter().any(|f| path.ends_with(f)) || path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let uses = [
            "reqwest::Client::",
            "reqwest::ClientBuilder",
            "reqwest::get(",
        ];
        let found = uses.iter().flat_map(|u| text.match_indices(u));
        for (at, _) in found {
            let mut start = at.saturating_sub(120);
            while !text.is_char_boundary(start) {
                start -= 1;
            }
            let before = &text[start..at];
            if !before.contains("contract::client(") {
                let line = text[..at].lines().count();
                bare.push(format!("{}:{line}", path.display()));
            }
        }
    }
    assert!(
        bare.is_empty(),
        "wrap these clients in contract::client: {bare:?}"
    );
}

#[test]
fn a_key_twice_in_one_object_is_refused() {
    let why = Contract::parse(
        r#"{"openapi": "3.1.0", "paths": {}, "components": {"schemas": {"E": {"properties": {"a": {}, "b": {}, "a": {}}}}}}"#,
    )
    .err()
    .expect("refused");
    assert!(why.contains("the key \"a\" twice"), "{why}");
}

#[test]
fn openapi_3_0_is_refused() {
    let why = Contract::parse(r#"{"openapi": "3.0.3", "paths": {}}"#)
        .err()
        .expect("refused");
    assert!(why.contains("3.1"), "{why}");
}

#[test]
fn the_livora_document_compiles_every_response_schema() {
    let c = Contract::livora();
    let mut n = 0;
    for (path, item) in c.doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            for (status, _) in op["responses"].as_object().expect("responses") {
                let mut pointer = format!("/paths/{}/{method}/responses/{status}", escape(path));
                while let Some(t) = c.doc.pointer(&pointer).and_then(|r| r["$ref"].as_str()) {
                    pointer = t.trim_start_matches('#').to_owned();
                }
                let response = c.doc.pointer(&pointer).expect("response resolves");
                if response
                    .pointer("/content/application~1json/schema")
                    .is_some()
                {
                    c.validator(&format!("{pointer}/content/application~1json/schema"))
                        .expect("compiles");
                    n += 1;
                }
            }
        }
    }
    assert!(n > 100, "{n} schemas");
}
