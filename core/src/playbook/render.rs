//! Tera rendering of task arguments and conditions.
//!
//! Only strings that contain `{{` or `{%` are rendered, so plain arguments cost nothing and a
//! literal brace in a shell command does not need escaping unless it forms a tera tag.
//! Conditions (`when`, `changed_when`, `failed_when`) are tera expressions evaluated as
//! `{% if EXPR %}`. Rendering is strict: an undefined variable is an error, never an empty
//! string.

use serde_json::Value;
use tera::{Context, Tera};

/// True when `s` holds a tera tag and must be rendered.
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// A template or condition that does not parse or does not render.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// tera's error; its text shows the whole chain on one line, since tera puts the useful
    /// part (line and column, what was expected, which variable is undefined) in the sources.
    #[error("{}", crate::error_chain(&**.0))]
    Tera(#[source] Box<tera::Error>),

    /// A templated string (an argument, a var) that does not compile.
    #[error("template `{text}`: {}", crate::error_chain(&**source))]
    Syntax {
        text: String,
        #[source]
        source: Box<tera::Error>,
    },

    /// A `when`/`changed_when`/`failed_when` expression that does not evaluate.
    #[error("condition `{expr}`: {}", crate::error_chain(&**source))]
    Condition {
        expr: String,
        #[source]
        source: Box<tera::Error>,
    },
}

impl From<tera::Error> for RenderError {
    fn from(e: tera::Error) -> Self {
        RenderError::Tera(Box::new(e))
    }
}

/// The name a one-off template goes by in tera's messages.
const ONE_OFF: &str = "template";

/// `Tera::one_off` under a name fit for messages ("template", not tera's `__tera_one_off`).
fn one_off(text: &str, ctx: &Context) -> Result<String, tera::Error> {
    let mut tera = Tera::default();
    tera.autoescape_on(vec![]);
    tera.add_raw_template(ONE_OFF, text)?;
    tera.render(ONE_OFF, ctx)
}

/// Checks the syntax of a template string without rendering it.
pub fn check_syntax(s: &str) -> Result<(), RenderError> {
    let mut tera = Tera::default();
    tera.autoescape_on(vec![]);
    tera.add_raw_template(ONE_OFF, s)?;
    Ok(())
}

/// Checks the syntax of a condition expression.
pub fn check_condition(expr: &str) -> Result<(), RenderError> {
    check_syntax(&condition_template(expr))
}

fn condition_template(expr: &str) -> String {
    format!("{{% if {expr} %}}true{{% else %}}false{{% endif %}}")
}

/// Renders one string.
pub fn render_str(s: &str, ctx: &Context) -> Result<String, RenderError> {
    if !is_template(s) {
        return Ok(s.to_string());
    }
    Ok(one_off(s, ctx)?)
}

/// Renders a whole template text with a JSON object as context (what the `template` module
/// does on each host; also used by the golden-file tests).
pub fn render_text(text: &str, context: &Value) -> Result<String, RenderError> {
    let ctx = Context::from_value(context.clone())?;
    render_with(text, &ctx)
}

/// Renders a whole template text with a tera context.
pub fn render_with(text: &str, ctx: &Context) -> Result<String, RenderError> {
    Ok(one_off(text, ctx)?)
}

/// Renders every templated string inside a JSON value (object keys too).
pub fn render_value(value: &Value, ctx: &Context) -> Result<Value, RenderError> {
    Ok(match value {
        Value::String(s) => match lookup_whole(s, ctx) {
            Some(v) => v,
            None => Value::String(render_str(s, ctx)?),
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_value(v, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => {
            let mut out = serde_json::Map::with_capacity(map.len());
            for (k, v) in map {
                out.insert(render_str(k, ctx)?, render_value(v, ctx)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

/// A string that is exactly `{{ a.b.c }}` and names a list or a mapping yields that value
/// itself, not its text: so `names: "{{ ipvs_modules }}"` passes a list to a module.
pub fn lookup_whole(s: &str, ctx: &Context) -> Option<Value> {
    let path = s.trim().strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let value = lookup_path(path, ctx)?;
    matches!(value, Value::Array(_) | Value::Object(_)).then_some(value)
}

/// Looks up a dotted path (`cluster.runtime.registry_mirrors`) in the context.
pub fn lookup_path(path: &str, ctx: &Context) -> Option<Value> {
    let valid = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    let mut parts = path.split('.');
    let first = parts.next().filter(|p| valid(p))?;
    let mut value = ctx.get(first)?.clone();
    for part in parts {
        if !valid(part) {
            return None;
        }
        value = match value {
            Value::Object(mut m) => m.remove(part)?,
            Value::Array(a) => a.into_iter().nth(part.parse().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

/// Evaluates a condition; a bare `true`/`false` needs no tera.
pub fn eval_condition(expr: &str, ctx: &Context) -> Result<bool, RenderError> {
    match expr.trim() {
        "true" | "True" | "yes" => return Ok(true),
        "false" | "False" | "no" => return Ok(false),
        _ => {}
    }
    let out = one_off(&condition_template(expr), ctx).map_err(|e| RenderError::Condition {
        expr: expr.to_string(),
        source: Box::new(e),
    })?;
    Ok(out == "true")
}

/// Calls `f` on every string in a JSON value (used to syntax-check templated arguments at
/// load time).
pub fn each_string<'a, E>(
    value: &'a Value,
    f: &mut dyn FnMut(&'a str) -> Result<(), E>,
) -> Result<(), E> {
    match value {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().try_for_each(|v| each_string(v, f)),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            f(k)?;
            each_string(v, f)
        }),
        _ => Ok(()),
    }
}

/// True when any string inside `value` is a template.
pub fn has_template(value: &Value) -> bool {
    let mut found = false;
    let _ = each_string(value, &mut |s| {
        found |= is_template(s);
        Ok::<(), std::convert::Infallible>(())
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Context {
        Context::from_value(json!({"host": {"name": "n1", "roles": ["worker"]}, "n": 3})).unwrap()
    }

    #[test]
    fn renders_nested_strings_and_conditions() {
        let v = render_value(
            &json!({"a": "x-{{ host.name }}", "b": [1, "{{ n + 1 }}"]}),
            &ctx(),
        )
        .unwrap();
        assert_eq!(v, json!({"a": "x-n1", "b": [1, "4"]}));
        assert!(eval_condition("'worker' in host.roles", &ctx()).unwrap());
        assert!(!eval_condition("n > 5", &ctx()).unwrap());
    }

    #[test]
    fn whole_expression_keeps_lists() {
        let v = render_value(
            &json!({"names": "{{ host.roles }}", "one": "{{ host.name }}"}),
            &ctx(),
        )
        .unwrap();
        assert_eq!(v, json!({"names": ["worker"], "one": "n1"}));
    }

    #[test]
    fn undefined_variable_is_an_error() {
        let err = render_str("{{ nope }}", &ctx()).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn syntax_errors_are_found_without_rendering() {
        assert!(check_syntax("{{ host.name ").is_err());
        assert!(check_condition("host.name ==").is_err());
        assert!(check_syntax("plain { braces }").is_ok());
    }
}
