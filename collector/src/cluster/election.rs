//! Leader election on one etcd key, the way etcd's own `concurrency.Election` does it: each
//! collector holds a lease; it campaigns with one transaction, `if create_revision(key) == 0
//! then put(key, member, lease) else range(key)`, and whoever created the key leads until
//! its lease goes. The leader's term is the key's `create_revision`: etcd's revisions only
//! grow, so a later leader always holds a higher term, which is what the ledger's
//! [`Fence`] needs.
//!
//! The leader keeps its lease alive every TTL/3 and steps down at once when a keepalive
//! fails, says the lease is gone, or the lease's deadline passes on the local monotonic
//! clock (measured from when the last good keepalive was *sent*, so the local deadline
//! falls before etcd's): it never waits for etcd to say it lost. Followers poll the key
//! (every TTL/5, at most every second) and campaign when it is gone. On shutdown the lease
//! is revoked, which deletes the key, so a follower takes over within one poll rather than
//! one TTL.

use std::time::Duration;

use serde::Serialize;
use stoker_policy::ledger::Fence;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, info, warn};

use super::etcd::{
    Compare, CompareResult, CompareTarget, EtcdClient, EtcdError, PutRequest, RangeRequest,
    RequestOp, Txn,
};

/// Shortest follower poll: keeps a tiny TTL from turning into a busy loop.
const MIN_POLL: Duration = Duration::from_millis(50);
/// Longest follower poll.
const MAX_POLL: Duration = Duration::from_secs(1);

/// A collector's part in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// It holds the leader key: it evaluates policies and acts.
    Leader,
    /// It does not (yet): it watches the key.
    Follower,
}

/// What a collector knows of the cluster, as `GET /api/v1/cluster` serves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterView {
    /// This collector's member name.
    #[serde(rename = "self")]
    pub self_: String,
    /// Its role.
    pub role: Role,
    /// The leader's member name, when one is known.
    pub leader: Option<String>,
    /// Every member that holds a lease now (this one included once it has one), by name.
    pub members: Vec<String>,
    /// The leader's term (the leader key's create revision); 0 while none is known.
    pub term: u64,
    /// The lease TTL, seconds, as etcd granted it (or as asked, before a grant).
    pub lease_ttl_s: u64,
    /// The coordination store.
    pub backend: &'static str,
}

impl ClusterView {
    /// The fence this collector's writes carry while it leads; `None` while it follows.
    pub fn fence(&self) -> Option<Fence> {
        (self.role == Role::Leader).then_some(Fence(self.term))
    }
}

/// What a campaign found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Campaign {
    /// This member holds the key, created at `term`.
    Won {
        /// The key's create revision.
        term: u64,
    },
    /// Another member holds it.
    Lost {
        /// Its member name.
        leader: String,
        /// The key's create revision.
        term: u64,
    },
}

/// One campaign for `key` as `member` on `lease`: creates the key if nobody holds it. A key
/// already holding this member on this lease (an earlier attempt whose answer was lost) is
/// won, as etcd's own election does.
pub async fn campaign(
    client: &EtcdClient,
    key: &str,
    member: &str,
    lease: i64,
) -> Result<Campaign, EtcdError> {
    let put = PutRequest { lease, ..PutRequest::new(key, member) };
    let txn = Txn {
        compare: vec![Compare::new(key, CompareResult::Equal, CompareTarget::Create(0))],
        // The range after the put reads the create revision the put gave the key.
        success: vec![RequestOp::Put(put), RequestOp::Range(RangeRequest::key(key))],
        failure: vec![RequestOp::Range(RangeRequest::key(key))],
    };
    let resp = client.txn(&txn).await?;
    let index = usize::from(resp.succeeded);
    let kv = resp.range(index).and_then(|r| r.kvs.first());
    let Some(kv) = kv else {
        // Created and gone between the compare and the read: the lease ended meanwhile.
        return Ok(Campaign::Lost { leader: String::new(), term: 0 });
    };
    let term = kv.create_revision.max(0).unsigned_abs();
    if kv.lease == lease && kv.value == member.as_bytes() {
        Ok(Campaign::Won { term })
    } else {
        Ok(Campaign::Lost { leader: String::from_utf8_lossy(&kv.value).into_owned(), term })
    }
}

/// Where and as whom to campaign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElectionConfig {
    /// The key to hold, e.g. `/stoker/leader`.
    pub key: String,
    /// Where each member keeps a key of its own on its lease, e.g. `/stoker/members/`: the
    /// members are the keys under it.
    pub members: String,
    /// This collector's member name (unique in the cluster).
    pub member: String,
    /// The lease TTL: how long a dead leader holds the key.
    pub lease_ttl: Duration,
}

impl ElectionConfig {
    /// The follower poll: TTL/5, between 50 ms and 1 s.
    pub fn poll(&self) -> Duration {
        (self.lease_ttl / 5).clamp(MIN_POLL, MAX_POLL)
    }
}

/// A lease this collector holds.
#[derive(Debug)]
struct Session {
    lease: i64,
    ttl: Duration,
    /// When the lease ends by the local clock.
    deadline: Instant,
    next_keepalive: Instant,
}

/// A collector's campaign: run it with [`Election::run`] (or [`Election::spawn`]) and read
/// where it stands from [`Election::view`].
#[derive(Debug)]
pub struct Election {
    client: EtcdClient,
    cfg: ElectionConfig,
    tx: watch::Sender<ClusterView>,
    session: Option<Session>,
    /// The term this collector leads in.
    leading: Option<u64>,
    /// Whether the last call to etcd failed (errors are logged on the change only).
    failing: bool,
    /// The members seen in the last round.
    members: Vec<String>,
}

impl Election {
    /// An election not yet started; the view says follower, no leader known.
    pub fn new(client: EtcdClient, cfg: ElectionConfig) -> Self {
        let (tx, _) = watch::channel(ClusterView {
            self_: cfg.member.clone(),
            role: Role::Follower,
            leader: None,
            members: Vec::new(),
            term: 0,
            lease_ttl_s: whole_seconds(cfg.lease_ttl),
            backend: "etcd",
        });
        Self { client, cfg, tx, session: None, leading: None, failing: false, members: Vec::new() }
    }

    /// Where this collector stands, updated as it changes.
    pub fn view(&self) -> watch::Receiver<ClusterView> {
        self.tx.subscribe()
    }

    /// Runs the election on a task of its own until `shutdown`.
    pub fn spawn(self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let span = tracing::info_span!("election", member = %self.cfg.member);
        tokio::spawn(self.run(shutdown).instrument(span))
    }

    /// Campaigns, leads or follows until `shutdown`; then revokes the lease (a leader's key
    /// goes with it) and reports follower, no leader.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let wake = self.step().await;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
        if let Some(s) = self.session.take() {
            match self.client.lease_revoke(s.lease).await {
                Ok(()) if self.leading.is_some() => info!("Resigned: lease revoked."),
                Ok(()) => {}
                Err(e) => warn!(error = %e, "Cannot revoke the lease; it ends with its TTL."),
            }
        }
        self.leading = None;
        self.publish(None, 0);
    }

    /// One round: keeps the lease, reads the key, campaigns when it is free. Returns when
    /// the next round is due.
    async fn step(&mut self) -> Instant {
        self.keep_lease().await;
        if self.session.is_none() && self.leading.is_some() {
            self.step_down("the lease is gone");
        }
        match self.client.get(self.cfg.key.as_bytes()).await {
            Err(e) => self.failed(&e),
            Ok(kv) => {
                self.recovered();
                match (kv, self.leading) {
                    (Some(kv), Some(term)) => {
                        let ours = self.session.as_ref().is_some_and(|s| s.lease == kv.lease);
                        if kv.create_revision.unsigned_abs() != term || !ours {
                            self.step_down("the leader key was replaced");
                            self.follow(&kv.value, kv.create_revision);
                        }
                    }
                    (Some(kv), None) => self.follow(&kv.value, kv.create_revision),
                    (None, leading) => {
                        if leading.is_some() {
                            self.step_down("the leader key was deleted");
                        }
                        self.campaign().await;
                    }
                }
            }
        }
        self.read_members().await;
        self.next_wake()
    }

    /// Reads who holds a member key now; on failure the last list stays.
    async fn read_members(&mut self) {
        let prefix = self.cfg.members.as_bytes();
        let Ok(r) = self.client.range(&RangeRequest::prefix(prefix.to_vec())).await else { return };
        let mut members: Vec<String> = r
            .kvs
            .iter()
            .filter_map(|kv| kv.key.strip_prefix(prefix))
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        members.sort();
        if members != self.members {
            self.members = members;
            let (leader, term) = {
                let v = self.tx.borrow();
                (v.leader.clone(), v.term)
            };
            self.publish(leader, term);
        }
    }

    /// Grants a lease when there is none; refreshes it when due; drops it when it is gone
    /// or past its local deadline.
    async fn keep_lease(&mut self) {
        let now = Instant::now();
        let Some(s) = self.session.as_mut() else { return };
        if now >= s.deadline {
            self.lose_lease("the lease is past its deadline on the local clock").await;
            return;
        }
        if now < s.next_keepalive {
            return;
        }
        let (lease, remaining) = (s.lease, s.deadline - now);
        let sent = Instant::now();
        // Past the deadline an answer no longer matters: the lease may be gone in etcd.
        match tokio::time::timeout(remaining, self.client.lease_keep_alive(lease)).await {
            Ok(Ok(ttl)) if !ttl.is_zero() => {
                self.recovered();
                if let Some(s) = self.session.as_mut() {
                    s.ttl = ttl;
                    s.deadline = sent + ttl;
                    s.next_keepalive = sent + ttl / 3;
                }
            }
            Ok(Ok(_)) => self.lose_lease("etcd says the lease is gone").await,
            Ok(Err(e)) => {
                self.failed(&e);
                self.lose_lease("a keepalive failed").await;
            }
            Err(_) => self.lose_lease("the keepalive outlived the lease").await,
        }
    }

    /// Forgets the lease (and leadership) at once, then revokes it so its key, if any, goes
    /// now rather than at etcd's expiry.
    async fn lose_lease(&mut self, why: &str) {
        let Some(s) = self.session.take() else { return };
        if self.leading.is_some() {
            self.step_down(why);
        } else {
            debug!(why, "Lease dropped.");
        }
        let revoke = self.client.lease_revoke(s.lease);
        if let Ok(Err(e)) = tokio::time::timeout(self.client.timeout(), revoke).await {
            debug!(error = %e, "Cannot revoke a lost lease; it ends with its TTL.");
        }
    }

    async fn campaign(&mut self) {
        if self.session.is_none() {
            let sent = Instant::now();
            match self.client.lease_grant(self.cfg.lease_ttl).await {
                Ok(l) => {
                    self.recovered();
                    self.session = Some(Session {
                        lease: l.id,
                        ttl: l.ttl,
                        deadline: sent + l.ttl,
                        next_keepalive: sent + l.ttl / 3,
                    });
                    // This member's own key, gone with its lease.
                    let key = format!("{}{}", self.cfg.members, self.cfg.member);
                    let put =
                        PutRequest { lease: l.id, ..PutRequest::new(key, self.cfg.member.clone()) };
                    if let Err(e) = self.client.put(&put).await {
                        debug!(error = %e, "Cannot register as a member; the next lease tries again.");
                    }
                }
                Err(e) => return self.failed(&e),
            }
        }
        let Some(lease) = self.session.as_ref().map(|s| s.lease) else { return };
        match campaign(&self.client, &self.cfg.key, &self.cfg.member, lease).await {
            Ok(Campaign::Won { term }) => {
                self.recovered();
                self.leading = Some(term);
                info!(term, "Leading.");
                self.publish(Some(self.cfg.member.clone()), term);
            }
            Ok(Campaign::Lost { leader, term }) => {
                self.recovered();
                self.follow(leader.as_bytes(), term as i64);
            }
            Err(e) => {
                if e.is_lease_not_found() {
                    // Revoked behind this collector's back: the next round grants a new one.
                    self.session = None;
                }
                self.failed(&e);
            }
        }
    }

    fn step_down(&mut self, why: &str) {
        if let Some(term) = self.leading.take() {
            warn!(term, why, "Stepped down.");
            self.publish(None, 0);
        }
    }

    fn follow(&mut self, leader: &[u8], term: i64) {
        let leader = (!leader.is_empty()).then(|| String::from_utf8_lossy(leader).into_owned());
        let term = if leader.is_some() { term.max(0).unsigned_abs() } else { 0 };
        self.publish(leader, term);
    }

    fn publish(&self, leader: Option<String>, term: u64) {
        let role = if self.leading.is_some() { Role::Leader } else { Role::Follower };
        let lease_ttl_s =
            whole_seconds(self.session.as_ref().map_or(self.cfg.lease_ttl, |s| s.ttl));
        self.tx.send_if_modified(|v| {
            let next = ClusterView {
                self_: self.cfg.member.clone(),
                role,
                leader,
                members: self.members.clone(),
                term,
                lease_ttl_s,
                backend: "etcd",
            };
            let changed = *v != next;
            *v = next;
            changed
        });
    }

    fn failed(&mut self, e: &EtcdError) {
        if !self.failing {
            warn!(error = %e, "etcd call failed; retrying.");
            self.failing = true;
        }
    }

    fn recovered(&mut self) {
        if self.failing {
            info!("etcd answers again.");
            self.failing = false;
        }
    }

    fn next_wake(&self) -> Instant {
        let mut wake = Instant::now() + self.cfg.poll();
        if let Some(s) = &self.session {
            wake = wake.min(s.next_keepalive).min(s.deadline);
        }
        wake
    }
}

/// A TTL as etcd grants it: whole seconds, rounded up, at least one.
fn whole_seconds(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::testing;

    fn election(endpoint: &str, member: &str, ttl: Duration) -> Election {
        let client = EtcdClient::new(&[endpoint.to_owned()], Duration::from_secs(2)).unwrap();
        let cfg = ElectionConfig {
            key: "/stoker/leader".into(),
            members: "/stoker/members/".into(),
            member: member.into(),
            lease_ttl: ttl,
        };
        Election::new(client, cfg)
    }

    /// Waits until `view` satisfies `ok`, at most `within`.
    async fn until(
        view: &mut watch::Receiver<ClusterView>,
        within: Duration,
        ok: impl FnMut(&ClusterView) -> bool,
    ) -> ClusterView {
        let waited =
            tokio::time::timeout(within, view.wait_for(ok)).await.map(|r| r.map(|v| v.clone()));
        match waited {
            Ok(Ok(v)) => v,
            Ok(Err(_)) => panic!("the election ended"),
            Err(_) => panic!("not within {within:?}: {:?}", *view.borrow()),
        }
    }

    #[test]
    fn the_view_serializes_as_the_api_serves_it() {
        let v = ClusterView {
            self_: "a".into(),
            role: Role::Leader,
            leader: Some("a".into()),
            members: vec!["a".into(), "b".into()],
            term: 7,
            lease_ttl_s: 10,
            backend: "etcd",
        };
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            serde_json::json!({"self": "a", "role": "leader", "leader": "a", "members": ["a", "b"],
                               "term": 7, "lease_ttl_s": 10, "backend": "etcd"})
        );
        assert_eq!(v.fence(), Some(Fence(7)));
    }

    #[tokio::test]
    async fn one_of_two_leads_and_the_other_takes_over_with_a_higher_term_when_it_resigns() {
        let Some(etcd) = testing::etcd().await else { return };
        let ttl = Duration::from_secs(2);
        let (a, b) = (election(&etcd.endpoint, "a", ttl), election(&etcd.endpoint, "b", ttl));
        let (mut va, mut vb) = (a.view(), b.view());
        let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
        let (ta, tb) = (a.spawn(stop_a.clone()), b.spawn(stop_b.clone()));

        let known = |v: &ClusterView| v.leader.is_some();
        let (a_now, b_now) = (until(&mut va, ttl, known).await, until(&mut vb, ttl, known).await);
        assert_eq!(a_now.leader, b_now.leader, "both name the same leader");
        assert_eq!(a_now.term, b_now.term);
        let roles = [a_now.role, b_now.role];
        assert_eq!(roles.iter().filter(|r| **r == Role::Leader).count(), 1, "{roles:?}");
        let (stop_leader, mut follower, old_term, new_leader) = if a_now.role == Role::Leader {
            (stop_a.clone(), vb.clone(), a_now.term, "b")
        } else {
            (stop_b.clone(), va.clone(), b_now.term, "a")
        };
        assert_eq!(follower.borrow().role, Role::Follower);
        let both = |v: &ClusterView| v.members == ["a", "b"];
        until(&mut follower, ttl, both).await;

        stop_leader.cancel();
        let took_over =
            until(&mut follower, Duration::from_secs(2), |v| v.role == Role::Leader).await;
        assert_eq!(took_over.leader.as_deref(), Some(new_leader));
        // The resigned member's key went with its lease.
        until(&mut follower, ttl, |v| v.members == [new_leader]).await;
        assert!(took_over.term > old_term, "{} > {old_term}", took_over.term);

        stop_a.cancel();
        stop_b.cancel();
        for t in [ta, tb] {
            tokio::time::timeout(Duration::from_secs(5), t).await.unwrap().unwrap();
        }
        assert_eq!(va.borrow().role, Role::Follower);
        assert_eq!(vb.borrow().role, Role::Follower);
    }

    #[tokio::test]
    async fn a_leader_whose_lease_ends_steps_down_without_being_told() {
        let Some(etcd) = testing::etcd().await else { return };
        let e = election(&etcd.endpoint, "a", Duration::from_secs(1));
        let client = e.client.clone();
        let mut view = e.view();
        let stop = CancellationToken::new();
        let task = e.spawn(stop.clone());
        let led = until(&mut view, Duration::from_secs(2), |v| v.role == Role::Leader).await;

        // Someone else revokes the leader's lease: its next keepalive hears TTL 0.
        let kv = client.get(b"/stoker/leader").await.unwrap().unwrap();
        client.lease_revoke(kv.lease).await.unwrap();
        until(&mut view, Duration::from_secs(2), |v| v.term != led.term || v.role != Role::Leader)
            .await;
        // With nobody else about, it campaigns again and leads in a later term.
        let again = until(&mut view, Duration::from_secs(3), |v| v.role == Role::Leader).await;
        assert!(again.term > led.term);
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    }
}
