//! Personal data masked for staff who may read analytics but not personal data (`pii.view`):
//! the people list and a profile show every identifier and the personal traits (the ones
//! `[privacy]` encrypts at rest: email, phone, names, address, birthday by default) masked,
//! `j•••@e•••.com`, so a viewer sees that a person has an email and roughly which, never
//! what it is. Other traits (plan, country), computed attributes, predictions, segments and
//! tags are not personal and stay as they are.

use serde_json::{Map, Value};

const DOTS: &str = "•••";

/// A text masked: its first character, then dots; an email keeps the first character of its
/// local part and of its domain, and its top-level domain.
pub fn text(s: &str) -> String {
    let first = |s: &str| s.chars().next().map(String::from).unwrap_or_default();
    if let Some((local, domain)) = s.split_once('@') {
        let tld = domain
            .rsplit_once('.')
            .map(|(_, t)| format!(".{t}"))
            .unwrap_or_default();
        return format!("{}{DOTS}@{}{DOTS}{tld}", first(local), first(domain));
    }
    if s.is_empty() {
        String::new()
    } else {
        format!("{}{DOTS}", first(s))
    }
}

/// A value masked: texts as [`text`], anything else (a number, an address object) as dots.
fn value(v: &Value) -> Value {
    match v {
        Value::Null => Value::Null,
        Value::String(s) => Value::String(text(s)),
        _ => Value::String(DOTS.into()),
    }
}

/// Traits with the personal ones (`personal`, compared case-insensitively) masked.
pub fn traits(t: Map<String, Value>, personal: &[String]) -> Map<String, Value> {
    t.into_iter()
        .map(|(k, v)| {
            let hidden = personal.iter().any(|p| p.eq_ignore_ascii_case(&k));
            let v = if hidden { value(&v) } else { v };
            (k, v)
        })
        .collect()
}

/// Identifiers by kind (`{"email": ["…"], "user_id": ["…"]}`) with every value masked.
pub fn identifiers(ids: Value) -> Value {
    match ids {
        Value::Object(by_kind) => Value::Object(
            by_kind
                .into_iter()
                .map(|(kind, values)| {
                    let masked = match values {
                        Value::Array(vs) => Value::Array(vs.iter().map(value).collect()),
                        other => value(&other),
                    };
                    (kind, masked)
                })
                .collect(),
        ),
        other => value(&other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn texts_keep_a_hint_and_never_the_value() {
        assert_eq!(text("jane.doe@example.com"), "j•••@e•••.com");
        assert_eq!(text("jane@localhost"), "j•••@l•••");
        assert_eq!(text("Élodie"), "É•••");
        assert_eq!(text("+33 6 12 34 56 78"), "+•••");
        assert_eq!(text(""), "");
        assert_eq!(text("@x"), "•••@x•••");
    }

    #[test]
    fn only_personal_traits_and_every_identifier_are_masked() {
        let t = json!({"Email": "a@b.io", "plan": "pro", "age": 41, "address": {"city": "Lyon"}, "phone": null});
        let Value::Object(t) = t else { unreachable!() };
        let personal = vec!["email".to_owned(), "address".into(), "phone".into()];
        assert_eq!(
            Value::Object(traits(t, &personal)),
            json!({"Email": "a•••@b•••.io", "plan": "pro", "age": 41, "address": "•••", "phone": null})
        );
        assert_eq!(
            identifiers(json!({"user_id": ["u-1234"], "email": ["x@y.com", "z@w.org"]})),
            json!({"user_id": ["u•••"], "email": ["x•••@y•••.com", "z•••@w•••.org"]})
        );
    }
}
