//! The decode budget of one OTLP export request: how much memory decoding a body would take,
//! estimated before anything is allocated, so a small body cannot become a large allocation.
//!
//! Protobuf bodies are walked on the wire with the metrics request's schema: every message
//! costs the size of its decoded struct (twice, for the growth of the `Vec` holding it),
//! every string or bytes field its length plus a header, every packed number the width it
//! decodes to. A body of empty data points (2 wire bytes each, ~100 decoded) is refused here
//! rather than decoded. JSON bodies are scanned for objects, array items and string bytes,
//! each costing at most the largest decoded struct. Both estimates are upper bounds of what
//! prost and serde allocate for the same body.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary,
    SummaryDataPoint, exponential_histogram_data_point, summary_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// Most memory decoding one export request may take, bytes (estimated before decoding). At
/// the default 16 MiB body limit an SDK's request decodes to 2–5 times its size; a body that
/// would take more than this is refused as too large (413 / RESOURCE_EXHAUSTED).
pub const MAX_DECODE_BYTES: u64 = 128 << 20;

/// Deepest message nesting walked; prost refuses past 100.
const MAX_DEPTH: u32 = 100;

/// Why a body was refused before decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// The body is not well-formed protobuf (or JSON) at this byte offset.
    #[error("malformed body at byte {0}")]
    Malformed(usize),
    /// Decoding would take more than the budget.
    #[error("request would take about {need} bytes to decode, over the limit of {limit}")]
    OverBudget {
        /// Estimated bytes.
        need: u64,
        /// The budget.
        limit: u64,
    },
}

/// The messages of the metrics request whose fields the walk follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Msg {
    Request,
    ResourceMetrics,
    Resource,
    ScopeMetrics,
    Scope,
    Metric,
    Gauge,
    Sum,
    Histogram,
    ExpHistogram,
    Summary,
    NumberPoint,
    HistogramPoint,
    ExpPoint,
    ExpBuckets,
    SummaryPoint,
    Quantile,
    Exemplar,
    KeyValue,
    AnyValue,
    Array,
    KvList,
    /// A message whose fields are all scalars or strings (the resource's entity refs).
    Flat,
}

/// How a length-delimited field of a message decodes.
enum Field {
    Message(Msg),
    /// Packed repeated numbers, each decoding to 8 bytes; `width` is the smallest wire size
    /// of one (1 for varints, 8 for fixed64 and double).
    Packed {
        width: u64,
    },
    /// A string or bytes.
    Bytes,
}

impl Msg {
    fn size(self) -> u64 {
        use std::mem::size_of;
        (match self {
            Msg::Request => size_of::<ExportMetricsServiceRequest>(),
            Msg::ResourceMetrics => size_of::<ResourceMetrics>(),
            Msg::Resource => size_of::<Resource>(),
            Msg::ScopeMetrics => size_of::<ScopeMetrics>(),
            Msg::Scope => size_of::<InstrumentationScope>(),
            Msg::Metric => size_of::<Metric>(),
            Msg::Gauge => size_of::<Gauge>(),
            Msg::Sum => size_of::<Sum>(),
            Msg::Histogram => size_of::<Histogram>(),
            Msg::ExpHistogram => size_of::<ExponentialHistogram>(),
            Msg::Summary => size_of::<Summary>(),
            Msg::NumberPoint => size_of::<NumberDataPoint>(),
            Msg::HistogramPoint => size_of::<HistogramDataPoint>(),
            Msg::ExpPoint => size_of::<ExponentialHistogramDataPoint>(),
            Msg::ExpBuckets => size_of::<exponential_histogram_data_point::Buckets>(),
            Msg::SummaryPoint => size_of::<SummaryDataPoint>(),
            Msg::Quantile => size_of::<summary_data_point::ValueAtQuantile>(),
            Msg::Exemplar => size_of::<Exemplar>(),
            Msg::KeyValue => size_of::<KeyValue>(),
            Msg::AnyValue => size_of::<AnyValue>(),
            Msg::Array => size_of::<ArrayValue>(),
            Msg::KvList => size_of::<KeyValueList>(),
            Msg::Flat => 128,
        }) as u64
    }

    fn field(self, number: u64) -> Field {
        use Msg::*;
        let m = match (self, number) {
            (Request, 1) => ResourceMetrics,
            (ResourceMetrics, 1) => Resource,
            (ResourceMetrics, 2) => ScopeMetrics,
            (Resource, 1) | (Scope, 3) | (Metric, 12) | (Exemplar, 7) | (KvList, 1) => KeyValue,
            (Resource, 3) => Flat,
            (ScopeMetrics, 1) => Scope,
            (ScopeMetrics, 2) => Metric,
            (Metric, 5) => Gauge,
            (Metric, 7) => Sum,
            (Metric, 9) => Histogram,
            (Metric, 10) => ExpHistogram,
            (Metric, 11) => Summary,
            (Gauge, 1) | (Sum, 1) => NumberPoint,
            (Histogram, 1) => HistogramPoint,
            (ExpHistogram, 1) => ExpPoint,
            (Summary, 1) => SummaryPoint,
            (NumberPoint, 7) | (HistogramPoint, 9) | (ExpPoint, 1) | (SummaryPoint, 7) => KeyValue,
            (NumberPoint, 5) | (HistogramPoint, 8) | (ExpPoint, 11) => Exemplar,
            (HistogramPoint, 6) | (HistogramPoint, 7) => return Field::Packed { width: 8 },
            (ExpPoint, 8) | (ExpPoint, 9) => ExpBuckets,
            (ExpBuckets, 2) => return Field::Packed { width: 1 },
            (SummaryPoint, 6) => Quantile,
            (KeyValue, 2) => AnyValue,
            (AnyValue, 5) => Array,
            (AnyValue, 6) => KvList,
            (Array, 1) => AnyValue,
            _ => return Field::Bytes,
        };
        Field::Message(m)
    }
}

fn varint(b: &[u8], pos: &mut usize) -> Result<u64, BudgetError> {
    let start = *pos;
    let mut v = 0u64;
    for shift in 0..10 {
        let Some(&byte) = b.get(*pos) else { return Err(BudgetError::Malformed(start)) };
        *pos += 1;
        v |= u64::from(byte & 0x7f) << (shift * 7);
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(BudgetError::Malformed(start))
}

/// Estimated decoded bytes of the fields of a `msg` in `b` (its own struct not included).
fn walk(b: &[u8], base: usize, msg: Msg, depth: u32, total: &mut u64) -> Result<(), BudgetError> {
    if depth > MAX_DEPTH {
        return Err(BudgetError::Malformed(base));
    }
    let mut pos = 0;
    while pos < b.len() {
        let at = base + pos;
        let tag = varint(b, &mut pos).map_err(|_| BudgetError::Malformed(at))?;
        let number = tag >> 3;
        if number == 0 {
            return Err(BudgetError::Malformed(at));
        }
        match tag & 7 {
            0 => {
                varint(b, &mut pos).map_err(|_| BudgetError::Malformed(at))?;
                // A repeated number sent unpacked: 8 decoded bytes, twice for growth.
                *total += 16;
            }
            1 | 5 => {
                let width = if tag & 7 == 1 { 8 } else { 4 };
                pos = pos
                    .checked_add(width)
                    .filter(|p| *p <= b.len())
                    .ok_or(BudgetError::Malformed(at))?;
                *total += 16;
            }
            2 => {
                let len = varint(b, &mut pos).map_err(|_| BudgetError::Malformed(at))?;
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|l| pos.checked_add(l))
                    .filter(|e| *e <= b.len())
                    .ok_or(BudgetError::Malformed(at))?;
                let inner = &b[pos..end];
                match msg.field(number) {
                    Field::Message(m) => {
                        *total += 2 * m.size();
                        walk(inner, base + pos, m, depth + 1, total)?;
                    }
                    Field::Packed { width } => *total += 2 * 8 * len.div_ceil(width),
                    Field::Bytes => *total += len + 48,
                }
                pos = end;
            }
            _ => return Err(BudgetError::Malformed(at)),
        }
        if *total > MAX_DECODE_BYTES.saturating_mul(4) {
            // Far over any budget: no need to walk the rest.
            return Ok(());
        }
    }
    Ok(())
}

/// Estimated bytes that decoding `body` as a protobuf `ExportMetricsServiceRequest` takes.
pub fn protobuf_estimate(body: &[u8]) -> Result<u64, BudgetError> {
    let mut total = Msg::Request.size();
    walk(body, 0, Msg::Request, 0, &mut total)?;
    Ok(total)
}

/// Largest decoded struct any JSON object of the request can become.
fn largest_struct() -> u64 {
    [
        Msg::ResourceMetrics,
        Msg::Metric,
        Msg::NumberPoint,
        Msg::HistogramPoint,
        Msg::ExpPoint,
        Msg::SummaryPoint,
        Msg::Exemplar,
        Msg::KeyValue,
        Msg::AnyValue,
    ]
    .iter()
    .map(|m| m.size())
    .max()
    .unwrap_or(256)
}

/// Estimated bytes that decoding `body` as a JSON `ExportMetricsServiceRequest` takes: every
/// object the largest struct, every array item (a number, say) 8 bytes, every string its
/// length plus a header; all twice, for growth.
pub fn json_estimate(body: &[u8]) -> u64 {
    let (mut objects, mut items, mut strings, mut string_bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut in_string = false;
    let mut escaped = false;
    for &c in body {
        if in_string {
            string_bytes += 1;
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            b'"' => {
                in_string = true;
                strings += 1;
            }
            b'{' => objects += 1,
            b',' | b'[' => items += 1,
            _ => {}
        }
    }
    2 * (objects * largest_struct() + items * 8 + strings * 24 + string_bytes)
}

/// Refuses a body whose estimate is over [`MAX_DECODE_BYTES`].
pub fn check(estimate: u64) -> Result<(), BudgetError> {
    if estimate > MAX_DECODE_BYTES {
        return Err(BudgetError::OverBudget { need: estimate, limit: MAX_DECODE_BYTES });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    use opentelemetry_proto::tonic::common::v1::any_value;
    use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};

    fn request(points: usize) -> ExportMetricsServiceRequest {
        let p = NumberDataPoint {
            attributes: vec![KeyValue {
                key: "gpu".into(),
                value: Some(AnyValue { value: Some(any_value::Value::StringValue("0".into())) }),
                ..Default::default()
            }],
            time_unix_nano: 1,
            value: Some(number_data_point::Value::AsDouble(1.0)),
            ..Default::default()
        };
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "m".into(),
                        data: Some(metric::Data::Gauge(Gauge { data_points: vec![p; points] })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn estimate_bounds_a_real_request_and_is_not_wildly_over() {
        let req = request(1000);
        let body = req.encode_to_vec();
        let est = protobuf_estimate(&body).expect("well-formed");
        // What the decoded request holds, at the least: the points and their attributes.
        let held = 1000
            * (std::mem::size_of::<NumberDataPoint>()
                + std::mem::size_of::<KeyValue>()
                + std::mem::size_of::<AnyValue>()) as u64;
        assert!(est >= held, "{est} < {held}");
        assert!(est <= 8 * held, "{est} > 8 × {held}");
        let json = serde_json::to_vec(&req).expect("json");
        assert!(json_estimate(&json) >= held);
    }

    #[test]
    fn empty_points_are_refused_before_decoding() {
        // 8 MiB of empty data points: 2 wire bytes each, ~100 bytes decoded.
        let mut gauge = Vec::new();
        for _ in 0..(4 << 20) {
            gauge.extend_from_slice(&[0x0a, 0x00]);
        }
        let mut metric = vec![0x2a];
        put_len(&mut metric, gauge.len());
        metric.extend_from_slice(&gauge);
        let mut sm = vec![0x12];
        put_len(&mut sm, metric.len());
        sm.extend_from_slice(&metric);
        let mut rm = vec![0x12];
        put_len(&mut rm, sm.len());
        rm.extend_from_slice(&sm);
        let mut body = vec![0x0a];
        put_len(&mut body, rm.len());
        body.extend_from_slice(&rm);
        let est = protobuf_estimate(&body).expect("well-formed");
        assert!(matches!(check(est), Err(BudgetError::OverBudget { .. })), "{est}");
    }

    #[test]
    fn malformed_wire_is_an_error_not_a_panic() {
        for body in [&[0x0a, 0xff][..], &[0x0a, 0x05, 0x01], &[0x00], &[0x0b], &[0xff; 11]] {
            assert!(matches!(protobuf_estimate(body), Err(BudgetError::Malformed(_))), "{body:?}");
        }
    }

    fn put_len(out: &mut Vec<u8>, mut n: usize) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
}
