//! Workspace-level integration tests, one binary with a module per area.

mod layout;
mod real_clients;
