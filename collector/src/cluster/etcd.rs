//! A small etcd v3 client over etcd's own gRPC-gateway JSON API (`POST /v3/kv/range`, `put`,
//! `txn`, `deleterange`, `/v3/lease/grant`, `keepalive`, `revoke`), which every etcd since 3.4
//! serves on its client port beside gRPC.
//!
//! Why not the `etcd-client` crate: its build script runs `tonic-prost-build`, which needs a
//! `protoc` binary, and the project promises `cargo test --workspace` on a fresh machine with
//! only the Rust toolchain. The gateway speaks the same `etcdserverpb` messages as gRPC, as
//! JSON: keys and values are base64, int64 fields come back as strings, and fields at their
//! default (`false`, `0`, empty) are left out, so an absent `succeeded` is `false` and an
//! absent `kvs` is empty. Only what election and the ledger need is here; etcd does the
//! consensus.
//!
//! Several endpoints (the members of one etcd cluster) are tried in turn when one cannot be
//! connected to, starting from the last one that answered. A request that was sent and then
//! timed out is not sent elsewhere: it may have been applied, and the caller's transaction
//! compares are what make a retry safe.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// gRPC's NOT_FOUND, which etcd answers for a lease it does not know.
const GRPC_NOT_FOUND: i64 = 5;

/// Why an etcd call failed; each names the endpoint (or those tried) and the operation.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The client was given something it cannot use (no endpoints, a bad URL).
    #[error("etcd client: {0}")]
    Config(String),
    /// A thread or runtime for the client could not be started.
    #[error("etcd client: {what}: {source}")]
    Io {
        /// What was being started.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No endpoint could be connected to.
    #[error("etcd {op}: no endpoint answered (tried {tried}): {source}")]
    Unreachable {
        /// The operation (`range`, `txn`, `lease grant`, …).
        op: &'static str,
        /// The endpoints tried, comma-separated.
        tried: String,
        /// The last connection error.
        #[source]
        source: reqwest::Error,
    },
    /// The request was sent but failed on the way (timeout, reset, unreadable body): it may
    /// or may not have been applied.
    #[error("etcd {endpoint} {op}: {source}")]
    Request {
        /// The endpoint.
        endpoint: String,
        /// The operation.
        op: &'static str,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// etcd answered with an error (`code` is the gRPC status code when it gave one).
    #[error("etcd {endpoint} {op}: HTTP {status}: {message}")]
    Refused {
        /// The endpoint.
        endpoint: String,
        /// The operation.
        op: &'static str,
        /// The HTTP status.
        status: u16,
        /// The gRPC status code.
        code: Option<i64>,
        /// etcd's message.
        message: String,
    },
    /// The answer was not what etcd sends.
    #[error("etcd {endpoint} {op}: not an etcd answer ({detail}): {body}")]
    Decode {
        /// The endpoint.
        endpoint: String,
        /// The operation.
        op: &'static str,
        /// What was wrong.
        detail: String,
        /// The start of the body.
        body: String,
    },
}

impl EtcdError {
    /// Whether etcd said the lease does not exist (expired or revoked).
    pub fn is_lease_not_found(&self) -> bool {
        matches!(self, Self::Refused { code: Some(GRPC_NOT_FOUND), .. })
    }
}

/// A key and its metadata, as etcd returns it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct KeyValue {
    /// The key.
    #[serde(default, deserialize_with = "de::bytes")]
    pub key: Vec<u8>,
    /// The value (empty with `keys_only`).
    #[serde(default, deserialize_with = "de::bytes")]
    pub value: Vec<u8>,
    /// Revision at which the key was created (since its last deletion).
    #[serde(default, deserialize_with = "de::int")]
    pub create_revision: i64,
    /// Revision of its last modification.
    #[serde(default, deserialize_with = "de::int")]
    pub mod_revision: i64,
    /// Modifications since it was created.
    #[serde(default, deserialize_with = "de::int")]
    pub version: i64,
    /// The lease it is attached to, 0 for none.
    #[serde(default, deserialize_with = "de::int")]
    pub lease: i64,
}

/// The header of every answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Header {
    /// The store's revision when the request was served.
    #[serde(default, deserialize_with = "de::int")]
    pub revision: i64,
}

/// Answer to a range.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct RangeResponse {
    /// Header.
    #[serde(default)]
    pub header: Header,
    /// The keys found (none with `count_only`).
    #[serde(default)]
    pub kvs: Vec<KeyValue>,
    /// Whether more keys lie in the range than `limit` let through.
    #[serde(default)]
    pub more: bool,
    /// Keys in the range, whatever the limit.
    #[serde(default, deserialize_with = "de::int")]
    pub count: i64,
}

/// Answer to a put.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct PutResponse {
    /// Header (`revision` is the put's).
    #[serde(default)]
    pub header: Header,
}

/// Answer to a delete.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct DeleteRangeResponse {
    /// Header.
    #[serde(default)]
    pub header: Header,
    /// Keys deleted.
    #[serde(default, deserialize_with = "de::int")]
    pub deleted: i64,
}

/// One answer inside a transaction's, in the order of the requests of the branch taken.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub enum ResponseOp {
    /// A range's.
    #[serde(rename = "response_range")]
    Range(RangeResponse),
    /// A put's.
    #[serde(rename = "response_put")]
    Put(PutResponse),
    /// A delete's.
    #[serde(rename = "response_delete_range")]
    DeleteRange(DeleteRangeResponse),
}

/// Answer to a transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct TxnResponse {
    /// Header (`revision` is the transaction's when it wrote).
    #[serde(default)]
    pub header: Header,
    /// Whether every compare held (the success branch ran).
    #[serde(default)]
    pub succeeded: bool,
    /// The answers of the branch that ran.
    #[serde(default)]
    pub responses: Vec<ResponseOp>,
}

impl TxnResponse {
    /// The range answer at `index` of the branch that ran, if that request was a range.
    pub fn range(&self, index: usize) -> Option<&RangeResponse> {
        match self.responses.get(index) {
            Some(ResponseOp::Range(r)) => Some(r),
            _ => None,
        }
    }
}

/// A range read: one key, or `[key, range_end)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    /// First key.
    pub key: Vec<u8>,
    /// End of the range, exclusive; `None` reads `key` alone.
    pub range_end: Option<Vec<u8>>,
    /// Most keys returned, 0 for no limit.
    pub limit: i64,
    /// Newest key first (by key, descending) rather than ascending.
    pub descending: bool,
    /// Keys and metadata without values.
    pub keys_only: bool,
    /// Only the count.
    pub count_only: bool,
    /// Read the store as of this revision, 0 for the newest.
    pub revision: i64,
}

impl RangeRequest {
    /// `key` alone.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Self { key: key.into(), ..Self::default() }
    }

    /// Every key starting with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let key = prefix.into();
        let end = prefix_end(&key);
        Self { key, range_end: Some(end), ..Self::default() }
    }

    fn to_json(&self) -> Value {
        let mut v = json!({ "key": B64.encode(&self.key) });
        if let Some(end) = &self.range_end {
            v["range_end"] = B64.encode(end).into();
        }
        if self.limit > 0 {
            v["limit"] = self.limit.to_string().into();
        }
        if self.descending {
            v["sort_order"] = "DESCEND".into();
            v["sort_target"] = "KEY".into();
        }
        if self.keys_only {
            v["keys_only"] = true.into();
        }
        if self.count_only {
            v["count_only"] = true.into();
        }
        if self.revision > 0 {
            v["revision"] = self.revision.to_string().into();
        }
        v
    }
}

/// A put, optionally attached to a lease (the key goes when the lease does).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutRequest {
    /// Key.
    pub key: Vec<u8>,
    /// Value.
    pub value: Vec<u8>,
    /// Lease ID, 0 for none.
    pub lease: i64,
}

impl PutRequest {
    /// `key` = `value`, without a lease.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self { key: key.into(), value: value.into(), lease: 0 }
    }

    fn to_json(&self) -> Value {
        let mut v = json!({ "key": B64.encode(&self.key), "value": B64.encode(&self.value) });
        if self.lease != 0 {
            v["lease"] = self.lease.to_string().into();
        }
        v
    }
}

/// One request of a transaction branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOp {
    /// Read.
    Range(RangeRequest),
    /// Write.
    Put(PutRequest),
    /// Delete `key`, or `[key, range_end)`.
    DeleteRange {
        /// First key.
        key: Vec<u8>,
        /// End of the range, exclusive; `None` deletes `key` alone.
        range_end: Option<Vec<u8>>,
    },
}

impl RequestOp {
    fn to_json(&self) -> Value {
        match self {
            Self::Range(r) => json!({ "request_range": r.to_json() }),
            Self::Put(p) => json!({ "request_put": p.to_json() }),
            Self::DeleteRange { key, range_end } => {
                json!({ "request_delete_range": delete_json(key, range_end.as_deref()) })
            }
        }
    }
}

fn delete_json(key: &[u8], range_end: Option<&[u8]>) -> Value {
    let mut v = json!({ "key": B64.encode(key) });
    if let Some(end) = range_end {
        v["range_end"] = B64.encode(end).into();
    }
    v
}

/// How a compare relates the key's field to the operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareResult {
    /// Field == operand.
    Equal,
    /// Field > operand.
    Greater,
    /// Field < operand.
    Less,
    /// Field != operand.
    NotEqual,
}

/// The field a compare reads and the operand. A key that does not exist compares as zero
/// for the revisions, version and lease, and fails every `Value` compare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// Modifications since creation.
    Version(i64),
    /// Creation revision (0: the key does not exist).
    Create(i64),
    /// Last modification revision.
    Mod(i64),
    /// The value, compared byte-wise.
    Value(Vec<u8>),
    /// The lease ID.
    Lease(i64),
}

/// One condition of a transaction; all must hold for the success branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    /// The key read.
    pub key: Vec<u8>,
    /// The relation.
    pub result: CompareResult,
    /// The field and operand.
    pub target: CompareTarget,
}

impl Compare {
    /// `key`'s field `result` operand.
    pub fn new(key: impl Into<Vec<u8>>, result: CompareResult, target: CompareTarget) -> Self {
        Self { key: key.into(), result, target }
    }

    fn to_json(&self) -> Value {
        let result = match self.result {
            CompareResult::Equal => "EQUAL",
            CompareResult::Greater => "GREATER",
            CompareResult::Less => "LESS",
            CompareResult::NotEqual => "NOT_EQUAL",
        };
        let mut v = json!({ "result": result, "key": B64.encode(&self.key) });
        let (target, field, operand): (&str, &str, Value) = match &self.target {
            CompareTarget::Version(n) => ("VERSION", "version", n.to_string().into()),
            CompareTarget::Create(n) => ("CREATE", "create_revision", n.to_string().into()),
            CompareTarget::Mod(n) => ("MOD", "mod_revision", n.to_string().into()),
            CompareTarget::Value(b) => ("VALUE", "value", B64.encode(b).into()),
            CompareTarget::Lease(n) => ("LEASE", "lease", n.to_string().into()),
        };
        v["target"] = target.into();
        v[field] = operand;
        v
    }
}

/// An atomic `if compares then success else failure`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    /// Conditions, all of which must hold.
    pub compare: Vec<Compare>,
    /// Run when they hold.
    pub success: Vec<RequestOp>,
    /// Run otherwise.
    pub failure: Vec<RequestOp>,
}

impl Txn {
    fn to_json(&self) -> Value {
        json!({
            "compare": self.compare.iter().map(Compare::to_json).collect::<Vec<_>>(),
            "success": self.success.iter().map(RequestOp::to_json).collect::<Vec<_>>(),
            "failure": self.failure.iter().map(RequestOp::to_json).collect::<Vec<_>>(),
        })
    }
}

/// A granted lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Its ID.
    pub id: i64,
    /// Its time to live as granted (etcd may raise a short one to its minimum).
    pub ttl: Duration,
}

#[derive(Deserialize)]
struct GrantAnswer {
    #[serde(rename = "ID", default, deserialize_with = "de::int")]
    id: i64,
    #[serde(rename = "TTL", default, deserialize_with = "de::int")]
    ttl: i64,
    #[serde(default)]
    error: String,
}

#[derive(Deserialize)]
struct KeepAliveAnswer {
    #[serde(rename = "TTL", default, deserialize_with = "de::int")]
    ttl: i64,
}

/// The keepalive route is a gRPC stream; the gateway answers each message as
/// `{"result": …}` or `{"error": …}` on a line of its own.
#[derive(Deserialize)]
struct StreamLine<T> {
    result: Option<T>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    #[serde(default)]
    message: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    code: Option<i64>,
}

/// An etcd v3 client over the JSON gateway. Cheap to clone (clones share connections).
#[derive(Clone)]
pub struct EtcdClient {
    http: reqwest::Client,
    endpoints: Arc<[String]>,
    /// The endpoint tried first: the last one that answered.
    preferred: Arc<AtomicUsize>,
    timeout: Duration,
}

impl std::fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdClient")
            .field("endpoints", &self.endpoints)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl EtcdClient {
    /// A client for the cluster whose client URLs are `endpoints` (`http://host:2379`; a
    /// trailing `/` is ignored), each call bounded by `timeout`.
    pub fn new(endpoints: &[String], timeout: Duration) -> Result<Self, EtcdError> {
        if endpoints.is_empty() {
            return Err(EtcdError::Config("no endpoints".into()));
        }
        if timeout.is_zero() {
            return Err(EtcdError::Config("the request timeout must be positive".into()));
        }
        let mut checked = Vec::with_capacity(endpoints.len());
        for e in endpoints {
            match url::Url::parse(e) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {
                    checked.push(e.trim_end_matches('/').to_owned());
                }
                Ok(u) => {
                    return Err(EtcdError::Config(format!(
                        "endpoint {e:?}: scheme {:?} is not http or https",
                        u.scheme()
                    )));
                }
                Err(err) => return Err(EtcdError::Config(format!("endpoint {e:?}: {err}"))),
            }
        }
        let http = Self::http(timeout)?;
        Ok(Self { http, endpoints: checked.into(), preferred: Arc::default(), timeout })
    }

    fn http(timeout: Duration) -> Result<reqwest::Client, EtcdError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .user_agent(concat!("stoker-collector/", env!("CARGO_PKG_VERSION")))
            // A dead member must not eat the whole call's time before the next is tried.
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .build()
            .map_err(|e| EtcdError::Config(format!("HTTP client: {e}")))
    }

    /// The same endpoints and timeout with a connection pool of its own. A pooled connection
    /// is served by a task on the runtime that opened it, so a client used from a second
    /// runtime (the ledger's thread) takes its own pool rather than share one whose runtime
    /// may end first.
    pub fn with_own_pool(&self) -> Result<Self, EtcdError> {
        Ok(Self {
            http: Self::http(self.timeout)?,
            endpoints: self.endpoints.clone(),
            preferred: Arc::new(AtomicUsize::new(self.preferred.load(Ordering::Relaxed))),
            timeout: self.timeout,
        })
    }

    /// The endpoints, in the order given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The bound on each call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Reads a key or a range.
    pub async fn range(&self, req: &RangeRequest) -> Result<RangeResponse, EtcdError> {
        self.call("range", "/v3/kv/range", &req.to_json()).await
    }

    /// Reads one key.
    pub async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, EtcdError> {
        Ok(self.range(&RangeRequest::key(key)).await?.kvs.into_iter().next())
    }

    /// Writes one key.
    pub async fn put(&self, req: &PutRequest) -> Result<PutResponse, EtcdError> {
        self.call("put", "/v3/kv/put", &req.to_json()).await
    }

    /// Deletes `key`, or `[key, range_end)`.
    pub async fn delete_range(
        &self,
        key: &[u8],
        range_end: Option<&[u8]>,
    ) -> Result<DeleteRangeResponse, EtcdError> {
        self.call("deleterange", "/v3/kv/deleterange", &delete_json(key, range_end)).await
    }

    /// Runs a transaction.
    pub async fn txn(&self, txn: &Txn) -> Result<TxnResponse, EtcdError> {
        self.call("txn", "/v3/kv/txn", &txn.to_json()).await
    }

    /// Grants a lease of `ttl` (whole seconds, rounded up, at least one).
    pub async fn lease_grant(&self, ttl: Duration) -> Result<Lease, EtcdError> {
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let body = json!({ "TTL": secs.max(1).to_string() });
        let (endpoint, a): (String, GrantAnswer) =
            self.call_at("lease grant", "/v3/lease/grant", &body).await?;
        if !a.error.is_empty() || a.id == 0 || a.ttl <= 0 {
            return Err(EtcdError::Decode {
                endpoint,
                op: "lease grant",
                detail: "no lease granted".into(),
                body: a.error,
            });
        }
        Ok(Lease { id: a.id, ttl: Duration::from_secs(a.ttl.unsigned_abs()) })
    }

    /// Refreshes lease `id`; returns its time to live from now, zero when the lease is gone
    /// (expired or revoked).
    pub async fn lease_keep_alive(&self, id: i64) -> Result<Duration, EtcdError> {
        let body = json!({ "ID": id.to_string() });
        let (endpoint, text) = self.send("lease keepalive", "/v3/lease/keepalive", &body).await?;
        let decode = |detail: String| EtcdError::Decode {
            endpoint: endpoint.clone(),
            op: "lease keepalive",
            detail,
            body: snippet(&text),
        };
        let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let parsed: StreamLine<KeepAliveAnswer> =
            serde_json::from_str(line).map_err(|e| decode(e.to_string()))?;
        match (parsed.result, parsed.error) {
            (Some(a), _) => Ok(Duration::from_secs(a.ttl.max(0).unsigned_abs())),
            (None, Some(e)) => Err(decode(format!("stream error {e}"))),
            (None, None) => Err(decode("neither result nor error".into())),
        }
    }

    /// Revokes lease `id`, deleting the keys attached to it. A lease already gone is not an
    /// error: what the caller wanted has happened.
    pub async fn lease_revoke(&self, id: i64) -> Result<(), EtcdError> {
        let body = json!({ "ID": id.to_string() });
        match self.call::<Value>("lease revoke", "/v3/lease/revoke", &body).await {
            Err(e) if e.is_lease_not_found() => Ok(()),
            other => other.map(|_| ()),
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        op: &'static str,
        path: &str,
        body: &Value,
    ) -> Result<T, EtcdError> {
        Ok(self.call_at(op, path, body).await?.1)
    }

    /// The answer and the endpoint that gave it.
    async fn call_at<T: DeserializeOwned>(
        &self,
        op: &'static str,
        path: &str,
        body: &Value,
    ) -> Result<(String, T), EtcdError> {
        let (endpoint, text) = self.send(op, path, body).await?;
        match serde_json::from_str(&text) {
            Ok(v) => Ok((endpoint, v)),
            Err(e) => {
                Err(EtcdError::Decode { endpoint, op, detail: e.to_string(), body: snippet(&text) })
            }
        }
    }

    /// Posts `body` to the first endpoint that can be connected to; a 200's body.
    async fn send(
        &self,
        op: &'static str,
        path: &str,
        body: &Value,
    ) -> Result<(String, String), EtcdError> {
        let n = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        let mut last_connect_error = None;
        for i in 0..n {
            let at = (first + i) % n;
            let endpoint = &self.endpoints[at];
            let sent =
                self.http.post(format!("{endpoint}{path}")).json(body).timeout(self.timeout).send();
            let resp = match sent.await {
                Ok(r) => r,
                Err(e) if e.is_connect() => {
                    last_connect_error = Some(e);
                    continue;
                }
                Err(e) => {
                    return Err(EtcdError::Request { endpoint: endpoint.clone(), op, source: e });
                }
            };
            self.preferred.store(at, Ordering::Relaxed);
            let status = resp.status();
            let text = resp.text().await.map_err(|e| EtcdError::Request {
                endpoint: endpoint.clone(),
                op,
                source: e,
            })?;
            if status.is_success() {
                return Ok((endpoint.clone(), text));
            }
            let (message, code) = match serde_json::from_str::<ErrorAnswer>(&text) {
                Ok(a) if !a.message.is_empty() => (a.message, a.code),
                Ok(a) if !a.error.is_empty() => (a.error, a.code),
                _ => (snippet(&text), None),
            };
            return Err(EtcdError::Refused {
                endpoint: endpoint.clone(),
                op,
                status: status.as_u16(),
                code,
                message,
            });
        }
        match last_connect_error {
            Some(source) => {
                Err(EtcdError::Unreachable { op, tried: self.endpoints.join(", "), source })
            }
            // Unreachable: `endpoints` is never empty (checked in `new`).
            None => Err(EtcdError::Config("no endpoints".into())),
        }
    }
}

/// The first key after every key that starts with `prefix` (etcd's `GetPrefixRangeEnd`):
/// the prefix with its last byte below 0xff raised by one; `[0]` (to the end of the
/// keyspace) when there is none.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn snippet(t: &str) -> String {
    t.chars().take(300).collect()
}

/// The gateway's encodings: int64 as a JSON string (a number is taken too), bytes as base64.
mod de {
    use super::B64;
    use base64::Engine as _;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer};

    pub(super) fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Int {
            Text(String),
            Number(i64),
        }
        match Int::deserialize(d)? {
            Int::Number(n) => Ok(n),
            Int::Text(s) => s.parse().map_err(|e| D::Error::custom(format!("int64 {s:?}: {e}"))),
        }
    }

    pub(super) fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s.as_bytes()).map_err(|e| D::Error::custom(format!("base64: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::testing;

    #[test]
    fn the_prefix_end_is_the_first_key_past_the_prefix() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }

    #[test]
    fn a_compare_is_written_as_the_gateway_reads_it() {
        let c = Compare::new("k", CompareResult::Equal, CompareTarget::Create(0));
        assert_eq!(
            c.to_json(),
            json!({"result": "EQUAL", "target": "CREATE", "key": "aw==", "create_revision": "0"})
        );
        let c = Compare::new("k", CompareResult::Less, CompareTarget::Value(b"5".to_vec()));
        assert_eq!(c.to_json()["value"], "NQ==");
    }

    #[test]
    fn absent_fields_read_as_their_defaults() {
        // The gateway leaves out `succeeded: false`, `kvs: []` and `count: 0`.
        let t: TxnResponse = serde_json::from_str(
            r#"{"header":{"revision":"7"},"responses":[{"response_range":{"header":{"revision":"7"}}}]}"#,
        )
        .unwrap();
        assert!(!t.succeeded);
        assert_eq!(t.header.revision, 7);
        assert_eq!(
            t.range(0),
            Some(&RangeResponse { header: Header { revision: 7 }, ..Default::default() })
        );
    }

    #[tokio::test]
    async fn the_client_reads_writes_and_leases_on_a_real_etcd_and_skips_a_dead_endpoint() {
        let Some(etcd) = testing::etcd().await else { return };
        // A closed port first: the client moves on to the live member.
        let dead = format!("http://127.0.0.1:{}", testing::free_port());
        let c = EtcdClient::new(&[dead, etcd.endpoint.clone()], Duration::from_secs(5)).unwrap();

        let put = c.put(&PutRequest::new("/t/a", "1")).await.unwrap();
        assert!(put.header.revision > 0);
        c.put(&PutRequest::new("/t/b", "2")).await.unwrap();
        let kv = c.get(b"/t/a").await.unwrap().unwrap();
        assert_eq!((kv.value.as_slice(), kv.version), (&b"1"[..], 1));
        assert_eq!(c.get(b"/t/none").await.unwrap(), None);

        let mut newest = RangeRequest::prefix("/t/");
        newest.descending = true;
        newest.limit = 1;
        let r = c.range(&newest).await.unwrap();
        assert_eq!((r.kvs[0].key.as_slice(), r.more, r.count), (&b"/t/b"[..], true, 2));

        // Create-if-absent: the second attempt fails and reads the holder instead.
        let txn = Txn {
            compare: vec![Compare::new("/t/a", CompareResult::Equal, CompareTarget::Create(0))],
            success: vec![RequestOp::Put(PutRequest::new("/t/a", "x"))],
            failure: vec![RequestOp::Range(RangeRequest::key("/t/a"))],
        };
        let t = c.txn(&txn).await.unwrap();
        assert!(!t.succeeded);
        assert_eq!(t.range(0).unwrap().kvs[0].value, b"1");

        let lease = c.lease_grant(Duration::from_secs(5)).await.unwrap();
        assert!(lease.ttl >= Duration::from_secs(5));
        c.put(&PutRequest { lease: lease.id, ..PutRequest::new("/t/leased", "v") }).await.unwrap();
        assert!(c.lease_keep_alive(lease.id).await.unwrap() > Duration::ZERO);
        c.lease_revoke(lease.id).await.unwrap();
        assert_eq!(c.get(b"/t/leased").await.unwrap(), None, "revoking deletes the lease's keys");
        assert_eq!(c.lease_keep_alive(lease.id).await.unwrap(), Duration::ZERO);
        c.lease_revoke(lease.id).await.expect("revoking a gone lease is not an error");

        let put = c.put(&PutRequest { lease: 12345, ..PutRequest::new("/t/c", "v") }).await;
        let err = put.unwrap_err();
        assert!(err.is_lease_not_found(), "{err}");
        assert!(err.to_string().contains(&etcd.endpoint), "the error names the endpoint: {err}");

        let d = c.delete_range(b"/t/", Some(&prefix_end(b"/t/"))).await.unwrap();
        assert_eq!(d.deleted, 2);
    }

    #[tokio::test]
    async fn no_live_endpoint_is_an_error_naming_those_tried() {
        let dead = format!("http://127.0.0.1:{}", testing::free_port());
        let c = EtcdClient::new(std::slice::from_ref(&dead), Duration::from_secs(2)).unwrap();
        let err = c.get(b"k").await.unwrap_err();
        assert!(matches!(err, EtcdError::Unreachable { op: "range", .. }), "{err}");
        assert!(err.to_string().contains(&dead), "{err}");
        assert!(EtcdClient::new(&[], Duration::from_secs(1)).is_err());
        assert!(EtcdClient::new(&["unix:///x".into()], Duration::from_secs(1)).is_err());
    }
}
