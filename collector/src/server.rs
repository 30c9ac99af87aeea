//! Server assembly: binds the three listeners (API, OTLP gRPC, OTLP/HTTP), merges the API
//! routers of every room, applies bearer-token auth and optional TLS, and serves until the
//! cancellation token fires. Other rooms add their routes by passing routers to
//! [`ServeOptions::extra_api`]; nothing else here needs to change.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, ApiState};
use crate::config::{ServerConfig, Tokens};
use crate::ingest::{self, IngestState, IngestStats};
use crate::store::Store;
use crate::telemetry::{self, QueryStats};

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not bind.
    #[error("bind {what} on {addr}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
}

/// Everything the server needs.
pub struct ServeOptions {
    /// Listeners, limits, TLS.
    pub server: ServerConfig,
    /// Bearer tokens.
    pub tokens: Tokens,
    /// The store.
    pub store: Arc<Store>,
    /// Routers of other rooms (`/api/v1/policies`, ...), merged into the API listener and
    /// covered by the read token.
    pub extra_api: Vec<Router>,
    /// Prometheus text of other rooms (the policy runtime's counters), appended to `/metrics`.
    pub extra_metrics: Vec<MetricsText>,
    /// The remote store backend, when configured: ingest also queues for it, queries read it.
    pub remote: crate::remote::Remote,
}

/// A producer of Prometheus exposition text, called on every `/metrics` scrape.
pub type MetricsText = Arc<dyn Fn() -> String + Send + Sync>;

/// Addresses actually bound (ports resolved when 0 was asked for).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// API listener.
    pub api: SocketAddr,
    /// OTLP gRPC listener.
    pub otlp_grpc: SocketAddr,
    /// OTLP/HTTP listener.
    pub otlp_http: SocketAddr,
}

/// Shared handles of a running server.
#[derive(Debug, Clone)]
pub struct Handles {
    /// Ingest counters.
    pub ingest: Arc<IngestStats>,
    /// Query counters.
    pub queries: Arc<QueryStats>,
    /// Set once every listener is serving.
    pub ready: Arc<AtomicBool>,
}

#[derive(Clone)]
struct AuthState {
    token: Option<Arc<str>>,
    ingest: Arc<IngestStats>,
    grpc: bool,
}

/// Compares in constant time, so timing says nothing about how much of a guess was right, nor
/// about the token's length: both sides are hashed to 32 bytes first, and the digests are
/// compared without an early exit.
fn same(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest as _, Sha256};
    let (x, y) = (Sha256::digest(a), Sha256::digest(b));
    x.iter().zip(y.iter()).fold(0u8, |acc, (p, q)| acc | (p ^ q)) == 0
}

async fn require_token(State(st): State<AuthState>, req: Request, next: Next) -> Response {
    let Some(token) = &st.token else { return next.run(req).await };
    let path = req.uri().path();
    if path == "/healthz" || path == "/readyz" {
        return next.run(req).await;
    }
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .is_some_and(|t| same(t.trim().as_bytes(), token.as_bytes()));
    if ok {
        return next.run(req).await;
    }
    st.ingest.unauthorized.fetch_add(1, Ordering::Relaxed);
    let is_grpc = st.grpc
        || req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/grpc"));
    if is_grpc {
        let mut r = Response::new(axum::body::Body::empty());
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        r.headers_mut().insert("grpc-status", HeaderValue::from_static("16"));
        r.headers_mut()
            .insert("grpc-message", HeaderValue::from_static("missing or wrong bearer token"));
        return r;
    }
    let mut r = (
        StatusCode::UNAUTHORIZED,
        axum::Json(api::types::ApiError { error: "missing or wrong bearer token".into() }),
    )
        .into_response();
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    crate::ingest::before_body(req.version(), r)
}

/// With no token for a listener, only loopback may reach it.
fn guard_addr(addr: SocketAddr, token: &Option<String>, what: &str) -> SocketAddr {
    if token.is_some() || addr.ip().is_loopback() {
        return addr;
    }
    let local = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), addr.port());
    tracing::warn!(listener = what, requested = %addr, bound = %local, "No token configured; binding to localhost only.");
    local
}

fn tls_config(server: &ServerConfig) -> Result<Option<Arc<rustls::ServerConfig>>, ServerError> {
    let Some(tls) = &server.tls else { return Ok(None) };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs_pem = std::fs::read(&tls.cert_file)
        .map_err(|e| ServerError::Tls(format!("{}: {e}", tls.cert_file.display())))?;
    let key_pem = std::fs::read(&tls.key_file)
        .map_err(|e| ServerError::Tls(format!("{}: {e}", tls.key_file.display())))?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut certs_pem.as_slice()).collect();
    let certs = certs.map_err(|e| ServerError::Tls(format!("{}: {e}", tls.cert_file.display())))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| ServerError::Tls(format!("{}: {e}", tls.key_file.display())))?
        .ok_or_else(|| ServerError::Tls(format!("{}: no private key", tls.key_file.display())))?;
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(Arc::new(cfg)))
}

/// An HTTP/1 client must send a whole request head within this time, or the connection is
/// closed: slowly trickled headers (slowloris) hold a connection no longer than this. Idle
/// HTTP/1 keep-alive connections are closed after it too (hyper times the wait for the next
/// head), which clients' pools handle by reconnecting.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(15);

/// A connection with no bytes read or written for this long is shut down gracefully (an
/// HTTP/2 or gRPC client that keeps a connection open and sends nothing).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// File descriptors kept back from the connection limits (store, logs, outgoing requests).
const RESERVED_FDS: u64 = 256;

/// Raises the soft open-file limit to the hard one and returns the connections each of the
/// three listeners may hold: a third of the limit less [`RESERVED_FDS`], within 64..=16384.
/// Beyond it a listener stops accepting until a connection ends, so a flood of connections
/// queues in the kernel's backlog instead of exhausting descriptors the store needs.
pub fn connection_limit() -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let soft = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if hard > soft && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1024,
    };
    (soft.saturating_sub(RESERVED_FDS) / 3).clamp(64, 16384) as usize
}

/// An accepted stream that records when bytes last moved, for [`IDLE_TIMEOUT`].
struct Activity<S> {
    inner: S,
    last: Arc<std::sync::atomic::AtomicU64>,
    epoch: tokio::time::Instant,
}

impl<S> Activity<S> {
    fn touch(&self) {
        self.last.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Activity<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Activity<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Serves one connection until it ends, `cancel` fires or it has been idle for
/// [`IDLE_TIMEOUT`]; the last two shut it down gracefully (in-flight requests finish).
async fn serve_conn<S>(stream: S, svc: TowerToHyperService<Router>, cancel: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let last = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let epoch = tokio::time::Instant::now();
    let io = Activity { inner: stream, last: last.clone(), epoch };
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let idle_check = (IDLE_TIMEOUT / 10).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(idle_check);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            _ = cancel.cancelled() => { conn.as_mut().graceful_shutdown(); break conn.await }
            _ = tick.tick() => {
                let idle_ms = (epoch.elapsed().as_millis() as u64)
                    .saturating_sub(last.load(Ordering::Relaxed));
                if idle_ms >= IDLE_TIMEOUT.as_millis() as u64 {
                    conn.as_mut().graceful_shutdown();
                    break conn.await;
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "Connection ended with an error.");
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { what, addr, source })
}

/// Serves `router` on `listener` (HTTP/1.1 and HTTP/2, TLS when configured) until cancelled,
/// holding at most `max_conns` connections at once.
async fn serve_router(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    max_conns: usize,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(tokio::sync::Semaphore::new(max_conns));
    loop {
        // A slot first: at the limit, connections wait in the kernel's backlog.
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, _peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors (EMFILE) or the like: back off, keep serving.
                    tracing::warn!(error = %e, "Accept failed; continuing.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let svc = TowerToHyperService::new(router.clone());
        let acceptor = acceptor.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let _permit = permit;
            match acceptor {
                Some(acc) => {
                    // The handshake is bounded like a request head.
                    match tokio::time::timeout(HEADER_READ_TIMEOUT, acc.accept(stream)).await {
                        Ok(Ok(s)) => serve_conn(s, svc, cancel).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed."),
                        Err(_) => tracing::debug!("TLS handshake timed out."),
                    }
                }
                None => serve_conn(stream, svc, cancel).await,
            }
        });
    }
}

/// Binds all listeners and starts serving. Returns the bound addresses and handles; the
/// servers stop when `cancel` fires, and `tracker` can be waited on for their connections.
pub async fn start(
    opts: ServeOptions,
    cancel: CancellationToken,
    tracker: TaskTracker,
) -> Result<(Bound, Handles), ServerError> {
    let tls = tls_config(&opts.server)?;
    let ingest_stats = Arc::new(IngestStats::default());
    let queries = Arc::new(QueryStats::default());
    let ready = Arc::new(AtomicBool::new(false));
    let read_token: Option<Arc<str>> = opts.tokens.read.as_deref().map(Arc::from);
    let write_token: Option<Arc<str>> = opts.tokens.write.as_deref().map(Arc::from);

    let ingest_state = IngestState {
        store: opts.store.clone(),
        stats: ingest_stats.clone(),
        max_body_bytes: opts.server.max_body_bytes,
        remote: opts.remote.writer.clone(),
    };
    let api_state = ApiState {
        store: opts.store.clone(),
        queries: queries.clone(),
        node_stale_after: opts.server.node_stale_after.get(),
        node_lost_after: opts.server.node_lost_after.get(),
        remote: opts.remote.source.clone(),
    };

    // API listener: every room's routes, own telemetry, health.
    let mut api_router = api::router(api_state);
    for r in opts.extra_api {
        api_router = api_router.merge(r);
    }
    let metrics_store = opts.store.clone();
    let (mi, mq) = (ingest_stats.clone(), queries.clone());
    let extra_metrics = Arc::new(opts.extra_metrics);
    let ready_flag = ready.clone();
    let ready_store = opts.store.clone();
    api_router = api_router
        .route(
            "/metrics",
            get(move || {
                let (s, i, q, extra) =
                    (metrics_store.clone(), mi.clone(), mq.clone(), extra_metrics.clone());
                async move {
                    let mut text = telemetry::render(&s, &i, &q);
                    for m in extra.iter() {
                        text.push_str(&m());
                    }
                    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let r = ready_flag.load(Ordering::Relaxed);
                // Not ready while the store cannot write: ingest refuses then, and a load
                // balancer should send agents elsewhere.
                let failing = ready_store.unavailable();
                async move {
                    match (r, failing) {
                        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "starting\n".to_string()),
                        (true, Some(reason)) => {
                            (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n"))
                        }
                        (true, None) => (StatusCode::OK, "ready\n".to_string()),
                    }
                }
            }),
        )
        .layer(middleware::from_fn_with_state(
            AuthState { token: read_token, ingest: ingest_stats.clone(), grpc: false },
            require_token,
        ));

    let grpc_router = tonic::service::Routes::new(ingest::grpc_service(ingest_state.clone()))
        .into_axum_router()
        .layer(middleware::from_fn_with_state(
            AuthState { token: write_token.clone(), ingest: ingest_stats.clone(), grpc: true },
            require_token,
        ));
    let http_router = ingest::http_router(ingest_state)
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(middleware::from_fn_with_state(
            AuthState { token: write_token, ingest: ingest_stats.clone(), grpc: false },
            require_token,
        ));

    let api_l = bind("api", guard_addr(opts.server.api_listen, &opts.tokens.read, "api")).await?;
    let grpc_l = bind(
        "otlp-grpc",
        guard_addr(opts.server.otlp_grpc_listen, &opts.tokens.write, "otlp-grpc"),
    )
    .await?;
    let http_l = bind(
        "otlp-http",
        guard_addr(opts.server.otlp_http_listen, &opts.tokens.write, "otlp-http"),
    )
    .await?;
    let local = |l: &TcpListener, what: &'static str, addr: SocketAddr| {
        l.local_addr().map_err(|source| ServerError::Bind { what, addr, source })
    };
    let bound = Bound {
        api: local(&api_l, "api", opts.server.api_listen)?,
        otlp_grpc: local(&grpc_l, "otlp-grpc", opts.server.otlp_grpc_listen)?,
        otlp_http: local(&http_l, "otlp-http", opts.server.otlp_http_listen)?,
    };
    let max_conns = connection_limit();
    tracker.spawn(serve_router(
        api_l,
        api_router,
        tls.clone(),
        cancel.clone(),
        tracker.clone(),
        max_conns,
    ));
    tracker.spawn(serve_router(
        grpc_l,
        grpc_router,
        tls.clone(),
        cancel.clone(),
        tracker.clone(),
        max_conns,
    ));
    tracker.spawn(serve_router(
        http_l,
        http_router,
        tls,
        cancel.clone(),
        tracker.clone(),
        max_conns,
    ));
    ready.store(true, Ordering::Relaxed);
    tracing::info!(api = %bound.api, otlp_grpc = %bound.otlp_grpc, otlp_http = %bound.otlp_http, "Collector listening.");
    Ok((bound, Handles { ingest: ingest_stats, queries, ready }))
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn token_comparison_is_exact_whatever_the_lengths() {
        assert!(same(b"s3cret-token", b"s3cret-token"));
        assert!(!same(b"s3cret-token", b"s3cret-tokeN"));
        assert!(!same(b"s3cret", b"s3cret-token"), "a prefix is not the token");
        assert!(!same(b"", b"s3cret-token"));
        assert!(same(b"", b""));
    }
}
