//! `{{ name }}` placeholders in job inputs, command arguments and Job specs, filled from the
//! decision context. A placeholder without a value is an error rather than an empty string:
//! a retraining job started with a blank `reason` or model name is worse than none.

use std::collections::BTreeMap;

use super::types::ActuateError;

/// Replace every `{{ name }}` in `text` with `vars[name]`.
pub fn render(text: &str, vars: &BTreeMap<String, String>) -> Result<String, ActuateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(ActuateError::Template(format!("unclosed `{{{{` in {text:?}")));
        };
        let name = after[..end].trim();
        let value = vars.get(name).ok_or_else(|| {
            ActuateError::Template(format!("no value for `{{{{ {name} }}}}` in {text:?}"))
        })?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Render every string inside a JSON value (keys stay as written).
pub fn render_json(
    value: &serde_json::Value,
    vars: &BTreeMap<String, String>,
) -> Result<serde_json::Value, ActuateError> {
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

/// Render every value of a map.
pub fn render_map(
    map: &BTreeMap<String, String>,
    vars: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ActuateError> {
    map.iter().map(|(k, v)| Ok((k.clone(), render(v, vars)?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_placeholders_and_refuses_unknown_ones() {
        let vars: BTreeMap<_, _> = [("reason".to_string(), "drift".to_string())].into();
        assert_eq!(render("why: {{ reason }}!", &vars).expect("ok"), "why: drift!");
        assert_eq!(render("{{reason}}{{ reason }}", &vars).expect("ok"), "driftdrift");
        assert!(render("{{ model }}", &vars).is_err());
        assert!(render("{{ reason", &vars).is_err());
        let j = render_json(&serde_json::json!({"a": ["{{ reason }}", 1]}), &vars).expect("ok");
        assert_eq!(j, serde_json::json!({"a": ["drift", 1]}));
    }
}
