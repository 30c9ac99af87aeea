//! Shared helpers for the workspace-level integration tests: locating built binaries and fixtures.

use std::path::PathBuf;

/// The workspace root, from this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}
