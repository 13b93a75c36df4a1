//! Message templates: MiniJinja over the person and the event that started the journey.
//!
//! The context is `traits`, `computed`, `segments`, `tags`, `person` (its key),
//! `event` (`event`, `properties`, `timestamp`) and `unsubscribe_url` (the message's own
//! link, filled in when it is sent: [`crate::tracking`]) and `recommendations` (the models'
//! [`RECOMMENDED`] best items for the person, each `item`, `score` and `reason`, for
//! cross-selling: `{% for r in recommendations %}{{ r.item }}{% endfor %}`). Undefined values render as nothing, as in
//! Customer.io's Liquid; a syntax error is reported where the workflow is saved
//! ([`check`]) and, should one reach the runtime, puts the message in the dead letters.

use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Map, Value, json};

use crate::people::Person;

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // `traits.address.city` with no address renders as nothing too.
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    // Messages are not HTML pages: no auto-escaping unless the template asks for it.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_fuel(Some(100_000));
    env
}

/// Templates compiled once and kept, by their text (a workflow's templates are few and
/// rendered for every person who reaches the step).
fn compiled() -> &'static std::sync::RwLock<Environment<'static>> {
    static ENV: std::sync::OnceLock<std::sync::RwLock<Environment<'static>>> =
        std::sync::OnceLock::new();
    ENV.get_or_init(|| std::sync::RwLock::new(environment()))
}

/// How many distinct templates are kept at most (then the cache starts again).
const KEPT: usize = 10_000;

/// How many recommendations a template sees.
pub const RECOMMENDED: usize = 10;

/// The values a template sees.
pub fn context(person: &Person, trigger: &Value) -> Value {
    json!({
        "recommendations": person.suggestions.recommendations(RECOMMENDED),
        "person": person.key(),
        "traits": person.traits,
        "computed": person.computed,
        "segments": person.segments,
        "tags": person.tags,
        "event": trigger,
        "unsubscribe_url": crate::tracking::UNSUBSCRIBE_MARKER,
    })
}

/// Renders one template text.
pub fn render(text: &str, ctx: &Value) -> Result<String, String> {
    if !text.contains("{{") && !text.contains("{%") && !text.contains("{#") {
        return Ok(text.to_owned());
    }
    let name = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(text.as_bytes()));
    let fail = |e: minijinja::Error| format!("template: {e}");
    {
        let env = compiled().read().unwrap_or_else(|e| e.into_inner());
        if let Ok(t) = env.get_template(&name) {
            return t.render(ctx).map_err(fail);
        }
    }
    let mut env = compiled().write().unwrap_or_else(|e| e.into_inner());
    if env.templates().count() >= KEPT {
        *env = environment();
    }
    env.add_template_owned(name.clone(), text.to_owned())
        .map_err(fail)?;
    env.get_template(&name)
        .map_err(fail)?
        .render(ctx)
        .map_err(fail)
}

/// Renders every text part of a message template (other values are kept as they are).
pub fn render_parts(parts: &Map<String, Value>, ctx: &Value) -> Result<Map<String, Value>, String> {
    parts
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => render(s, ctx)
                .map(|r| (k.clone(), Value::String(r)))
                .map_err(|e| format!("{k}: {e}")),
            other => Ok((k.clone(), other.clone())),
        })
        .collect()
}

/// Checks a template's syntax (when a workflow is saved).
pub fn check(text: &str) -> Result<(), String> {
    let env = environment();
    env.template_from_str(text)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Checks every template of a workflow; an error names the part (`steps[1].send.template.body`).
pub fn check_workflow(
    w: &livora_model::workflow::Workflow,
) -> Result<(), livora_model::segment::DefinitionError> {
    use livora_model::workflow::Action;
    let fail =
        |path: String, e: String| livora_model::segment::DefinitionError { path, message: e };
    for (i, step) in w.steps.iter().enumerate() {
        match &step.action {
            Action::Send(s) => {
                for (k, v) in &s.template {
                    if let Some(text) = v.as_str() {
                        check(text)
                            .map_err(|e| fail(format!("steps[{i}].send.template.{k}"), e))?;
                    }
                }
            }
            Action::Webhook(h) => {
                if let Some(body) = &h.body {
                    check(body).map_err(|e| fail(format!("steps[{i}].webhook.body"), e))?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_traits_event_properties_and_leaves_the_unknown_empty() {
        let mut p = Person {
            keys: vec!["u:ada".into()],
            ..Person::default()
        };
        p.traits.insert("first_name".into(), json!("Ada"));
        let ctx = context(
            &p,
            &json!({"event": "Product Added", "properties": {"name": "Lamp", "price": 30}}),
        );
        let out = render(
            "Hi {{ traits.first_name }}, your {{ event.properties.name }} ({{ event.properties.price }}) waits{{ traits.nothing }}{{ traits.address.city }}.",
            &ctx,
        );
        assert_eq!(out.as_deref(), Ok("Hi Ada, your Lamp (30) waits."));
        assert!(check("{{ unclosed").is_err());
        assert!(render("{% for x in [1] %}", &ctx).is_err());
    }

    struct Shelf(Vec<&'static str>);

    impl crate::people::Suggest for Shelf {
        fn recommendations(&self, limit: usize) -> Vec<Value> {
            self.0
                .iter()
                .take(limit)
                .map(|i| json!({"item": i, "score": 0.5, "reason": "similar"}))
                .collect()
        }
    }

    #[test]
    fn recommendations_render_for_cross_selling_and_are_empty_without_models() {
        let text = "{% for r in recommendations %}{{ r.item }};{% else %}none{% endfor %}";
        let mut p = Person {
            keys: vec!["u:ada".into()],
            ..Person::default()
        };
        assert_eq!(
            render(text, &context(&p, &json!({}))).as_deref(),
            Ok("none")
        );
        let many: Vec<&'static str> = vec!["lamp"; RECOMMENDED + 5];
        p.suggestions = crate::people::Suggestions::new(std::sync::Arc::new(Shelf(many)));
        let out = render(text, &context(&p, &json!({}))).unwrap_or_default();
        assert_eq!(out, "lamp;".repeat(RECOMMENDED));
        p.suggestions =
            crate::people::Suggestions::new(std::sync::Arc::new(Shelf(vec!["lamp", "shade"])));
        assert_eq!(
            render(
                "{{ recommendations[0].item }} and {{ recommendations[1].item }}",
                &context(&p, &json!({}))
            )
            .as_deref(),
            Ok("lamp and shade")
        );
    }
}
