//! `{{ name }}` placeholders in job parameters, filled from a decision's context.
//!
//! Deliberately tiny: names only, no expressions, so a policy file cannot run code and
//! `policy check` can list every name a template uses.

use std::collections::BTreeMap;

/// Names a job template may use.
pub const NAMES: &[&str] =
    &["reason", "policy", "rule", "target", "model", "version", "value", "time", "key"];

fn placeholders(text: &str) -> Result<Vec<(usize, usize, String)>, String> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(start) = text[from..].find("{{") {
        let start = from + start;
        let Some(len) = text[start + 2..].find("}}") else {
            return Err(format!("unclosed `{{{{` in {text:?}"));
        };
        let end = start + 2 + len + 2;
        out.push((start, end, text[start + 2..end - 2].trim().to_owned()));
        from = end;
    }
    Ok(out)
}

/// Checks that every placeholder in `text` is closed and known.
pub fn check(text: &str) -> Result<(), String> {
    for (_, _, name) in placeholders(text)? {
        if !NAMES.contains(&name.as_str()) {
            return Err(format!(
                "unknown placeholder `{{{{ {name} }}}}`: use one of {}",
                NAMES.join(", ")
            ));
        }
    }
    Ok(())
}

/// Replaces every known placeholder with its value from `ctx` (unknown ones become empty).
pub fn render(text: &str, ctx: &BTreeMap<String, String>) -> String {
    let Ok(found) = placeholders(text) else { return text.to_owned() };
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (start, end, name) in found {
        out.push_str(&text[last..start]);
        out.push_str(ctx.get(&name).map(String::as_str).unwrap_or(""));
        last = end;
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_checks_placeholders() {
        let ctx = BTreeMap::from([("reason".to_owned(), "psi 0.31 > 0.2".to_owned())]);
        assert_eq!(render("why: {{ reason }}!", &ctx), "why: psi 0.31 > 0.2!");
        assert!(check("{{ reason }} {{rule}}").is_ok());
        assert!(check("{{ secret }}").expect_err("unknown").contains("unknown placeholder"));
        assert!(check("{{ reason").is_err());
    }
}
