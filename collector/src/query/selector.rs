//! Series selectors: a metric name and attribute matchers, written in code or parsed from the
//! PromQL-like text `metric{key="v", key!="v", key=~"re", key!~"re"}`.

use regex::Regex;

use super::QueryError;
use crate::store::Labels;

/// A condition on one attribute. A missing attribute equals no value, so it fails `Eq` and
/// `Re` and passes `Ne` and `NotRe`.
#[derive(Clone, Debug)]
pub enum Matcher {
    /// The attribute equals the value.
    Eq {
        /// Attribute key.
        key: String,
        /// Value.
        value: String,
    },
    /// The attribute is absent or differs.
    Ne {
        /// Attribute key.
        key: String,
        /// Value.
        value: String,
    },
    /// The attribute matches the regex (anchored at both ends).
    Re {
        /// Attribute key.
        key: String,
        /// Anchored pattern.
        regex: Regex,
    },
    /// The attribute is absent or does not match (anchored).
    NotRe {
        /// Attribute key.
        key: String,
        /// Anchored pattern.
        regex: Regex,
    },
}

fn anchored(pattern: &str) -> Result<Regex, QueryError> {
    Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| QueryError::Bad(format!("bad regex {pattern:?}: {e}")))
}

impl Matcher {
    /// `key == value`.
    pub fn eq(key: impl Into<String>, value: impl Into<String>) -> Self {
        Matcher::Eq { key: key.into(), value: value.into() }
    }
    /// `key != value`.
    pub fn ne(key: impl Into<String>, value: impl Into<String>) -> Self {
        Matcher::Ne { key: key.into(), value: value.into() }
    }
    /// `key =~ pattern` (anchored).
    pub fn re(key: impl Into<String>, pattern: &str) -> Result<Self, QueryError> {
        Ok(Matcher::Re { key: key.into(), regex: anchored(pattern)? })
    }
    /// `key !~ pattern` (anchored).
    pub fn not_re(key: impl Into<String>, pattern: &str) -> Result<Self, QueryError> {
        Ok(Matcher::NotRe { key: key.into(), regex: anchored(pattern)? })
    }

    /// Whether `labels` satisfy this matcher.
    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Matcher::Eq { key, value } => labels.get(key) == Some(value.as_str()),
            Matcher::Ne { key, value } => labels.get(key) != Some(value.as_str()),
            Matcher::Re { key, regex } => labels.get(key).is_some_and(|v| regex.is_match(v)),
            Matcher::NotRe { key, regex } => !labels.get(key).is_some_and(|v| regex.is_match(v)),
        }
    }
}

/// Which series: a metric name and matchers that must all hold.
#[derive(Clone, Debug)]
pub struct Selector {
    /// Metric name (exact).
    pub metric: String,
    /// Matchers, all of which must hold.
    pub matchers: Vec<Matcher>,
}

/// A policy's selector (a metric and attribute equality, its `where:`) as the store reads it.
impl From<&stoker_policy::signal::Selector> for Selector {
    fn from(s: &stoker_policy::signal::Selector) -> Self {
        Selector::new(s.metric.clone())
            .with_eq(s.matchers.iter().map(|(k, v)| (k.clone(), v.clone())))
    }
}

impl Selector {
    /// All series of `metric`.
    pub fn new(metric: impl Into<String>) -> Self {
        Selector { metric: metric.into(), matchers: Vec::new() }
    }

    /// Adds a matcher.
    pub fn with(mut self, m: Matcher) -> Self {
        self.matchers.push(m);
        self
    }

    /// Adds equality matchers from `key: value` pairs (a policy's `where:`).
    pub fn with_eq<K: Into<String>, V: Into<String>>(
        mut self,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        for (k, v) in pairs {
            self.matchers.push(Matcher::eq(k, v));
        }
        self
    }

    /// Parses `metric{key="v",key!="v",key=~"re",key!~"re"}` (braces optional).
    pub fn parse(text: &str) -> Result<Self, QueryError> {
        let text = text.trim();
        let (metric, rest) = match text.find('{') {
            Some(i) => (&text[..i], Some(&text[i + 1..])),
            None => (text, None),
        };
        let metric = metric.trim();
        if metric.is_empty() || metric.chars().any(|c| c.is_whitespace() || c == '"' || c == '}') {
            return Err(QueryError::Bad(format!(
                "selector {text:?}: expected a metric name first"
            )));
        }
        let mut sel = Selector::new(metric);
        let Some(rest) = rest else { return Ok(sel) };
        let body = rest
            .strip_suffix('}')
            .ok_or_else(|| QueryError::Bad(format!("selector {text:?}: missing closing brace")))?;
        let mut chars = body.char_indices().peekable();
        loop {
            while chars.peek().is_some_and(|(_, c)| c.is_whitespace() || *c == ',') {
                chars.next();
            }
            let Some(&(start, _)) = chars.peek() else { break };
            let mut key_end = start;
            while let Some(&(i, c)) = chars.peek() {
                if c == '=' || c == '!' || c.is_whitespace() {
                    break;
                }
                key_end = i + c.len_utf8();
                chars.next();
            }
            let key = body[start..key_end].trim().to_string();
            while chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
                chars.next();
            }
            let mut op = String::new();
            while let Some(&(_, c)) = chars.peek() {
                if c == '=' || c == '!' || c == '~' {
                    op.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            while chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
                chars.next();
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(QueryError::Bad(format!(
                    "selector {text:?}: value of {key:?} must be a double-quoted string"
                )));
            }
            let mut value = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed || key.is_empty() {
                return Err(QueryError::Bad(format!("selector {text:?}: unterminated matcher")));
            }
            sel.matchers.push(match op.as_str() {
                "=" => Matcher::eq(key, value),
                "!=" => Matcher::ne(key, value),
                "=~" => Matcher::re(key, &value)?,
                "!~" => Matcher::not_re(key, &value)?,
                _ => {
                    return Err(QueryError::Bad(format!(
                        "selector {text:?}: unknown operator {op:?} (=, !=, =~, !~)"
                    )));
                }
            });
        }
        Ok(sel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_operators() {
        let s = Selector::parse(
            r#"hw.gpu.utilization{host.name="n1", hw.model!="T4",service.name=~"res.*", x!~"a|b"}"#,
        )
        .expect("parses");
        assert_eq!(s.metric, "hw.gpu.utilization");
        assert_eq!(s.matchers.len(), 4);
        let l = Labels::from_pairs([
            ("host.name", "n1"),
            ("service.name", "resnet"),
            ("hw.model", "A100"),
        ]);
        assert!(s.matchers.iter().all(|m| m.matches(&l)));
        assert!(Selector::parse("m{a=b}").is_err());
        assert!(Selector::parse("m{a=\"b\"").is_err());
        assert!(Selector::parse("{a=\"b\"}").is_err());
        assert!(Selector::parse("m{a=~\"(\"}").is_err());
    }
}
