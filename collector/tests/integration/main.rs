//! Integration tests of stoker-collector, one module per area.

mod actuate;
