//! `{{ name }}` placeholders in job parameters, command arguments and Job specs, filled from a
//! decision's context. One engine for both sides: `policy check` lists and checks every name a
//! template uses ([`check`]); the actuators fill them ([`render`], [`render_json`],
//! [`render_map`]).
//!
//! Deliberately tiny: names only, no expressions, so a policy file cannot run code. A
//! placeholder without a value is an error rather than an empty string: a retraining job
//! started with a blank `reason` or model name is worse than none.

use std::collections::BTreeMap;

/// Names a job template may use.
pub const NAMES: &[&str] =
    &["reason", "policy", "rule", "target", "model", "version", "value", "time", "key"];

/// A template that cannot be filled: unclosed, or a name without a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

/// Each placeholder's byte range and trimmed name.
fn placeholders(text: &str) -> Result<Vec<(usize, usize, &str)>, TemplateError> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(start) = text[from..].find("{{") {
        let start = from + start;
        let Some(len) = text[start + 2..].find("}}") else {
            return Err(TemplateError(format!("unclosed `{{{{` in {text:?}")));
        };
        let end = start + 2 + len + 2;
        out.push((start, end, text[start + 2..end - 2].trim()));
        from = end;
    }
    Ok(out)
}

/// Checks that every placeholder in `text` is closed and one of [`NAMES`].
pub fn check(text: &str) -> Result<(), String> {
    for (_, _, name) in placeholders(text).map_err(|e| e.0)? {
        if !NAMES.contains(&name) {
            return Err(format!(
                "unknown placeholder `{{{{ {name} }}}}`: use one of {}",
                NAMES.join(", ")
            ));
        }
    }
    Ok(())
}

/// Replaces every `{{ name }}` in `text` with `vars[name]`; a name without a value is an
/// error.
pub fn render(text: &str, vars: &BTreeMap<String, String>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (start, end, name) in placeholders(text)? {
        out.push_str(&text[last..start]);
        let value = vars
            .get(name)
            .ok_or_else(|| TemplateError(format!("no value for `{{{{ {name} }}}}` in {text:?}")))?;
        out.push_str(value);
        last = end;
    }
    out.push_str(&text[last..]);
    Ok(out)
}

/// Renders every string inside a JSON value (keys stay as written).
pub fn render_json(
    value: &serde_json::Value,
    vars: &BTreeMap<String, String>,
) -> Result<serde_json::Value, TemplateError> {
    use serde_json::Value;
    Ok(match value {
        Value::String(s) => Value::String(render(s, vars)?),
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| render_json(v, vars)).collect::<Result<_, _>>()?)
        }
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                out.insert(k.clone(), render_json(v, vars)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

/// Renders every value of a map.
pub fn render_map(
    map: &BTreeMap<String, String>,
    vars: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, TemplateError> {
    map.iter().map(|(k, v)| Ok((k.clone(), render(v, vars)?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_names_and_closing() {
        assert!(check("{{ reason }} {{rule}}").is_ok());
        assert!(check("{{ secret }}").expect_err("unknown").contains("unknown placeholder"));
        assert!(check("{{ reason").is_err());
    }

    #[test]
    fn fills_placeholders_and_refuses_missing_ones() {
        let vars: BTreeMap<_, _> = [("reason".to_string(), "drift".to_string())].into();
        assert_eq!(render("why: {{ reason }}!", &vars).expect("ok"), "why: drift!");
        assert_eq!(render("{{reason}}{{ reason }}", &vars).expect("ok"), "driftdrift");
        assert!(render("{{ model }}", &vars).expect_err("missing").0.contains("no value"));
        assert!(render("{{ reason", &vars).is_err());
        let j = render_json(&serde_json::json!({"a": ["{{ reason }}", 1]}), &vars).expect("ok");
        assert_eq!(j, serde_json::json!({"a": ["drift", 1]}));
        let m = BTreeMap::from([("why".to_string(), "{{ reason }}".to_string())]);
        assert_eq!(render_map(&m, &vars).expect("ok")["why"], "drift");
    }
}
