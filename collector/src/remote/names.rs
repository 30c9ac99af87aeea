//! OpenTelemetry names as Prometheus spells them, following the OpenTelemetry → Prometheus
//! compatibility rules: characters outside `[a-zA-Z0-9_:]` become `_` (runs collapse to one),
//! a unit suffix (`s` → `_seconds`, `By` → `_bytes`, unit `1` on gauges → `_ratio`, …),
//! `_total` on monotonic counters, and `_bucket`/`_sum`/`_count` for histograms. Attribute
//! keys follow the same character rule (`host.name` → `host_name`).
//!
//! The read side ([`super::promql`]) resolves a policy's OTel metric name back to the stored
//! names with [`base`] and [`UNIT_SUFFIXES`]: the unit is not in a selector, so it looks for
//! `base`, then `base` plus each unit suffix, among the names the store holds.

/// What a metric is, which decides its Prometheus suffixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// A gauge (or a non-monotonic sum).
    Gauge,
    /// A monotonic counter: `<name>_total`.
    Counter,
    /// A histogram: `<name>_bucket{le}`, `<name>_sum`, `<name>_count`.
    Histogram,
}

/// Unit suffixes the writer may append, as `(OTel unit, suffix)`.
pub const UNIT_SUFFIXES: &[(&str, &str)] = &[
    ("s", "seconds"),
    ("ms", "milliseconds"),
    ("us", "microseconds"),
    ("ns", "nanoseconds"),
    ("min", "minutes"),
    ("h", "hours"),
    ("By", "bytes"),
    ("KiBy", "kibibytes"),
    ("MiBy", "mebibytes"),
    ("GiBy", "gibibytes"),
    ("By/s", "bytes_per_second"),
    ("W", "watts"),
    ("J", "joules"),
    ("Cel", "celsius"),
    ("Hz", "hertz"),
    ("MHz", "megahertz"),
    ("V", "volts"),
    ("A", "amperes"),
    ("%", "percent"),
    ("1", "ratio"),
];

/// `text` with every character outside `[a-zA-Z0-9_:]` (for labels, `[a-zA-Z0-9_]`) as `_`,
/// runs of `_` collapsed, and a leading digit prefixed with `_`.
fn sanitize(text: &str, colon: bool) -> String {
    let mut out = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        let ok = c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':');
        let c = if ok { c } else { '_' };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// The metric name without unit or type suffixes: `inference.request.duration` →
/// `inference_request_duration`.
pub fn base(otel_name: &str) -> String {
    sanitize(otel_name, true)
}

/// A label name: `host.name` → `host_name`. Runs of `_` collapse, so no attribute can spell
/// a name starting with `__`, which Prometheus keeps for itself (`__name__`).
pub fn label(otel_key: &str) -> String {
    sanitize(otel_key, false)
}

/// The unit's suffix, if it has one: annotations in braces (`{request}`) have none, `X/Y`
/// without a listed suffix becomes `X_per_Y`, and `1` is `ratio` on gauges only.
fn unit_suffix(unit: &str, family: Family) -> Option<String> {
    let unit = unit.trim();
    if unit.is_empty() || unit.starts_with('{') {
        return None;
    }
    if unit == "1" {
        return (family == Family::Gauge).then(|| "ratio".to_owned());
    }
    if let Some((_, s)) = UNIT_SUFFIXES.iter().find(|(u, _)| *u == unit) {
        return Some((*s).to_owned());
    }
    let word = |u: &str| {
        UNIT_SUFFIXES
            .iter()
            .find(|(k, _)| *k == u)
            .map(|(_, s)| (*s).to_owned())
            .unwrap_or_else(|| sanitize(u, false).trim_matches('_').to_owned())
    };
    // The denominator of a rate is singular: `By/s` → `bytes_per_second`.
    let per = |u: &str| match u {
        "s" => "second".to_owned(),
        "min" => "minute".to_owned(),
        "h" => "hour".to_owned(),
        "d" => "day".to_owned(),
        other => word(other),
    };
    let out = match unit.split_once('/') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => format!("{}_per_{}", word(a), per(b)),
        _ => word(unit),
    };
    (!out.is_empty()).then_some(out)
}

/// The full Prometheus name of an OTLP metric (for histograms, without `_bucket`/`_sum`/
/// `_count`): `hw.gpu.utilization` (gauge, `1`) → `hw_gpu_utilization_ratio`, `hw.energy`
/// (counter, `J`) → `hw_energy_joules_total`.
pub fn metric(otel_name: &str, unit: &str, family: Family) -> String {
    let mut out = base(otel_name);
    if let Some(suffix) = unit_suffix(unit, family) {
        if !out.ends_with(&format!("_{suffix}")) {
            out.push('_');
            out.push_str(&suffix);
        }
    }
    if family == Family::Counter && !out.ends_with("_total") {
        out.push_str("_total");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_otel_to_prometheus_rules() {
        assert_eq!(
            metric("inference.request.duration", "s", Family::Histogram),
            "inference_request_duration_seconds"
        );
        assert_eq!(metric("hw.gpu.utilization", "1", Family::Gauge), "hw_gpu_utilization_ratio");
        assert_eq!(metric("hw.energy", "J", Family::Counter), "hw_energy_joules_total");
        assert_eq!(
            metric("inference.requests", "{request}", Family::Counter),
            "inference_requests_total"
        );
        assert_eq!(
            metric("inference.prediction.confidence", "1", Family::Histogram),
            "inference_prediction_confidence"
        );
        assert_eq!(metric("hw.gpu.memory.usage", "By", Family::Gauge), "hw_gpu_memory_usage_bytes");
        assert_eq!(metric("net.io", "By/s", Family::Gauge), "net_io_bytes_per_second");
        assert_eq!(metric("tokens", "token/s", Family::Gauge), "tokens_token_per_second");
        // Already suffixed names are not suffixed twice.
        assert_eq!(metric("latency_seconds", "s", Family::Gauge), "latency_seconds");
        assert_eq!(metric("jobs_total", "", Family::Counter), "jobs_total");
        assert_eq!(base("vllm:e2e..latency"), "vllm:e2e_latency");
        assert_eq!(base("9lives"), "_9lives");
    }

    #[test]
    fn labels_cannot_take_prometheus_reserved_names() {
        assert_eq!(label("host.name"), "host_name");
        assert_eq!(label("__name__"), "_name_");
        assert!(!label("__ __x").starts_with("__"));
        assert_eq!(label("k8s.pod.name"), "k8s_pod_name");
        assert_eq!(label("a-b c"), "a_b_c");
    }
}
