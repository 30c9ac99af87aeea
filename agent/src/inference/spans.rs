//! Normalisation into the `inference.*` vocabulary: server spans become request-duration
//! histograms and request counters; HTTP server duration metrics are renamed.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{Metric, ResourceMetrics};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};

use super::aggregate::{Aggregator, MetricMeta, Observation, attr_string, kv_str};
use super::config::ReceiverConfig;

/// `inference.request.duration`, seconds.
pub const REQUEST_DURATION: &str = "inference.request.duration";
/// `inference.requests`, with `outcome`.
pub const REQUESTS: &str = "inference.requests";

/// The attributes kept on span-derived series: the inference vocabulary, nothing with
/// per-request cardinality.
const MODEL_KEYS: [&str; 2] = ["model.name", "model.version"];

/// Map a received metric onto the inference vocabulary: `(new identity, value scale)`, or
/// `None` to keep it as it is.
pub fn rename_metric(metric: &Metric, map_http: bool) -> Option<(MetricMeta, f64)> {
    if !map_http {
        return None;
    }
    let scale = match (metric.name.as_str(), metric.unit.as_str()) {
        ("http.server.request.duration", "ms") => 0.001,
        ("http.server.request.duration", _) => 1.0,
        // The pre-1.0 semantic conventions' name, in milliseconds.
        ("http.server.duration", "s") => 1.0,
        ("http.server.duration", _) => 0.001,
        _ => return None,
    };
    Some((
        MetricMeta {
            name: REQUEST_DURATION.to_owned(),
            unit: "s".to_owned(),
            description: metric.description.clone(),
        },
        scale,
    ))
}

/// What the spans of one request yield.
#[derive(Debug, Default)]
pub struct DerivedSpans {
    /// Pre-aggregated delta batches (one per service resource).
    pub batches: Vec<ResourceMetrics>,
    /// Spans in the request.
    pub spans: u64,
    /// Server spans of configured services turned into measurements.
    pub used: u64,
}

/// Turn the server spans of configured services into `inference.request.duration` and
/// `inference.requests`, aggregated within this one request so the aggregator merges a few
/// points instead of one per span.
pub fn derive(request: &ExportTraceServiceRequest, cfg: &ReceiverConfig, now: u64) -> DerivedSpans {
    let mut local = Aggregator::new(Vec::new(), usize::MAX, now);
    let mut derived = DerivedSpans::default();
    let duration = MetricMeta {
        name: REQUEST_DURATION.to_owned(),
        unit: "s".to_owned(),
        description: "Duration of inference requests, from server spans.".to_owned(),
    };
    let requests = MetricMeta {
        name: REQUESTS.to_owned(),
        unit: "{request}".to_owned(),
        description: "Inference requests by outcome, from server spans.".to_owned(),
    };
    for rs in &request.resource_spans {
        let resource_attrs: &[KeyValue] =
            rs.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or(&[]);
        let spans: u64 = rs.scope_spans.iter().map(|s| s.spans.len() as u64).sum();
        derived.spans += spans;
        let service = attr_string(resource_attrs, "service.name").unwrap_or_default();
        if !cfg.derives_spans_of(&service) {
            continue;
        }
        for span in rs.scope_spans.iter().flat_map(|s| s.spans.iter()) {
            if span.kind != SpanKind::Server as i32
                || span.end_time_unix_nano < span.start_time_unix_nano
            {
                continue;
            }
            derived.used += 1;
            let seconds = (span.end_time_unix_nano - span.start_time_unix_nano) as f64 / 1e9;
            let mut attrs: Vec<KeyValue> = MODEL_KEYS
                .iter()
                .filter_map(|k| {
                    attr_string(&span.attributes, k)
                        .or_else(|| attr_string(resource_attrs, k))
                        .map(|v| kv_str(k, v.into_owned()))
                })
                .collect();
            local.observe(
                resource_attrs,
                &duration,
                attrs.clone(),
                Observation::Histogram { bounds: &cfg.span_buckets, value: seconds },
            );
            let failed = span.status.as_ref().is_some_and(|s| s.code == StatusCode::Error as i32)
                || attr_string(&span.attributes, "http.response.status_code")
                    .and_then(|c| c.parse::<u16>().ok())
                    .is_some_and(|c| c >= 500);
            attrs.push(kv_str("outcome", if failed { "failure" } else { "success" }));
            attrs.sort_by(|a, b| a.key.cmp(&b.key));
            local.observe(resource_attrs, &requests, attrs, Observation::Count(1));
        }
    }
    if derived.used > 0 {
        derived.batches = local.flush(now);
    }
    derived
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

    fn span(kind: SpanKind, ms: u64, model: &str, error: bool) -> Span {
        Span {
            kind: kind as i32,
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 1_000_000_000 + ms * 1_000_000,
            attributes: vec![kv_str("model.name", model), kv_str("http.route", "/infer")],
            status: error.then(|| Status { code: StatusCode::Error as i32, ..Default::default() }),
            ..Default::default()
        }
    }

    fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv_str("service.name", service)],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn server_spans_of_configured_services_become_histograms_and_counts() {
        let cfg = ReceiverConfig {
            services: vec!["resnet-svc".into()],
            span_buckets: vec![0.01, 0.1],
            ..Default::default()
        };
        let req = request(
            "resnet-svc",
            vec![
                span(SpanKind::Server, 5, "resnet", false),
                span(SpanKind::Server, 50, "resnet", true),
                span(SpanKind::Client, 500, "resnet", false),
            ],
        );
        let derived = derive(&req, &cfg, 7);
        assert_eq!((derived.spans, derived.used), (3, 2));
        let metrics = &derived.batches[0].scope_metrics[0].metrics;
        let duration = metrics.iter().find(|m| m.name == REQUEST_DURATION).expect("duration");
        match &duration.data {
            Some(Data::Histogram(h)) => {
                assert_eq!(h.data_points[0].bucket_counts, vec![1, 1, 0]);
                assert_eq!(h.data_points[0].attributes, vec![kv_str("model.name", "resnet")]);
            }
            other => panic!("{other:?}"),
        }
        let count = metrics.iter().find(|m| m.name == REQUESTS).expect("requests");
        match &count.data {
            Some(Data::Sum(s)) => assert_eq!(s.data_points.len(), 2, "success and failure"),
            other => panic!("{other:?}"),
        }
        // A service not in the list yields nothing.
        assert!(
            derive(&request("other", vec![span(SpanKind::Server, 5, "x", false)]), &cfg, 7)
                .batches
                .is_empty()
        );
    }

    #[test]
    fn http_durations_are_renamed_in_seconds() {
        let m =
            Metric { name: "http.server.duration".into(), unit: "ms".into(), ..Default::default() };
        assert_eq!(
            rename_metric(&m, true).map(|(meta, s)| (meta.name, s)),
            Some((REQUEST_DURATION.into(), 0.001))
        );
        assert_eq!(rename_metric(&m, false), None);
        let m = Metric {
            name: "http.server.request.duration".into(),
            unit: "s".into(),
            ..Default::default()
        };
        assert_eq!(rename_metric(&m, true).map(|(_, s)| s), Some(1.0));
    }
}
