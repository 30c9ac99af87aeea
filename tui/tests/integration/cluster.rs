//! `HttpSource` and `/api/v1/cluster`: the collector's cluster view is read as the contract
//! gives it (leader, follower, a collector alone), a collector from before clustering (404) has
//! none and is no error, and through the fetch loop a cluster route that fails never marks a
//! collector down whose other routes answer. The collector is stood in for by the loopback
//! server of `screens_data`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stoker_collector::cluster::{ClusterView, Role};
use stoker_tui::client::{Clock, FetchConfig, Need, Snapshot, Source, SourceError, Update};
use stoker_tui::http::HttpSource;
use stoker_tui::model::{ClusterRole, ClusterStatus};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::NOW;
use crate::screens_data::local_api;

const LEADER: &str = r#"{"self": "collector-a", "role": "leader", "leader": "collector-a",
  "members": ["collector-a", "collector-b"], "term": 12, "lease_ttl_s": 10, "backend": "etcd"}"#;

const FOLLOWER: &str = r#"{"self": "collector-a", "role": "follower", "leader": "collector-b",
  "members": ["collector-a", "collector-b"], "term": 12, "lease_ttl_s": 10, "backend": "etcd"}"#;

const ALONE: &str = r#"{"self": "collector-a", "role": "leader", "leader": "collector-a",
  "members": ["collector-a"], "term": 0, "lease_ttl_s": 0, "backend": "none"}"#;

const NO_POLICIES: &str = r#"{"policies": [], "errors": [], "warnings": [], "last_reload": 0}"#;

/// A loopback collector whose `/api/v1/cluster` answers what `cluster` holds (`None`: 404),
/// counting the asks, and whose `/api/v1/policies` lists no policies.
async fn collector(cluster: Arc<Mutex<Option<String>>>, asks: Arc<AtomicUsize>) -> String {
    local_api(Arc::new(move |path: &str, _q: &BTreeMap<String, String>| match path {
        "/api/v1/cluster" => {
            asks.fetch_add(1, Ordering::Relaxed);
            cluster.lock().unwrap().clone()
        }
        "/api/v1/policies" => Some(NO_POLICIES.to_owned()),
        _ => None,
    }))
    .await
}

fn view(role: ClusterRole, leader: &str) -> ClusterStatus {
    ClusterStatus {
        member: "collector-a".into(),
        role,
        leader: Some(leader.into()),
        members: vec!["collector-a".into(), "collector-b".into()],
        term: 12,
        lease_ttl_s: 10,
        backend: "etcd".into(),
    }
}

#[tokio::test]
async fn the_cluster_view_is_read_as_the_collector_serves_it() {
    let body = Arc::new(Mutex::new(Some(LEADER.to_owned())));
    let url = collector(body.clone(), Arc::default()).await;
    let mut src = HttpSource::new(&url, None).unwrap();
    assert_eq!(src.cluster().await.unwrap(), Some(view(ClusterRole::Leader, "collector-a")));

    *body.lock().unwrap() = Some(FOLLOWER.to_owned());
    assert_eq!(src.cluster().await.unwrap(), Some(view(ClusterRole::Follower, "collector-b")));

    *body.lock().unwrap() = Some(ALONE.to_owned());
    let alone = src.cluster().await.unwrap().unwrap();
    assert_eq!((alone.role, alone.term, alone.backend.as_str()), (ClusterRole::Leader, 0, "none"));
    assert!(alone.alone());

    // An election under way: no leader, and fields a newer collector adds are ignored.
    *body.lock().unwrap() = Some(
        r#"{"self": "collector-a", "role": "follower", "leader": null, "members": [],
            "term": 0, "lease_ttl_s": 10, "backend": "etcd", "since": 1}"#
            .to_owned(),
    );
    let electing = src.cluster().await.unwrap().unwrap();
    assert_eq!((electing.role, electing.leader), (ClusterRole::Follower, None));

    // A collector from before clustering: nothing to show, and no error.
    *body.lock().unwrap() = None;
    assert_eq!(src.cluster().await.unwrap(), None);

    *body.lock().unwrap() = Some(r#"{"role": "leader"}"#.to_owned());
    match src.cluster().await {
        Err(SourceError::Decode(why)) => assert!(why.starts_with("/api/v1/cluster: "), "{why}"),
        other => panic!("{other:?}"),
    }
}

// Guards the contract: the TUI reads its own type, so a field the collector renames would
// otherwise only show up as an empty header.
#[test]
fn what_the_collector_writes_the_dashboard_reads() {
    let written = ClusterView {
        self_: "collector-a".into(),
        role: Role::Follower,
        leader: Some("collector-b".into()),
        members: vec!["collector-a".into(), "collector-b".into()],
        term: 12,
        lease_ttl_s: 10,
        backend: "etcd",
    };
    let read: ClusterStatus =
        serde_json::from_str(&serde_json::to_string(&written).unwrap()).unwrap();
    assert_eq!(read, view(ClusterRole::Follower, "collector-b"));
}

#[tokio::test]
async fn a_failing_cluster_route_does_not_mark_the_collector_down() {
    let body = Arc::new(Mutex::new(Some("<html>502 Bad Gateway</html>".to_owned())));
    let asks = Arc::new(AtomicUsize::new(0));
    let url = collector(body.clone(), asks.clone()).await;
    let (_need, need_rx) = watch::channel(Need::Policies);
    let (tx, mut updates) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let cfg = FetchConfig {
        interval: Duration::from_millis(20),
        cluster_interval: Duration::from_millis(60),
        ..FetchConfig::default()
    };
    let source = HttpSource::new(&url, None).unwrap();
    let task = tokio::spawn(stoker_tui::client::fetch_loop(
        source,
        need_rx,
        tx,
        Clock::starting_at(NOW),
        cfg,
        cancel.clone(),
    ));
    // (How often it is asked is checked in paused time, in `client`'s unit tests.)
    while asks.load(Ordering::Relaxed) < 3 {
        match next(&mut updates).await {
            Update::Data { snapshot: Snapshot::Policies(rules), .. } => assert!(rules.is_empty()),
            other => panic!("the rest answers, so the collector is up: {other:?}"),
        }
    }
    *body.lock().unwrap() = Some(FOLLOWER.to_owned());
    loop {
        match next(&mut updates).await {
            Update::Data { .. } => {}
            Update::Cluster(v) => {
                assert_eq!(v, Some(view(ClusterRole::Follower, "collector-b")));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    cancel.cancel();
    task.await.unwrap();
}

async fn next(updates: &mut mpsc::Receiver<Update>) -> Update {
    tokio::time::timeout(Duration::from_secs(10), updates.recv()).await.unwrap().unwrap()
}
