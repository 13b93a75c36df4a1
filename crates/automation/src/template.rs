//! Message templates: MiniJinja over the person and the event that started the journey.
//!
//! The context is `traits`, `computed`, `segments`, `tags`, `person` (its key),
//! `event` (`event`, `properties`, `timestamp`) and `unsubscribe_url` (the message's own
//! link, filled in when it is sent: [`crate::tracking`]) and `recommendations` (the models'
//! [`RECOMMENDED`] best items for the person, each `item`, `score` and `reason`, for
//! cross-selling: `{% for r in recommendations %}{{ r.item }}{% endfor %}`). Undefined values render as nothing, as in
//! Customer.io's Liquid; a syntax error is reported where the workflow is saved
//! ([`check`]) and, should one reach the runtime, puts the message in the dead letters.
//!
//! # Limits
//!
//! Fuel bounds the steps of one render, not its memory: `{% set a = "x" * 100000000 %}`
//! then `{% set b = a ~ a %}` doubles a 100 MB string with a handful of steps. So every
//! operation that can make a value larger is checked *before* it allocates: `+`, `*` and `~`
//! are compiled into guarded calls ([`guard`]), every filter refuses inputs over
//! [`MAX_VALUE`] (and `replace`, `join`, `indent`, `format`, `batch`, `slice` the result they
//! would build), and everything a render emits (text, `{{ }}`, captured blocks and macro
//! calls alike) counts against [`MAX_OUTPUT`]. Over a limit the render stops with
//! [`RenderError::TooLarge`]. One operation may briefly hold a small multiple of
//! [`MAX_VALUE`] (`tojson` of a string of quotes) before its result is refused.

use std::cell::Cell;

use minijinja::machinery::{Instruction, Instructions};
use minijinja::value::{Rest, Value as JValue, ValueKind};
use minijinja::{Environment, ErrorKind, State, UndefinedBehavior};
use serde_json::{Map, Value, json};

use crate::people::Person;

/// At most this many bytes one render may emit: the text, every `{{ }}`, and what captured
/// blocks and macro calls produce.
pub const MAX_OUTPUT: usize = 1 << 20;

/// At most this many bytes in one value a template computes (a string, or everything a
/// list or map holds, each element counted as often as it appears).
pub const MAX_VALUE: usize = 1 << 20;

/// Why a template did not render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A syntax error, an unknown filter, a type error, out of fuel.
    #[error("template: {0}")]
    Invalid(String),
    /// A value or the output would pass [`MAX_VALUE`] or [`MAX_OUTPUT`].
    #[error("template: {0}")]
    TooLarge(String),
}

impl From<RenderError> for String {
    fn from(e: RenderError) -> Self {
        e.to_string()
    }
}

thread_local! {
    /// Bytes emitted by the render running on this thread (renders are synchronous).
    static EMITTED: Cell<usize> = const { Cell::new(0) };
    /// Set when a limit stopped the render running on this thread.
    static OVER: Cell<bool> = const { Cell::new(false) };
    /// Bytes of values the render running on this thread has built so far.
    static BUILT: Cell<usize> = const { Cell::new(0) };
}

/// At most this many bytes of values one render may build in all (what `+`, `*`, `~` and
/// filters make, counted when made), so values kept alive at once (a macro's arguments down
/// a recursion, say) stay bounded too.
pub const MAX_BUILT: usize = 64 * MAX_VALUE;

/// Counts `n` bytes built by the render running on this thread.
fn charge(n: usize) -> Result<(), minijinja::Error> {
    let total = BUILT.with(Cell::get).saturating_add(n);
    BUILT.with(|b| b.set(total));
    if total > MAX_BUILT {
        Err(too_large(format!(
            "it would build more than {MAX_BUILT} bytes of values, the most one render may"
        )))
    } else {
        Ok(())
    }
}

fn too_large(what: String) -> minijinja::Error {
    OVER.with(|o| o.set(true));
    minijinja::Error::new(ErrorKind::InvalidOperation, what)
}

/// The bytes `v` holds, counted until `limit` is passed (then any number above it).
fn size(v: &JValue, limit: usize) -> usize {
    match v.kind() {
        ValueKind::String => v.as_str().map_or(0, str::len),
        ValueKind::Bytes => v.as_bytes().map_or(0, <[u8]>::len),
        ValueKind::Seq | ValueKind::Map | ValueKind::Iterable => {
            let Ok(items) = v.try_iter() else { return 8 };
            let map = v.kind() == ValueKind::Map;
            let mut n = 0usize;
            for item in items {
                n = n.saturating_add(8 + size(&item, limit));
                if map && let Ok(value) = v.get_item(&item) {
                    n = n.saturating_add(size(&value, limit));
                }
                if n > limit {
                    break;
                }
            }
            n
        }
        _ => 8,
    }
}

/// At most how many bytes `v` prints as (strings in a list or map are quoted and escaped,
/// at most six bytes for one).
fn printed(v: &JValue, limit: usize) -> usize {
    fn inner(v: &JValue, limit: usize, nested: bool) -> usize {
        match v.kind() {
            ValueKind::String => {
                let n = v.as_str().map_or(0, str::len);
                if nested { n.saturating_mul(6) + 2 } else { n }
            }
            ValueKind::Bytes => v.as_bytes().map_or(0, <[u8]>::len).saturating_mul(4) + 3,
            ValueKind::Seq | ValueKind::Map | ValueKind::Iterable => {
                let Ok(items) = v.try_iter() else { return 32 };
                let map = v.kind() == ValueKind::Map;
                let mut n = 2usize;
                for item in items {
                    n = n.saturating_add(4 + inner(&item, limit, true));
                    if map && let Ok(value) = v.get_item(&item) {
                        n = n.saturating_add(inner(&value, limit, true));
                    }
                    if n > limit {
                        break;
                    }
                }
                n
            }
            _ => 32,
        }
    }
    inner(v, limit, false)
}

fn check_value(what: &str, n: usize) -> Result<(), minijinja::Error> {
    if n > MAX_VALUE {
        Err(too_large(format!(
            "{what} would hold more than {MAX_VALUE} bytes, the most a template value may"
        )))
    } else {
        Ok(())
    }
}

/// The guarded operators: `+`, `*` and `~` compile into calls of these (names a template
/// cannot write, so it cannot shadow them), which check the size of the result before
/// building it.
mod guard {
    use super::*;

    pub const ADD: &str = "$lv_add";
    pub const MUL: &str = "$lv_mul";
    pub const CONCAT: &str = "$lv_concat";

    /// The plain operator, on values already checked.
    fn apply(op: &'static str, a: JValue, b: JValue) -> Result<JValue, minijinja::Error> {
        static PLAIN: std::sync::OnceLock<Environment<'static>> = std::sync::OnceLock::new();
        let env = PLAIN.get_or_init(Environment::new);
        env.compile_expression(op)?
            .eval(minijinja::context! { a => a, b => b })
    }

    fn sized(v: &JValue) -> bool {
        matches!(
            v.kind(),
            ValueKind::String | ValueKind::Seq | ValueKind::Iterable | ValueKind::Bytes
        )
    }

    pub fn add(a: JValue, b: JValue) -> Result<JValue, minijinja::Error> {
        if sized(&a) && sized(&b) {
            let n = size(&a, MAX_VALUE + 1).saturating_add(size(&b, MAX_VALUE + 1));
            check_value("a + b", n)?;
        }
        let out = apply("a + b", a, b)?;
        charge(size(&out, MAX_VALUE + 1))?;
        Ok(out)
    }

    pub fn mul(a: JValue, b: JValue) -> Result<JValue, minijinja::Error> {
        let (s, n) = if sized(&a) { (&a, &b) } else { (&b, &a) };
        if sized(s)
            && let Some(times) = n.as_usize()
        {
            check_value("a * b", size(s, MAX_VALUE + 1).saturating_mul(times))?;
        }
        let out = apply("a * b", a, b)?;
        charge(size(&out, MAX_VALUE + 1))?;
        Ok(out)
    }

    pub fn concat(a: JValue, b: JValue) -> Result<JValue, minijinja::Error> {
        let n = printed(&a, MAX_VALUE + 1).saturating_add(printed(&b, MAX_VALUE + 1));
        check_value("a ~ b", n)?;
        charge(n)?;
        Ok(JValue::from(format!("{a}{b}")))
    }
}

/// What a filter would build, checked before it runs (its inputs are checked for all).
fn filter_precheck(name: &str, args: &[JValue]) -> Result<(), minijinja::Error> {
    let arg = |i: usize| args.get(i).filter(|v| !v.is_kwargs());
    let text_len = |i: usize| arg(i).and_then(|v| v.as_str()).map_or(0, str::len);
    let big = |i: usize| MAX_VALUE + 1 + i;
    match name {
        "replace" => {
            let s = arg(0).and_then(|v| v.as_str()).unwrap_or("");
            let from = arg(1).and_then(|v| v.as_str()).unwrap_or("");
            let to = text_len(2);
            let hits = if from.is_empty() {
                s.chars().count() + 1
            } else {
                s.matches(from).count()
            };
            let n = s.len().saturating_add(hits.saturating_mul(to));
            check_value("replace", n)
        }
        "join" => {
            let sep = text_len(1);
            let mut n = 0usize;
            if let Some(Ok(items)) = arg(0).map(JValue::try_iter) {
                for item in items {
                    n = n.saturating_add(sep + printed(&item, big(0)));
                    if n > MAX_VALUE {
                        break;
                    }
                }
            }
            check_value("join", n)
        }
        "indent" => {
            let s = arg(0).and_then(|v| v.as_str()).unwrap_or("");
            let width = match arg(1) {
                Some(w) if w.kind() == ValueKind::String => text_len(1),
                Some(w) => w.as_usize().unwrap_or(0),
                None => 4,
            };
            let lines = s.lines().count() + 1;
            check_value(
                "indent",
                s.len().saturating_add(lines.saturating_mul(width)),
            )
        }
        "format" => {
            let fmt = arg(0).and_then(|v| v.as_str()).unwrap_or("");
            // Widths and precisions (`%10000000s`) pad the result.
            let widths: usize = fmt
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|d| {
                    d.parse::<usize>()
                        .ok()
                        .or((!d.is_empty()).then_some(usize::MAX))
                })
                .fold(0, usize::saturating_add);
            let values = args[1.min(args.len())..]
                .iter()
                .map(|v| printed(v, big(0)))
                .fold(0, usize::saturating_add);
            check_value(
                "format",
                fmt.len().saturating_add(widths).saturating_add(values),
            )
        }
        "batch" | "slice" => {
            let count = arg(1).and_then(JValue::as_usize).unwrap_or(0);
            check_value(name, count.saturating_mul(16))
        }
        _ => Ok(()),
    }
}

/// Every built-in filter, wrapped: inputs over [`MAX_VALUE`] are refused, what some
/// filters would build is checked first ([`filter_precheck`]), and results over the limit
/// are not kept.
fn guard_filters(env: &mut Environment<'static>) {
    use minijinja::filters as f;
    let builtin: [(&'static str, JValue); 47] = [
        ("safe", JValue::from_function(f::safe)),
        ("escape", JValue::from_function(f::escape)),
        ("e", JValue::from_function(f::escape)),
        ("lower", JValue::from_function(f::lower)),
        ("upper", JValue::from_function(f::upper)),
        ("title", JValue::from_function(f::title)),
        ("capitalize", JValue::from_function(f::capitalize)),
        ("replace", JValue::from_function(f::replace)),
        ("length", JValue::from_function(f::length)),
        ("count", JValue::from_function(f::length)),
        ("dictsort", JValue::from_function(f::dictsort)),
        ("items", JValue::from_function(f::items)),
        ("reverse", JValue::from_function(f::reverse)),
        ("trim", JValue::from_function(f::trim)),
        ("join", JValue::from_function(f::join)),
        ("split", JValue::from_function(f::split)),
        ("lines", JValue::from_function(f::lines)),
        ("default", JValue::from_function(f::default)),
        ("d", JValue::from_function(f::default)),
        ("round", JValue::from_function(f::round)),
        ("abs", JValue::from_function(f::abs)),
        ("int", JValue::from_function(f::int)),
        ("float", JValue::from_function(f::float)),
        ("attr", JValue::from_function(f::attr)),
        ("first", JValue::from_function(f::first)),
        ("last", JValue::from_function(f::last)),
        ("min", JValue::from_function(f::min)),
        ("max", JValue::from_function(f::max)),
        ("sort", JValue::from_function(f::sort)),
        ("list", JValue::from_function(f::list)),
        ("string", JValue::from_function(f::string)),
        ("bool", JValue::from_function(f::bool)),
        ("batch", JValue::from_function(f::batch)),
        ("slice", JValue::from_function(f::slice)),
        ("sum", JValue::from_function(f::sum)),
        ("indent", JValue::from_function(f::indent)),
        ("select", JValue::from_function(f::select)),
        ("reject", JValue::from_function(f::reject)),
        ("selectattr", JValue::from_function(f::selectattr)),
        ("rejectattr", JValue::from_function(f::rejectattr)),
        ("map", JValue::from_function(f::map)),
        ("groupby", JValue::from_function(f::groupby)),
        ("unique", JValue::from_function(f::unique)),
        ("chain", JValue::from_function(f::chain)),
        ("zip", JValue::from_function(f::zip)),
        ("pprint", JValue::from_function(f::pprint)),
        ("format", JValue::from_function(f::format)),
    ];
    for (name, original) in builtin {
        env.add_filter(
            name,
            move |state: &State, args: Rest<JValue>| -> Result<JValue, minijinja::Error> {
                for a in args.iter() {
                    check_value(name, size(a, MAX_VALUE + 1))?;
                }
                filter_precheck(name, &args)?;
                let out = original.call(state, &args)?;
                let n = size(&out, MAX_VALUE + 1);
                check_value(name, n)?;
                charge(n)?;
                Ok(out)
            },
        );
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // `traits.address.city` with no address renders as nothing too.
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    // Messages are not HTML pages: no auto-escaping unless the template asks for it.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_fuel(Some(100_000));
    guard_filters(&mut env);
    env.add_function(guard::ADD, guard::add);
    env.add_function(guard::MUL, guard::mul);
    env.add_function(guard::CONCAT, guard::concat);
    // It prints the whole state.
    env.remove_global("debug");
    env.set_formatter(|out, state, value| {
        let n = printed(value, MAX_OUTPUT + 1);
        let total = EMITTED.with(Cell::get).saturating_add(n);
        if total > MAX_OUTPUT {
            return Err(too_large(format!(
                "the output would pass {MAX_OUTPUT} bytes, the most one render may emit"
            )));
        }
        EMITTED.with(|e| e.set(total));
        minijinja::escape_formatter(out, state, value)
    });
    env
}

/// At most this many bytes of constants a template may fold when it is compiled (the
/// compiler computes `"x" * 1000` once, before any guard runs).
const MAX_CONSTANTS: usize = 4 * MAX_VALUE;

/// Checks what compiling `text` would compute ahead (constant folding: `"x" * 100000000`
/// is built by the compiler, not at render time): every constant expression is evaluated
/// here through the guards first, and all of them together may hold [`MAX_CONSTANTS`].
fn check_constants(text: &str) -> Result<(), RenderError> {
    let ast =
        minijinja::machinery::parse(text, "<template>", Default::default(), Default::default())
            .map_err(|e| RenderError::Invalid(e.to_string()))?;
    let tree = serde_json::to_value(&ast).map_err(|e| RenderError::Invalid(e.to_string()))?;
    let mut total = 0usize;
    BUILT.with(|b| b.set(0));
    let result = constant(&tree, &mut total);
    BUILT.with(|b| b.set(0));
    OVER.with(|o| o.set(false));
    result
        .map(|_| ())
        .map_err(|e| RenderError::TooLarge(e.to_string()))
}

/// The value of the expression `node` if it is a constant the compiler folds (walking
/// every node under it either way); its size is added to `total`.
fn constant(node: &Value, total: &mut usize) -> Result<Option<JValue>, minijinja::Error> {
    let kind = node.get("expr").and_then(Value::as_str);
    let inner = node.get("inner").and_then(|i| i.get(0));
    let Some((kind, inner)) = kind.zip(inner) else {
        // A statement or a part of one: look inside.
        match node {
            Value::Object(m) => {
                for v in m.values() {
                    constant(v, total)?;
                }
            }
            Value::Array(a) => {
                for v in a {
                    constant(v, total)?;
                }
            }
            _ => {}
        }
        return Ok(None);
    };
    let field = |name: &str| inner.get(name).unwrap_or(&Value::Null);
    fn all(list: &Value, total: &mut usize) -> Result<Option<Vec<JValue>>, minijinja::Error> {
        let mut out = Some(Vec::new());
        for item in list.as_array().map(Vec::as_slice).unwrap_or_default() {
            match (constant(item, total)?, &mut out) {
                (Some(v), Some(o)) => o.push(v),
                _ => out = None,
            }
        }
        Ok(out)
    }
    let value = match kind {
        "Const" => return Ok(Some(JValue::from_serialize(field("value")))),
        "List" => all(field("items"), total)?.map(JValue::from),
        "Map" => {
            let keys = all(field("keys"), total)?;
            let values = all(field("values"), total)?;
            keys.zip(values)
                .map(|(k, v)| JValue::from_iter(k.into_iter().zip(v)))
        }
        "UnaryOp" => constant(field("expr"), total)?.map(|_| JValue::from(0)),
        "BinOp" => {
            let left = constant(field("left"), total)?;
            let right = constant(field("right"), total)?;
            match (left, right, field("op").as_str()) {
                // Refused over the limit (the compiler would build it); another error means
                // the compiler does not fold it either.
                (Some(a), Some(b), Some("Add")) => guarded_fold(guard::add(a, b))?,
                (Some(a), Some(b), Some("Mul")) => guarded_fold(guard::mul(a, b))?,
                (Some(a), Some(b), Some("Concat")) => guarded_fold(guard::concat(a, b))?,
                // Numbers, comparisons, membership: nothing grows.
                (Some(_), Some(_), Some(_)) => Some(JValue::from(0)),
                _ => None,
            }
        }
        _ => {
            for v in inner.as_object().into_iter().flat_map(|m| m.values()) {
                constant(v, total)?;
            }
            None
        }
    };
    if let Some(v) = &value {
        *total = total.saturating_add(size(v, MAX_CONSTANTS + 1));
        if *total > MAX_CONSTANTS {
            return Err(too_large(format!(
                "its constants would hold more than {MAX_CONSTANTS} bytes"
            )));
        }
    }
    Ok(value)
}

/// A folded constant, `None` when the operation fails for another reason than a limit.
fn guarded_fold(r: Result<JValue, minijinja::Error>) -> Result<Option<JValue>, minijinja::Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if OVER.with(Cell::get) => Err(e),
        Err(_) => Ok(None),
    }
}

/// `instrs` with `+`, `*` and `~` calling their guards, and raw text emitted through the
/// formatter (which counts it); jumps follow the instructions they pointed at.
fn guarded<'s>(instrs: &Instructions<'s>) -> Instructions<'s> {
    let len = instrs.len() as u32;
    // Where each instruction lands (raw text takes two).
    let mut at = Vec::with_capacity(instrs.len() + 1);
    let mut next = 0u32;
    for i in 0..len {
        at.push(next);
        next += match instrs.get(i) {
            Some(Instruction::EmitRaw(_)) => 2,
            _ => 1,
        };
    }
    at.push(next);
    let to = |t: &u32| at.get(*t as usize).copied().unwrap_or(next);
    let mut out = Instructions::new(instrs.name(), instrs.source());
    for i in 0..len {
        let Some(ins) = instrs.get(i) else { continue };
        let mapped = match ins {
            Instruction::Add => vec![Instruction::CallFunction(guard::ADD, Some(2))],
            Instruction::Mul => vec![Instruction::CallFunction(guard::MUL, Some(2))],
            Instruction::StringConcat => vec![Instruction::CallFunction(guard::CONCAT, Some(2))],
            Instruction::EmitRaw(text) => vec![
                Instruction::LoadConst(JValue::from_safe_string((*text).to_owned())),
                Instruction::Emit,
            ],
            Instruction::Jump(t) => vec![Instruction::Jump(to(t))],
            Instruction::JumpIfFalse(t) => vec![Instruction::JumpIfFalse(to(t))],
            Instruction::JumpIfFalseOrPop(t) => vec![Instruction::JumpIfFalseOrPop(to(t))],
            Instruction::JumpIfTrueOrPop(t) => vec![Instruction::JumpIfTrueOrPop(to(t))],
            Instruction::Iterate(t) => vec![Instruction::Iterate(to(t))],
            Instruction::BuildMacro(name, t, flags) => {
                vec![Instruction::BuildMacro(name, to(t), *flags)]
            }
            other => vec![other.clone()],
        };
        for m in mapped {
            match (instrs.get_span(i), instrs.get_line(i)) {
                (Some(span), _) => out.add_with_span(m, span),
                (None, Some(line)) => out.add_with_line(m, u16::try_from(line).unwrap_or(u16::MAX)),
                (None, None) => out.add(m),
            };
        }
    }
    out
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

/// Runs a compiled template with its operators guarded and its output counted.
fn run(env: &Environment<'_>, name: &str, ctx: &Value) -> Result<String, RenderError> {
    let fail = |e: minijinja::Error| {
        if OVER.with(Cell::get) {
            RenderError::TooLarge(e.to_string())
        } else {
            RenderError::Invalid(e.to_string())
        }
    };
    let t = env.get_template(name).map_err(fail)?;
    let compiled = minijinja::machinery::get_compiled_template(&t);
    let instructions = guarded(&compiled.instructions);
    let blocks = compiled
        .blocks
        .iter()
        .map(|(k, v)| (*k, guarded(v)))
        .collect();
    EMITTED.with(|e| e.set(0));
    BUILT.with(|b| b.set(0));
    OVER.with(|o| o.set(false));
    let mut text = String::new();
    let result = minijinja::machinery::Vm::new(env).eval(
        &instructions,
        JValue::from_serialize(ctx),
        &blocks,
        &mut minijinja::machinery::make_string_output(&mut text),
        minijinja::AutoEscape::None,
    );
    let result = result.map(|_| ()).map_err(fail);
    EMITTED.with(|e| e.set(0));
    BUILT.with(|b| b.set(0));
    OVER.with(|o| o.set(false));
    result.map(|()| text)
}

/// Renders one template text.
pub fn render(text: &str, ctx: &Value) -> Result<String, String> {
    render_checked(text, ctx).map_err(String::from)
}

/// Renders one template text; an error says whether a limit stopped it.
pub fn render_checked(text: &str, ctx: &Value) -> Result<String, RenderError> {
    if !text.contains("{{") && !text.contains("{%") && !text.contains("{#") {
        return Ok(text.to_owned());
    }
    let name = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(text.as_bytes()));
    {
        let env = compiled().read().unwrap_or_else(|e| e.into_inner());
        if env.get_template(&name).is_ok() {
            return run(&env, &name, ctx);
        }
    }
    check_constants(text)?;
    let mut env = compiled().write().unwrap_or_else(|e| e.into_inner());
    if env.templates().count() >= KEPT {
        *env = environment();
    }
    env.add_template_owned(name.clone(), text.to_owned())
        .map_err(|e| RenderError::Invalid(e.to_string()))?;
    run(&env, &name, ctx)
}

/// Renders every text part of a message template (other values are kept as they are).
pub fn render_parts(parts: &Map<String, Value>, ctx: &Value) -> Result<Map<String, Value>, String> {
    render_parts_checked(parts, ctx).map_err(|(k, e)| format!("{k}: {e}"))
}

/// [`render_parts`], the error naming the part.
pub fn render_parts_checked(
    parts: &Map<String, Value>,
    ctx: &Value,
) -> Result<Map<String, Value>, (String, RenderError)> {
    parts
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => render_checked(s, ctx)
                .map(|r| (k.clone(), Value::String(r)))
                .map_err(|e| (k.clone(), e)),
            other => Ok((k.clone(), other.clone())),
        })
        .collect()
}

/// Checks a template's syntax (when a workflow is saved).
pub fn check(text: &str) -> Result<(), String> {
    check_sized(text).map_err(|e| match e {
        RenderError::Invalid(m) => m,
        too_large => too_large.to_string(),
    })
}

/// [`check`], the error saying whether a limit refused the template.
pub fn check_sized(text: &str) -> Result<(), RenderError> {
    check_constants(text)?;
    let env = environment();
    env.template_from_str(text)
        .map(|_| ())
        .map_err(|e| RenderError::Invalid(e.to_string()))
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

    fn too_large(text: &str) -> bool {
        matches!(
            render_checked(text, &context(&Person::default(), &json!({}))),
            Err(RenderError::TooLarge(_))
        )
    }

    /// The most memory this process has held so far (Linux), in KiB.
    fn peak_kib() -> Option<u64> {
        std::fs::read_to_string("/proc/self/status")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    }

    #[test]
    fn constants_the_compiler_would_fold_are_checked_before_it_builds_them() {
        let before = peak_kib();
        // The issue's template: folded at compile time, it held 200 MB before any render.
        assert!(too_large(
            r#"{% set a = "x" * 100000000 %}{% set b = a ~ a %}{{ b|length }}"#
        ));
        assert!(too_large(r#"{{ ("x" * 1000000) ~ ("x" * 1000000) }}"#));
        let many = r#"{{ "x" * 900000 }}"#.repeat(10);
        assert!(too_large(&many));
        assert!(check(r#"{% set a = "x" * 100000000 %}"#).is_err());
        if let (Some(a), Some(b)) = (before, peak_kib()) {
            assert!(b < a + 64 * 1024, "peak grew from {a} to {b} KiB");
        }
        // (After the peak is read: this one builds its 64 MiB before it is refused.)
        // Values kept alive at once down a recursion: what a render builds in all counts.
        assert!(too_large(
            r#"{% macro m(n, s) %}{% if n %}{{ m(n - 1, s ~ "x") }}{% endif %}{% endmacro %}{{ m(300, "x" * 1000000) }}"#
        ));
        // Small constants fold as before.
        let ctx = context(&Person::default(), &json!({}));
        assert_eq!(
            render(
                r#"{{ "ab" * 2 ~ "!" }}{{ [1] + [2] }}{{ -(1 + 2) }}{{ {"a": 1}.a }}"#,
                &ctx
            )
            .as_deref(),
            Ok("abab![1, 2]-31")
        );
    }

    #[test]
    fn a_render_cannot_build_values_or_output_over_the_limits() {
        // The issue's template: 100 MB, then doubled, refused before it is built.
        assert!(too_large(
            r#"{% set a = "x" * 100000000 %}{% set b = a ~ a %}{% set c = b ~ b %}{{ c|length }}"#
        ));
        // Doubling by steps under the value limit each, until it is passed.
        let doubling = r#"{% set ns = namespace(s="x" * 1000) %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}"#;
        assert!(too_large(doubling));
        assert!(too_large(
            r#"{% set ns = namespace(s="xx") %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}"#
        ));
        assert!(too_large(r#"{% set l = ["x" * 1000] * 2000 %}"#));
        // Filters that would build large results.
        assert!(too_large(r#"{{ ("x" * 1000)|replace("x", "y" * 10000) }}"#));
        assert!(too_large(r#"{{ ([("x" * 100000)] * 20)|join("") }}"#));
        assert!(too_large(
            r#"{% set a = "x" * 100000 %}{{ [a,a,a,a,a,a,a,a,a,a,a,a]|join(",") }}"#
        ));
        assert!(too_large(r#"{{ "%999999999s"|format("x") }}"#));
        assert!(too_large(r#"{{ ("x\n" * 1000)|indent(100000) }}"#));
        // Output: text, values and captures all count.
        let text = "0123456789".repeat(30);
        assert!(too_large(&format!(
            "{{% for i in range(5000) %}}{text}{{% endfor %}}"
        )));
        assert!(too_large(
            r#"{% set a = "x" * 100000 %}{% for i in range(20) %}{{ a }}{% endfor %}"#
        ));
        assert!(too_large(
            r#"{% set a = "x" * 100000 %}{% for i in range(20) %}{% set b %}{{ a }}{% endset %}{% endfor %}"#
        ));
        // Under the limits, as before.
        let ctx = context(&Person::default(), &json!({"properties": {"n": 3}}));
        assert_eq!(
            render(
                r#"{% set a = "ab" * 3 %}{{ a ~ "!" }} {{ event.properties.n * 2 + 1 }} {{ [1, 2] + [3] }} {{ "x,y"|replace(",", ";") }} {% for i in range(2) %}{{ i }}{% endfor %}"#,
                &ctx
            )
            .as_deref(),
            Ok("ababab! 7 [1, 2, 3] x;y 01")
        );
        assert_eq!(
            render(r#"{% if 1 %}a{% else %}b{% endif %}{% macro m(x) %}<{{ x }}>{% endmacro %}{{ m(2) }}"#, &ctx)
                .as_deref(),
            Ok("a<2>")
        );
        // Other errors stay what they were; fuel still ends endless work.
        assert!(matches!(
            render_checked("{{ 1 + [] }}", &ctx),
            Err(RenderError::Invalid(_))
        ));
        assert!(matches!(
            render_checked(
                "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                &ctx
            ),
            Err(RenderError::Invalid(_))
        ));
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
