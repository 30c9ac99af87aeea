//! A real etcd for the cluster tests: each test starts its own single-member etcd on free
//! loopback ports with a data directory of its own, and it is killed when dropped. Without
//! the `etcd` binary a test is skipped (`.ci/install-etcd.sh` installs it), unless
//! `STOKER_REQUIRE_PEERS=1`.

use std::time::Duration;

use stoker_tests::KillOnDrop;

/// A running etcd and where it listens.
pub(crate) struct EtcdPeer {
    /// Its client URL, `http://127.0.0.1:P`.
    pub endpoint: String,
    // Dropped in order: the process first, then its data directory.
    _child: KillOnDrop,
    _dir: tempfile::TempDir,
}

/// A loopback port nobody listens on right now.
pub(crate) fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local address").port()
}

/// A fresh etcd, or `None` (after printing `skipping: etcd not installed`) when there is no
/// `etcd` binary and peers are not required.
pub(crate) async fn etcd() -> Option<EtcdPeer> {
    let bin = stoker_tests::installed_bin("etcd");
    if !stoker_tests::peer_available(bin.is_some(), "etcd", "install-etcd.sh") {
        return None;
    }
    let bin = bin.expect("checked above");
    // Two free ports are only free until someone else binds them: try again with new ones.
    for _ in 0..3 {
        if let Some(peer) = start(&bin).await {
            return Some(peer);
        }
    }
    panic!("etcd did not become healthy in three tries");
}

async fn start(bin: &str) -> Option<EtcdPeer> {
    let dir = tempfile::tempdir().expect("tempdir");
    let (client, peer) = (free_port(), free_port());
    let endpoint = format!("http://127.0.0.1:{client}");
    let log = std::fs::File::create(dir.path().join("etcd.log")).expect("log file");
    let child = stoker_tests::etcd_command(bin, &dir.path().join("data"), client, peer)
        .stderr(log)
        .spawn()
        .expect("start etcd");
    let mut child = KillOnDrop(child);
    // reqwest is built without a default TLS provider; the collector installs ring's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(Some(status)) = child.0.try_wait() {
            let log = std::fs::read_to_string(dir.path().join("etcd.log")).unwrap_or_default();
            eprintln!("etcd exited ({status}), retrying on other ports: {log}");
            return None;
        }
        let health =
            http.get(format!("{endpoint}/health")).timeout(Duration::from_secs(1)).send().await;
        if let Ok(r) = health {
            if r.text().await.is_ok_and(|t| t.contains("\"health\":\"true\"")) {
                return Some(EtcdPeer { endpoint, _child: child, _dir: dir });
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = std::fs::read_to_string(dir.path().join("etcd.log")).unwrap_or_default();
    eprintln!("etcd on {endpoint} not healthy after 10 s: {log}");
    None
}
