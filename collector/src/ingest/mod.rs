//! OTLP ingest: the gRPC `MetricsService` and OTLP/HTTP `/v1/metrics` (protobuf and JSON),
//! both writing through [`otlp::export`] into the store, with the protocol's answers for
//! partial success, bad input, oversized bodies and back-pressure.

pub mod otlp;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;

use crate::store::Store;

/// Counters of the ingest side, for `/metrics`.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Export requests over gRPC.
    pub grpc_requests: AtomicU64,
    /// Export requests over HTTP.
    pub http_requests: AtomicU64,
    /// Requests whose body could not be decoded.
    pub decode_errors: AtomicU64,
    /// Requests with an unsupported content type or encoding.
    pub bad_content_type: AtomicU64,
    /// Requests over the body size limit.
    pub too_large: AtomicU64,
    /// Requests refused because the store's log was behind.
    pub backlogged: AtomicU64,
    /// Requests refused for a missing or wrong bearer token.
    pub unauthorized: AtomicU64,
    /// Points refused inside otherwise accepted requests.
    pub rejected_points: AtomicU64,
    /// Requests that arrived gzip'd (HTTP `Content-Encoding`, gRPC `grpc-encoding`).
    pub gzip_requests: AtomicU64,
}

/// What ingest needs: the store and its counters.
#[derive(Debug, Clone)]
pub struct IngestState {
    /// The store.
    pub store: Arc<Store>,
    /// Counters.
    pub stats: Arc<IngestStats>,
    /// Largest accepted request body, bytes.
    pub max_body_bytes: usize,
}

impl IngestState {
    fn run(&self, req: &ExportMetricsServiceRequest) -> otlp::ExportOutcome {
        let out = otlp::export(&self.store, req);
        if out.backlogged {
            self.stats.backlogged.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.rejected_points.fetch_add(out.rejected, Ordering::Relaxed);
        out
    }
}

/// The gRPC metrics service.
#[derive(Debug, Clone)]
pub struct GrpcIngest(pub IngestState);

#[tonic::async_trait]
impl MetricsService for GrpcIngest {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.stats.grpc_requests.fetch_add(1, Ordering::Relaxed);
        if request
            .metadata()
            .get("grpc-encoding")
            .is_some_and(|e| e.as_bytes().eq_ignore_ascii_case(b"gzip"))
        {
            self.0.stats.gzip_requests.fetch_add(1, Ordering::Relaxed);
        }
        let req = request.into_inner();
        let state = self.0.clone();
        // Decoding happened in tonic; writing is CPU work on the store, kept off the reactor.
        let out = tokio::task::spawn_blocking(move || state.run(&req))
            .await
            .map_err(|e| tonic::Status::internal(format!("ingest task failed: {e}")))?;
        if out.backlogged {
            return Err(tonic::Status::unavailable(out.message));
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: out.partial_success(),
        }))
    }
}

/// The tonic service for `--otlp-grpc-listen`, with the body limit applied.
pub fn grpc_service(state: IngestState) -> MetricsServiceServer<GrpcIngest> {
    let limit = state.max_body_bytes;
    // gzip'd requests (OTEL_EXPORTER_OTLP_COMPRESSION=gzip) are inflated by tonic, bounded by
    // the same limit on the decompressed size (RESOURCE_EXHAUSTED beyond it).
    MetricsServiceServer::new(GrpcIngest(state))
        .max_decoding_message_size(limit)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
}

/// `google.rpc.Status` (the OTLP/HTTP error body), without details.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    /// gRPC status code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// Developer-facing message.
    #[prost(string, tag = "2")]
    pub message: String,
}

#[derive(Clone, Copy, PartialEq)]
enum Wire {
    Protobuf,
    Json,
}

fn status_body(wire: Wire, code: i32, message: &str) -> (Vec<u8>, &'static str) {
    match wire {
        Wire::Protobuf => {
            let s = RpcStatus { code, message: message.to_string() };
            (s.encode_to_vec(), "application/x-protobuf")
        }
        Wire::Json => (
            serde_json::json!({"code": code, "message": message}).to_string().into_bytes(),
            "application/json",
        ),
    }
}

fn error(wire: Wire, status: StatusCode, grpc_code: i32, message: &str) -> Response {
    let (body, ct) = status_body(wire, grpc_code, message);
    (status, [(header::CONTENT_TYPE, ct)], body).into_response()
}

async fn http_export(
    State(state): State<IngestState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    state.stats.http_requests.fetch_add(1, Ordering::Relaxed);
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let wire = match ct.as_str() {
        "application/x-protobuf" | "application/protobuf" => Wire::Protobuf,
        "application/json" => Wire::Json,
        _ => {
            state.stats.bad_content_type.fetch_add(1, Ordering::Relaxed);
            return error(
                Wire::Json,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                3,
                &format!(
                    "unsupported content type {ct:?}: use application/x-protobuf or application/json"
                ),
            );
        }
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            let status = e.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                state.stats.too_large.fetch_add(1, Ordering::Relaxed);
                return error(
                    wire,
                    status,
                    8,
                    &format!("request body over the limit of {} bytes", state.max_body_bytes),
                );
            }
            state.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
            return error(wire, StatusCode::BAD_REQUEST, 3, &e.body_text());
        }
    };
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    let gzip = match encoding.as_str() {
        "identity" | "" => false,
        "gzip" | "x-gzip" => true,
        _ => {
            state.stats.bad_content_type.fetch_add(1, Ordering::Relaxed);
            return error(
                wire,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                3,
                &format!(
                    "unsupported content encoding {encoding:?}: send gzip or uncompressed bodies"
                ),
            );
        }
    };
    if gzip {
        state.stats.gzip_requests.fetch_add(1, Ordering::Relaxed);
    }
    // Inflating and decoding are CPU work: off the reactor, together with the store writes.
    let st = state.clone();
    let limit = state.max_body_bytes;
    let out = tokio::task::spawn_blocking(move || -> Result<otlp::ExportOutcome, Box<Response>> {
        let body = if gzip {
            match inflate(&body, limit) {
                Ok(b) => Bytes::from(b),
                Err(Inflate::TooLarge) => {
                    st.stats.too_large.fetch_add(1, Ordering::Relaxed);
                    return Err(Box::new(error(
                        wire,
                        StatusCode::PAYLOAD_TOO_LARGE,
                        8,
                        &format!("request body over the limit of {limit} bytes once inflated"),
                    )));
                }
                Err(Inflate::Bad(e)) => {
                    st.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                    return Err(Box::new(error(
                        wire,
                        StatusCode::BAD_REQUEST,
                        3,
                        &format!("invalid gzip body: {e}"),
                    )));
                }
            }
        } else {
            body
        };
        let req = match wire {
            Wire::Protobuf => ExportMetricsServiceRequest::decode(body).map_err(|e| e.to_string()),
            Wire::Json => serde_json::from_slice::<ExportMetricsServiceRequest>(&body)
                .map_err(|e| e.to_string()),
        };
        match req {
            Ok(r) => Ok(st.run(&r)),
            Err(e) => {
                st.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                Err(Box::new(error(
                    wire,
                    StatusCode::BAD_REQUEST,
                    3,
                    &format!("cannot decode ExportMetricsServiceRequest: {e}"),
                )))
            }
        }
    })
    .await;
    let out = match out {
        Ok(Ok(o)) => o,
        Ok(Err(resp)) => return *resp,
        Err(e) => {
            return error(
                wire,
                StatusCode::INTERNAL_SERVER_ERROR,
                13,
                &format!("ingest task failed: {e}"),
            );
        }
    };
    if out.backlogged {
        let mut r = error(wire, StatusCode::SERVICE_UNAVAILABLE, 14, &out.message);
        r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return r;
    }
    let resp = ExportMetricsServiceResponse { partial_success: out.partial_success() };
    match wire {
        Wire::Protobuf => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            resp.encode_to_vec(),
        )
            .into_response(),
        Wire::Json => {
            let body = match &resp.partial_success {
                Some(_) => serde_json::to_vec(&resp).unwrap_or_else(|_| b"{}".to_vec()),
                None => b"{}".to_vec(),
            };
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
    }
}

enum Inflate {
    TooLarge,
    Bad(std::io::Error),
}

/// Inflates a gzip body, refusing more than `limit` bytes of output: the body limit applies to
/// the decompressed size too, so a small compressed body cannot become an unbounded allocation.
fn inflate(body: &[u8], limit: usize) -> Result<Vec<u8>, Inflate> {
    use std::io::Read;
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    flate2::read::GzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(Inflate::Bad)?;
    if out.len() > limit {
        return Err(Inflate::TooLarge);
    }
    Ok(out)
}

/// The OTLP/HTTP router (`POST /v1/metrics`) for `--otlp-http-listen`.
pub fn http_router(state: IngestState) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/v1/metrics", post(http_export))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}
