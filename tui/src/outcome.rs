//! Which inference requests count as failed: the rule behind every ERRS column.
//!
//! Services label `inference.requests` in different ways: Stoker's agent and the demo CNN set
//! `outcome`, OpenTelemetry instrumentation sets `error.type` (present only on failure),
//! HTTP and gRPC servers keep their status code, span-derived metrics keep the span status.
//! A request is an error when any of these says so, following the OpenTelemetry conventions:
//!
//! - `error.type` is present (and not empty);
//! - the span status is ERROR (`otel.status_code="ERROR"`, or `status.code="STATUS_CODE_ERROR"`
//!   as span-to-metrics connectors write it);
//! - the HTTP status (`http.response.status_code`, or the older `http.status_code`) is 500 or
//!   above (a 4xx is the client's error, not the service's);
//! - the gRPC status (`rpc.grpc.status_code`) is one OpenTelemetry counts as a server error:
//!   UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS;
//! - `outcome` names a failure: `error`, `failure`, `failed`, `fail`, `timeout`, `timed_out`,
//!   `deadline_exceeded`, or `rejected`/`unavailable` (a service turning requests away, a
//!   503). Case and `-`/` ` versus `_` do not matter.
//!
//! Anything else is not an error: `success`, `ok`, `invalid` (a bad request), and any outcome
//! this list does not know. A counter without any of these attributes counts no errors.

use std::collections::BTreeMap;

/// The attributes [`is_error`] reads; group request counts by these to classify them.
pub const ERROR_KEYS: [&str; 7] = [
    "outcome",
    "error.type",
    "otel.status_code",
    "status.code",
    "http.response.status_code",
    "http.status_code",
    "rpc.grpc.status_code",
];

/// `outcome` values that mean the service failed the request.
const FAILED_OUTCOMES: [&str; 9] = [
    "error",
    "failure",
    "failed",
    "fail",
    "timeout",
    "timed_out",
    "deadline_exceeded",
    "rejected",
    "unavailable",
];

/// gRPC status codes OpenTelemetry counts as server errors, by number.
const GRPC_SERVER_ERRORS: [u32; 6] = [2, 4, 12, 13, 14, 15];

/// Whether requests with these attributes failed, by the rule in the module documentation.
pub fn is_error(labels: &BTreeMap<String, String>) -> bool {
    let get = |k: &str| labels.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    if get("error.type").is_some() {
        return true;
    }
    if get("otel.status_code").is_some_and(|s| s.eq_ignore_ascii_case("error"))
        || get("status.code").is_some_and(|s| s.eq_ignore_ascii_case("status_code_error"))
    {
        return true;
    }
    let http = get("http.response.status_code").or_else(|| get("http.status_code"));
    if http.and_then(|s| s.parse::<u32>().ok()).is_some_and(|code| code >= 500) {
        return true;
    }
    if get("rpc.grpc.status_code")
        .and_then(grpc_code)
        .is_some_and(|c| GRPC_SERVER_ERRORS.contains(&c))
    {
        return true;
    }
    get("outcome").is_some_and(|o| {
        let o = o.to_ascii_lowercase().replace(['-', ' '], "_");
        FAILED_OUTCOMES.contains(&o.as_str())
    })
}

/// A gRPC status given as its number or its name (`UNAVAILABLE`).
fn grpc_code(s: &str) -> Option<u32> {
    if let Ok(n) = s.parse() {
        return Some(n);
    }
    let names = [
        ("UNKNOWN", 2),
        ("DEADLINE_EXCEEDED", 4),
        ("UNIMPLEMENTED", 12),
        ("INTERNAL", 13),
        ("UNAVAILABLE", 14),
        ("DATA_LOSS", 15),
    ];
    names.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)).map(|(_, c)| *c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn outcomes_that_name_a_failure_are_errors_and_the_rest_are_not() {
        for o in ["error", "failure", "Failed", "TIMEOUT", "timed-out", "rejected", "unavailable"] {
            assert!(is_error(&labels(&[("outcome", o)])), "{o}");
        }
        // `ok` is the demo CNN's success; `invalid` is a bad request (the client's error).
        for o in ["success", "ok", "invalid", "cancelled", "whatever", ""] {
            assert!(!is_error(&labels(&[("outcome", o)])), "{o}");
        }
        assert!(!is_error(&labels(&[])), "no attribute, no error");
    }

    #[test]
    fn opentelemetry_attributes_mark_errors() {
        assert!(is_error(&labels(&[("error.type", "timeout")])));
        assert!(is_error(&labels(&[("outcome", "success"), ("error.type", "_OTHER")])));
        assert!(!is_error(&labels(&[("error.type", " ")])));
        assert!(is_error(&labels(&[("otel.status_code", "ERROR")])));
        assert!(!is_error(&labels(&[("otel.status_code", "OK")])));
        assert!(is_error(&labels(&[("status.code", "STATUS_CODE_ERROR")])));
        assert!(is_error(&labels(&[("http.response.status_code", "503")])));
        assert!(is_error(&labels(&[("http.status_code", "500")])));
        assert!(!is_error(&labels(&[("http.response.status_code", "404")])));
        assert!(!is_error(&labels(&[("http.response.status_code", "200")])));
        assert!(is_error(&labels(&[("rpc.grpc.status_code", "14")])));
        assert!(is_error(&labels(&[("rpc.grpc.status_code", "INTERNAL")])));
        assert!(!is_error(&labels(&[("rpc.grpc.status_code", "5")])), "NOT_FOUND");
    }
}
