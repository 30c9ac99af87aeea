//! Shared helpers for the workspace-level integration tests: locating built binaries and fixtures.
//! The collector's own integration tests and benchmarks use it too, for the external stores they
//! start (VictoriaMetrics).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The workspace root, from this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

/// Whether an external peer is usable; fails under STOKER_REQUIRE_PEERS=1, else prints a skip.
pub fn peer_available(ok: bool, peer: &str, script: &str) -> bool {
    if ok {
        return true;
    }
    if std::env::var("STOKER_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("{peer} is required (STOKER_REQUIRE_PEERS=1) but not installed: run .ci/{script}");
    }
    eprintln!("skipping: {peer} not installed (run .ci/{script})");
    false
}

/// `name` on `PATH` (it answers `--version`), else `/usr/bin/{name}` when that exists.
pub fn installed_bin(name: &str) -> Option<String> {
    let on_path = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if on_path {
        return Some(name.into());
    }
    let usr = format!("/usr/bin/{name}");
    Path::new(&usr).exists().then_some(usr)
}

/// VictoriaMetrics single-node flags for tests and benchmarks: nothing ages out, no latency
/// offset and no caches, so a sample is queryable once written (and flushed), and only errors
/// are logged.
pub const VICTORIA_ARGS: &[&str] = &[
    "-retentionPeriod=100y",
    "-search.latencyOffset=0s",
    "-search.disableCache",
    "-loggerLevel=ERROR",
];

/// A VictoriaMetrics single-node command storing under `data_dir` and listening on
/// `127.0.0.1:{port}` with [`VICTORIA_ARGS`], its stdout discarded; the caller sets stderr and
/// spawns it.
pub fn victoria_command(bin: &str, data_dir: &Path, port: u16) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg(format!("-storageDataPath={}", data_dir.display()))
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .args(VICTORIA_ARGS)
        .stdout(Stdio::null());
    cmd
}

/// A single-member etcd (Debian's `etcd-server`) storing under `data_dir`, serving clients on
/// `http://127.0.0.1:{client_port}` and its peer port on `peer_port`, logging only errors, its
/// stdout discarded; the caller sets stderr and spawns it. A short election timeout makes the
/// lone member lead at once and keeps etcd's minimum lease TTL (1.5 election timeouts) below
/// the 1 s tests ask for.
pub fn etcd_command(bin: &str, data_dir: &Path, client_port: u16, peer_port: u16) -> Command {
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let mut cmd = Command::new(bin);
    cmd.arg("--data-dir")
        .arg(data_dir)
        .args(["--name", "default"])
        .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("default={peer}")])
        .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
        .args(["--logger", "zap", "--log-level", "error"])
        .stdout(Stdio::null());
    cmd
}

/// A child process (a store, a collector) that is killed and reaped when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One member of a multi-member etcd on loopback: its name (`--name`) and ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdMemberPorts {
    /// Its member name, e.g. `e0`.
    pub name: String,
    /// Its client port: `http://127.0.0.1:{client_port}`.
    pub client_port: u16,
    /// Its peer port: `http://127.0.0.1:{peer_port}`.
    pub peer_port: u16,
}

/// Member `me` of the loopback etcd cluster `all` (which lists `me` too), storing under
/// `data_dir`, with [`etcd_command`]'s timings and logging, its stdout discarded; the caller
/// sets stderr and spawns it. `token` (`--initial-cluster-token`) keeps the clusters of tests
/// that run at once apart. `existing`: the member rejoins the cluster it was part of
/// (`--initial-cluster-state existing`, restarted on its data directory) rather than
/// bootstraps a new one with the others.
pub fn etcd_cluster_member_command(
    bin: &str,
    data_dir: &Path,
    me: &EtcdMemberPorts,
    all: &[EtcdMemberPorts],
    token: &str,
    existing: bool,
) -> Command {
    let client = format!("http://127.0.0.1:{}", me.client_port);
    let peer = format!("http://127.0.0.1:{}", me.peer_port);
    let initial: Vec<String> =
        all.iter().map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port)).collect();
    let mut cmd = Command::new(bin);
    cmd.arg("--data-dir")
        .arg(data_dir)
        .args(["--name", &me.name])
        .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &initial.join(",")])
        .args(["--initial-cluster-token", token])
        .args(["--initial-cluster-state", if existing { "existing" } else { "new" }])
        .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
        .args(["--logger", "zap", "--log-level", "error"])
        .stdout(Stdio::null());
    cmd
}
