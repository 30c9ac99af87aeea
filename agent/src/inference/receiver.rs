//! The local OTLP receivers: gRPC (tonic) and HTTP (axum, protobuf or JSON), for metrics and
//! traces. Both hand their work to the aggregator through the bounded work queue and never
//! wait for room in it: a full queue answers RESOURCE_EXHAUSTED (gRPC) or 429 (HTTP), both
//! retryable for OTLP exporters, and the refused points or spans are counted. Points shed by the
//! series cap come back as OTLP partial success.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::codec::CompressionEncoding;
use tracing::{Instrument, info_span, warn};

use super::config::ReceiverConfig;
use super::stats::InferenceStats;
use super::{InferenceError, WorkQueue, now_unix_nanos, spans};

/// Why a request was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// The work queue is full: retry later.
    Busy,
    /// The room is shutting down.
    Stopped,
}

/// What both receivers do with a decoded request.
#[derive(Clone, Debug)]
struct Ingress {
    queue: WorkQueue,
    stats: Arc<InferenceStats>,
    cfg: Arc<ReceiverConfig>,
}

impl Ingress {
    async fn metrics(
        &self,
        req: ExportMetricsServiceRequest,
    ) -> Result<ExportMetricsServiceResponse, Refusal> {
        let points: u64 = req.resource_metrics.iter().map(super::aggregate::count_points).sum();
        InferenceStats::add(&self.stats.points_received, points);
        if points == 0 {
            return Ok(ExportMetricsServiceResponse::default());
        }
        let (tx, rx) = oneshot::channel();
        if !self.queue.offer(req.resource_metrics, Some(tx)) {
            InferenceStats::add(&self.stats.points_shed, points);
            InferenceStats::add(&self.stats.requests_refused, 1);
            return Err(Refusal::Busy);
        }
        let ingested = rx.await.map_err(|_| Refusal::Stopped)?;
        let partial_success = (ingested.shed > 0).then(|| ExportMetricsPartialSuccess {
            rejected_data_points: i64::try_from(ingested.shed).unwrap_or(i64::MAX),
            error_message: format!(
                "series limit reached (inference.receiver.max_series = {}): {} data points of new series dropped this interval",
                self.cfg.max_series, ingested.shed
            ),
        });
        Ok(ExportMetricsServiceResponse { partial_success })
    }

    fn traces(
        &self,
        req: &ExportTraceServiceRequest,
    ) -> Result<ExportTraceServiceResponse, Refusal> {
        let derived = spans::derive(req, &self.cfg, now_unix_nanos());
        InferenceStats::add(&self.stats.spans_received, derived.spans);
        if derived.batches.is_empty() {
            return Ok(ExportTraceServiceResponse::default());
        }
        if !self.queue.offer(derived.batches, None) {
            InferenceStats::add(&self.stats.spans_shed, derived.spans);
            InferenceStats::add(&self.stats.requests_refused, 1);
            return Err(Refusal::Busy);
        }
        Ok(ExportTraceServiceResponse::default())
    }
}

fn grpc_status(refusal: Refusal) -> tonic::Status {
    match refusal {
        Refusal::Busy => {
            tonic::Status::resource_exhausted("agent busy: inference work queue full, retry later")
        }
        Refusal::Stopped => tonic::Status::unavailable("agent shutting down"),
    }
}

/// prost decoding whose malformed messages are INVALID_ARGUMENT (tonic-prost's codec answers
/// INTERNAL, which tells the exporter the fault is ours).
struct OtlpCodec<E, D>(std::marker::PhantomData<fn() -> (E, D)>);

struct OtlpDecoder<D>(std::marker::PhantomData<fn() -> D>);

impl<D: Message + Default + Send + 'static> tonic::codec::Decoder for OtlpDecoder<D> {
    type Item = D;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Self::Item>, Self::Error> {
        D::decode(buf).map(Some).map_err(|e| {
            tonic::Status::invalid_argument(format!("cannot decode the export request: {e}"))
        })
    }
}

impl<E, D> tonic::codec::Codec for OtlpCodec<E, D>
where
    E: Message + Send + 'static,
    D: Message + Default + Send + 'static,
{
    type Encode = E;
    type Decode = D;
    type Encoder = tonic_prost::ProstEncoder<E>;
    type Decoder = OtlpDecoder<D>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(tonic::codec::BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        OtlpDecoder(std::marker::PhantomData)
    }
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// One OTLP export method served over gRPC.
trait Export: Send + Sync + 'static {
    /// `/package.Service/Export`.
    const PATH: &'static str;
    type Request: Message + Default + Send + 'static;
    type Response: Message + Send + 'static;
    fn export(
        ingress: Ingress,
        request: Self::Request,
    ) -> BoxFuture<Result<Self::Response, tonic::Status>>;
}

struct MetricsExport;
struct TracesExport;

impl Export for MetricsExport {
    const PATH: &'static str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
    type Request = ExportMetricsServiceRequest;
    type Response = ExportMetricsServiceResponse;
    fn export(
        ingress: Ingress,
        request: Self::Request,
    ) -> BoxFuture<Result<Self::Response, tonic::Status>> {
        Box::pin(async move { ingress.metrics(request).await.map_err(grpc_status) })
    }
}

impl Export for TracesExport {
    const PATH: &'static str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    type Request = ExportTraceServiceRequest;
    type Response = ExportTraceServiceResponse;
    fn export(
        ingress: Ingress,
        request: Self::Request,
    ) -> BoxFuture<Result<Self::Response, tonic::Status>> {
        Box::pin(async move { ingress.traces(&request).map_err(grpc_status) })
    }
}

/// The gRPC service of one export method: body limit (inflated size too), gzip, and
/// [`OtlpCodec`].
struct GrpcExport<X> {
    ingress: Ingress,
    limit: usize,
    _method: std::marker::PhantomData<fn() -> X>,
}

impl<X> Clone for GrpcExport<X> {
    fn clone(&self) -> Self {
        Self { ingress: self.ingress.clone(), limit: self.limit, _method: self._method }
    }
}

impl<X: Export> GrpcExport<X> {
    fn new(ingress: Ingress, limit: usize) -> Self {
        Self { ingress, limit, _method: std::marker::PhantomData }
    }
}

impl<X: Export> tonic::server::UnaryService<X::Request> for GrpcExport<X> {
    type Response = X::Response;
    type Future = BoxFuture<Result<tonic::Response<X::Response>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<X::Request>) -> Self::Future {
        let fut = X::export(self.ingress.clone(), request.into_inner());
        Box::pin(async move { fut.await.map(tonic::Response::new) })
    }
}

impl tonic::server::NamedService for GrpcExport<MetricsExport> {
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
}

impl tonic::server::NamedService for GrpcExport<TracesExport> {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl<X: Export, B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for GrpcExport<X>
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::codegen::http::Request<B>) -> Self::Future {
        let svc = self.clone();
        Box::pin(async move {
            if req.uri().path() != X::PATH {
                return Ok(tonic::Status::unimplemented(format!(
                    "no method {}; this service serves {}",
                    req.uri().path(),
                    X::PATH
                ))
                .into_http());
            }
            let limit = svc.limit;
            let mut grpc = tonic::server::Grpc::new(OtlpCodec::<X::Response, X::Request>(
                std::marker::PhantomData,
            ))
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(limit);
            Ok(grpc.unary(svc, req).await)
        })
    }
}

/// Bound but not yet serving receivers.
pub(crate) struct Receivers {
    grpc: tokio::net::TcpListener,
    http: tokio::net::TcpListener,
    ingress: Ingress,
    /// The gRPC receiver's bound address.
    pub grpc_addr: SocketAddr,
    /// The HTTP receiver's bound address.
    pub http_addr: SocketAddr,
}

impl Receivers {
    /// Bind both addresses now, so a port in use is an error at start, not a log line later.
    pub(crate) fn bind(
        cfg: &ReceiverConfig,
        queue: WorkQueue,
        stats: Arc<InferenceStats>,
    ) -> Result<Self, InferenceError> {
        let bind = |protocol: &'static str, addr: SocketAddr| {
            let err = |source| InferenceError::Bind { protocol, addr, source };
            let std_listener = std::net::TcpListener::bind(addr).map_err(err)?;
            std_listener.set_nonblocking(true).map_err(err)?;
            let listener = tokio::net::TcpListener::from_std(std_listener).map_err(err)?;
            let bound = listener.local_addr().map_err(err)?;
            Ok::<_, InferenceError>((listener, bound))
        };
        let (grpc, grpc_addr) = bind("gRPC", cfg.grpc_listen)?;
        let (http, http_addr) = bind("HTTP", cfg.http_listen)?;
        Ok(Self {
            grpc,
            http,
            ingress: Ingress { queue, stats, cfg: Arc::new(cfg.clone()) },
            grpc_addr,
            http_addr,
        })
    }

    /// Serve until `shutdown`.
    pub(crate) fn spawn(self, tasks: &TaskTracker, shutdown: CancellationToken) {
        let max_body = self.ingress.cfg.max_body_bytes;
        let grpc_router = tonic::transport::Server::builder()
            .add_service(GrpcExport::<MetricsExport>::new(self.ingress.clone(), max_body))
            .add_service(GrpcExport::<TracesExport>::new(self.ingress.clone(), max_body));
        let incoming =
            tonic::transport::server::TcpIncoming::from(self.grpc).with_nodelay(Some(true));
        let stop = shutdown.clone();
        tasks.spawn(
            async move {
                if let Err(error) =
                    grpc_router.serve_with_incoming_shutdown(incoming, stop.cancelled_owned()).await
                {
                    warn!(%error, "OTLP gRPC receiver stopped with an error.");
                }
            }
            .instrument(info_span!("otlp_grpc")),
        );

        let app = axum::Router::new()
            .route("/v1/metrics", axum::routing::post(http_metrics))
            .route("/v1/traces", axum::routing::post(http_traces))
            .layer(DefaultBodyLimit::max(max_body))
            .with_state(self.ingress);
        let listener = self.http;
        tasks.spawn(
            async move {
                if let Err(error) = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown.cancelled_owned())
                    .await
                {
                    warn!(%error, "OTLP HTTP receiver stopped with an error.");
                }
            }
            .instrument(info_span!("otlp_http")),
        );
    }
}

/// The two OTLP/HTTP encodings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// How the body is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
}

/// Check headers and pick the encoding and compression, or the error response to send.
// The error is the response itself, returned once per refused request: boxing it buys nothing.
#[allow(clippy::result_large_err)]
fn http_encoding(
    headers: &HeaderMap,
    stats: &InferenceStats,
) -> Result<(Encoding, Compression), Response> {
    let compression = match headers.get(header::CONTENT_ENCODING).map(|v| v.as_bytes()) {
        None | Some(b"identity") => Compression::None,
        Some(b"gzip") => Compression::Gzip,
        Some(_) => {
            InferenceStats::add(&stats.requests_malformed, 1);
            return Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported Content-Encoding: send gzip or uncompressed OTLP",
            )
                .into_response());
        }
    };
    let content_type =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    match essence {
        "application/x-protobuf" | "application/protobuf" => Ok((Encoding::Protobuf, compression)),
        "application/json" => Ok((Encoding::Json, compression)),
        _ => {
            InferenceStats::add(&stats.requests_malformed, 1);
            Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/x-protobuf or application/json",
            )
                .into_response())
        }
    }
}

/// Inflate a gzip body, refusing more than `limit` bytes after decompression (a small
/// compressed body must not become an unbounded allocation).
fn inflate(body: &[u8], limit: usize) -> Result<Vec<u8>, (StatusCode, String)> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("invalid gzip body: {e}")))?;
    if out.len() > limit {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {limit} bytes once inflated"),
        ));
    }
    Ok(out)
}

/// Body bytes ready to decode, inflated when gzip, or the error response.
#[allow(clippy::result_large_err)]
fn plain_body(
    body: Bytes,
    compression: Compression,
    limit: usize,
    stats: &InferenceStats,
) -> Result<Bytes, Response> {
    match compression {
        Compression::None => Ok(body),
        Compression::Gzip => inflate(&body, limit).map(Bytes::from).map_err(|e| {
            InferenceStats::add(&stats.requests_malformed, 1);
            e.into_response()
        }),
    }
}

fn decode<T: Message + Default + serde::de::DeserializeOwned>(
    encoding: Encoding,
    body: &[u8],
) -> Result<T, String> {
    match encoding {
        Encoding::Protobuf => T::decode(body).map_err(|e| e.to_string()),
        Encoding::Json => serde_json::from_slice(body).map_err(|e| e.to_string()),
    }
}

fn encode<T: Message + serde::Serialize>(encoding: Encoding, message: &T) -> Response {
    let body = match encoding {
        Encoding::Protobuf => message.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(message).unwrap_or_else(|_| b"{}".to_vec()),
    };
    ([(header::CONTENT_TYPE, encoding.content_type())], body).into_response()
}

fn http_refusal(refusal: Refusal) -> Response {
    match refusal {
        // OTLP/HTTP: 429 and 503 are retryable; Retry-After paces the exporter.
        Refusal::Busy => {
            (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")], "agent busy: retry later")
                .into_response()
        }
        Refusal::Stopped => {
            (StatusCode::SERVICE_UNAVAILABLE, "agent shutting down").into_response()
        }
    }
}

#[allow(clippy::result_large_err)]
fn body_or_reject(
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
    stats: &InferenceStats,
) -> Result<Bytes, Response> {
    body.map_err(|rejection| {
        InferenceStats::add(&stats.requests_malformed, 1);
        rejection.into_response()
    })
}

/// Headers, body limit, inflation and decoding shared by both OTLP/HTTP paths: the decoded
/// request and its encoding (the answer uses the same), or the error response to send.
#[allow(clippy::result_large_err)]
fn read_request<T: Message + Default + serde::de::DeserializeOwned>(
    ingress: &Ingress,
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
    signal: &str,
) -> Result<(Encoding, T), Response> {
    let (encoding, compression) = http_encoding(headers, &ingress.stats)?;
    let body = body_or_reject(body, &ingress.stats)?;
    let body = plain_body(body, compression, ingress.cfg.max_body_bytes, &ingress.stats)?;
    match decode(encoding, &body) {
        Ok(request) => Ok((encoding, request)),
        Err(error) => {
            InferenceStats::add(&ingress.stats.requests_malformed, 1);
            Err((StatusCode::BAD_REQUEST, format!("malformed OTLP {signal} request: {error}"))
                .into_response())
        }
    }
}

async fn http_metrics(
    State(ingress): State<Ingress>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let (encoding, request) =
        match read_request::<ExportMetricsServiceRequest>(&ingress, &headers, body, "metrics") {
            Ok(r) => r,
            Err(response) => return response,
        };
    match ingress.metrics(request).await {
        Ok(response) => encode(encoding, &response),
        Err(refusal) => http_refusal(refusal),
    }
}

async fn http_traces(
    State(ingress): State<Ingress>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let (encoding, request) =
        match read_request::<ExportTraceServiceRequest>(&ingress, &headers, body, "traces") {
            Ok(r) => r,
            Err(response) => return response,
        };
    match ingress.traces(&request) {
        Ok(response) => encode(encoding, &response),
        Err(refusal) => http_refusal(refusal),
    }
}
