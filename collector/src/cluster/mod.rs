//! The coordination room: several collectors, one leader, no double actions. etcd v3 is the
//! coordination engine (no consensus of our own): collectors elect a leader on one key with
//! leases ([`election`]), only the leader evaluates policies and acts, and the policy ledger
//! lives in etcd ([`ledger`]), every write fenced by the leader's term, so a deposed leader
//! that still believes it leads cannot act twice or overwrite its successor.
//!
//! - [`etcd`]: a small client for etcd's v3 JSON gateway (why not the gRPC crate: there).
//! - [`election`]: campaign, lead, follow; the state as a [`ClusterView`] on a watch channel.
//! - [`ledger`]: [`EtcdLedger`], the shared [`Ledger`](stoker_policy::ledger::Ledger).

pub mod election;
pub mod etcd;
pub mod ledger;
#[cfg(test)]
mod testing;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use stoker_policy::ledger::{Fence, Leadership, Ledger};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::duration::HumanDuration;

pub use election::{Campaign, ClusterView, Election, ElectionConfig, Role, campaign};
pub use etcd::{EtcdClient, EtcdError};
pub use ledger::EtcdLedger;

/// Where several collectors agree on one leader (`[cluster] backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterBackend {
    /// This collector alone: it always leads.
    #[default]
    None,
    /// An etcd v3 cluster: a lease-held leader key, and the policy ledger in etcd.
    Etcd,
    /// A `coordination.k8s.io/v1` Lease (not built yet: refused at start).
    Kubernetes,
}

/// `[cluster]`: several collectors, one leader. Every member ingests and serves the API; only
/// the leader evaluates policies and acts, and every ledger write is fenced on its term.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `none` (default), `etcd` or `kubernetes`.
    pub backend: ClusterBackend,
    /// etcd client URLs, tried in order when one cannot be reached, e.g.
    /// `["http://etcd-0:2379", "http://etcd-1:2379"]`.
    pub etcd_endpoints: Vec<String>,
    /// How long a leader that stopped answering keeps the lead before another takes over.
    pub lease_ttl: HumanDuration,
    /// This collector's name, unique in the cluster; default: the host name (a pod's name).
    pub member: Option<String>,
    /// Key prefix of everything this cluster keeps in etcd (`{prefix}/leader`,
    /// `{prefix}/ledger/…`); collectors that should elect one leader share it.
    pub prefix: String,
    /// Timeout of one etcd request; at most a third of `lease_ttl`, so a slow keepalive cannot
    /// outlive the lease.
    pub request_timeout: HumanDuration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            backend: ClusterBackend::None,
            etcd_endpoints: Vec::new(),
            lease_ttl: HumanDuration::from_secs(10),
            member: None,
            prefix: "/stoker".into(),
            request_timeout: HumanDuration::from_secs(2),
        }
    }
}

impl ClusterConfig {
    /// Problems with this section, as `(key, message)`, all at once.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        match self.backend {
            ClusterBackend::None => return errs,
            ClusterBackend::Kubernetes => {
                errs.push((
                    "cluster.backend".into(),
                    "\"kubernetes\" (a Lease) is not built yet; use \"etcd\" or \"none\"".into(),
                ));
                return errs;
            }
            ClusterBackend::Etcd => {}
        }
        if self.etcd_endpoints.is_empty() {
            errs.push((
                "cluster.etcd_endpoints".into(),
                "at least one etcd URL is required with backend = \"etcd\"".into(),
            ));
        }
        for (i, e) in self.etcd_endpoints.iter().enumerate() {
            match url::Url::parse(e) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                Ok(u) => errs.push((
                    format!("cluster.etcd_endpoints[{i}]"),
                    format!("{e:?}: scheme {:?} is not http or https", u.scheme()),
                )),
                Err(err) => {
                    errs.push((format!("cluster.etcd_endpoints[{i}]"), format!("{e:?}: {err}")))
                }
            }
        }
        if !self.prefix.starts_with('/') || self.prefix.ends_with('/') {
            errs.push((
                "cluster.prefix".into(),
                format!("{:?}: must start with / and not end with one", self.prefix),
            ));
        }
        if self.member.as_deref().is_some_and(|m| m.trim().is_empty()) {
            errs.push(("cluster.member".into(), "must not be empty".into()));
        }
        if self.lease_ttl.get() < Duration::from_secs(2) {
            errs.push((
                "cluster.lease_ttl".into(),
                "must be at least 2s (etcd's unit is 1s)".into(),
            ));
        }
        let timeout = self.request_timeout.get();
        if timeout.is_zero() || timeout * 3 > self.lease_ttl.get() {
            errs.push((
                "cluster.request_timeout".into(),
                "must be positive and at most a third of lease_ttl".into(),
            ));
        }
        errs
    }

    /// This collector's member name: `member`, else the host name.
    pub fn member_name(&self) -> String {
        if let Some(m) = &self.member {
            return m.clone();
        }
        std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
                    .filter(|h| !h.is_empty())
            })
            .unwrap_or_else(|| "collector".into())
    }

    /// The leader key.
    pub fn leader_key(&self) -> String {
        format!("{}/leader", self.prefix.trim_end_matches('/'))
    }

    /// A client for the configured endpoints.
    pub fn client(&self) -> Result<EtcdClient, EtcdError> {
        EtcdClient::new(&self.etcd_endpoints, self.request_timeout.get())
    }

    /// The election this configuration describes.
    pub fn election(&self, client: EtcdClient) -> Election {
        Election::new(
            client,
            ElectionConfig {
                key: self.leader_key(),
                members: format!("{}/members/", self.prefix.trim_end_matches('/')),
                member: self.member_name(),
                lease_ttl: self.lease_ttl.get(),
            },
        )
    }
}

/// Leading while the election's view says so, with its term as the fence.
#[derive(Debug)]
struct Elected(watch::Receiver<ClusterView>);

impl Leadership for Elected {
    fn fence(&self) -> Option<Fence> {
        self.0.borrow().fence()
    }
}

/// This collector's place among the others, started by [`start`].
#[derive(Clone, Debug)]
pub struct Cluster {
    /// Where it stands, as `/api/v1/cluster` serves it.
    pub view: watch::Receiver<ClusterView>,
    /// What the policy runtime and the actuators ask before each write.
    pub leadership: Arc<dyn Leadership>,
    /// The shared ledger (etcd); `None`: the embedded one, for a collector alone.
    pub ledger: Option<Arc<dyn Ledger>>,
}

/// Joins the cluster `cfg` names: with `backend = "etcd"` the election runs on `tracker` until
/// `cancel` (a leader resigns then), and the ledger is in etcd; with `none` this collector
/// leads alone for good.
pub fn start(
    cfg: &ClusterConfig,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<Cluster, EtcdError> {
    if cfg.backend != ClusterBackend::Etcd {
        let me = cfg.member_name();
        let (_, view) = watch::channel(ClusterView {
            self_: me.clone(),
            role: Role::Leader,
            leader: Some(me.clone()),
            members: vec![me],
            term: Fence::SOLE.0,
            lease_ttl_s: 0,
            backend: "none",
        });
        return Ok(Cluster { view, leadership: Arc::new(Fence::SOLE), ledger: None });
    }
    let client = cfg.client()?;
    let ledger = EtcdLedger::new(&client, &cfg.prefix, Some(cfg.leader_key()))?;
    let election = cfg.election(client);
    let view = election.view();
    let span = tracing::info_span!("election", member = %cfg.member_name());
    tracker.spawn(tracing::Instrument::instrument(election.run(cancel.clone()), span));
    Ok(Cluster {
        leadership: Arc::new(Elected(view.clone())),
        view,
        ledger: Some(Arc::new(ledger)),
    })
}

impl Cluster {
    /// `GET /api/v1/cluster`: this collector's role, the leader and the term.
    pub fn router(&self) -> Router {
        Router::new().route("/api/v1/cluster", get(view)).with_state(self.view.clone())
    }

    /// Role and term for `/metrics`.
    pub fn metrics_text(&self) -> String {
        let v = self.view.borrow();
        format!(
            "# HELP stoker_cluster_leader Whether this collector leads (evaluates policies and acts).\n\
             # TYPE stoker_cluster_leader gauge\nstoker_cluster_leader{{backend=\"{}\"}} {}\n\
             # HELP stoker_cluster_term The leader's term (etcd: the leader key's create revision).\n\
             # TYPE stoker_cluster_term gauge\nstoker_cluster_term {}\n",
            v.backend,
            u8::from(v.role == Role::Leader),
            v.term
        )
    }
}

async fn view(State(view): State<watch::Receiver<ClusterView>>) -> axum::Json<ClusterView> {
    axum::Json(view.borrow().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_section_reports_every_problem_by_its_key() {
        let cfg = ClusterConfig {
            backend: ClusterBackend::Etcd,
            etcd_endpoints: vec!["etcd:2379".into()],
            prefix: "stoker/".into(),
            member: Some(" ".into()),
            lease_ttl: HumanDuration::from_secs(3),
            request_timeout: HumanDuration::from_secs(2),
        };
        let keys: Vec<String> = cfg.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "cluster.etcd_endpoints[0]",
                "cluster.prefix",
                "cluster.member",
                "cluster.request_timeout"
            ]
        );
        let good = ClusterConfig {
            backend: ClusterBackend::Etcd,
            etcd_endpoints: vec!["http://127.0.0.1:2379".into()],
            member: Some("a".into()),
            ..ClusterConfig::default()
        };
        assert_eq!(good.validate(), Vec::new());
        assert_eq!(good.leader_key(), "/stoker/leader");
        let k8s = ClusterConfig { backend: ClusterBackend::Kubernetes, ..good };
        assert_eq!(k8s.validate()[0].0, "cluster.backend");
        assert_eq!(ClusterConfig::default().validate(), Vec::new(), "none needs nothing");
    }
}
