//! The API contract, checked on every response a test receives.
//!
//! [`Contract`] reads the OpenAPI 3.1 document (`crates/server/src/openapi.json`, whose schemas
//! are JSON Schema 2020-12) and checks one response against the operation's documented
//! response for (method, path template, status): the status must be documented, the media
//! type too, and a JSON body must match the schema (with `$ref`s into `components` resolved
//! and formats such as `date-time` checked) by the `jsonschema` crate.
//!
//! [`client`] wraps a `reqwest::Client` so that every response it returns has passed that
//! check: a response that breaks the contract panics in the test that received it, naming
//! the method, path, status and every validation error. Tests get their HTTP client from
//! here (`TestApp::http`, [`client`]) and never build a bare one (see `no_unchecked_clients`).
//! The `livora` crate's tests, which run the binary, include this file too (`common::http`).

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use reqwest::ResponseBuilderExt;
use serde_json::Value;

/// The HTTP client of API tests: a `reqwest::Client` whose responses are checked.
pub type Http = reqwest_middleware::ClientWithMiddleware;

/// Methods that the document describes (others, such as CORS preflights, are not checked).
pub const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// A parsed OpenAPI document with its compiled response schemas.
pub struct Contract {
    pub doc: Value,
    /// (method, path template split into segments, path template).
    operations: Vec<(String, Vec<String>, String)>,
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

impl Contract {
    /// Reads a document; `Err` says why it cannot be used.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys = serde_json::Deserializer::from_str(text);
        serde::de::DeserializeSeed::deserialize(NoDuplicateKeys, &mut keys)
            .map_err(|e| format!("not usable JSON: {e}"))?;
        let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        if doc["openapi"]
            .as_str()
            .is_none_or(|v| !v.starts_with("3.1"))
        {
            // 3.0 schemas are not JSON Schema (`nullable`), and would need translating.
            return Err(format!("expected OpenAPI 3.1, found {}", doc["openapi"]));
        }
        let mut operations = Vec::new();
        for (path, item) in doc["paths"].as_object().ok_or("no paths")? {
            for method in METHODS {
                if item.get(method).is_some() {
                    let segments = path.split('/').map(str::to_owned).collect();
                    operations.push((method.to_owned(), segments, path.clone()));
                }
            }
        }
        Ok(Self {
            doc,
            operations,
            validators: Mutex::new(HashMap::new()),
        })
    }

    /// The server's own document.
    pub fn livora() -> &'static Contract {
        static CONTRACT: OnceLock<Contract> = OnceLock::new();
        CONTRACT.get_or_init(|| {
            Contract::parse(livora_server::ops::OPENAPI).expect("the OpenAPI document is usable")
        })
    }

    /// The documented path template that `path` (no query) is an instance of, for `method`.
    /// Literal segments win over parameters (`/segments/preview` over `/segments/{id}`).
    pub fn template(&self, method: &str, path: &str) -> Option<&str> {
        let method = method.to_ascii_lowercase();
        let parts: Vec<&str> = path.split('/').collect();
        self.operations
            .iter()
            .filter(|(m, segs, _)| *m == method && segs.len() == parts.len())
            .filter_map(|(_, segs, template)| {
                let mut literal = 0;
                for (seg, part) in segs.iter().zip(&parts) {
                    if seg.starts_with('{') && seg.ends_with('}') {
                        if part.is_empty() {
                            return None;
                        }
                    } else if seg == part {
                        literal += 1;
                    } else {
                        return None;
                    }
                }
                Some((literal, template.as_str()))
            })
            .max_by_key(|(literal, _)| *literal)
            .map(|(_, t)| t)
    }

    /// Checks one response. `Ok` for methods and paths the document does not describe (the
    /// routes test keeps the document's paths equal to the router's).
    pub fn check(
        &self,
        method: &str,
        path: &str,
        status: u16,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<(), String> {
        let method = method.to_ascii_lowercase();
        if !METHODS.contains(&method.as_str()) {
            return Ok(());
        }
        let Some(template) = self.template(&method, path) else {
            return Ok(());
        };
        let fail = |why: String| {
            let shown = String::from_utf8_lossy(&body[..body.len().min(600)]).into_owned();
            Err(format!(
                "{} {path} (documented as {template}) answered {status}: {why}\n  body: {shown}",
                method.to_uppercase()
            ))
        };
        let op = format!("/paths/{}/{method}", escape(template));
        let responses = &self.doc.pointer(&op).expect("operation")["responses"];
        let code = status.to_string();
        let range = format!("{}XX", status / 100);
        let Some(key) = [code.as_str(), range.as_str(), "default"]
            .into_iter()
            .find(|k| responses.get(k).is_some())
        else {
            let documented: Vec<&String> = responses
                .as_object()
                .map(|r| r.keys().collect())
                .unwrap_or_default();
            return fail(format!(
                "status {status} is not documented (documented: {documented:?})"
            ));
        };
        let mut pointer = format!("{op}/responses/{key}");
        // A response may be a `$ref` to `#/components/responses/…`.
        for _ in 0..8 {
            match self.doc.pointer(&pointer).and_then(|r| r["$ref"].as_str()) {
                Some(target) => pointer = target.trim_start_matches('#').to_owned(),
                None => break,
            }
        }
        let Some(response) = self.doc.pointer(&pointer) else {
            return fail(format!(
                "the document's response {pointer} does not resolve"
            ));
        };
        let essence = content_type
            .and_then(|c| c.split(';').next())
            .map(|c| c.trim().to_ascii_lowercase());
        let content = response["content"].as_object();
        if body.is_empty() {
            return match content {
                Some(c) if !c.is_empty() && status != 204 && status != 304 => fail(format!(
                    "empty body, documented: {:?}",
                    c.keys().collect::<Vec<_>>()
                )),
                _ => Ok(()),
            };
        }
        let Some(content) = content.filter(|c| !c.is_empty()) else {
            return fail(format!(
                "a body ({}) where the document has none",
                essence.as_deref().unwrap_or("no content-type")
            ));
        };
        let Some(essence) = essence else {
            return fail("a body without a content-type".to_owned());
        };
        let wildcard = format!("{}/*", essence.split('/').next().unwrap_or_default());
        let Some(media) = [essence.as_str(), wildcard.as_str(), "*/*"]
            .into_iter()
            .find(|m| content.contains_key(*m))
        else {
            return fail(format!(
                "content-type {essence} is not documented (documented: {:?})",
                content.keys().collect::<Vec<_>>()
            ));
        };
        let is_json = essence == "application/json" || essence.ends_with("+json");
        if !is_json || content[media].get("schema").is_none() {
            return Ok(());
        }
        let value: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return fail(format!("the body is not JSON: {e}")),
        };
        let schema = format!("{pointer}/content/{}/schema", escape(media));
        let validator = self.validator(&schema)?;
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .take(20)
            .map(|e| format!("- at {:?}: {e}", e.instance_path().as_str()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            fail(format!(
                "the body does not match {schema}:\n    {}",
                errors.join("\n    ")
            ))
        }
    }

    /// The compiled schema at `pointer` in the document (cached).
    pub fn validator(&self, pointer: &str) -> Result<Arc<jsonschema::Validator>, String> {
        let mut cache = self.validators.lock().expect("validators");
        if let Some(v) = cache.get(pointer) {
            return Ok(v.clone());
        }
        // The whole document is the schema's resource, so `#/components/schemas/…` resolves;
        // its other members (paths, info, …) are unknown keywords, which 2020-12 ignores.
        let mut root = self.doc.clone();
        root["$schema"] = Value::from("https://json-schema.org/draft/2020-12/schema");
        // A URI fragment: path templates' braces are percent-encoded.
        let fragment = pointer
            .replace('%', "%25")
            .replace('{', "%7B")
            .replace('}', "%7D")
            .replace(' ', "%20");
        root["$ref"] = Value::from(format!("#{fragment}"));
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&root)
            .map_err(|e| format!("the document's schema {pointer} does not compile: {e}"))?;
        let validator = Arc::new(validator);
        cache.insert(pointer.to_owned(), validator.clone());
        Ok(validator)
    }
}

/// Reads JSON and fails on an object holding a key twice: `serde_json` keeps the last one
/// silently, while openapi-typescript (the dashboard's types) refuses the document.
struct NoDuplicateKeys;

impl<'de> serde::de::DeserializeSeed<'de> for NoDuplicateKeys {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for NoDuplicateKeys {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(NoDuplicateKeys)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!(
                    "the key {key:?} twice in one object"
                )));
            }
            map.next_value_seed(NoDuplicateKeys)?;
        }
        Ok(())
    }
}

/// A JSON pointer token.
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Reads every JSON response through [`Contract::check`]; other bodies (event streams,
/// exports) keep streaming and only their status and media type are checked.
struct Checked;

#[async_trait::async_trait]
impl reqwest_middleware::Middleware for Checked {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut http::Extensions,
        next: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let method = req.method().as_str().to_owned();
        let path = req.url().path().to_owned();
        let resp = next.run(req, extensions).await?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let json = content_type.as_deref().is_some_and(|c| {
            let c = c.split(';').next().unwrap_or_default().trim();
            c == "application/json" || c.ends_with("+json")
        });
        if !json {
            // A non-empty body is assumed; its schema (if any) is not JSON.
            let probe: &[u8] = if content_type.is_some() { b" " } else { b"" };
            let len = resp.content_length();
            let probe = if len == Some(0) { b"" } else { probe };
            if let Err(why) =
                Contract::livora().check(&method, &path, status, content_type.as_deref(), probe)
            {
                panic!("response breaks the OpenAPI document: {why}");
            }
            return Ok(resp);
        }
        let url = resp.url().clone();
        let version = resp.version();
        let headers = resp.headers().clone();
        let body = resp.bytes().await?;
        if let Err(why) =
            Contract::livora().check(&method, &path, status, content_type.as_deref(), &body)
        {
            panic!("response breaks the OpenAPI document: {why}");
        }
        let mut rebuilt = http::Response::builder()
            .status(status)
            .version(version)
            .url(url);
        if let Some(h) = rebuilt.headers_mut() {
            *h = headers;
        }
        let rebuilt = rebuilt.body(body).expect("response rebuilds");
        Ok(reqwest::Response::from(rebuilt))
    }
}

/// `client`, with every response checked against the OpenAPI document.
pub fn client(client: reqwest::Client) -> Http {
    reqwest_middleware::ClientBuilder::new(client)
        .with(Checked)
        .build()
}
