//! Workspace-level integration tests, one binary with a module per area.

// Test code: a failed unwrap is a failed test, in helpers as in `#[test]` functions.
#![allow(clippy::unwrap_used)]

mod deploy;
mod layout;
mod real_clients;
