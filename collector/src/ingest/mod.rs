//! OTLP ingest: the gRPC `MetricsService` and OTLP/HTTP `/v1/metrics` (protobuf and JSON),
//! both writing through [`otlp::export`] into the store, with the protocol's answers for
//! partial success, bad input, oversized bodies and back-pressure.

pub mod budget;
pub mod otlp;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;

use crate::store::Store;

/// A request body of at least this size (raw, or once inflated) is a large request for the
/// [`after_request`] hook. Valid exports are far smaller (an agent's batch is ~100 KB).
pub const LARGE_REQUEST_BYTES: usize = 1 << 20;

/// What the [`after_request`] hook is told about the request whose buffers were just freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freed {
    /// A body of at least [`LARGE_REQUEST_BYTES`], refused or not.
    Large,
    /// A smaller body that was refused (malformed, over the decode budget).
    Refused,
}

static AFTER_REQUEST: OnceLock<fn(Freed)> = OnceLock::new();

/// Installs `hook`, run on the decoding thread once a large or refused request's buffers are
/// freed (valid small requests do not call it). The binary installs its allocator's collect:
/// mimalloc keeps a thread's freed pages for that thread otherwise, and after floods of
/// refused requests they stayed resident. The library does not know the allocator. The first
/// call wins.
pub fn after_request(hook: fn(Freed)) {
    let _ = AFTER_REQUEST.set(hook);
}

/// Runs the [`after_request`] hook for a request of `bytes` that was `refused` or not.
fn release_after(bytes: usize, refused: bool) {
    let freed = if bytes >= LARGE_REQUEST_BYTES {
        Freed::Large
    } else if refused {
        Freed::Refused
    } else {
        return;
    };
    if let Some(hook) = AFTER_REQUEST.get() {
        hook(freed);
    }
}

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
    /// The remote store's send queue, when the remote backend is configured.
    pub remote: Option<Arc<crate::remote::RemoteWriter>>,
}

impl IngestState {
    fn run(&self, req: &ExportMetricsServiceRequest) -> otlp::ExportOutcome {
        // The remote queue first: when it is full (or cannot be saved) nothing is written
        // anywhere and the sender is told to retry, so a retry neither loses nor doubles data.
        if let Some(remote) = &self.remote {
            if let Err(e) = remote.push(req, self.store.accepted_window()) {
                self.stats.backlogged.fetch_add(1, Ordering::Relaxed);
                return otlp::ExportOutcome {
                    backlogged: true,
                    message: e.to_string(),
                    ..Default::default()
                };
            }
        }
        let mut out = otlp::export(&self.store, req);
        if out.backlogged && self.remote.is_some() {
            // The remote queue holds the request durably already: a retry would queue it again
            // (doubling delta totals), so only the local view misses these points.
            tracing::debug!("Local store backlogged; the request is kept by the remote queue.");
            out.backlogged = false;
        }
        if out.backlogged {
            self.stats.backlogged.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.rejected_points.fetch_add(out.rejected, Ordering::Relaxed);
        out
    }
}

/// Why a request body was not decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeRefusal {
    /// Not a well-formed `ExportMetricsServiceRequest`: 400 / INVALID_ARGUMENT.
    Malformed(String),
    /// Decoding would take more memory than [`budget::MAX_DECODE_BYTES`]: 413 /
    /// RESOURCE_EXHAUSTED.
    OverBudget(String),
}

impl std::fmt::Display for DecodeRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeRefusal::Malformed(m) | DecodeRefusal::OverBudget(m) => f.write_str(m),
        }
    }
}

/// Decodes an export request body within the decode budget: the memory it would take is
/// estimated on the raw bytes first ([`budget`]), then it is decoded. Never panics, whatever
/// the bytes.
pub fn decode_request(
    wire: Wire,
    body: &[u8],
) -> Result<ExportMetricsServiceRequest, DecodeRefusal> {
    let estimate = match wire {
        Wire::Protobuf => budget::protobuf_estimate(body).map_err(|e| {
            DecodeRefusal::Malformed(format!("cannot decode ExportMetricsServiceRequest: {e}"))
        })?,
        Wire::Json => budget::json_estimate(body),
    };
    budget::check(estimate).map_err(|e| DecodeRefusal::OverBudget(e.to_string()))?;
    match wire {
        Wire::Protobuf => ExportMetricsServiceRequest::decode(body).map_err(|e| e.to_string()),
        Wire::Json => serde_json::from_slice(body).map_err(|e| e.to_string()),
    }
    .map_err(|e| {
        DecodeRefusal::Malformed(format!("cannot decode ExportMetricsServiceRequest: {e}"))
    })
}

/// Decodes a request and writes it into `store`, as both listeners do: the whole ingest path
/// that outside bytes take (the fuzz targets drive it).
pub fn ingest_bytes(
    store: &Store,
    wire: Wire,
    body: &[u8],
) -> Result<otlp::ExportOutcome, DecodeRefusal> {
    decode_request(wire, body).map(|r| otlp::export(store, &r))
}

/// The gRPC codec of the metrics service: requests arrive as raw bytes (tonic has inflated and
/// size-checked them) and are decoded by [`decode_request`], so a malformed message is
/// INVALID_ARGUMENT (prost's codec answers INTERNAL) and the decode budget applies.
#[derive(Debug, Clone, Copy, Default)]
struct RawRequestCodec;

#[derive(Debug, Clone, Copy, Default)]
struct RawDecoder;

impl tonic::codec::Decoder for RawDecoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Self::Item>, Self::Error> {
        use bytes::Buf;
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
}

impl tonic::codec::Codec for RawRequestCodec {
    type Encode = ExportMetricsServiceResponse;
    type Decode = Bytes;
    type Encoder = tonic_prost::ProstEncoder<ExportMetricsServiceResponse>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(tonic::codec::BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

/// The gRPC metrics service (`opentelemetry.proto.collector.metrics.v1.MetricsService`).
#[derive(Debug, Clone)]
pub struct GrpcIngest(pub IngestState);

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

impl GrpcIngest {
    async fn export(
        &self,
        request: tonic::Request<Bytes>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.stats.grpc_requests.fetch_add(1, Ordering::Relaxed);
        if request
            .metadata()
            .get("grpc-encoding")
            .is_some_and(|e| e.as_bytes().eq_ignore_ascii_case(b"gzip"))
        {
            self.0.stats.gzip_requests.fetch_add(1, Ordering::Relaxed);
        }
        let body = request.into_inner();
        let state = self.0.clone();
        // Decoding and writing are CPU work on the store, kept off the reactor.
        let out = tokio::task::spawn_blocking(move || {
            let out = decode_request(Wire::Protobuf, &body).map(|req| state.run(&req));
            let size = body.len();
            drop(body);
            release_after(size, out.is_err());
            out
        })
        .await
        .map_err(|e| tonic::Status::internal(format!("ingest task failed: {e}")))?;
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                self.0.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                return Err(match e {
                    DecodeRefusal::Malformed(m) => tonic::Status::invalid_argument(m),
                    DecodeRefusal::OverBudget(m) => {
                        self.0.stats.too_large.fetch_add(1, Ordering::Relaxed);
                        tonic::Status::resource_exhausted(m)
                    }
                });
            }
        };
        if out.backlogged {
            return Err(tonic::Status::unavailable(out.message));
        }
        if out.all_malformed() {
            return Err(tonic::Status::invalid_argument(format!(
                "no data point in the request was usable ({} refused): {}",
                out.rejected, out.message
            )));
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: out.partial_success(),
        }))
    }
}

impl tonic::server::UnaryService<Bytes> for GrpcIngest {
    type Response = ExportMetricsServiceResponse;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<tonic::Response<Self::Response>, tonic::Status>>
                + Send,
        >,
    >;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let svc = self.clone();
        Box::pin(async move { svc.export(request).await })
    }
}

/// The tower service for `--otlp-grpc-listen`: the metrics service's one method, with the
/// body limit (on the inflated size too) and gzip.
#[derive(Debug, Clone)]
pub struct GrpcMetricsServer {
    svc: GrpcIngest,
    limit: usize,
}

impl tonic::server::NamedService for GrpcMetricsServer {
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
}

impl<B> tower::Service<axum::http::Request<B>> for GrpcMetricsServer
where
    B: axum::body::HttpBody + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    type Response = axum::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        let svc = self.svc.clone();
        let limit = self.limit;
        Box::pin(async move {
            if req.uri().path() != EXPORT_PATH {
                return Ok(tonic::Status::unimplemented(format!(
                    "no method {} here; this listener serves {EXPORT_PATH}",
                    req.uri().path()
                ))
                .into_http());
            }
            let mut grpc = tonic::server::Grpc::new(RawRequestCodec)
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                .max_decoding_message_size(limit);
            Ok(grpc.unary(svc, req).await)
        })
    }
}

/// The tonic service for `--otlp-grpc-listen`, with the body limit applied.
pub fn grpc_service(state: IngestState) -> GrpcMetricsServer {
    let limit = state.max_body_bytes;
    // gzip'd requests (OTEL_EXPORTER_OTLP_COMPRESSION=gzip) are inflated by tonic, bounded by
    // the same limit on the decompressed size (RESOURCE_EXHAUSTED beyond it).
    GrpcMetricsServer { svc: GrpcIngest(state), limit }
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

/// The encoding of an OTLP/HTTP body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json` (OTLP's JSON mapping).
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

/// An answer sent before the request body was read to its end. Over HTTP/1 the server then
/// closes the connection, so the answer says so: a client that pooled the connection would
/// otherwise send its next request into a closing socket and see it fail.
pub(crate) fn before_body(version: axum::http::Version, mut r: Response) -> Response {
    if version < axum::http::Version::HTTP_2 {
        r.headers_mut().insert(header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    }
    r
}

/// Why a request body was not read to its end.
enum BodyRead {
    /// Declared (`Content-Length`) or found longer than the limit.
    TooLarge,
    /// The connection failed or the client stopped sending.
    Failed(String),
}

/// Reads a request body into one buffer of at most `limit` bytes. A `Content-Length` over the
/// limit is refused before a byte is read; otherwise the buffer is sized from it once and each
/// chunk is copied in and freed as it arrives, so a body costs its own size once, not its
/// chunks plus a contiguous copy (memory the allocator kept after every large request).
async fn read_body(
    headers: &HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<Bytes, BodyRead> {
    use futures_util::StreamExt as _;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyRead::TooLarge);
    }
    let mut out = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk =
            chunk.map_err(|e| BodyRead::Failed(format!("reading the request body: {e}")))?;
        if out.len().saturating_add(chunk.len()) > limit {
            return Err(BodyRead::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

async fn http_export(
    State(state): State<IngestState>,
    version: axum::http::Version,
    headers: HeaderMap,
    body: axum::body::Body,
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
            return before_body(
                version,
                error(
                    Wire::Json,
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    3,
                    &format!(
                        "unsupported content type {ct:?}: use application/x-protobuf or application/json"
                    ),
                ),
            );
        }
    };
    let body = match read_body(&headers, body, state.max_body_bytes).await {
        Ok(b) => b,
        Err(BodyRead::TooLarge) => {
            state.stats.too_large.fetch_add(1, Ordering::Relaxed);
            return before_body(
                version,
                error(
                    wire,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    8,
                    &format!("request body over the limit of {} bytes", state.max_body_bytes),
                ),
            );
        }
        Err(BodyRead::Failed(m)) => {
            state.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
            return before_body(version, error(wire, StatusCode::BAD_REQUEST, 3, &m));
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
    let out = tokio::task::spawn_blocking(move || {
        let mut size = body.len();
        let out = decode_and_store(&st, wire, gzip, limit, body, &mut size);
        release_after(size, out.is_err());
        out
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
    if out.all_malformed() {
        return error(
            wire,
            StatusCode::BAD_REQUEST,
            3,
            &format!(
                "no data point in the request was usable ({} refused): {}",
                out.rejected, out.message
            ),
        );
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

/// Inflates (when `gzip`), decodes and stores one OTLP/HTTP body, on a blocking thread; the
/// refusals come back as the response to send. `size` ends as the largest buffer the request
/// took (raw or inflated), for [`release_after`]; every buffer is freed on return.
fn decode_and_store(
    st: &IngestState,
    wire: Wire,
    gzip: bool,
    limit: usize,
    body: Bytes,
    size: &mut usize,
) -> Result<otlp::ExportOutcome, Box<Response>> {
    let body = if gzip {
        match inflate(&body, limit) {
            Ok(b) => {
                *size = (*size).max(b.len());
                Bytes::from(b)
            }
            Err(Inflate::TooLarge) => {
                *size = limit;
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
    match decode_request(wire, &body) {
        Ok(r) => Ok(st.run(&r)),
        Err(DecodeRefusal::Malformed(m)) => {
            st.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
            Err(Box::new(error(wire, StatusCode::BAD_REQUEST, 3, &m)))
        }
        Err(DecodeRefusal::OverBudget(m)) => {
            st.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
            st.stats.too_large.fetch_add(1, Ordering::Relaxed);
            Err(Box::new(error(wire, StatusCode::PAYLOAD_TOO_LARGE, 8, &m)))
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
