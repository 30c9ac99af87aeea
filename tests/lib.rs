//! Shared helpers for the workspace-level integration tests: locating built binaries and fixtures.

use std::path::PathBuf;

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
