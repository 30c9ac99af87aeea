//! Workspace-level integration tests, one binary with a module per area.

mod deploy;
mod layout;
mod real_clients;
