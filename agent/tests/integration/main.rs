//! Integration tests of the agent, one binary with a module per area.

mod inference;
