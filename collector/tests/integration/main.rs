//! Integration tests of stoker-collector, one binary with a module per area.

mod actuate;
mod policy;
